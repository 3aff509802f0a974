"""Train an ANN from the model zoo (or any spec string) and write a checkpoint.

The MCR-Norm paper Table 2 settings: cross-entropy loss, Adadelta (lr 1.0), batch 100; early
stopping, augmentation and an L2 penalty are optional. The checkpoint (.pt) holds the
weights plus metadata: spec, arch, dataset, input shape, preprocessing, seed, test
accuracy, per-epoch history, training time and software versions.

example:
  bioconv train --arch cnn7 --dataset mnist --epochs 5 --seed 0 --out runs/ann/cnn7-mnist.pt
"""

from __future__ import annotations

import argparse

from bioconv.ann.zoo import ZOO


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="cnn7",
                        help=f"zoo architecture: {', '.join(sorted(ZOO))} (default cnn7); ignored if --spec is given")
    parser.add_argument("--spec", help="architecture spec string instead of --arch, e.g. 28x28-32c3-p2-32c3-p2-32FC-10FC "
                        "(NcK[BN] conv with 'same' padding, pK avg pool, mpK max pool, Dp dropout, NFC[BN] dense)")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "cifar10", "digits"],
                        help="dataset (default mnist); MNIST in [0, 1], CIFAR-10 per-channel mean/std normalized")
    parser.add_argument("--epochs", type=int, default=5, help="maximum number of training epochs (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed for weight init, data order, dropout, augmentation (default 0)")
    parser.add_argument("--out", required=True, help="checkpoint file to write (.pt), written atomically")
    parser.add_argument("--data-dir", help="dataset folder (default: $BIOCONV_DATA_DIR, then ~/.cache/bioconv)")
    parser.add_argument("--batch-size", type=int, default=100, help="mini-batch size in images (default 100)")
    parser.add_argument("--lr", type=float, default=1.0, help="Adadelta learning rate (default 1.0)")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty coefficient (default 0; the MCR-Norm paper uses L2 on CIFAR-10)")
    parser.add_argument("--early-stopping", type=int, metavar="N",
                        help="stop after N epochs without validation-accuracy gain (holds out 10%% of the training set; best weights kept)")
    parser.add_argument("--augment", action="store_true",
                        help="random shifts of up to --shift pixels (and horizontal flips for CIFAR-10)")
    parser.add_argument("--shift", type=int, default=2, help="largest random shift in pixels with --augment (default 2)")
    parser.add_argument("--lr-decay", type=float, default=1.0,
                        help="the learning rate is multiplied by this factor after every epoch (default 1: constant)")
    parser.add_argument("--max-train", type=int, metavar="N", help="train on a seeded random subset of N training images")
    parser.add_argument("--init", default="he", choices=["he", "torch"],
                        help="weight init: he = He normal N(0, 2/fan_in) with zero bias (default), torch = torch's default")
    parser.add_argument("--activation", default="relu", choices=("relu", "clip", "softlif"),
                        help="hidden activation: relu (default); clip: a ReLU with a trained ceiling, quantized "
                             "to --levels steps while training (training for the spike budget; saved as "
                             "Hardtanh(0, c), whose ceiling conversion maps to the max rate); softlif: the LIF "
                             "neuron's own rate curve, smoothed (Hunsberger & Eliasmith 2015; convert with "
                             "--method lif-rate --neuron lif and the same --tau-m and --refractory)")
    parser.add_argument("--tau-m", default="20ms", help="with --activation softlif: the LIF membrane time constant "
                        "tau_RC, with unit (default 20ms)")
    parser.add_argument("--refractory", default="2ms", help="with --activation softlif: the LIF refractory period, "
                        "with unit (default 2ms)")
    parser.add_argument("--rate-scale", default="50Hz", help="with --activation softlif: the rate that an activation "
                        "of 1 stands for (amplitude A = 1/rate), with unit (default 50Hz; sets the typical rates)")
    parser.add_argument("--max-rate", default=None, help="with --activation softlif: keep the hidden rates below this "
                        "rate, with unit (a penalty on the excess, see --rate-penalty); e.g. 50Hz for the low-rate regime "
                        "(the rate scale alone does not lower the rates)")
    parser.add_argument("--rate-penalty", type=float, default=1.0, help="with --max-rate: weight of the penalty "
                        "mean((r - max)+^2)/max^2 per SoftLIF layer, added to the cross-entropy (default 1)")
    parser.add_argument("--rate-noise", default="0Hz", help="with --activation softlif: standard deviation of Gaussian "
                        "noise added to the hidden rates while training, with unit (default 0Hz; e.g. 10Hz, for the "
                        "variability of spiking rates at low rates)")
    parser.add_argument("--smoothing", type=float, default=0.05, help="with --activation softlif: the softplus "
                        "smoothing gamma of the rate curve at the rheobase, in units of the threshold (default 0.05)")
    parser.add_argument("--levels", type=int, default=None,
                        help="with --activation clip: the spike budget, max rate x T (50 Hz for 100 ms: 5); "
                             "omit for an unquantized clipped ReLU")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from bioconv.ann import train_and_save
    from bioconv.outpaths import check_output_path

    check_output_path(args.out, "--out")
    for option, value in (("--batch-size", args.batch_size), ("--epochs", args.epochs)):
        if value < 1:
            raise ValueError(f"{option} must be >= 1, got {value}")
    if args.shift < 0:
        raise ValueError(f"--shift must be >= 0 pixels, got {args.shift}")
    if args.max_train is not None and args.max_train < 1:
        raise ValueError(f"--max-train must be >= 1, got {args.max_train}")
    if args.levels is not None and (args.activation != "clip" or args.levels < 1):
        raise ValueError(f"--levels {args.levels} needs --activation clip and a budget >= 1 spike")
    from brian2 import second

    from bioconv.units import parse_quantity, parse_rate, parse_time

    softlif = None
    if args.activation == "softlif":
        if not args.smoothing >= 0:
            raise ValueError(f"--smoothing must be >= 0 (units of the threshold), got {args.smoothing}")
        softlif = {"tau_rc": float(parse_time(args.tau_m) / second),
                   "tau_ref": float(parse_time(args.refractory, allow_zero=True) / second),
                   "amplitude": float(1.0 / (parse_rate(args.rate_scale) * second)),
                   "smoothing": float(args.smoothing),
                   "noise_hz": float(parse_quantity(args.rate_noise, "rate", allow_zero=True) * second)}
    elif (args.tau_m, args.refractory, args.rate_scale, args.smoothing, args.max_rate, args.rate_noise) != (
            "20ms", "2ms", "50Hz", 0.05, None, "0Hz"):
        raise ValueError("--tau-m, --refractory, --rate-scale, --smoothing, --max-rate and --rate-noise belong to "
                         "--activation softlif")
    if args.max_rate is None and args.rate_penalty != 1.0:
        raise ValueError("--rate-penalty needs --max-rate")
    if not args.rate_penalty >= 0:
        raise ValueError(f"--rate-penalty must be >= 0, got {args.rate_penalty}")
    max_rate = None if args.max_rate is None else float(parse_rate(args.max_rate) * second)  # in Hz
    if args.threads:
        torch.set_num_threads(args.threads)
    _, meta = train_and_save(
        args.spec or args.arch, args.dataset, args.out, epochs=args.epochs, seed=args.seed, data_dir=args.data_dir,
        max_train=args.max_train, batch_size=args.batch_size, progress=not args.no_progress, lr=args.lr,
        weight_decay=args.weight_decay, early_stopping=args.early_stopping, augment=args.augment, device=args.device,
        init=args.init, shift=args.shift, lr_decay=args.lr_decay, activation=args.activation, levels=args.levels,
        softlif=softlif, max_rate_hz=max_rate, rate_penalty=args.rate_penalty,
    )
    for row in meta["history"]:
        extra = f"  val acc {row['val_accuracy']:.4f}" if "val_accuracy" in row else ""
        extra += f"  test acc {row['test_accuracy']:.4f}" if "test_accuracy" in row else ""
        print(f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  train acc {row['train_accuracy']:.4f}{extra}"
              f"  ({row['time_s']:.0f} s)")
    print(f"{meta['arch']} ({meta['spec']}) on {meta['dataset']}: test accuracy {100 * meta['test_accuracy']:.2f} % "
          f"after {len(meta['history'])} epochs, {meta['train_time_s']:.0f} s training; wrote {args.out}")
    return 0
