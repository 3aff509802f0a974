"""Save and load a :class:`~bioconv.ir.Graph` as one ``.bcv`` file (no torch needed).

The file is an uncompressed numpy ``.npz`` archive read with ``allow_pickle=False``:
``graph.json`` (UTF-8 bytes) holds the format version, the layer list with every scalar
parameter, the neuron/synapse models and the metadata; every array is stored under
``<layer>.<field>``. The round trip is exact (float64 arrays are written as they are).
Writes are atomic: a temporary file in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from bioconv import ir
from bioconv.atomic import atomic_path
from bioconv.neurons import model_to_dict, neuron_from_dict
from bioconv.synapses import synapse_from_dict

FORMAT = "bioconv-graph"
FORMAT_VERSION = 1
LAYER_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (ir.Conv2d, ir.Dense, ir.AvgPool2d, ir.MaxPool2d, ir.Flatten, ir.Concat, ir.Add)
}


class GraphFileError(ValueError):
    """A .bcv file is corrupt, of another format or of an unsupported version."""


def _encode_layer(layer: ir.Layer, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": type(layer).__name__}
    for f in dataclasses.fields(layer):
        value = getattr(layer, f.name)
        if isinstance(value, np.ndarray):
            key = f"{layer.name}.{f.name}"
            arrays[key] = value
            spec[f.name] = {"array": key}
        elif isinstance(value, tuple):
            spec[f.name] = [list(v) if isinstance(v, tuple) else v for v in value]
        elif isinstance(value, ir.LIFRate):
            spec[f.name] = value.to_dict()  # decoded by the layer's own check
        else:
            spec[f.name] = value
    return spec


def _decode_layer(spec: dict[str, Any], arrays: Any) -> ir.Layer:
    spec = dict(spec)
    kind = spec.pop("type")
    if kind not in LAYER_TYPES:
        raise GraphFileError(f"unknown layer type {kind!r} in graph file; known: {sorted(LAYER_TYPES)}")
    kwargs = {}
    for key, value in spec.items():
        if isinstance(value, dict) and "array" in value:
            value = arrays[value["array"]]
        elif isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[key] = value
    return LAYER_TYPES[kind](**kwargs)


def graph_to_json(graph: ir.Graph, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "input": {"shape": list(graph.input.shape), "rate_scale": graph.input.rate_scale, "name": graph.input.name},
        "layers": [_encode_layer(layer, arrays) for layer in graph.layers],
        "neuron": None if graph.neuron is None else model_to_dict(graph.neuron),
        "synapse": None if graph.synapse is None else model_to_dict(graph.synapse),
        "layer_neurons": {k: model_to_dict(v) for k, v in graph.layer_neurons.items()},
        "schedule": graph.schedule,
        "meta": dict(graph.meta),
    }


def save_graph(graph: ir.Graph, path: str | os.PathLike) -> Path:
    """Write ``graph`` to ``path`` atomically; returns the path."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    doc = graph_to_json(graph, arrays)
    payload = json.dumps(doc, sort_keys=True, allow_nan=False).encode("utf-8")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{"graph.json": np.frombuffer(payload, dtype=np.uint8)}, **arrays)
    return path


def load_graph(path: str | os.PathLike) -> ir.Graph:
    """Read a Graph written by :func:`save_graph`; raises :class:`GraphFileError` if unreadable."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no graph file at {path}; create one with `bioconv convert`")
    try:
        with np.load(path, allow_pickle=False) as data:
            doc = json.loads(bytes(data["graph.json"]).decode("utf-8"))
            arrays = {k: data[k] for k in data.files if k != "graph.json"}
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, UnicodeDecodeError, EOFError) as exc:
        what = "it is empty" if isinstance(exc, EOFError) or path.stat().st_size == 0 else str(exc)
        raise GraphFileError(f"{path} is not a readable bioconv graph file ({what}); re-create it with "
                             "`bioconv convert`") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise GraphFileError(f"{path} is not a bioconv graph file (format {fmt!r})")
    version = doc.get("version")
    if type(version) is not int:
        raise GraphFileError(f"{path} stores its format version as {type(version).__name__} {version!r}, not an "
                             f"integer; the file is corrupt, re-create it with `bioconv convert`")
    if version != FORMAT_VERSION:
        raise GraphFileError(
            f"{path} has graph format version {version}, this bioconv reads version "
            f"{FORMAT_VERSION}; re-create the file with this version's `bioconv convert`"
        )
    for key, kind in (("meta", dict), ("layers", list), ("input", dict), ("layer_neurons", dict)):
        if key in doc and not isinstance(doc[key], kind):
            raise GraphFileError(f"{path}: field {key!r} is a {type(doc[key]).__name__}, not a {kind.__name__}; "
                                 "the file is corrupt, re-create it with `bioconv convert`")
    try:
        layers = tuple(_decode_layer(spec, arrays) for spec in doc["layers"])
        inp = doc["input"]
        return ir.Graph(
            input=ir.Input(tuple(inp["shape"]), inp["rate_scale"], inp["name"]),
            layers=layers,
            neuron=None if doc["neuron"] is None else neuron_from_dict(doc["neuron"]),
            synapse=None if doc["synapse"] is None else synapse_from_dict(doc["synapse"]),
            layer_neurons={k: neuron_from_dict(v) for k, v in doc["layer_neurons"].items()},
            meta=doc["meta"],
            schedule=doc.get("schedule", "brian2"),  # files written before schedules: Brian2's order
        )
    except ValueError as exc:
        raise GraphFileError(f"{path}: {exc}; re-create the file with `bioconv convert`") from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise GraphFileError(f"{path} is missing a field or has a malformed one ({exc}); the file is corrupt") from exc
