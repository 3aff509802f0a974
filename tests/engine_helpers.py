"""Random-weight test graphs (``tiny``, ``cnn7`` layouts) scaled to spike at useful rates."""

from __future__ import annotations

import re

import numpy as np

from bioconv import ir

SPECS = {"tiny": "4c3-p2-8c3-p2-10FC", "cnn7": "32c3-p2-32c3-p2-32c3-p2-32FC-10FC"}


def random_graph(arch: str, seed: int = 0, input_shape=(1, 28, 28), rate_scale: float = 500.0) -> ir.Graph:
    """A Graph with the layer layout of zoo ``arch`` and He-initialized random weights and biases."""
    rng = np.random.default_rng(seed)
    shape = tuple(input_shape)
    layers: list = []
    for k, token in enumerate(SPECS.get(arch, arch).split("-")):
        name = f"l{k}"
        if m := re.fullmatch(r"(\d+)c(\d+)", token):
            c_out, ks = int(m[1]), int(m[2])
            fan = shape[0] * ks * ks
            w = rng.normal(0, np.sqrt(2 / fan), (c_out, shape[0], ks, ks))
            layers.append(ir.Conv2d(name, shape, w, rng.normal(0, 0.02, c_out), padding=ks // 2))
        elif m := re.fullmatch(r"p(\d+)", token):
            layers.append(ir.AvgPool2d(name, shape, int(m[1]), int(m[1])))
        elif m := re.fullmatch(r"mp(\d+)", token):
            layers.append(ir.MaxPool2d(name, shape, int(m[1]), int(m[1])))
        elif m := re.fullmatch(r"(\d+)FC", token):
            if len(shape) > 1:
                layers.append(ir.Flatten(f"flat{k}", shape))
                shape = layers[-1].output_shape
            n = int(m[1])
            w = rng.normal(0, np.sqrt(2 / shape[0]), (n, shape[0]))
            layers.append(ir.Dense(name, w, rng.normal(0, 0.02, n)))
        else:
            raise ValueError(token)
        shape = tuple(layers[-1].output_shape)
    return ir.Graph(ir.Input(tuple(input_shape), rate_scale=rate_scale), tuple(layers))


def scale_to_spike(graph: ir.Graph, images: np.ndarray, target: float = 0.3, percentile: float = 99.0) -> ir.Graph:
    """Per-layer thresholds so that the ``percentile`` of positive ANN activations maps to ``target`` (rate·dt).

    Data-based normalization (layer by layer, in graph order) with the rate semantics of
    :meth:`bioconv.ir.Graph.forward`; input activations are ``x * rate_scale * 1 ms``.
    """
    x = images * graph.input.rate_scale * 1e-3
    for layer in graph.spiking_layers:
        act = graph.forward(x, upto=layer.name)[layer.name]
        pos = act[act > 0]
        lam = float(np.percentile(pos, percentile)) if pos.size else 1.0
        th = np.asarray(layer.threshold, dtype=float) * lam / target
        graph = graph.replace_layer(layer.name, threshold=float(th) if th.ndim == 0 else th)
    return graph
