r"""Fold average pools into the next linear layer: ``conv ∘ avgpool`` is one strided conv.

An average pool is linear and sits after a ReLU, so in the ANN
:math:`W * \mathrm{pool}(a) = W' * a` exactly. For a pool with kernel :math:`k`, stride
:math:`s` and scale :math:`c` (:class:`bioconv.ir.AvgPool2d`) followed by a conv with kernel
:math:`K`, stride :math:`\sigma` and padding :math:`p`, the folded conv has (per axis)

.. math::
    K' = s(K - 1) + k, \qquad \sigma' = s\sigma, \qquad p' = s p, \qquad
    W'_{o c \kappa} = \frac{c}{k} \sum_{u,\,a:\; s u + a = \kappa} W_{o c u},

with :math:`a \in [0, k)` the position inside the pool window (2-D: the product of both axes'
factors, :math:`1/(k_y k_x)`). A pool followed by ``Flatten`` and ``Dense`` folds into a
Dense layer whose weight is :math:`W P` (:math:`P` the pool's linear map). Biases do not
change. The folded layer keeps the name of the conv/dense layer; the pool and its neurons
disappear from the spiking network.

Why fold: a spiking average pool of IF neurons without bias fires at a staircase of rates
(it needs an integer number of input spikes per output spike, the MCR-Norm paper Fig. 1a), so its
max rate cannot be set to a target within a few percent, and each pool adds one step of
delay and a rate-quantization stage. The folded network computes the same ANN function
with one spiking population fewer per pool, at the cost of more synapses per spike
(a 2×2 pool before a 3×3 conv: 6×6 kernels at stride 2).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from bioconv import ir

log = logging.getLogger(__name__)


def _fold_axis(weight: np.ndarray, axis: int, kernel: int, stride: int) -> np.ndarray:
    """Spread the conv kernel along ``axis`` over pool windows: size K → s(K-1)+k, Σ over (u, a)."""
    size = weight.shape[axis]
    shape = list(weight.shape)
    shape[axis] = stride * (size - 1) + kernel
    out = np.zeros(shape, dtype=np.float64)
    for u in range(size):
        src = np.take(weight, [u], axis=axis) / kernel
        for a in range(kernel):
            idx = [slice(None)] * weight.ndim
            idx[axis] = slice(stride * u + a, stride * u + a + 1)
            out[tuple(idx)] += src
    return out


def _fold_into_conv(pool: ir.AvgPool2d, conv: ir.Conv2d) -> ir.Conv2d:
    (kh, kw), (sh, sw) = pool.kernel_size, pool.stride
    weight = _fold_axis(_fold_axis(np.asarray(conv.weight, np.float64), 2, kh, sh), 3, kw, sw) * pool.scale
    if tuple(conv.dilation) != (1, 1) or conv.padding_mode != "zeros":
        raise ValueError(f"cannot fold pool {pool.name!r} into {conv.name!r}: a dilated or non-zero-padded conv "
                         "does not fold; use spiking pools (pools='spiking', `--pools spiking`)")
    folded = ir.Conv2d(
        conv.name, pool.input_shape, weight, np.asarray(conv.bias, np.float64),
        stride=(sh * conv.stride[0], sw * conv.stride[1]), padding=(sh * conv.padding[0], sw * conv.padding[1]),
        threshold=conv.threshold, groups=conv.groups, inputs=pool.inputs, spiking=conv.spiking, clip=conv.clip,
        rate_curve=conv.rate_curve,
    )
    _, hy, wy = pool.output_shape
    _, hx, wx = pool.input_shape
    reads_edge = (conv.padding[0] > 0 and hx > sh * hy) or (conv.padding[1] > 0 and wx > sw * wy)
    if tuple(folded.output_shape) != tuple(conv.output_shape) or reads_edge:
        raise ValueError(
            f"cannot fold pool {pool.name!r} into {conv.name!r}: the pool drops input rows/columns "
            f"({pool.input_shape} -> {pool.output_shape}) that the padded conv would then read; "
            "use spiking pools (pools='spiking', `--pools spiking`)"
        )
    return folded


def _fold_into_dense(pool: ir.AvgPool2d, dense: ir.Dense) -> ir.Dense:
    """Dense ∘ Flatten ∘ pool as one Dense on the flattened pool input: W' = W P."""
    n_in = int(np.prod(pool.input_shape))
    eye = np.eye(n_in, dtype=np.float64).reshape(n_in, *pool.input_shape)
    from bioconv.forward import layer_forward  # the pool's own forward defines P

    p_matrix = layer_forward(pool, eye).reshape(n_in, -1)  # (n_in, n_pool): row i = P applied to e_i
    weight = np.asarray(dense.weight, np.float64) @ p_matrix.T
    return ir.Dense(dense.name, weight, np.asarray(dense.bias, np.float64), threshold=dense.threshold,
                    inputs=dense.inputs, spiking=dense.spiking, clip=dense.clip,
                    rate_curve=dense.rate_curve)


def fold_avg_pools(graph: ir.Graph) -> ir.Graph:
    """A new Graph in which every :class:`~bioconv.ir.AvgPool2d` is folded into the next layer.

    The graph must be unconverted (thresholds 1, before normalization): fold first, then
    normalize. A pool must feed a Conv2d, or a Dense through a Flatten; otherwise (the
    last layer, a pool before another pool) ``ValueError`` says which pool cannot be folded.
    The ANN function is unchanged (``graph.forward`` of the output agrees to float rounding).
    In a graph with Add/Concat layers (:func:`_fold_dag`) a pool folds when it is read by
    exactly one Conv2d (or Flatten + Dense); other pools stay spiking (logged).
    """
    if not graph.is_sequential:
        return _fold_dag(graph)
    layers = list(graph.layers)
    out: list[ir.Layer] = []
    folded_names: list[str] = []
    k = 0
    while k < len(layers):
        layer = layers[k]
        if not isinstance(layer, ir.AvgPool2d):
            out.append(layer)
            k += 1
            continue
        if np.any(np.asarray(layer.threshold) != 1.0):
            raise ValueError(f"pool {layer.name!r} has thresholds != 1: fold pools before normalization")
        nxt = layers[k + 1] if k + 1 < len(layers) else None
        if isinstance(nxt, ir.Conv2d):
            out.append(_fold_into_conv(layer, nxt))
            k += 2
        elif isinstance(nxt, ir.Flatten) and k + 2 < len(layers) and isinstance(layers[k + 2], ir.Dense):
            out.append(ir.Flatten(nxt.name, layer.input_shape))
            out.append(_fold_into_dense(layer, layers[k + 2]))
            k += 3
        else:
            what = "it is the last layer" if nxt is None else f"it feeds {type(nxt).__name__} {nxt.name!r}"
            raise ValueError(
                f"cannot fold pool {layer.name!r}: {what}; only pools before a Conv2d or Flatten+Dense fold "
                "(use spiking pools, pools='spiking')"
            )
        folded_names.append(layer.name)
    if not folded_names:
        return graph
    log.info("folded average pools %s into the following layers", folded_names)
    meta = {**graph.meta, "folded_pools": [*graph.meta.get("folded_pools", []), *folded_names]}
    return replace(graph, layers=tuple(out), meta=meta,
                   layer_neurons={k: v for k, v in graph.layer_neurons.items() if k not in folded_names})


def _fold_dag(graph: ir.Graph) -> ir.Graph:
    """:func:`fold_avg_pools` for graphs with several inputs per layer: each foldable pool is
    replaced by its consumer reading the pool's source (explicit ``inputs``)."""
    layers = list(graph.layers)
    readers: dict[str, list[int]] = {}
    for k, layer in enumerate(layers):
        for src in graph.sources(layer.name):
            readers.setdefault(src, []).append(k)
    replace_at: dict[int, ir.Layer] = {}
    drop: set[int] = set()
    folded, kept = [], []
    for k, pool in enumerate(layers):
        if not isinstance(pool, ir.AvgPool2d):
            continue
        if np.any(np.asarray(pool.threshold) != 1.0):
            raise ValueError(f"pool {pool.name!r} has thresholds != 1: fold pools before normalization")
        src = graph.sources(pool.name)[0]
        pool = replace(pool, inputs=(src,))
        users = readers.get(pool.name, [])
        try:
            if len(users) != 1:
                raise ValueError("read by several layers")
            nxt = layers[users[0]]
            if isinstance(nxt, ir.Conv2d):
                replace_at[users[0]] = _fold_into_conv(pool, nxt)
            elif isinstance(nxt, ir.Flatten) and len(readers.get(nxt.name, [])) == 1 \
                    and isinstance(layers[readers[nxt.name][0]], ir.Dense):
                dense_at = readers[nxt.name][0]
                flat = ir.Flatten(nxt.name, pool.input_shape, inputs=(src,))
                dense = _fold_into_dense(pool, layers[dense_at])
                replace_at[users[0]], replace_at[dense_at] = flat, replace(dense, inputs=(nxt.name,))
            else:
                raise ValueError(f"it feeds {type(nxt).__name__} {nxt.name!r}")
        except ValueError as exc:
            kept.append(f"{pool.name} ({exc})")
            continue
        drop.add(k)
        folded.append(pool.name)
    if kept:
        log.info("average pools kept spiking: %s", kept)
    if not folded:
        return graph
    out = [replace_at.get(k, layer) for k, layer in enumerate(layers) if k not in drop]
    out = _explicit_inputs(graph, out)
    log.info("folded average pools %s into the following layers", folded)
    meta = {**graph.meta, "folded_pools": [*graph.meta.get("folded_pools", []), *folded]}
    return replace(graph, layers=tuple(out), meta=meta,
                   layer_neurons={k: v for k, v in graph.layer_neurons.items() if k not in folded})


def _explicit_inputs(graph: ir.Graph, layers: list[ir.Layer]) -> list[ir.Layer]:
    """Give every layer that relied on "the previous layer" its explicit source (the order changed)."""
    out = []
    for layer in layers:
        if not layer.inputs and layer.name in {l.name for l in graph.layers}:
            try:
                src = graph.sources(layer.name)
            except KeyError:  # pragma: no cover - every kept layer is in the graph
                src = ()
            if src and not (len(out) == 0 and src[0] == graph.input.name):
                layer = replace(layer, inputs=src)
        out.append(layer)
    return out


POOL_MODES = ("fold", "spiking")


def prepare_pools(graph: ir.Graph, pools: str) -> ir.Graph:
    """``pools="fold"``: :func:`fold_avg_pools`; ``"spiking"``: the graph unchanged (IF pool neurons)."""
    if pools not in POOL_MODES:
        raise ValueError(f"pools must be one of {POOL_MODES}, got {pools!r}")
    return fold_avg_pools(graph) if pools == "fold" else graph
