"""``bioconv bench brian2``: speed and memory of the Brian2 cpp_standalone engine on cnn7 / MNIST.

Prints synapses, index-build time and rate (synapses/s), compile time, time per image with
1 and 2 workers, synaptic events per second (per core) and bytes per synapse (peak resident
memory of one running binary / synapses).

Network: ``--ckpt`` (a converted ``.bcv`` graph, or a torch checkpoint ``.pt`` that is
converted and normalized here), else ``runs/ann/cnn7-mnist.pt`` if it exists, else cnn7
with random (He) weights. Checkpoints and random graphs are normalized with robust
data-based normalization (99.9th percentile λ per layer, seed 004) to a target maximum rate
of 200 Hz, so the network spikes at plausible rates.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

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
    from bioconv.connectivity import layer_synapses

    rates, signs = encoding.input_rates_hz(images, graph.input)
    trains = encoding.spike_trains(rates, signs, float(config.dt / _second()), config.n_steps, config.coding,
                                   config.seed)
    pre_counts = np.abs(trains).sum(axis=1)
    events = 0.0
    for layer in graph.spiking_layers:
        conn = layer_synapses(layer)
        out_degree = np.bincount(conn.i, minlength=conn.n_pre)
        events += float((pre_counts @ out_degree).sum())
        pre_counts = result.counts[layer.name]
    return events


def _second():
    from brian2 import second

    return second


def main(args: argparse.Namespace) -> int:
    from bioconv.connectivity import layer_synapses
    from bioconv.data import load_dataset, subset
    from bioconv.engines.brian2 import Simulator
    from bioconv.memory import count_synapses
    from bioconv.simulation import SimConfig
    from bioconv.units import parse_time

    ds = subset(load_dataset("mnist", "test", args.data_dir), args.n)
    calib = subset(load_dataset("mnist", "train", args.data_dir), 500).images
    graph, source = load_network(args.ckpt, calib, getattr(args, "pools", "spiking"))
    config = SimConfig(duration=parse_time(args.duration), dt=parse_time(args.dt), bin=parse_time(args.dt))
    n_syn = sum(count_synapses(graph).values())
    print(f"network: {source}")
    print(f"MNIST test images: {len(ds)}, T = {args.duration}, dt = {args.dt}, bernoulli input")
    print(f"synapses: {n_syn:,} in {len(graph.spiking_layers)} spiking layers")

    start = time.perf_counter()
    for layer in graph.spiking_layers:
        layer_synapses(layer)
    index_s = time.perf_counter() - start
    print(f"index build: {index_s:.2f} s, {n_syn / index_s / 1e6:.1f} M synapses/s")

    sim = Simulator(graph, config, device="cpp", workers=1, batch_size=min(50, len(ds)), profile=True)
    start = time.perf_counter()
    sim.run(ds.images[:1], ds.labels[:1])
    first_s = time.perf_counter() - start
    if sim.build_timings["compile_s"] > 0:
        print(f"build: python {sim.build_timings['build_s']:.1f} s, compile {sim.build_timings['compile_s']:.1f} s "
              f"(one compile per network structure; first call {first_s:.1f} s)")
    else:
        print(f"compile: reused the cached binary in {sim.directory} "
              f"(its compile took {sim.manifest.get('compile_s', float('nan')):.1f} s)")

    per_image, result = {}, None
    worker_list = sorted({1, max(1, int(args.workers))})
    for workers in worker_list:
        sim.workers = workers
        res = sim.run(ds.images, ds.labels, progress=True)
        per_image[workers] = res.timings["run_s"] / len(ds)
        t = res.timings
        print(f"{workers} worker(s): {per_image[workers] * 1e3:.1f} ms/image, {1 / per_image[workers]:.1f} images/s wall; "
              f"binaries: {t['binary_s']:.1f} s wall, {t['binary_cpu_s']:.1f} s CPU "
              f"({t['binary_cpu_s'] / len(ds) * 1e3:.1f} ms CPU/image), simulation loop {t['network_s']:.1f} s CPU")
        if workers == 1:
            result = res
    if max(worker_list) > 1:
        print(f"speed-up with {max(worker_list)} workers: {per_image[1] / per_image[max(worker_list)]:.2f}x")
    events = synaptic_events(graph, result, ds.images, config)
    t = result.timings
    print(f"synaptic events: {events / len(ds):,.0f} per image; {events / t['binary_cpu_s'] / 1e6:.1f} M events "
          f"per CPU-second of the binary (1 worker), {events / t['network_s'] / 1e6:.1f} M/s of simulation-loop CPU time")
    prof = result.meta.get("profile_s") or {}
    if prof:
        groups: dict[str, float] = {}
        for name, sec in prof.items():
            kind = ("synaptic propagation" if "_syn_pre" in name else "state update" if "stateupdater" in name
                    else "threshold" if "thresholder" in name else "reset" if "resetter" in name
                    else "per-image reset" if "image_reset" in name else "monitors" if "mon" in name else "other")
            groups[kind] = groups.get(kind, 0.0) + sec
        total = sum(groups.values())
        print("simulation loop CPU time by code object kind: " + ", ".join(
            f"{k} {v:.2f} s ({100 * v / total:.0f} %)" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])))
        if groups.get("synaptic propagation"):
            print(f"synaptic propagation alone: {events / groups['synaptic propagation'] / 1e6:.1f} M events/s per core")
    print(f"machine load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(wall times scale with it; CPU times do not)")
    rss = result.meta.get("max_rss_bytes") or 0
    ta_bytes = 8 * result.meta["batch_size"] * config.n_steps * int(np.prod(graph.input.shape))
    print(f"memory: peak RSS of one binary {rss / 2**20:.0f} MiB = {rss / n_syn:.0f} B/synapse "
          f"({(rss - ta_bytes) / n_syn:.0f} B/synapse without the {ta_bytes / 2**20:.0f} MiB input array)")
    ann = graph.forward(ds.images)[graph.layers[-1].name].argmax(axis=1)
    print(f"accuracy: ANN {100 * (ann == ds.labels).mean():.1f} %, SNN {100 * result.accuracy:.1f} %; "
          f"spikes/image {result.spikes_per_image().mean():.0f}; max rate per layer (Hz): "
          + ", ".join(f"{k} {result.rates_hz(k).max():.0f}" for k in result.layer_names))
    return 0
