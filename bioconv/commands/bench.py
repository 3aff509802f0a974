"""Benchmarks that print figures (not timed tests): ``bioconv bench brian2``, ``torch`` and ``peer``
(SpikingJelly side by side, needs the ``peer`` extra).

Each benchmark lives in :mod:`bioconv.benchmarks` and measures in one run, printing
the ratios it reports.
"""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "brian2": "bioconv.benchmarks.brian2_bench",
    "torch": "bioconv.benchmarks.torch_bench",
    "peer": "bioconv.benchmarks.peer_bench",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("which", choices=sorted(BENCHMARKS), help="which engine to benchmark")
    parser.add_argument("--ckpt", help="trained checkpoint (.pt) or converted graph (.bcv); default: a cnn7 with random weights normalized on MNIST")
    parser.add_argument("--n", type=int, default=100, help="number of MNIST test images (default 100)")
    parser.add_argument("--duration", default="100ms", help="simulated time per image, with unit (default 100ms)")
    parser.add_argument("--dt", default="1ms", help="time step, with unit (default 1ms)")
    parser.add_argument("--workers", type=int, default=2, help="standalone binaries run in parallel (default 2)")
    parser.add_argument("--pools", choices=("spiking", "fold"), default="spiking",
                        help="average pools as IF layers (default; the network of the first speed benchmarks) or folded "
                             "into the next layer (as `bioconv convert` does by default)")
    parser.add_argument("--conv", choices=("both", "explicit", "procedural"), default="both",
                        help="brian2 benchmark: which convolution synapses to build and compare (default both)")
    parser.add_argument("--fresh-build", action="store_true",
                        help="brian2 benchmark: compile both builds in this run (default: reuse cached builds and "
                             "report the compile time measured when they were built)")
    parser.add_argument("--device", default="cpu", help="torch device for the torch benchmark (cpu or cuda)")
    parser.add_argument("--configs", action="store_true",
                        help="torch: add one fused float64 row per model configuration (IF/LIF/SRM x delta/alpha, "
                             "refractory, current input, spike-time recording)")
    parser.add_argument("--steps", type=int, default=100, help="peer: time steps of 1 ms (default 100)")
    parser.add_argument("--batch", type=int, default=50, help="peer: images per batch (default 50)")
    parser.add_argument("--calib", type=int, default=500, help="peer: training images for max norm (default 500)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="peer: timed runs per engine after one warm-up batch; the best is reported (default 3)")
    parser.add_argument("--data-dir", help="dataset folder (default: $BIOCONV_DATA_DIR or the user cache)")


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHMARKS[args.which])
    return int(module.main(args) or 0)
