"""Run a converted Graph (.bcv) in Brian2 (or the torch engine) on a dataset.

Prints the accuracy of the source ANN (the trained network, stored in the .bcv by
``bioconv convert``; numpy forward, no torch) on the same images, the SNN accuracy, the
conversion loss (ANN minus SNN, in percentage points) with the number of images on which
only one of the two is right (McNemar's test), with Wilson 95 % intervals and ties in the
count readout counted as wrong, the mean and max firing rate per layer in Hz and the spikes per image, and writes
a tidy table (one row per image x layer) to --out.

examples:
  bioconv simulate runs/cnn7.bcv --device cpp --n 1000 --workers 2 --out results/cnn7-cpp.parquet
  bioconv simulate runs/cnn7.bcv --engine torch --n 10000 --duration 100ms --coding poisson
  bioconv simulate runs/cnn7-lif.bcv --engine torch --duration 300ms --readout count-voltage
"""

from __future__ import annotations

import argparse
import time

import numpy as np


#: what the accuracy line says about each readout's rule
READOUT_NOTES = {"count": ", ties counted wrong", "count-voltage": ", count ties broken by the potential"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("net", help="converted graph file (.bcv) written by `bioconv convert`")
    parser.add_argument("--engine", choices=["brian2", "torch"], default="brian2", help="simulator (default brian2)")
    parser.add_argument("--device", choices=["runtime", "cpp", "cuda"], default="cpp",
                        help="brian2: runtime, cpp_standalone or cuda_standalone; torch: cuda runs on the GPU (default cpp)")
    parser.add_argument("--target", choices=["numpy", "cython"], default="numpy", help="brian2 runtime code target")
    parser.add_argument("--conv", choices=["procedural", "explicit"], default="procedural",
                        help="brian2 convolution synapses: weight-shared, computed from kernel and geometry (cpp/cuda "
                             "standalone), or unrolled into explicit Synapses (default procedural; runtime mode always "
                             "unrolls)")
    parser.add_argument("--dataset", default=None, help="mnist, cifar10 or digits (default: the graph's dataset or mnist)")
    parser.add_argument("--split", choices=["test", "train"], default="test")
    parser.add_argument("--n", type=int, default=1000, help="number of images, the first N of the split (default 1000)")
    parser.add_argument("--duration", default="100ms", help="simulated time per image (default 100ms)")
    parser.add_argument("--dt", default="1ms", help="time step (default 1ms)")
    parser.add_argument("--bin", default=None, help="width of the accuracy-vs-time bins (default: dt)")
    parser.add_argument("--coding", choices=["bernoulli", "poisson", "current"], default="bernoulli")
    parser.add_argument("--readout", choices=["count", "count-voltage", "voltage", "integrate"], default="count",
                        help="count: most output spikes (ties wrong); count-voltage: most output spikes, ties broken "
                             "by the highest potential; integrate: non-spiking integrating output layer, highest "
                             "potential wins; voltage: highest potential of the spiking output neurons (default count)")
    parser.add_argument("--record-times", nargs="*", default=[], metavar="LAYER", help="layers whose spike times are kept")
    parser.add_argument("--workers", type=int, default=1, help="binaries (brian2 standalone) run in parallel (default 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per binary run / torch batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the input spike trains (default 0)")
    parser.add_argument("--data-dir", help="dataset folder (default: $BIOCONV_DATA_DIR, then the user cache)")
    parser.add_argument("--out", help="tidy result table (.parquet or .csv), written atomically")


def run(args: argparse.Namespace) -> int:
    from bioconv.data import load_dataset, subset
    from bioconv.engines import simulate
    from bioconv.graphio import load_graph
    from bioconv.simulation import SimConfig, write_table_atomic
    from bioconv.units import parse_time

    from bioconv.outpaths import check_output_path

    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1 image, got {args.batch_size}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.out:
        check_output_path(args.out, "--out", suffixes=(".parquet", ".csv"))
    dt = parse_time(args.dt)
    config = SimConfig(duration=parse_time(args.duration), dt=dt, bin=parse_time(args.bin) if args.bin else dt,
                       coding=args.coding, readout=args.readout, seed=args.seed, record_times=tuple(args.record_times))
    graph = load_graph(args.net)
    dataset = args.dataset or graph.meta.get("dataset") or "mnist"
    ds = subset(load_dataset(dataset, args.split, args.data_dir), args.n)
    if tuple(ds.images.shape[1:]) != tuple(graph.input.shape):
        raise ValueError(f"{dataset} images {ds.images.shape[1:]} do not fit the graph input {graph.input.shape}")
    from bioconv.pipeline import ann_predictions, load_source_ann

    source = load_source_ann(args.net)
    ann_label = "source ANN"
    if source is None:  # an older .bcv: the normalized graph's ANN is not the trained network (bias scaling)
        source, ann_label = graph, "normalized graph's ANN (no source ANN in this file; re-run `bioconv convert`)"
    ann_pred = ann_predictions(source, ds.images)
    ann_acc = float((ann_pred == ds.labels).mean())

    options: dict = {}
    if args.engine == "brian2":
        options = dict(device=args.device, workers=args.workers, target=args.target, progress=True,
                       batch_size=args.batch_size, conv=args.conv)
    else:
        options = dict(device="cuda" if args.device == "cuda" else "cpu")
        if args.batch_size:
            options["batch_size"] = args.batch_size
    start = time.perf_counter()
    result = simulate(graph, ds.images, ds.labels, config, engine=args.engine, **options)
    wall = time.perf_counter() - start

    print(f"{args.net}: {len(ds)} {dataset} {args.split} images, {args.engine}"
          f"{' ' + args.device if args.engine == 'brian2' else ''}, T={args.duration}, dt={args.dt}, {args.coding}")
    from bioconv.stats import count_predictions, mcnemar, wilson_interval

    if args.readout == "count":  # ties (and silence) count as wrong, as in the studies
        snn_pred = count_predictions(result.output_counts[:, -1, :])
    else:
        snn_pred = result.predictions()[:, -1]
    snn_ok, ann_ok = snn_pred == ds.labels, ann_pred == ds.labels
    snn_acc = float(snn_ok.mean())
    (alo, ahi), (slo, shi) = wilson_interval(int(ann_ok.sum()), len(ds)), wilson_interval(int(snn_ok.sum()), len(ds))
    test = mcnemar(ann_ok, snn_ok)
    print(f"ANN accuracy  {100 * ann_acc:6.2f} %  [{100 * alo:.2f}, {100 * ahi:.2f}] ({ann_label})")
    print(f"SNN accuracy  {100 * snn_acc:6.2f} %  [{100 * slo:.2f}, {100 * shi:.2f}] (readout {args.readout} at "
          f"T = {args.duration}{READOUT_NOTES.get(args.readout, '')}; Wilson 95 %)")
    print(f"conversion loss {100 * (ann_acc - snn_acc):.2f} points; only the ANN right on {test.b}, only the SNN on "
          f"{test.c} of {len(ds)} images (McNemar exact p = {test.p_exact:.3g})")
    acc_t = result.accuracy_vs_time()
    times = result.bin_times_ms()
    marks = sorted({len(times) // 4, len(times) // 2, len(times) - 1} - {-1})
    print("accuracy vs time: " + ", ".join(f"{times[i]:g} ms {100 * acc_t[i]:.1f} %" for i in marks))
    print(f"{'layer':<14}{'neurons':>9}{'mean Hz':>10}{'max Hz':>10}")
    for name in result.layer_names:
        rates = result.rates_hz(name)
        print(f"{name:<14}{rates.shape[1]:>9}{rates.mean():>10.2f}{rates.max():>10.1f}")
    print(f"spikes per image {result.spikes_per_image().mean():.0f}; "
          f"{wall:.1f} s total, {len(ds) / wall:.2f} images/s")
    compile_s = result.timings.get("compile_s")
    if compile_s:
        print(f"compile {compile_s:.1f} s (once per network structure)")
    if args.out:
        path = write_table_atomic(result.to_table(), args.out)
        print(f"wrote {path}")
    return 0
