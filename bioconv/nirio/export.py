"""bioconv Graph → ``nir.NIRGraph`` (the mapping and its maths: :mod:`bioconv.nirio`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from brian2 import Quantity, ms, second

from bioconv import ir
from bioconv.atomic import atomic_path
from bioconv.neurons import IF, LIF, _check_time, model_to_dict
from bioconv.synapses import Delta, Exponential

#: node-name suffixes of the nodes a layer adds next to its linear node
NEURON_SUFFIX, SCALE_SUFFIX = "_neuron", "_scale"


def _nir():
    try:
        import nir
    except ModuleNotFoundError as exc:  # pragma: no cover - the extra is installed in CI
        raise ValueError("NIR support needs the `nir` package: pip install 'nir==1.0.8' (extra [nir])") from exc
    return nir


def _seconds(value: Quantity) -> float:
    return float(value / second)


def _per_neuron(values: Any, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and len(shape) == 3:
        arr = arr[:, None, None]
    return np.ascontiguousarray(np.broadcast_to(arr, shape), dtype=np.float64)


def _threshold_form(threshold: Any) -> str:
    ndim = np.asarray(threshold).ndim
    return "scalar" if ndim == 0 else "channel" if ndim == 1 else "neuron"


def _check_exportable(graph: ir.Graph, layer: ir.Layer, neuron: Any) -> None:
    where = f"layer {layer.name!r}"
    if isinstance(layer, (ir.Add, ir.Concat)) or not getattr(layer, "spiking", True) or not graph.is_sequential:
        raise ValueError(f"{where}: {type(layer).__name__} in a graph with several inputs per layer (residual "
                         "additions, concatenations); the NIR export writes chains of layers only")
    if isinstance(layer, ir.Conv2d) and (layer.groups != 1 or tuple(layer.dilation) != (1, 1)
                                         or layer.padding_mode != "zeros"):
        raise ValueError(f"{where}: grouped, dilated or non-zero-padded convolution; the NIR export writes "
                         "plain convolutions only")
    if isinstance(layer, ir.MaxPool2d):
        raise ValueError(f"{where}: NIR has no gated max-pool (SumPool2d/AvgPool2d only); convert with average pooling")
    if not isinstance(neuron, (IF, LIF)):
        raise ValueError(f"{where}: NIR has no {type(neuron).__name__} neuron (no spike response model); "
                         "export IF or LIF networks")
    if neuron.reset != "zero":
        raise ValueError(f"{where}: NIR has no reset by subtraction (IF/LIF reset to v_reset); "
                         "convert with --reset zero")
    if float(neuron.refractory) > 0:
        raise ValueError(f"{where}: NIR has no refractory period ({neuron.refractory}); use refractory = 0 ms")
    if isinstance(graph.synapse, Exponential) and not isinstance(neuron, LIF):
        raise ValueError(f"{where}: NIR has no current-based IF neuron (CubaLIF needs a leak); "
                         "use LIF neurons or delta synapses")
    if not isinstance(graph.synapse, (Delta, Exponential)):
        raise ValueError(f"{where}: NIR has no {graph.synapse.kind} synapse (only delta synapses and "
                         "CubaLIF's exponential current); convert with --synapse delta")


def _neuron_node(nir, graph: ir.Graph, layer: ir.Layer, neuron: Any, dt_s: float, bias: np.ndarray):
    """The neuron node of one layer and the NIR affine bias; bias is the bioconv I_bias (per output)."""
    shape = tuple(layer.output_shape)
    ones = np.ones(shape)
    theta = _per_neuron(layer.threshold, shape)
    ref_s = _seconds(neuron.tau)
    meta = {"bioconv_layer": layer.name, "bioconv_threshold": _threshold_form(layer.threshold),
            "bioconv_tau_ref_s": ref_s, "bioconv_bias": np.asarray(bias, np.float64)}
    if isinstance(neuron, IF):
        node = nir.IF(r=ones / dt_s, v_threshold=theta, v_reset=np.zeros(shape), metadata=meta)
        return node, bias * (dt_s / ref_s)
    tau_m = _seconds(neuron.tau_m)
    if isinstance(graph.synapse, Exponential):
        v_leak = _per_neuron(bias, shape) * (tau_m / ref_s)
        node = nir.CubaLIF(tau_syn=ones * _seconds(graph.synapse.tau_s), tau_mem=ones * tau_m, r=ones * (tau_m / dt_s),
                           v_leak=v_leak, v_threshold=theta, v_reset=np.zeros(shape), w_in=ones, metadata=meta)
        return node, np.zeros_like(bias)
    node = nir.LIF(tau=ones * tau_m, r=ones * (tau_m / dt_s), v_leak=np.zeros(shape), v_threshold=theta,
                   v_reset=np.zeros(shape), metadata=meta)
    return node, bias * (dt_s / ref_s)


def _layer_nodes(nir, graph: ir.Graph, layer: ir.Layer, dt_s: float) -> list[tuple[str, Any]]:
    """(name, node) pairs of one bioconv layer, in order."""
    if isinstance(layer, ir.Flatten):
        return [(layer.name, nir.Flatten(input_type={"input": np.array(layer.input_shape)}, start_dim=0, end_dim=-1))]
    neuron = graph.neuron_for(layer.name)
    _check_exportable(graph, layer, neuron)
    nodes: list[tuple[str, Any]] = []
    if isinstance(layer, ir.AvgPool2d):
        nodes.append((layer.name, nir.AvgPool2d(kernel_size=np.array(layer.kernel_size), stride=np.array(layer.stride),
                                                padding=np.array([0, 0]))))
        if layer.scale != 1.0:
            nodes.append((layer.name + SCALE_SUFFIX, nir.Scale(scale=np.full(layer.output_shape, float(layer.scale)))))
        node, _ = _neuron_node(nir, graph, layer, neuron, dt_s, np.zeros(layer.output_shape[:1]))
    else:
        node, bias = _neuron_node(nir, graph, layer, neuron, dt_s, np.asarray(layer.bias, np.float64))
        weight = np.asarray(layer.weight, np.float64)
        if isinstance(layer, ir.Conv2d):
            nodes.append((layer.name, nir.Conv2d(input_shape=tuple(layer.input_shape[1:]), weight=weight,
                                                 stride=layer.stride, padding=layer.padding, dilation=(1, 1),
                                                 groups=1, bias=bias)))
        else:
            nodes.append((layer.name, nir.Affine(weight=weight, bias=bias)))
    nodes.append((layer.name + NEURON_SUFFIX, node))
    return nodes


def to_nir(graph: ir.Graph, dt: Quantity = 1 * ms) -> Any:
    """The ``nir.NIRGraph`` of a converted ``graph`` (IF/LIF, reset to zero, delta or exponential synapses).

    ``dt`` is the spike pulse width of :mod:`bioconv.nirio` (the time step a discrete
    simulator reading the graph should use); it scales ``r`` and the affine bias. Raises
    ``ValueError`` naming the layer for what NIR cannot express.
    """
    nir = _nir()
    _check_time("to_nir", "dt", dt)
    if graph.neuron is None and not graph.layer_neurons or graph.synapse is None:
        raise ValueError("the graph has no neuron/synapse model; export a converted graph (`bioconv convert`)")
    dt_s = _seconds(dt)
    inp = graph.input
    nodes: dict[str, Any] = {inp.name: nir.Input(input_type={"input": np.array(inp.shape)},
                                                 metadata={"bioconv_rate_scale_hz": float(inp.rate_scale)})}
    for layer in graph.layers:
        if not (isinstance(layer, ir.Flatten) and graph.is_sequential):
            _check_exportable(graph, layer, graph.neuron_for(layer.name))
        for name, node in _layer_nodes(nir, graph, layer, dt_s):
            if name in nodes or name == "output":
                raise ValueError(f"layer {layer.name!r}: NIR node name {name!r} is taken; rename the layer")
            nodes[name] = node
    nodes["output"] = nir.Output(output_type={"output": np.array(graph.output_shape)})
    names = list(nodes)
    clips = {l.name: float(l.clip) for l in graph.layers if getattr(l, "clip", None) is not None}
    meta = {"bioconv_meta": json.dumps(dict(graph.meta), sort_keys=True), "bioconv_dt_s": dt_s,
            "bioconv_clip": json.dumps(clips),
            "bioconv_rate_curve": json.dumps({l.name: l.rate_curve.to_dict() for l in graph.layers
                                              if getattr(l, "rate_curve", None) is not None}),
            "bioconv_neuron": json.dumps(None if graph.neuron is None else model_to_dict(graph.neuron))}
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:])), metadata=meta)


def write_nir(graph: ir.Graph, path: str | os.PathLike, dt: Quantity = 1 * ms) -> Path:
    """Export ``graph`` (:func:`to_nir`) to a ``.nir`` (HDF5) file, written atomically."""
    nir = _nir()
    path = Path(path)
    nir_graph = to_nir(graph, dt)
    with atomic_path(path) as tmp:
        nir.write(tmp, nir_graph)
    return path
