r"""Which spiking populations feed which: the synaptic projections of a DAG Graph (no Brian2, no torch).

A spiking layer :math:`P` receives

.. math:: z_P = \sum_{(L, v)} A_L\, a_v + b_P,

one term per *incoming* weighted layer :math:`L` reading the view :math:`v` (a spiking
layer, the input, or a Flatten/Concat of them): the layer itself for Conv2d/Dense/pools,
the branch layers for an :class:`~bioconv.ir.Add`. A view is a list of *segments*
(flat ranges that belong to one population), so each term splits into one
:class:`Projection` per segment, with presynaptic indices relative to that population.
Engines create one synapse object per projection (Brian2: ``<L>_syn``, or
``<L>_syn_<source>`` when the view has several segments), and deliver the projections
of one population in this order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np

from bioconv import ir
from bioconv.connectivity import Connectivity, GatedMaxPool, layer_synapses, layer_weights


@dataclass(frozen=True)
class Segment:
    """Flat range ``[offset, offset + size)`` of a view that is population ``source``'s activity."""

    source: str
    offset: int
    size: int


@dataclass(frozen=True, eq=False)
class Projection:
    """Synapses of weighted layer ``layer`` from population ``source`` onto population ``target``."""

    name: str
    target: str
    source: str
    layer: ir.Layer
    segment: Segment
    n_segments: int
    synapses: Optional[Union[Connectivity, GatedMaxPool]]  # None: not built (a weight-shared conv pathway)


def segments(graph: ir.Graph, name: str) -> list[Segment]:
    """The populations behind ``name`` (input, spiking layer or view), in flat order."""
    if name == graph.input.name:
        return [Segment(name, 0, int(np.prod(graph.input.shape)))]
    layer = graph.layer(name)
    if ir.is_spiking(layer):
        return [Segment(name, 0, int(np.prod(layer.output_shape)))]
    if isinstance(layer, ir.VIEWS):
        out, offset = [], 0
        for src in graph.sources(name):
            for seg in segments(graph, src):
                out.append(Segment(seg.source, offset + seg.offset, seg.size))
            offset += int(np.prod(graph.layer(src).output_shape if src != graph.input.name else graph.input.shape))
        return out
    raise ValueError(f"layer {name!r} ({type(layer).__name__}, spiking=False) is a branch of an Add; "
                     "only an Add can read it")


def incoming(graph: ir.Graph, target: str) -> list[tuple[ir.Layer, str]]:
    """(weighted layer, the view it reads) of every term of population ``target``."""
    layer = graph.layer(target)
    if isinstance(layer, ir.Add):
        return [(graph.layer(b), graph.sources(b)[0]) for b in layer.inputs]
    if not ir.is_spiking(layer):
        raise ValueError(f"layer {target!r} has no neurons")
    return [(layer, graph.sources(target)[0])]


def bias(graph: ir.Graph, target: str) -> np.ndarray:
    """Per-neuron bias (flat) of population ``target``: the sum over its weighted terms (pools: 0)."""
    layer = graph.layer(target)
    shape = tuple(layer.output_shape)
    total = np.zeros(shape)
    for w, _ in incoming(graph, target):
        if isinstance(w, (ir.Conv2d, ir.Dense)):
            b = np.asarray(w.bias, dtype=np.float64)
            total = total + (b[:, None, None] if len(shape) == 3 else b)
    return total.ravel()


def _name(layer: ir.Layer, seg: Segment, n_segments: int) -> str:
    return f"{layer.name}_syn" if n_segments == 1 else f"{layer.name}_syn_{seg.source}"


def projections(graph: ir.Graph, target: str, weights_only: bool = False,
                skip_synapses: bool = False) -> list[Projection]:
    """The projections onto ``target`` in delivery order (terms in order, segments in flat order).

    A gated max-pool must read a single population (pool each branch before a Concat).
    ``skip_synapses``: do not build the synapse arrays of a single-segment projection
    (``synapses=None``; for weight-shared convolution pathways).
    """
    out = []
    for w, view in incoming(graph, target):
        segs = segments(graph, view)
        if skip_synapses and len(segs) == 1 and not isinstance(w, ir.MaxPool2d):
            out.append(Projection(_name(w, segs[0], 1), target, segs[0].source, w, segs[0], 1, None))
            continue
        conn = layer_synapses(w)
        if isinstance(conn, GatedMaxPool):
            if len(segs) != 1:
                raise ValueError(f"max-pool {w.name!r} reads a Concat of {len(segs)} populations; pool each branch "
                                 "before concatenating")
            out.append(Projection(_name(w, segs[0], 1), target, segs[0].source, w, segs[0], 1, conn))
            continue
        for seg in segs:
            if len(segs) == 1:
                part = conn
            else:
                keep = (conn.i >= seg.offset) & (conn.i < seg.offset + seg.size)
                part = Connectivity(conn.i[keep] - seg.offset, conn.j[keep], conn.w[keep], seg.size, conn.n_post)
            out.append(Projection(_name(w, seg, len(segs)), target, seg.source, w, seg, len(segs), part))
    return out


def projection_weights(graph: ir.Graph, target: str) -> dict[str, np.ndarray]:
    """Synapse name -> weights of the weighted projections onto ``target`` (same order as :func:`projections`)."""
    out = {}
    for w, view in incoming(graph, target):
        segs = segments(graph, view)
        if isinstance(w, ir.MaxPool2d):
            continue
        if len(segs) == 1:
            out[_name(w, segs[0], 1)] = layer_weights(w)
            continue
        conn = layer_synapses(w)
        for seg in segs:
            keep = (conn.i >= seg.offset) & (conn.i < seg.offset + seg.size)
            out[_name(w, seg, len(segs))] = conn.w[keep]
    return out
