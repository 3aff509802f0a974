"""Import a NIR graph (.nir, from bioconv, snnTorch, Norse, ...) as a bioconv Graph file (.bcv).

Examples::

    bioconv import runs/nir/cnn7.nir --out runs/snn/cnn7-from-nir.bcv
    bioconv import snntorch-net.nir --dt 0.1ms --discretization euler --out runs/snn/snntorch.bcv

``--dt`` is the exporter's time step (snnTorch 0.1ms, Norse 1ms, bioconv 1ms): a spike
carries the charge dt·w. ``--discretization euler`` reproduces the exporter's per-step
leak (LIF decays by 1 - dt/tau per step) instead of the continuous ODE. ``--reset
subtract`` for graphs whose exporter writes reset by subtraction as v_reset = 0 (snnTorch).
Unsupported NIR nodes are errors that name them. Simulate the result with
``bioconv simulate NET.bcv --dt <the same dt>``.
"""

from __future__ import annotations

import argparse
import time

from bioconv.units import parse_rate, parse_time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("nir_file", help="NIR graph file (.nir, HDF5)")
    parser.add_argument("--out", required=True, help="output graph file (.bcv), written atomically")
    parser.add_argument("--dt", default="1ms", help="spike pulse width: the exporter's time step (default 1ms)")
    parser.add_argument("--discretization", default="continuous", choices=("continuous", "euler"),
                        help="continuous: the NIR ODE; euler: the exporter's per-step decay (default continuous)")
    parser.add_argument("--reset", default="zero", choices=("zero", "subtract"),
                        help="reset of the imported neurons (NIR's v_reset must be 0) (default zero)")
    parser.add_argument("--rate-scale", default=None,
                        help="input rate per unit pixel, e.g. 1000Hz (default: from the file, else 1/dt)")


def run(args: argparse.Namespace) -> int:
    from brian2 import Hz

    from bioconv.graphio import save_graph
    from bioconv.nirio import ImportOptions, from_nir

    rate = None if args.rate_scale is None else float(parse_rate(args.rate_scale) / Hz)
    opts = ImportOptions(dt=parse_time(args.dt), discretization=args.discretization, reset=args.reset,
                         rate_scale_hz=rate)
    t0 = time.perf_counter()
    graph = from_nir(args.nir_file, opts)
    save_graph(graph, args.out)
    for layer in graph.layers:
        neuron = graph.neuron_for(layer.name) if hasattr(layer, "threshold") else None
        what = "-" if neuron is None else neuron.kind + (f" tau_m={neuron.tau_m}" if hasattr(neuron, "tau_m") else "")
        print(f"{layer.name:<16}{type(layer).__name__:<10}{str(tuple(layer.output_shape)):<16}{what}")
    print(f"synapse {graph.synapse.kind}; wrote {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0
