"""``bioconv bench brian2``: the Brian2 cpp_standalone engine on cnn7 / MNIST, explicit against
procedural (weight-shared) convolution synapses, in one run on the same network.

For each build (fresh, so compile times are measured here): compile time, images/s with
1 and ``--workers`` binaries, CPU time per image, synaptic events per CPU-second of the
binary, of the simulation loop and of the propagation code alone (Brian2's profiling),
peak resident memory of one binary, bytes per neuron and per synapse-equivalent; then the
single-core ceiling, a C loop of the same event pattern compiled here
(:mod:`bioconv.benchmarks.event_ceiling`), and each build's share of it.

Network: ``--ckpt`` (a converted ``.bcv`` graph, or a torch checkpoint ``.pt`` that is
converted and normalized here), else ``runs/ann/cnn7-mnist.pt`` if it exists, else cnn7
with random (He) weights. Checkpoints and random graphs are normalized with robust
data-based normalization (99.9th percentile λ per layer, Rueckauer et al. 2017) to a
target maximum rate of 200 Hz, so the network spikes at plausible rates.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

TARGET_RHO = 0.2  # rate·τ for λ (200 Hz at τ = 1 ms)
DEFAULT_CKPT = Path(__file__).resolve().parents[2] / "runs" / "ann" / "cnn7-mnist.pt"


def random_cnn7(seed: int = 0):
    """cnn7 (``32c3-p2-32c3-p2-32c3-p2-32FC-10FC``) on 1x28x28 with He-normal weights, no torch."""
    from bioconv import ir

    rng = np.random.default_rng(seed)
    layers, shape, k = [], (1, 28, 28), 0
    for c_out in (32, 32, 32):
        k += 1
        c_in = shape[0]
        w = rng.normal(0, np.sqrt(2 / (9 * c_in)), (c_out, c_in, 3, 3))
        conv = ir.Conv2d(f"conv{k}", shape, w, rng.normal(0, 0.01, c_out), padding=(1, 1))
        pool = ir.AvgPool2d(f"pool{k}", conv.output_shape)
        layers += [conv, pool]
        shape = pool.output_shape
    layers.append(ir.Flatten("flatten", shape))
    n = int(np.prod(shape))
    layers.append(ir.Dense("fc1", rng.normal(0, np.sqrt(2 / n), (32, n)), rng.normal(0, 0.01, 32)))
    layers.append(ir.Dense("fc2", rng.normal(0, np.sqrt(2 / 32), (10, 32)), np.zeros(10)))
    return ir.Graph(ir.Input((1, 28, 28)), tuple(layers), meta={"source": "random cnn7", "dataset": "mnist"})


def robust_normalize(graph, images: np.ndarray, rho: float = TARGET_RHO, percentile: float = 99.9):
    r"""Data-based robust normalization to max rate ρ/τ: :math:`\tilde w_n = w_n\lambda_{n-1}/\lambda_n`,
    :math:`\tilde b_n = \rho b_n/\lambda_n`, input rate scale :math:`\rho/(\tau\lambda_0)`."""
    from dataclasses import replace

    from bioconv import ir
    from bioconv.neurons import IF
    from bioconv.synapses import Delta

    acts = graph.forward(images)
    lam_prev = float(np.percentile(images, 100)) or 1.0
    inp = replace(graph.input, rate_scale=rho / 1e-3 / lam_prev)
    for layer in graph.spiking_layers:
        a = np.maximum(acts[layer.name], 0)
        lam = float(np.percentile(a[a > 0], percentile)) if (a > 0).any() else 1.0
        if isinstance(layer, (ir.Conv2d, ir.Dense)):
            graph = graph.replace_layer(layer.name, weight=layer.weight * lam_prev / lam, bias=rho * layer.bias / lam)
        elif isinstance(layer, ir.AvgPool2d):
            graph = graph.replace_layer(layer.name, scale=layer.scale * lam_prev / lam)
        lam_prev = lam
    return replace(graph, input=inp).with_models(neuron=IF(reset="subtract"), synapse=Delta(), normalization="robust-99.9")


def load_network(ckpt: str | None, images: np.ndarray, pools: str = "spiking"):
    """The benchmark network: a ``.bcv`` graph as saved, else the checkpoint (or random cnn7)
    robust-normalized, with its average pools kept as IF layers (``pools="spiking"``) or
    folded into the next layer (``"fold"``, :mod:`bioconv.pool_folding`)."""
    if ckpt and ckpt.endswith(".bcv"):
        from bioconv.graphio import load_graph

        return load_graph(ckpt), ckpt
    graph, source = _normalized_network(ckpt, images)
    if pools == "spiking":
        return graph, source + ", spiking pools"
    from bioconv.pool_folding import prepare_pools

    return prepare_pools(graph, pools), source + ", pools folded"


def _normalized_network(ckpt: str | None, images: np.ndarray):
    path = Path(ckpt) if ckpt else DEFAULT_CKPT
    if path.exists():
        from bioconv.ann import load_checkpoint
        from bioconv.from_torch import from_torch

        model, meta = load_checkpoint(path)
        graph = from_torch(model, tuple(meta["input_shape"]))
        return robust_normalize(graph, images), f"{path} (robust-normalized)"
    if ckpt:
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    return robust_normalize(random_cnn7(), images), "cnn7 with random weights (robust-normalized)"


def synaptic_events(graph, result, images, config) -> float:
    """Total synaptic events: presynaptic spikes × out-degree, summed over layers and images."""
    from bioconv import encoding

    rates, signs = encoding.input_rates_hz(images, graph.input)
    trains = encoding.spike_trains(rates, signs, float(config.dt / _second()), config.n_steps, config.coding,
                                   config.seed)
    pre_counts = np.abs(trains).sum(axis=1)
    events = 0.0
    for layer in graph.spiking_layers:
        events += float((pre_counts @ out_degree(layer)).sum())
        pre_counts = result.counts[layer.name]
    return events


def out_degree(layer) -> np.ndarray:
    """Synapses (or synapse-equivalents) per presynaptic neuron of ``layer``'s input pathway."""
    from bioconv import ir
    from bioconv.connectivity import layer_synapses
    from bioconv.engines.convsyn import ConvGeometry

    if isinstance(layer, ir.Conv2d):
        return ConvGeometry.from_layer(layer).out_degree()
    return np.bincount(layer_synapses(layer).i, minlength=int(np.prod(layer.input_shape)))


def _second():
    from brian2 import second

    return second


def _propagation_seconds(profile: dict) -> float:
    """CPU seconds of the synaptic propagation code objects (explicit and procedural pathways)."""
    return float(sum(sec for name, sec in (profile or {}).items() if "_syn_pre" in name or "_syn_neg_pre" in name))


def measure_build(graph, config, ds, conv: str, worker_list: list[int], build_dir: Optional[Path]) -> dict:
    """Build (in ``build_dir``, or reuse the cached build) and run one network with ``conv`` synapses."""
    from bioconv.engines.brian2 import Simulator

    sim = Simulator(graph, config, device="cpp", workers=1, batch_size=min(50, len(ds)), profile=True, conv=conv,
                    build_dir=build_dir)
    start = time.perf_counter()
    sim.run(ds.images[:1], ds.labels[:1])
    out = {"first_s": time.perf_counter() - start, "compile_s": sim.manifest.get("compile_s", float("nan")),
           "reused": sim.build_timings.get("compile_s") == 0.0,
           "build_s": sim.manifest.get("build_s", float("nan")), "per_image_s": {}}
    for workers in worker_list:
        sim.workers = workers
        res = sim.run(ds.images, ds.labels, progress=False)
        out["per_image_s"][workers] = res.timings["run_s"] / len(ds)
        if workers == 1:
            out["result"] = res
    res = out["result"]
    events = synaptic_events(graph, res, ds.images, config)
    t = res.timings
    out.update(events=events, cpu_s=t["binary_cpu_s"], loop_s=t["network_s"],
               propagation_s=_propagation_seconds(res.meta.get("profile_s")), rss=res.meta.get("max_rss_bytes") or 0)
    return out


def ceiling_for(graph, config, result, images) -> dict:
    """The C-loop ceiling on this network's event pattern (rates measured in ``result``)."""
    from bioconv import devices, encoding
    from bioconv.benchmarks import event_ceiling

    n = min(10, len(images))
    rates, signs = encoding.input_rates_hz(images[:n], graph.input)
    trains = encoding.spike_trains(rates, signs, float(config.dt / _second()), config.n_steps, config.coding,
                                   config.seed)
    trains = np.abs(trains).reshape(n * config.n_steps, -1)
    per_step = {name: result.counts[name].mean(axis=0) / config.n_steps for name in result.counts}
    return event_ceiling.measure(graph, trains, per_step, n * config.n_steps, devices.GCC_FLAGS)


def main(args: argparse.Namespace) -> int:
    import tempfile

    from bioconv.data import load_dataset, subset
    from bioconv.memory import count_synapses
    from bioconv.simulation import SimConfig
    from bioconv.units import parse_time

    ds = subset(load_dataset("mnist", "test", args.data_dir), args.n)
    calib = subset(load_dataset("mnist", "train", args.data_dir), 500).images
    graph, source = load_network(args.ckpt, calib, getattr(args, "pools", "spiking"))
    config = SimConfig(duration=parse_time(args.duration), dt=parse_time(args.dt), bin=parse_time(args.dt))
    n_syn = sum(count_synapses(graph).values())
    n_neurons = int(sum(np.prod(layer.output_shape) for layer in graph.spiking_layers) + np.prod(graph.input.shape))
    modes = ["explicit", "procedural"] if getattr(args, "conv", "both") == "both" else [args.conv]
    worker_list = sorted({1, max(1, int(args.workers))})
    print(f"network: {source}")
    print(f"MNIST test images: {len(ds)}, T = {args.duration}, dt = {args.dt}, bernoulli input")
    print(f"synapses (explicit) / synapse-equivalents (procedural): {n_syn:,}; neurons (with input): {n_neurons:,}; "
          f"{len(graph.spiking_layers)} spiking layers")

    rows = {}
    fresh = bool(getattr(args, "fresh_build", False))
    with tempfile.TemporaryDirectory(prefix="bioconv-bench-") as tmp:
        for conv in modes:  # --fresh-build: compile times measured in this run; else cached builds are reused
            rows[conv] = measure_build(graph, config, ds, conv, worker_list, Path(tmp) / conv if fresh else None)
    ceiling = ceiling_for(graph, config, rows[modes[-1]]["result"], ds.images)

    print(f"\n{'':<44}" + "".join(f"{m:>14}" for m in modes))

    def line(label, fn, fmt):
        print(f"{label:<44}" + "".join(f"{format(fn(rows[m]), fmt):>14}" for m in modes))

    line("compile (s)" + ("" if fresh else "; * = cached build's"), lambda r: f"{r['compile_s']:.1f}"
         + ("*" if r["reused"] else ""), "")
    line("python build (s)", lambda r: r["build_s"], ".1f")
    for w in worker_list:
        line(f"images/s, {w} worker(s) (wall)", lambda r, w=w: 1 / r["per_image_s"][w], ".1f")
    line("CPU ms/image of the binary (1 worker)", lambda r: 1e3 * r["cpu_s"] / len(ds), ".1f")
    line("M events/s per core (binary CPU)", lambda r: r["events"] / r["cpu_s"] / 1e6, ".1f")
    line("M events/s per core (simulation loop)", lambda r: r["events"] / r["loop_s"] / 1e6, ".1f")
    line("M events/s per core (propagation alone)", lambda r: r["events"] / max(r["propagation_s"], 1e-12) / 1e6, ".1f")
    line("peak RSS of one binary (MiB)", lambda r: r["rss"] / 2**20, ".0f")
    line("bytes per neuron (peak RSS / neurons)", lambda r: r["rss"] / n_neurons, ".0f")
    line("bytes per synapse-equivalent", lambda r: r["rss"] / n_syn, ".2f")
    print(f"\nsynaptic events: {rows[modes[-1]]['events'] / len(ds):,.0f} per image")
    print(f"single-core ceiling (C loop of the same event pattern, {ceiling['events']:,} events, gcc "
          f"{' '.join(f for f in GCC_FLAGS_SHOWN)}): {ceiling['events_per_s'] / 1e6:.0f} M events/s")
    for m in modes:
        r = rows[m]
        print(f"{m}: {100 * r['events'] / r['cpu_s'] / ceiling['events_per_s']:.0f} % of the ceiling per binary "
              f"CPU second, {100 * r['events'] / max(r['propagation_s'], 1e-12) / ceiling['events_per_s']:.0f} % "
              "in the propagation code alone")
    if len(modes) == 2:
        ex, pr = rows["explicit"], rows["procedural"]
        w = max(worker_list)
        print(f"procedural / explicit: {ex['per_image_s'][w] / pr['per_image_s'][w]:.1f}x images/s with {w} workers, "
              f"{ex['cpu_s'] / pr['cpu_s']:.1f}x CPU per image, {ex['rss'] / max(pr['rss'], 1):.1f}x less memory")
        same = all(np.array_equal(ex["result"].counts[k], pr["result"].counts[k]) for k in ex["result"].counts)
        print(f"spike counts identical on every neuron of every image: {same}")
    res = rows[modes[-1]]["result"]
    ann = graph.forward(ds.images)[graph.layers[-1].name].argmax(axis=1)
    print(f"accuracy: ANN {100 * (ann == ds.labels).mean():.1f} %, SNN {100 * res.accuracy:.1f} %; "
          f"spikes/image {res.spikes_per_image().mean():.0f}")
    print(f"machine load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(wall times scale with it; CPU times do not)")
    return 0


GCC_FLAGS_SHOWN = ("-O3", "-march=native", "-ffp-contract=off")
