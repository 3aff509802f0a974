"""Export a converted Graph (.bcv) to the Neuromorphic Intermediate Representation (NIR).

Example::

    bioconv export runs/snn/cnn7-mcr200.bcv --to nir runs/nir/cnn7-mcr200.nir

IF/LIF neurons with reset to zero and delta synapses (LIF with exponential synapses as
CubaLIF) export; reset by subtraction, alpha synapses, SRM, refractory periods and the
gated max-pool are errors that name the layer. ``--dt`` is the spike pulse width (the time
step a discrete simulator should use); it sets NIR's ``r`` and the affine bias scaling.
"""

from __future__ import annotations

import argparse
import time

from bioconv.units import parse_time

FORMATS = ("nir",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("net", help="converted graph file (.bcv) written by `bioconv convert` or `bioconv import`")
    parser.add_argument("out", help="output file (.nir, HDF5), written atomically")
    parser.add_argument("--to", default="nir", help="output format: nir (default nir)")
    parser.add_argument("--dt", default="1ms", help="spike pulse width / time step of the NIR reader (default 1ms)")


def run(args: argparse.Namespace) -> int:
    if args.to not in FORMATS:
        raise ValueError(f"unknown export format {args.to!r}; choose one of {', '.join(FORMATS)}")
    dt = parse_time(args.dt)
    from bioconv.graphio import load_graph
    from bioconv.nirio import write_nir

    t0 = time.perf_counter()
    graph = load_graph(args.net)
    path = write_nir(graph, args.out, dt=dt)
    print(f"wrote {path} ({len(graph.spiking_layers)} spiking layers, dt {args.dt}) in {time.perf_counter() - t0:.1f} s")
    return 0
