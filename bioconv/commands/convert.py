"""Normalize a trained ANN checkpoint and write the spiking network as a Graph file (.bcv).

Example (MCR-Norm at 200 Hz, standard IF reset to zero, delta synapses)::

    bioconv convert runs/ann/cnn7-mnist.pt --norm mcr --target-rate 200Hz --input-rate 400Hz \\
        --calib 500 --engine torch --out runs/snn/cnn7-mcr200.bcv

and MCR-TF for a LIF with a 2 ms refractory period and alpha synapses (τ_s = 5 ms)::

    bioconv convert runs/ann/cnn7-mnist.pt --norm mcr-tf --neuron lif --refractory 2ms \\
        --synapse alpha --tau-syn 5ms --out runs/snn/cnn7-lif-tf200.bcv

Methods: the table :data:`bioconv.pipeline.METHODS` (``mcr``: MCR-Norm, gains scanned so every
layer's max rate hits the target; ``mcr-tf``: the same scan plus an offset current per layer fitted
against the measured transfer function, for neurons whose rate is not linear in their drive —
LIF, SRM, IF with reset to zero; ``max`` / ``robust``: data-based, max or percentile of ANN
activations; ``spike``: Spike-Norm with biases). Calibration images are a seeded subset of the
training split. The options build a :class:`bioconv.pipeline_spec.ConversionSpec` and the
conversion is :func:`bioconv.pipeline.conversion`, the same code the demo and the studies run.
The .bcv file also holds the source ANN (``bioconv simulate`` measures the loss against it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bioconv.units import parse_rate, parse_time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bioconv.pipeline import METHODS

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
    parser.add_argument("--reset", default="zero", choices=("zero", "subtract"),
                        help="IF/LIF reset (default zero). On cnn7 with mcr-tf the LIF with alpha synapses at 200 Hz "
                             "converted best with subtract, the LIF with delta synapses with zero (figures/README.md, "
                             "Fig. 11)")
    parser.add_argument("--tau-m", default="20ms", help="LIF membrane time constant (default 20ms)")
    parser.add_argument("--refractory", default="0ms", help="IF/LIF absolute refractory period (default 0ms)")
    parser.add_argument("--synapse", default="delta", choices=("delta", "alpha", "exponential"),
                        help="synapse model: delta, alpha or exponential (first-order current; tau from --tau-syn) "
                             "(default delta)")
    parser.add_argument("--tau-syn", default="1ms",
                        help="alpha synapse time constant, and the SRM's PSP kernel tau_s (default 1ms)")
    parser.add_argument("--tau-r", default="1ms", help="SRM refractory kernel time constant tau_r (default 1ms). It does the "
                        "integrator's job: with --tau-syn 5ms, 10ms converts best (figures/README.md, Fig. 11)")
    parser.add_argument("--schedule", default="brian2", choices=("brian2", "reset-first"),
                        help="order within a time step: brian2 (Brian2's default: a reset erases the input of the "
                             "step in which the neuron fires) or reset-first (reset, then that step's input; "
                             "converges as dt -> 0) (default brian2)")
    parser.add_argument("--target-rate", help="max firing rate of every layer (default 200Hz for mcr and mcr-tf, "
                        "else min(1000Hz, 1/dt)); lif-rate: the output layer's rate (default 200Hz), the hidden "
                        "rates are the trained network's own")
    parser.add_argument("--input-rate", help="input rate for the largest pixel (default 400Hz for mcr, else "
                        "min(1000Hz, 1/dt))")
    parser.add_argument("--percentile", type=float, default=None, help="robust: activation percentile; lif-rate: percentile of the calibration "
                        "logits that the output layer maps to --target-rate (default 99.9)")
    parser.add_argument("--calib", type=int, default=500, help="calibration images from the training split (default 500)")
    parser.add_argument("--calib-sim", type=int, default=50,
                        help="of those, the first N are simulated in the mcr/spike scans (default 50)")
    parser.add_argument("--engine", default="torch", choices=("torch", "brian2"), help="probe engine for mcr/spike")
    parser.add_argument("--device", default="cpp", choices=("runtime", "cpp"), help="brian2 probe device (default cpp)")
    parser.add_argument("--dt", default="1ms", help="time step (default 1ms)")
    parser.add_argument("--duration", default="300ms", help="calibration run per image (default 300ms)")
    parser.add_argument("--coding", default="bernoulli", choices=("bernoulli", "poisson", "current"),
                        help="input coding of the calibration runs; calibrate with the coding you will simulate with "
                             "(a LIF network calibrated with input spikes and run with current input is miscalibrated)")
    parser.add_argument("--tolerance", type=float, default=None, help="mcr: relative rate tolerance (default 0.02)")
    parser.add_argument("--rate-stat", default=None, choices=("max", "percentile"),
                        help="mcr: raw max or percentile of rates (default max)")
    parser.add_argument("--rate-percentile", type=float, default=None,
                        help="mcr: percentile for --rate-stat percentile (default 99.9)")
    parser.add_argument("--tf-offset", default=None, choices=("none", "layer", "channel"),
                        help="mcr-tf: offset current fitted per layer (default), per channel, or none; per channel "
                             "helps IF and LIF at 200 Hz and above (the LIF with alpha synapses most) but hurts the SRM "
                             "(figures/README.md, Fig. 11)")
    parser.add_argument("--tf-offset-sign", default=None, choices=("any", "positive"),
                        help="mcr-tf: 'positive' keeps the fitted offsets >= 0, never lowering the drive (default); "
                             "'any' lets them go negative")
    parser.add_argument("--tf-iterations", type=int, default=None,
                        help="mcr-tf: most fit/scan rounds per layer; they stop once the fitted intercept is within 1 %% "
                             "of the target (default 10; the LIF near its rheobase at 50 Hz needs 6-7)")
    parser.add_argument("--rho-from-slope", action=argparse.BooleanOptionalAction, default=None,
                        help="mcr, mcr-tf: divide each layer's input weights by its sources' measured rate slopes (default); "
                             "--no-rho-from-slope assumes the target rates, as the MCR-Norm paper does")
    parser.add_argument("--slopes", default=None, choices=("layer", "channel"),
                        help="mcr with measured slopes: one slope per layer (default) or per conv output channel")
    parser.add_argument("--eta", help="mcr: comma-separated bias factors to fine-tune, e.g. 0.9,1,1.1")
    parser.add_argument("--pools", default="fold", choices=("fold", "spiking"),
                        help="fold: average pools merged into the next layer (exact; every layer can hit the target "
                             "rate); spiking: IF pool neurons (rates on a staircase) (default fold)")
    parser.add_argument("--form", default="weights", choices=("weights", "thresholds"),
                        help="weights: thresholds 1; thresholds: threshold balancing (same spikes)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the calibration subset and of the calibration input spikes (default 0)")
    parser.add_argument("--data-dir", help="dataset folder (default: $BIOCONV_DATA_DIR or the user cache)")
    parser.add_argument("--out", help="output .bcv (default runs/snn/<arch>-<norm><rate>.bcv)")


def spec_from_args(args: argparse.Namespace):
    """The :class:`~bioconv.pipeline_spec.ConversionSpec` of the command line; ValueError names the fix."""
    from bioconv.pipeline import method, method_options, rates
    from bioconv.pipeline_spec import ConversionSpec

    from bioconv.normalize.scaling import check_rate

    method(args.norm)  # unknown names: an error naming the known ones
    dt = parse_time(args.dt)
    if not float(dt) > 0:
        raise ValueError(f"--dt must be > 0, got {args.dt}")
    for flag, value in (("--target-rate", args.target_rate), ("--input-rate", args.input_rate)):
        if value:
            check_rate(parse_rate(value), flag, dt)
    if args.calib < 1:
        raise ValueError(f"--calib must be >= 1 image, got {args.calib}")
    if args.calib_sim < 1:
        raise ValueError(f"--calib-sim must be >= 1 image, got {args.calib_sim}")
    options: dict = {}
    for key, value in (("percentile", args.percentile), ("tolerance", args.tolerance),
                       ("rate_stat", args.rate_stat), ("rate_percentile", args.rate_percentile),
                       ("offset", args.tf_offset), ("offset_sign", args.tf_offset_sign), ("slopes", args.slopes),
                       ("iterations", args.tf_iterations)):
        if value is not None:
            options[key] = value
    if args.rho_from_slope is not None:
        options["rho_from_slope"] = bool(args.rho_from_slope)
    if args.eta:
        try:
            options["eta"] = [float(x) for x in args.eta.split(",")]
        except ValueError:
            raise ValueError(f"--eta must be comma-separated numbers such as 0.9,1,1.1, got {args.eta!r}") from None
    if "percentile" in options and not 0 < options["percentile"] <= 100:
        raise ValueError(f"--percentile must be in (0, 100], got {options['percentile']}")
    if "tolerance" in options and not 0 < options["tolerance"] < 1:
        raise ValueError(f"--tolerance must be in (0, 1), got {options['tolerance']}")
    if "iterations" in options and options["iterations"] < 0:
        raise ValueError(f"--tf-iterations must be >= 0, got {options['iterations']}")
    spec = ConversionSpec(
        method=args.norm, neuron=args.neuron, reset=args.reset, tau_m=parse_time(args.tau_m),
        refractory=parse_time(args.refractory, allow_zero=True), synapse=args.synapse, schedule=args.schedule,
        tau_syn=parse_time(args.tau_syn),
        tau_r=parse_time(args.tau_r), dt=parse_time(args.dt), duration=parse_time(args.duration),
        target_rate=parse_rate(args.target_rate) if args.target_rate else None,
        input_rate=parse_rate(args.input_rate) if args.input_rate else None,
        coding=args.coding, pools=args.pools, form=args.form, calib_n=args.calib, calib_sim=args.calib_sim,
        calib_seed=args.seed, calib_engine=args.engine, calib_device=args.device, options=options)
    method_options(spec)  # options that the method does not take: an error naming its options
    rates(spec)
    return spec


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
    from brian2 import Hz

    from bioconv.pipeline import conversion, method, rates, save_conversion

    spec = spec_from_args(args)
    _check_out(args)
    if args.model and not args.dataset:
        raise ValueError("--model needs --dataset (mnist, cifar10 or digits): the calibration data and input shape")
    ckpt = Path(args.ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}; train one with `bioconv train`")
    if method(spec.method).uses_probe:
        print(f"scanning with the {spec.calib_engine} engine on {min(spec.calib_sim, spec.calib_n)} calibration "
              f"images ({spec.duration} each)")
    result = conversion(spec, ckpt, args.data_dir, progress=True, model=args.model, dataset=args.dataset)
    target, inp = rates(spec)
    arch = result.snn.meta.get("arch") or "net"
    path = Path(args.out or f"runs/snn/{arch}-{spec.method}{float(target / Hz):g}.bcv")
    save_conversion(result.snn, result.ann, path)
    print(_table(result.snn))
    neuron = spec.neuron_model()
    print(f"input: λ0 = {result.snn.meta['normalization'].get('lambda_input') or float('nan'):.4g} -> "
          f"{float(inp / Hz):g} Hz; neuron {neuron.kind} ({getattr(neuron, 'reset', '-')}), synapse {spec.synapse}")
    if result.probe_calls:
        print(f"probe: {result.probe_calls} simulations")
    print(f"wrote {path} (with the source ANN) in {result.seconds:.1f} s")
    return 0
