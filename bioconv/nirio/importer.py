"""``nir.NIRGraph`` → bioconv Graph (the mapping and its maths: :mod:`bioconv.nirio`)."""

from __future__ import annotations

import dataclasses

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from brian2 import ms, second

from bioconv import ir
from bioconv.neurons import neuron_from_dict
from bioconv.nirio.export import _nir
from bioconv.nirio.neuron_map import ImportOptions, Neuron, _arr, _per_channel, _uniform, convert_neuron
from bioconv.pool_folding import _fold_into_conv, _fold_into_dense

__all__ = ["ImportOptions", "from_nir", "read_nir"]

NEURON_NODES = ("IF", "LIF", "CubaLIF")
LINEAR_NODES = {"Conv2d": "C", "Affine": "A", "Linear": "A", "AvgPool2d": "P", "SumPool2d": "P", "Scale": "S",
                "Flatten": "F"}
#: what may stand between two neuron nodes: [Flatten] weighted [Scale], pool [Scale] [weighted [Scale]]
SEGMENT = re.compile(r"(F)?(PS?)?(F)?([CA])?(S)?")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _name(raw: str, taken: set[str]) -> str:
    name = raw if _IDENT.match(raw) else "nir_" + re.sub(r"\W", "_", raw)
    while name in taken:
        name += "_"
    taken.add(name)
    return name


def _chain(graph: Any) -> tuple[str, list[tuple[str, Any]]]:
    """Input name and the nodes after it in order, up to (without) the Output; checks the chain."""
    inputs = [k for k, n in graph.nodes.items() if type(n).__name__ == "Input"]
    outputs = [k for k, n in graph.nodes.items() if type(n).__name__ == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"bioconv reads NIR graphs with one Input and one Output node, got inputs {inputs} "
                         f"and outputs {outputs}")
    succ: dict[str, str] = {}
    pred: dict[str, str] = {}
    for a, b in graph.edges:
        for table, key, val, what in ((succ, a, b, "outgoing"), (pred, b, a, "incoming")):
            if key in table:
                raise ValueError(f"NIR node {key!r} has more than one {what} edge (branches, skips or recurrence); "
                                 "bioconv reads feed-forward chains")
            table[key] = val
    order, node = [], inputs[0]
    while node in succ:
        node = succ[node]
        if node == inputs[0] or any(node == k for k, _ in order):
            raise ValueError(f"NIR graph has a recurrent edge into node {node!r}; bioconv reads feed-forward chains")
        if node == outputs[0]:
            break
        order.append((node, graph.nodes[node]))
    if node != outputs[0]:
        raise ValueError(f"the NIR graph's Input {inputs[0]!r} does not lead to its Output {outputs[0]!r}")
    unused = set(graph.nodes) - {inputs[0], outputs[0]} - {k for k, _ in order}
    if unused:
        raise ValueError(f"NIR nodes {sorted(unused)} are not on the Input → Output chain")
    return inputs[0], order


def _pool(name: str, node: Any, shape: tuple[int, ...], scale: float) -> ir.AvgPool2d:
    kind = type(node).__name__
    if np.any(np.asarray(node.padding) != 0):
        raise ValueError(f"NIR node {name!r} ({kind}): padded pools are not supported (bioconv pools have no padding)")
    kernel = tuple(int(k) for k in np.broadcast_to(np.asarray(node.kernel_size), (2,)))
    stride = tuple(int(s) for s in np.broadcast_to(np.asarray(node.stride), (2,)))
    if kind == "SumPool2d":
        scale *= kernel[0] * kernel[1]
    return ir.AvgPool2d(name, shape, kernel, stride, scale=scale)


def _conv(name: str, node: Any, shape: tuple[int, ...]) -> ir.Conv2d:
    weight = np.asarray(node.weight, np.float64)
    if int(node.groups) != 1 or np.any(np.asarray(node.dilation) != 1):
        raise ValueError(f"NIR node {name!r} (Conv2d): groups/dilation other than 1 are not supported")
    padding = node.padding
    if isinstance(padding, str):
        if padding == "same" and all(k % 2 for k in weight.shape[2:]):
            padding = tuple(k // 2 for k in weight.shape[2:])
        elif padding == "valid":
            padding = (0, 0)
        else:
            raise ValueError(f"NIR node {name!r} (Conv2d): padding {padding!r} with an even kernel is not supported")
    padding = tuple(int(p) for p in np.broadcast_to(np.asarray(padding), (2,)))
    stride = tuple(int(s) for s in np.broadcast_to(np.asarray(node.stride), (2,)))
    return ir.Conv2d(name, shape, weight, np.asarray(node.bias, np.float64), stride, padding)


def _segment(ops: list[tuple[str, Any]], neuron_name: str, neuron: Any, shape: tuple[int, ...],
             opts: ImportOptions, taken: set[str]) -> tuple[list[ir.Layer], Neuron]:
    """The bioconv layers of the linear nodes ``ops`` before one neuron node."""
    tokens = "".join(LINEAR_NODES[type(n).__name__] for _, n in ops)
    for k, n in ops:
        out = (getattr(n, "output_type", None) or {}).get("output") if type(n).__name__ == "Flatten" else None
        if out is not None and np.asarray(out).size != 1:
            raise ValueError(f"NIR node {k!r} (Flatten) keeps {np.asarray(out).size} dimensions {tuple(out)}; "
                             "bioconv flattens to one dimension (start_dim 0, end_dim -1)")
    m = SEGMENT.fullmatch(tokens)
    described = " → ".join(f"{k!r} ({type(n).__name__})" for k, n in ops) or "nothing"
    if not m or not (m.group(2) or m.group(4)) or (m.group(3) and not m.group(2)) or (m.group(1) and m.group(2)):
        raise ValueError(f"NIR nodes {described} before neuron node {neuron_name!r}: bioconv needs one conv, affine "
                         "or pool (optionally with Flatten/Scale) per neuron layer")
    it = iter(ops)
    layers: list[ir.Layer] = []
    if m.group(1):
        k, _ = next(it)
        layers.append(ir.Flatten(_name(k, taken), shape))
        shape = (int(np.prod(shape)),)
    pool = None
    if m.group(2):
        k, node = next(it)
        scale = float(_uniform(np.asarray(next(it)[1].scale, np.float64), "Scale after a pool")) if len(m.group(2)) == 2 else 1.0
        pool = _pool(_name(k, taken), node, shape, scale)
        shape = tuple(pool.output_shape)
    flatten_name = _name(next(it)[0], taken) if m.group(3) else None
    if flatten_name:
        shape = (int(np.prod(shape)),)
    if m.group(4):
        k, node = next(it)
        name = _name(k, taken)
        if type(node).__name__ == "Conv2d":
            layer: ir.Layer = _conv(name, node, shape)
        else:
            weight = np.asarray(node.weight, np.float64)
            bias = np.asarray(getattr(node, "bias", np.zeros(weight.shape[0])), np.float64)
            layer = ir.Dense(name, weight, bias)
        if m.group(5):
            s = _per_channel(_arr(next(it)[1], "scale", tuple(layer.output_shape)), "Scale")
            s_w = s[:, None, None, None] if isinstance(layer, ir.Conv2d) else s[:, None]
            layer = ir.Dense(name, layer.weight * s_w, layer.bias * s) if isinstance(layer, ir.Dense) else \
                ir.Conv2d(name, layer.input_shape, layer.weight * s_w, layer.bias * s, layer.stride, layer.padding)
        if pool is not None:
            if flatten_name:
                layers.append(ir.Flatten(flatten_name, pool.input_shape))
            layer = _fold_into_dense(pool, layer) if isinstance(layer, ir.Dense) else _fold_into_conv(pool, layer)
    else:
        layer = pool
    try:
        conv = convert_neuron(neuron_name, neuron, tuple(layer.output_shape), opts)
    except ValueError as exc:
        msg = str(exc) if str(exc).startswith("NIR node") else f"NIR node {neuron_name!r}: {exc}"
        raise ValueError(msg) from None
    layers.append(_scaled(layer, conv, neuron_name))
    return layers, conv


def _scaled(layer: ir.Layer, conv: Neuron, neuron_name: str) -> ir.Layer:
    """``layer`` with the neuron's weight gain, bias map and threshold applied."""
    from dataclasses import replace

    where = f"NIR node {neuron_name!r}"
    if isinstance(layer, ir.AvgPool2d):
        if np.any(conv.bias_const != 0):
            raise ValueError(f"{where}: v_leak != 0 after a pool; bioconv pools have no bias")
        return replace(layer, scale=layer.scale * _uniform(conv.gain, f"{where}: r after a pool"),
                       threshold=conv.threshold)
    gain = _per_channel(conv.gain, f"{where}: r (and w_in)")
    bias = _per_channel(conv.bias_gain * _expand(layer.bias, layer.output_shape) + conv.bias_const, "the bias")
    stored = None if conv.stored_bias is None else np.asarray(conv.stored_bias, np.float64)
    if stored is not None and stored.shape == bias.shape and np.allclose(bias, stored, rtol=1e-9, atol=1e-12):
        bias = stored  # the metadata agrees with the NIR parameters: take bioconv's exact value
    w_gain = gain[:, None, None, None] if isinstance(layer, ir.Conv2d) else gain[:, None]
    weight = layer.weight if np.all(gain == 1.0) else layer.weight * w_gain
    return replace(layer, weight=weight, bias=bias, threshold=conv.threshold)


def _expand(bias: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    b = np.asarray(bias, np.float64)
    return np.broadcast_to(b[:, None, None], shape) if len(shape) == 3 else b


def from_nir(graph: Any, options: ImportOptions | None = None) -> ir.Graph:
    """A bioconv Graph from a ``nir.NIRGraph`` (or a ``.nir`` path); ``ValueError`` names unsupported nodes."""
    nir = _nir()
    opts = options or ImportOptions()
    if isinstance(graph, (str, os.PathLike)):
        graph = read_nir(graph)
    if not isinstance(graph, nir.NIRGraph):
        raise ValueError(f"from_nir needs a nir.NIRGraph or a .nir path, got {type(graph).__name__}")
    input_name, chain = _chain(graph)
    in_node = graph.nodes[input_name]
    in_shape = shape = tuple(int(s) for s in np.asarray(in_node.input_type["input"]))
    taken = {input_name}
    layers: list[ir.Layer] = []
    neurons: dict[str, Any] = {}
    synapses: dict[str, Any] = {}
    pending: list[tuple[str, Any]] = []
    for name, node in chain:
        kind = type(node).__name__
        if kind in NEURON_NODES:
            new, conv = _segment(pending, name, node, shape, opts, taken)
            layers += new
            neurons[new[-1].name], synapses[name] = conv.model, conv.synapse
            shape, pending = tuple(new[-1].output_shape), []
        elif kind in LINEAR_NODES:
            pending.append((name, node))
        else:
            what = "a nested graph (recurrent layer)" if kind == "NIRGraph" else f"node type {kind}"
            raise ValueError(f"NIR node {name!r}: {what} is not supported by bioconv (supported: "
                             f"{', '.join(sorted(set(LINEAR_NODES) | set(NEURON_NODES)))})")
    if pending:
        raise ValueError(f"NIR nodes {[k for k, _ in pending]} follow the last neuron node; bioconv's last layer "
                         "must be spiking (end the graph with an IF/LIF/CubaLIF node)")
    kinds = {json.dumps(_syn_key(s)) for s in synapses.values()}
    if len(kinds) > 1:
        raise ValueError(f"NIR neuron nodes need different synapses {sorted(kinds)} (CubaLIF with different tau_syn, "
                         "or CubaLIF mixed with IF/LIF); bioconv graphs have one synapse model")
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    default = _default_neuron(meta, neurons)
    rate = opts.rate_scale_hz or (in_node.metadata or {}).get("bioconv_rate_scale_hz") or 1.0 / float(opts.dt / second)
    bio_meta = json.loads(meta["bioconv_meta"]) if "bioconv_meta" in meta else {
        "source": "nir", "nir_import": {"dt_ms": float(opts.dt / ms), "discretization": opts.discretization,
                                        "reset": opts.reset, "nodes": [k for k, _ in chain]}}
    clips = json.loads(meta["bioconv_clip"]) if "bioconv_clip" in meta else {}  # ANN clip values (ReLU6, ...)
    layers = [dataclasses.replace(l, clip=float(clips[l.name])) if l.name in clips else l for l in layers]
    curves = json.loads(meta["bioconv_rate_curve"]) if "bioconv_rate_curve" in meta else {}  # SoftLIF ANNs
    layers = [dataclasses.replace(l, rate_curve=ir.LIFRate(**curves[l.name])) if l.name in curves else l
              for l in layers]
    return ir.Graph(ir.Input(in_shape, float(rate), input_name), tuple(layers), neuron=default,
                    synapse=next(iter(synapses.values())),
                    layer_neurons={k: v for k, v in neurons.items() if v != default}, meta=bio_meta)


def _syn_key(synapse: Any) -> Any:
    from bioconv.neurons import model_to_dict

    return model_to_dict(synapse)


def _default_neuron(meta: dict, neurons: dict[str, Any]) -> Any:
    """The Graph's default neuron: the one bioconv exported, else the most common layer model."""
    if "bioconv_neuron" in meta and json.loads(meta["bioconv_neuron"]) is not None:
        return neuron_from_dict(json.loads(meta["bioconv_neuron"]))
    models = list(neurons.values())
    return max(models, key=models.count)


def read_nir(path: str | os.PathLike) -> Any:
    """Read a ``.nir`` file; ``FileNotFoundError``/``ValueError`` name the problem."""
    nir = _nir()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no NIR file at {path}; write one with `bioconv export NET.bcv --to nir {path}`")
    try:
        return nir.read(path)
    except (OSError, KeyError, AssertionError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable NIR file ({exc})") from exc
