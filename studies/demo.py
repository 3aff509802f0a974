"""End-to-end demo (``make demo``): train cnn7 on MNIST, convert with MCR-Norm at 200 Hz, run in Brian2.

Steps, each timed:

1. ANN: reuse ``runs/ann/cnn7-mnist.pt`` if its metadata says cnn7 on MNIST, else train
   cnn7 for a few epochs (Adadelta, batch 100) and save it there.
2. Convert with :func:`bioconv.pipeline.conversion` (the code of ``bioconv convert``):
   average pools folded into the next layer, activation statistics on 500 training
   images, then MCR-Norm (standard IF, reset to zero, delta synapses,
   dt = 1 ms, Bernoulli input at up to 400 Hz) with every layer's max rate scanned to
   200 Hz ± 2 % by the torch engine on a calibration subset. The .bcv keeps the source ANN.
3. Simulate 500 test images in Brian2 ``cpp_standalone`` (one compiled binary, run by
   ``--workers`` processes) and print the source ANN's accuracy, the SNN accuracy at T
   (with Wilson 95 % intervals), the conversion loss with McNemar's exact test on the paired
   predictions, per-layer max and mean rates and spikes per image.
4. Figure ``figures/demo_rate_vs_activation.{pdf,png,csv}``: measured rate of every neuron
   against its ANN activation a/λ, per layer, with the ideal line ρ·a/λ (title: network,
   neuron, normalization, images, seed).

Run ``python -m studies.demo --help`` for smaller/faster settings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

CKPT = Path("runs/ann/cnn7-mnist.pt")


def _ann(epochs: int, seed: int):
    from bioconv.ann import load_checkpoint, train_and_save

    if CKPT.exists():
        model, meta = load_checkpoint(CKPT)
        if meta.get("arch") == "cnn7" and meta.get("dataset") == "mnist":
            print(f"[1] reusing {CKPT} (test accuracy {meta['test_accuracy']:.4f})")
            return model, meta
    print(f"[1] training cnn7 on MNIST for {epochs} epochs -> {CKPT}")
    return train_and_save("cnn7", "mnist", CKPT, epochs=epochs, seed=seed)


def _figure(ann_graph, snn, sim, images, outdir: str, title: str) -> list[Path]:
    from bioconv.plotting import figure, save_figure

    norm = snn.meta["normalization"]
    ann = ann_graph.forward(images, relu_last=True)
    layers = list(sim.counts)
    fig, axes = figure(ncols=min(4, len(layers)), nrows=int(np.ceil(len(layers) / 4)), width=7.0)
    rows = []
    rng = np.random.default_rng(0)
    for ax, name in zip(axes.flat, layers):
        a = ann[name].reshape(len(images), -1) / norm["lambda"][name]
        r = sim.rates_hz(name)
        pick = rng.choice(a.size, size=min(4000, a.size), replace=False)
        ax.scatter(a.flat[pick], r.flat[pick], s=2, alpha=0.3, lw=0)
        target = norm["target_rate_hz"][name]
        ax.plot([0, 1], [0, target], color="k", lw=0.8, ls="--", label="ideal ρ·a/λ")
        ax.set_title(name)
        ax.set_xlabel("ANN activation a/λ")
        rows.append(pd.DataFrame({"layer": name, "activation_over_lambda": a.flat[pick], "rate_hz": r.flat[pick]}))
    for ax in axes[:, 0]:
        ax.set_ylabel("SNN rate (Hz)")
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=7)
    return save_figure(fig, pd.concat(rows, ignore_index=True), outdir, "demo_rate_vs_activation")


def main(argv: list[str] | None = None) -> int:
    from brian2 import ms

    from bioconv.data import load_dataset
    from bioconv.engines.brian2 import simulate as brian2_simulate
    from bioconv.pipeline import ann_predictions, conversion, save_conversion
    from bioconv.pipeline_spec import ConversionSpec
    from bioconv.simulation import SimConfig
    from bioconv.stats import mcnemar, wilson_interval

    p = argparse.ArgumentParser(prog="python -m studies.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=5, help="training epochs if no checkpoint (default 5)")
    p.add_argument("--calib", type=int, default=500, help="images for activation statistics (default 500)")
    p.add_argument("--calib-sim", type=int, default=30, help="images simulated in the MCR scan (default 30)")
    p.add_argument("--calib-duration", type=float, default=150.0, help="ms per scan image (default 150)")
    p.add_argument("--n-test", type=int, default=500, help="test images in Brian2 (default 500)")
    p.add_argument("--duration", type=float, default=200.0, help="ms per test image (default 200)")
    p.add_argument("--workers", type=int, default=2, help="standalone binaries in parallel (default 2)")
    p.add_argument("--device", default="cpp", choices=("cpp", "runtime"), help="Brian2 device (default cpp)")
    p.add_argument("--pools", default="fold", choices=("fold", "spiking"),
                   help="average pools folded into the next layer (default) or spiking IF pools")
    p.add_argument("--seed", type=int, default=0, help="calibration subset and input spikes (test input: seed+1)")
    p.add_argument("--figures", default="figures")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    times = {}
    _ann(args.epochs, args.seed)
    times["ann_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    spec = ConversionSpec(method="mcr", calib_n=args.calib, calib_sim=args.calib_sim,
                          duration=args.calib_duration * ms, calib_seed=args.seed, pools=args.pools)
    print(f"[2] MCR-Norm scan on {args.calib_sim} calibration images x {args.calib_duration:g} ms (torch engine)")
    conv = conversion(spec, CKPT, progress=True)
    snn, graph = conv.snn, conv.ann
    save_conversion(snn, graph, "runs/snn/cnn7-mcr200.bcv")
    times["convert_s"] = time.perf_counter() - t
    norm = snn.meta["normalization"]

    t = time.perf_counter()
    test = load_dataset("mnist", "test").take(slice(0, args.n_test))
    cfg = SimConfig(duration=args.duration * ms, bin=5 * ms, seed=args.seed + 1)
    print(f"[3] Brian2 {args.device} on {args.n_test} test images x {args.duration:g} ms, {args.workers} workers")
    res = brian2_simulate(snn, test.images, test.labels, cfg, device=args.device, workers=args.workers, progress=True)
    times["brian2_s"] = time.perf_counter() - t
    ann_ok = ann_predictions(graph, test.images) == test.labels
    snn_ok = res.predictions()[:, -1] == test.labels
    n = len(test.labels)
    (alo, ahi), (slo, shi) = wilson_interval(int(ann_ok.sum()), n), wilson_interval(int(snn_ok.sum()), n)
    test_p = mcnemar(ann_ok, snn_ok)
    print(f"\nsource ANN accuracy {ann_ok.mean():.4f} [{alo:.4f}, {ahi:.4f}]  SNN accuracy at T = {args.duration:g} ms "
          f"{snn_ok.mean():.4f} [{slo:.4f}, {shi:.4f}] (Wilson 95 %, {n} test images, input seed {args.seed + 1})")
    print(f"conversion loss {100 * (ann_ok.mean() - snn_ok.mean()):.2f} points; discordant pairs "
          f"{test_p.b} (ANN only) / {test_p.c} (SNN only), McNemar exact p = {test_p.p_exact:.3g}")
    acc_t = res.accuracy_vs_time()
    best = int(np.argmax(acc_t))
    print(f"best-over-time SNN accuracy (chosen on these test images, optimistic) {acc_t[best]:.4f} at "
          f"{res.bin_times_ms()[best]:g} ms; spikes per image {res.spikes_per_image().mean():.0f}")
    print(f"{'layer':<8}{'gain':>8}{'calib max Hz':>14}{'test max Hz':>13}{'test mean Hz':>14}")
    for name in res.counts:
        r = res.rates_hz(name)
        print(f"{name:<8}{norm['gain'][name]:>8.3f}{norm['achieved_max_rate_hz'][name]:>14.1f}"
              f"{r.max():>13.1f}{r.mean():>14.2f}")
    t = time.perf_counter()
    title = (f"cnn7 (pools {args.pools}), IF reset to zero, delta synapses, MCR-Norm 200 Hz; Brian2 {args.device}, "
             f"{n} MNIST test images x {args.duration:g} ms, input seed {args.seed + 1}: rate vs ANN activation")
    paths = _figure(graph, snn, res, test.images, args.figures, title)
    times["figure_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - t0
    print("figure:", ", ".join(str(p) for p in paths))
    print("wall time:", json.dumps({k: round(v, 1) for k, v in times.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
