r"""Plans of the torch engine: what each population of a graph reads, with its models.

:func:`compile_graph` turns a converted :class:`~bioconv.ir.Graph` into one
:class:`LayerPlan` per spiking population: its dynamics (from the models layer,
:mod:`bioconv.engines.torch_models`), threshold and bias per neuron, and its incoming terms
(:class:`Inbound`): weight-shared ``conv2d``/``linear`` weights for dense propagation, or
per-spike synapse tables (presynaptic index → targets and weights, in Brian2's order) for
event propagation. :mod:`bioconv.engines.torch` runs the plans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from brian2 import second

from bioconv import ir
from bioconv.connectivity import layer_synapses
from bioconv.engines import torch_models as tm
from bioconv.simulation import SimConfig

Propagation = Literal["auto", "event", "dense", "fused"]


@dataclass(frozen=True, eq=False)
class Inbound:
    """One incoming term of a population: weighted layer ``layer`` reading the populations ``sources``
    (the segments of its view, in flat order).

    ``weight`` (dense propagation): the conv/dense weight mapped through the on_pre expression
    (:meth:`~bioconv.models.Dynamics.weights`).
    ``tables`` (event propagation): per segment, the outgoing synapses of every presynaptic
    neuron as a padded table (n_pre, max fan-out) of postsynaptic indices and weights in
    Brian2's synapse order (padding adds 0.0 to neuron 0, which changes nothing).
    """

    layer: Any
    sources: tuple[str, ...]
    weight: Optional[torch.Tensor]
    tables: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    def drive(self, pres: dict[str, torch.Tensor], t0: int, t1: int, dtype: torch.dtype) -> torch.Tensor:
        """Dense synaptic input (Tc, B, n) of steps [t0, t1) from the presynaptic spikes."""
        block = torch.cat([pres[s][t0:t1].to(dtype) for s in self.sources], dim=-1)
        tc, b = block.shape[:2]
        layer = self.layer
        x = block.reshape(tc * b, *layer.input_shape)
        if isinstance(layer, ir.Conv2d):
            padding = layer.padding
            if layer.padding_mode != "zeros" and any(padding):
                py, px = padding
                x = F.pad(x, (px, px, py, py), mode=_TORCH_PAD[layer.padding_mode])
                padding = (0, 0)
            out = F.conv2d(x, self.weight, stride=layer.stride, padding=padding, dilation=layer.dilation,
                           groups=layer.groups)
        elif isinstance(layer, ir.Dense):
            out = F.linear(x, self.weight)
        else:  # pragma: no cover - pools propagate events, MaxPool2d is gated in _run_layer
            raise AssertionError(type(layer))
        return out.reshape(tc, b, -1)


_TORCH_PAD = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """One spiking population compiled for torch: propagator, constants and its incoming terms."""

    layer: Any
    prop: tm.Dynamics
    theta: torch.Tensor  # (1, n)
    i_bias: torch.Tensor  # (1, n)
    inbound: tuple[Inbound, ...]
    n: int

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def dense(self) -> bool:
        return any(ib.weight is not None for ib in self.inbound)


def _layer_dynamics(graph: ir.Graph, layer: Any, neuron: Any, config: SimConfig, dt_s: float) -> tm.Dynamics:
    """The layer's :class:`~bioconv.models.Dynamics`: the max-pool relay, the integrating readout, or its model."""
    if isinstance(layer, ir.MaxPool2d):
        return tm.relay_dynamics(graph.schedule)
    if config.readout == "integrate" and layer.name == graph.spiking_layers[-1].name:
        return tm.readout_dynamics(neuron, graph.synapse, dt_s)
    return tm.make_dynamics(neuron, graph.synapse, dt_s, graph.schedule)


def _event_table(conn: Any, weights: Any, dtype: torch.dtype, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded per-presynaptic-neuron synapse table of one projection's :class:`Connectivity`."""
    order = np.argsort(conn.i, kind="stable")  # Brian2 order: by presynaptic neuron, then synapse index
    pre, post, w = conn.i[order], conn.j[order], weights(conn.w[order])
    deg = np.bincount(pre, minlength=conn.n_pre)
    width = int(deg.max(initial=1))
    starts = np.concatenate([[0], np.cumsum(deg)[:-1]])
    col = np.arange(len(pre)) - starts[pre]
    targets = np.zeros((conn.n_pre, width), dtype=np.int64)
    table = np.zeros((conn.n_pre, width), dtype=np.float64)
    targets[pre, col] = post
    table[pre, col] = w
    return torch.as_tensor(targets, device=device), torch.as_tensor(table, dtype=dtype, device=device)


def _per_neuron(values: Any, shape: tuple[int, ...], dtype: torch.dtype, device: Any) -> torch.Tensor:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and len(shape) == 3:
        arr = arr[:, None, None]
    arr = np.broadcast_to(arr, shape).reshape(1, -1)
    return torch.tensor(arr, dtype=dtype, device=device)


def compile_graph(
    graph: ir.Graph, config: SimConfig, dtype: torch.dtype, device: Any, propagation: Propagation = "event"
) -> list[LayerPlan]:
    """The per-population plans of ``graph``; raises ``ValueError`` for missing or unknown models."""
    from bioconv import projections as pj

    if graph.neuron is None and not graph.layer_neurons:
        raise ValueError("graph has no neuron model; convert it first (graph.with_models(neuron=IF(), synapse=Delta()))")
    if graph.synapse is None:
        raise ValueError("graph has no synapse model; use graph.with_models(synapse=bioconv.synapses.Delta())")
    dt_s = float(config.dt / second)
    plans = []
    for layer in graph.spiking_layers:
        neuron = graph.neuron_for(layer.name)
        if neuron is None:
            raise ValueError(f"layer {layer.name!r} has no neuron model; set Graph.neuron or layer_neurons")
        prop = _layer_dynamics(graph, layer, neuron, config, dt_s)
        shape = tuple(layer.output_shape)
        inbound = []
        if isinstance(layer, ir.MaxPool2d):
            (proj,) = pj.projections(graph, layer.name)  # raises for a pool on a Concat
            inbound.append(Inbound(layer, (proj.source,), None, ()))
        else:
            projs = pj.projections(graph, layer.name)
            for w, view in pj.incoming(graph, layer.name):
                mine = [p for p in projs if p.layer is w]
                sources = tuple(p.source for p in mine)
                if propagation == "event" or isinstance(w, ir.AvgPool2d):
                    # pools always propagate events: one target per spike is cheaper than a dense pool
                    tables = tuple(_event_table(p.synapses, prop.weights, dtype, device) for p in mine)
                    inbound.append(Inbound(w, sources, None, tables))
                else:
                    weight = torch.as_tensor(prop.weights(w.weight), dtype=dtype, device=device)
                    inbound.append(Inbound(w, sources, weight, ()))
        i_bias = _per_neuron(pj.bias(graph, layer.name).reshape(shape), shape, dtype, device)
        theta = _per_neuron(layer.threshold, shape, dtype, device)
        plans.append(LayerPlan(layer, prop, theta, i_bias, tuple(inbound), int(np.prod(shape))))
    return plans
