"""``bioconv bench torch``: images/s of the torch engine vs the Brian2 cpp_standalone engine, in one run.

Network and data as in :mod:`bioconv.benchmarks.brian2_bench` (``--ckpt``, else
``runs/ann/cnn7-mnist.pt`` if it exists, else cnn7 with random weights; robust-normalized to
200 Hz; IF with reset by subtraction, delta synapses), MNIST test images, T = ``--duration``.

Measured in the same process, one after the other:

* torch engine, batch 100 on ``--device``: on the CPU the fused kernel (the default,
  :mod:`bioconv.engines.fused`) in ``float64`` (Brian2's sums bit for bit) and ``float32``,
  then ``float32`` with dense propagation and ``float64`` with event propagation (the torch
  tensor paths; on a GPU only these two); CPU runs use ``--workers`` threads, the same cores
  as the Brian2 workers;
* Brian2 cpp_standalone with ``--workers`` binaries in parallel (compile excluded; a cached
  build from an earlier run is reused);

then prints images/s, the ratio torch / Brian2, and the fraction of neurons whose spike
counts agree between each torch run and Brian2.

``--configs`` adds one row per model configuration of the fused kernel (float64, the
same network with other models, :data:`CONFIGS`): IF/LIF/SRM × delta/alpha, LIF with a
2 ms refractory period, current input, a gated max-pool network (the network's first
average pool replaced by a max-pool), a residual network (:func:`residual_network`) and
spike-time recording, each with its images/s and
ratio to the Brian2 run above (which uses the base configuration).
"""

from __future__ import annotations

import argparse
import time


def _torch_run(graph, images, labels, config, device: str, dtype: str, propagation: str):
    from bioconv.engines.torch import simulate

    simulate(graph, images[:2], labels[:2], config, device=device, dtype=dtype, propagation=propagation,
             progress=False)  # warm-up (allocator, kernels)
    start = time.perf_counter()
    result = simulate(graph, images, labels, config, device=device, dtype=dtype, batch_size=100,
                      propagation=propagation, progress=False)
    return result, time.perf_counter() - start


def _configs():
    from brian2 import ms

    from bioconv.neurons import IF, LIF, SRM
    from bioconv.synapses import Alpha, Delta

    return {
        "IF subtract, delta": (IF(reset="subtract"), Delta(), {}),
        "IF zero, delta": (IF(reset="zero"), Delta(), {}),
        "IF subtract, alpha 5 ms": (IF(reset="subtract"), Alpha(tau_s=5 * ms), {}),
        "LIF 20 ms, delta": (LIF(tau_m=20 * ms, reset="subtract"), Delta(), {}),
        "LIF 20 ms, alpha 5 ms": (LIF(tau_m=20 * ms, reset="subtract"), Alpha(tau_s=5 * ms), {}),
        "LIF 20 ms, refractory 2 ms": (LIF(tau_m=20 * ms, reset="subtract", refractory=2 * ms), Delta(), {}),
        "SRM 5 ms, delta": (SRM(tau_s=5 * ms, tau_r=5 * ms), Delta(), {}),
        "IF subtract, current input": (IF(reset="subtract"), Delta(), {"coding": "current"}),
        "IF subtract, spike times": (IF(reset="subtract"), Delta(), {"record": True}),
    }


def maxpool_network(spiking_graph, pools: str):
    """The benchmark network with its first average pool replaced by a gated max-pool (the relay
    of :class:`bioconv.ir.MaxPool2d`), the other pools handled as ``pools`` says."""
    from dataclasses import replace

    from bioconv import ir
    from bioconv.pool_folding import prepare_pools

    first = next(layer for layer in spiking_graph.layers if isinstance(layer, ir.AvgPool2d))
    pool = ir.MaxPool2d(name=first.name, input_shape=first.input_shape, kernel_size=first.kernel_size,
                        stride=first.stride, inputs=first.inputs)
    layers = tuple(pool if layer is first else layer for layer in spiking_graph.layers)
    graph = replace(spiking_graph, layers=layers)
    return graph if pools == "spiking" else prepare_pools(graph, pools)


def residual_network(graph):
    """The benchmark network with a residual skip around its first hidden conv layer L (same channels in
    and out): L becomes an :class:`~bioconv.ir.Add` of L's convolution and a depthwise k×k average of
    L's input (k the downsampling factor, weight 1/(2k²): half the mean input rate), so the fused kernel
    runs a population with two projections, one of them grouped (explicit synapses)."""
    from dataclasses import replace

    import numpy as np

    from bioconv import ir

    def fits(layer) -> bool:
        (c_in, h_in, _), (c_out, h_out, _) = layer.input_shape, layer.output_shape
        return c_in == c_out and h_in % h_out == 0

    convs = [l for l in graph.spiking_layers[1:] if isinstance(l, ir.Conv2d) and fits(l)]
    if not convs:
        raise ValueError("the benchmark network has no hidden conv layer with as many input as output channels")
    target = convs[0]
    (c, h_in, _), (_, h_out, _) = target.input_shape, target.output_shape
    k = h_in // h_out
    source = graph.sources(target.name)[0]
    conv = replace(target, name=f"{target.name}_conv", spiking=False, inputs=(source,), threshold=1.0)
    skip = ir.Conv2d(name=f"{target.name}_skip", input_shape=target.input_shape,
                     weight=np.full((c, 1, k, k), 1.0 / (2 * k * k)), bias=np.zeros(c), stride=(k, k), groups=c,
                     spiking=False, inputs=(source,))
    add = ir.Add(name=target.name, shape=target.output_shape, inputs=(conv.name, skip.name),
                 threshold=target.threshold)
    layers = []
    for layer in graph.layers:
        layers += [conv, skip, add] if layer is target else [layer]
    return replace(graph, layers=tuple(layers))


def config_rows(graph, images, labels, config, brian_rate: float, maxpool_graph=None) -> None:
    """One fused float64 row per model configuration (:func:`_configs`), plus the max-pool and residual networks."""
    from dataclasses import replace

    n = len(images)
    print(f"{'fused float64 configuration':40s} {'img/s':>9s} {'vs brian2':>10s} {'accuracy':>9s}")
    configs = dict(_configs())
    if maxpool_graph is not None:
        configs["IF subtract, gated max-pool"] = (None, None, {"graph": maxpool_graph})
    configs["IF subtract, residual Add"] = (None, None, {"graph": residual_network(graph)})
    for name, (neuron, synapse, extra) in configs.items():
        g = extra.get("graph") or graph.with_models(neuron=neuron, synapse=synapse)
        cfg = config
        if extra.get("coding"):
            cfg = replace(cfg, coding=extra["coding"])
        if extra.get("record"):
            cfg = replace(cfg, record_times=tuple(layer.name for layer in g.spiking_layers))
        res, secs = _torch_run(g, images, labels, cfg, "cpu", "float64", "fused")
        print(f"{name:40s} {n / secs:9.1f} {n / secs / brian_rate:9.2f}x {res.accuracy:9.3f}", flush=True)


def identical_fraction(a, b) -> float:
    """Fraction of (image, neuron) spike counts that are equal in results ``a`` and ``b`` (all layers)."""
    same = sum(int((a.counts[k] == b.counts[k]).sum()) for k in a.counts)
    return same / sum(a.counts[k].size for k in a.counts)


def main(args: argparse.Namespace) -> int:
    import torch

    from bioconv.benchmarks.brian2_bench import load_network
    from bioconv.data import load_dataset, subset
    from bioconv.engines.brian2 import Simulator
    from bioconv.simulation import SimConfig
    from bioconv.units import parse_time

    device = getattr(args, "device", "cpu") or "cpu"
    workers = int(getattr(args, "workers", 2) or 2)
    ds = subset(load_dataset("mnist", "test", args.data_dir), args.n)
    calib = load_dataset("mnist", "train", args.data_dir).images[:500]
    graph, source = load_network(args.ckpt, calib, getattr(args, "pools", "spiking"))
    config = SimConfig(duration=parse_time(args.duration), dt=parse_time(args.dt))
    n = len(ds.images)
    print(f"network: {source}")
    print(f"images: {n} MNIST test, T = {args.duration}, dt = {args.dt}, batch 100, device {device}")
    if device == "cpu":
        torch.set_num_threads(workers)
        print(f"torch threads: {torch.get_num_threads()}")

    rows = []
    results = {}
    modes = [("float32", "dense"), ("float64", "event")]
    if device == "cpu":
        modes = [("float64", "fused"), ("float32", "fused")] + modes
    for dtype, prop in modes:
        res, secs = _torch_run(graph, ds.images, ds.labels, config, device, dtype, prop)
        results[(dtype, prop)] = res
        rows.append((f"torch {dtype} ({prop})", n / secs, secs, res.accuracy))
        print(f"  torch {dtype:8s} {prop:6s}: {n / secs:8.1f} img/s  ({secs:.2f} s, accuracy {res.accuracy:.3f})")

    sim = Simulator(graph, config, device="cpp", workers=workers, batch_size=max(1, n // (2 * workers)))
    start = time.perf_counter()
    brian = sim.run(ds.images, ds.labels)
    total = time.perf_counter() - start
    b_secs = float(brian.timings["run_s"])
    compile_s = float(brian.timings.get("compile_s", 0.0))
    print(f"  brian2 cpp_standalone, {workers} workers: {n / b_secs:8.1f} img/s  ({b_secs:.2f} s run; "
          f"compile {compile_s:.1f} s, total {total:.1f} s, accuracy {brian.accuracy:.3f})")

    print()
    print(f"{'engine':32s} {'img/s':>9s} {'ratio vs brian2':>16s}")
    brian_rate = n / b_secs
    for name, rate, _, _ in rows:
        print(f"{name:32s} {rate:9.1f} {rate / brian_rate:15.2f}x")
    print(f"{'brian2 cpp, %d workers' % workers:32s} {brian_rate:9.1f} {1.0:15.2f}x")
    print()
    if getattr(args, "configs", False) and device == "cpu":
        spiking, _ = load_network(args.ckpt, calib, "spiking")
        maxpool = None if args.ckpt and args.ckpt.endswith(".bcv") else maxpool_network(
            spiking, getattr(args, "pools", "spiking"))
        config_rows(graph, ds.images, ds.labels, config, brian_rate, maxpool)
        print()
    pairs = sum(v.size for v in brian.counts.values())
    for (dtype, prop), res in results.items():
        print(f"identical spike counts, torch {dtype} {prop} vs brian2 cpp: {identical_fraction(res, brian):.6f} "
              f"of {pairs} (image, neuron) pairs")
    return 0
