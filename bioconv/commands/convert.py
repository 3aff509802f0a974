"""Normalize a trained ANN checkpoint and write the spiking network as a Graph file (.bcv).

Example (MCR-Norm at 200 Hz, standard IF reset to zero, delta synapses)::

    bioconv convert runs/ann/cnn7-mnist.pt --norm mcr --target-rate 200Hz --input-rate 400Hz \\
        --calib 500 --engine torch --out runs/snn/cnn7-mcr200.bcv

Methods: ``mcr`` (MCR-Norm, gains scanned so every layer's max rate hits the target),
``max`` / ``robust`` (data-based, max or percentile of ANN activations), ``spike``
(Spike-Norm with biases). Calibration images are a seeded subset of the training split.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


from bioconv.units import parse_rate, parse_time

METHODS = ("mcr", "max", "robust", "spike")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="trained ANN checkpoint (.pt, from `bioconv train`), or with --model the "
                        "state_dict file of your own model")
    parser.add_argument("--model", metavar="MODULE:FACTORY",
                        help="your own PyTorch model: FACTORY() in MODULE (an importable module or a .py file) "
                             "returns the nn.Module, CKPT is its state_dict (torch.save(model.state_dict(), path)); "
                             "needs --dataset")
    parser.add_argument("--dataset", choices=("mnist", "cifar10", "digits"),
                        help="dataset of a --model (checkpoints of `bioconv train` record theirs)")
    parser.add_argument("--norm", default="mcr", help=f"normalization method: {', '.join(METHODS)} (default mcr)")
    parser.add_argument("--neuron", default="if", choices=("if", "lif", "srm"), help="neuron model (default if)")
    parser.add_argument("--reset", default="zero", choices=("zero", "subtract"), help="IF/LIF reset (default zero)")
    parser.add_argument("--tau-m", default="20ms", help="LIF membrane time constant (default 20ms)")
    parser.add_argument("--synapse", default="delta", choices=("delta", "alpha"), help="synapse model (default delta)")
    parser.add_argument("--tau-syn", default="1ms", help="alpha synapse time constant (default 1ms)")
    parser.add_argument("--target-rate", help="max firing rate of every layer (default 200Hz for mcr, else 1000Hz)")
    parser.add_argument("--input-rate", help="input rate for the largest pixel (default 400Hz for mcr, else 1000Hz)")
    parser.add_argument("--percentile", type=float, default=99.9, help="robust-norm percentile (default 99.9)")
    parser.add_argument("--calib", type=int, default=500, help="calibration images from the training split (default 500)")
    parser.add_argument("--calib-sim", type=int, default=50,
                        help="of those, the first N are simulated in the mcr/spike scans (default 50)")
    parser.add_argument("--engine", default="torch", choices=("torch", "brian2"), help="probe engine for mcr/spike")
    parser.add_argument("--device", default="cpp", help="brian2 probe device: runtime or cpp (default cpp)")
    parser.add_argument("--dt", default="1ms", help="time step (default 1ms)")
    parser.add_argument("--duration", default="300ms", help="calibration run per image (default 300ms)")
    parser.add_argument("--coding", default="bernoulli", choices=("bernoulli", "poisson"), help="input coding")
    parser.add_argument("--tolerance", type=float, default=0.02, help="mcr: relative rate tolerance (default 0.02)")
    parser.add_argument("--rate-stat", default="max", choices=("max", "percentile"), help="mcr: raw max or percentile of rates")
    parser.add_argument("--rate-percentile", type=float, default=99.9, help="mcr: percentile for --rate-stat percentile")
    parser.add_argument("--rho-from-slope", action="store_true", help="mcr: previous-layer slope measured, not assumed")
    parser.add_argument("--eta", help="mcr: comma-separated bias factors to fine-tune, e.g. 0.9,1,1.1")
    parser.add_argument("--pools", default="fold", choices=("fold", "spiking"),
                        help="fold: average pools merged into the next layer (exact; every layer can hit the target "
                             "rate); spiking: IF pool neurons (rates on a staircase) (default fold)")
    parser.add_argument("--form", default="weights", choices=("weights", "thresholds"),
                        help="weights: thresholds 1; thresholds: threshold balancing (same spikes)")
    parser.add_argument("--seed", type=int, default=0, help="calibration subset and input-spike seed (default 0)")
    parser.add_argument("--data-dir", help="dataset folder (default: $BIOCONV_DATA_DIR or the user cache)")
    parser.add_argument("--out", help="output .bcv (default runs/snn/<arch>-<norm><rate>.bcv)")


def _options(args: argparse.Namespace) -> dict:
    """Parse and check every option before any slow work; ValueError names the fix."""
    from brian2 import Hz, ms, second

    from bioconv.neurons import make_neuron
    from bioconv.normalize.scaling import check_rate
    from bioconv.synapses import make_synapse

    if args.norm not in METHODS:
        raise ValueError(f"unknown normalization method {args.norm!r}; choose one of {', '.join(METHODS)}")
    dt, duration = parse_time(args.dt), parse_time(args.duration)
    if not float(dt) > 0:
        raise ValueError(f"--dt must be > 0, got {args.dt}")
    default = ("200Hz", "400Hz") if args.norm == "mcr" else (None, None)
    ceiling = 1.0 / float(dt / second)
    target = parse_rate(args.target_rate or default[0] or f"{min(1000.0, ceiling)}Hz")
    inp = parse_rate(args.input_rate or default[1] or f"{min(1000.0, ceiling)}Hz")
    check_rate(target, "--target-rate", dt)
    check_rate(inp, "--input-rate", dt)
    if args.calib < 1:
        raise ValueError(f"--calib must be >= 1 image, got {args.calib}")
    if not 0 < args.percentile <= 100:
        raise ValueError(f"--percentile must be in (0, 100], got {args.percentile}")
    if not 0 < args.tolerance < 1:
        raise ValueError(f"--tolerance must be in (0, 1), got {args.tolerance}")
    eta = None
    if args.eta:
        try:
            eta = tuple(float(x) for x in args.eta.split(","))
        except ValueError:
            raise ValueError(f"--eta must be comma-separated numbers such as 0.9,1,1.1, got {args.eta!r}") from None
    params = {} if args.neuron == "srm" else {"reset": args.reset}
    if args.neuron == "lif":
        params["tau_m"] = parse_time(args.tau_m)
    neuron = make_neuron(args.neuron, **params)
    synapse = make_synapse(args.synapse, **({"tau_s": parse_time(args.tau_syn)} if args.synapse == "alpha" else {}))
    synapse.post_equations(neuron)  # raises for SRM + alpha
    from bioconv.simulation import SimConfig

    config = SimConfig(duration=duration, dt=dt, coding=args.coding, seed=args.seed)
    return dict(dt=dt, target=target, inp=inp, eta=eta, neuron=neuron, synapse=synapse, config=config,
                target_hz=float(target / Hz), input_hz=float(inp / Hz), duration_ms=float(duration / ms))


def _user_model(args: argparse.Namespace):
    """(model, meta) of ``--model MODULE:FACTORY`` with the state_dict ``args.ckpt``; meta as a checkpoint's."""
    from bioconv.user_model import load_user_model

    if not args.dataset:
        raise ValueError("--model needs --dataset (mnist, cifar10 or digits): the calibration data and input shape")
    return load_user_model(args.model, args.ckpt, args.dataset, args.data_dir)


def _check_out(args: argparse.Namespace) -> None:
    """Fail on an unusable --out before the slow scan."""
    from bioconv.outpaths import check_output_path

    if args.out:
        check_output_path(args.out, "--out")


def _table(graph) -> str:
    norm = graph.meta["normalization"]
    achieved = norm.get("achieved_max_rate_hz") or {}
    rows = [f"{'layer':<12}{'lambda':>10}{'gain':>9}{'w scale':>11}{'b scale':>11}{'target Hz':>11}{'max Hz':>9}"]
    for name, lam in norm["lambda"].items():
        sc = norm["scale"][name]
        got = achieved.get(name)
        rows.append(f"{name:<12}{lam:>10.4g}{norm['gain'][name]:>9.4g}{sc['weight']:>11.4g}{sc['bias']:>11.4g}"
                    f"{norm['target_rate_hz'][name]:>11.1f}{'-' if got is None else f'{got:.1f}':>9}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    opts = _options(args)
    _check_out(args)
    ckpt = Path(args.ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}; train one with `bioconv train`")
    from bioconv import normalize
    from bioconv.ann import load_checkpoint
    from bioconv.data import load_dataset, subset
    from bioconv.from_torch import data_range, from_torch
    from bioconv.graphio import save_graph
    from bioconv.normalize import thresholds
    from bioconv.normalize.probes import make_probe
    from bioconv.pool_folding import prepare_pools

    t0 = time.perf_counter()
    model, meta = _user_model(args) if args.model else load_checkpoint(ckpt)
    graph = from_torch(model, meta["input_shape"], meta={"checkpoint": str(ckpt), "arch": meta.get("arch")},
                       input_range=data_range(meta.get("preprocessing", {})))
    graph = prepare_pools(graph, args.pools)
    calib = subset(load_dataset(meta["dataset"], "train", args.data_dir), args.calib, seed=args.seed)
    stats = normalize.activation_stats(graph, calib.images, percentiles=(args.percentile, 99.0, 99.9, 99.99))
    calibration = {"dataset": meta["dataset"], "split": "train", "n": len(calib), "seed": args.seed,
                   "engine": args.engine if args.norm in ("mcr", "spike") else None,
                   "sim": opts["config"].to_dict(), "checkpoint": str(ckpt)}
    common = dict(neuron=opts["neuron"], synapse=opts["synapse"], dt=opts["dt"], calibration=calibration)
    if args.norm in ("max", "robust"):
        pct = None if args.norm == "max" else args.percentile
        out = normalize.data_based_norm(graph, stats, percentile=pct, target_rate=opts["target"],
                                        input_rate=opts["inp"], **common)
    else:
        if args.calib_sim < 1:
            raise ValueError(f"--calib-sim must be >= 1 image, got {args.calib_sim}")
        n_sim = min(args.calib_sim, len(calib))
        sim = calib.take(slice(0, n_sim))
        calibration["n_simulated"] = n_sim
        popts = {"device": args.device} if args.engine == "brian2" else {}
        probe = make_probe(args.engine, sim.images, sim.labels, opts["config"], **popts)
        print(f"scanning {len(graph.spiking_layers)} layers on {n_sim} calibration images with the {args.engine} "
              f"engine ({opts['duration_ms']:g} ms each)")
        if args.norm == "mcr":
            out = normalize.mcr_norm(graph, stats, probe, target_rate=opts["target"], input_rate=opts["inp"],
                                     tolerance=args.tolerance, statistic=args.rate_stat,
                                     rate_percentile=args.rate_percentile, rho_from_slope=args.rho_from_slope,
                                     eta_factors=opts["eta"], calib_images=sim.images, calib_labels=sim.labels,
                                     **common)
        else:
            out = normalize.spike_norm(graph, stats, probe, input_rate=opts["inp"], **common)
        print(f"probe: {probe.calls} simulations, {probe.seconds:.1f} s")
    if args.form == "thresholds":
        out = thresholds.threshold_form(out)
    path = Path(args.out or f"runs/snn/{meta.get('arch', 'net')}-{args.norm}{opts['target_hz']:g}.bcv")
    save_graph(out, path)
    print(_table(out))
    print(f"input: λ0 = {stats.input_max:.4g} -> {opts['input_hz']:g} Hz; "
          f"neuron {opts['neuron'].kind} ({getattr(opts['neuron'], 'reset', '-')}), synapse {opts['synapse'].kind}")
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return 0
