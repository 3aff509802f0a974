"""The converters of the torch.fx import, one per module type, function or tensor method.

Each takes the importer state, the module (None for functions and methods) and the node's
arguments (converted values) and returns the node's value; the rules are in
:mod:`bioconv.fx_import`. :data:`MODULES`, :data:`FUNCTIONS` and :data:`METHODS` are the
dispatch tables.
"""

from __future__ import annotations

import logging
import operator
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from bioconv.ann.activations import SoftLIF
from bioconv import ir
from bioconv.fx_values import Act, Importer, Pre, Size, Term, _np

log = logging.getLogger(__name__)

def _conv(st: Importer, m: nn.Conv2d, x: Any) -> Pre:
    a = st.act(x, f"Conv2d {st.node.target!r}")
    if len(a.shape) != 3:
        raise st.error(f"Conv2d needs a (C, H, W) input, gets {a.shape}", "check the model's input shape")
    padding = m.padding
    if isinstance(padding, str):  # 'same' (stride 1) or 'valid'
        if padding == "same":
            total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
            if any(t % 2 for t in total):
                raise st.error("padding='same' with an even effective kernel is asymmetric", "use explicit padding")
            padding = tuple(t // 2 for t in total)
        else:
            padding = (0, 0)
    kw = dict(input_shape=a.shape, weight=_np(m.weight, 0), bias=_np(m.bias, m.out_channels), stride=tuple(m.stride),
              padding=tuple(padding), groups=m.groups, dilation=tuple(m.dilation), padding_mode=m.padding_mode)
    try:
        shape = tuple(ir.Conv2d(name="probe", **kw).output_shape)
    except ValueError as exc:
        raise st.error(str(exc), "check the conv's parameters against the input shape") from exc
    return Pre((Term(ir.Conv2d, kw, a.name, str(st.node.target)),), shape)


def _linear(st: Importer, m: nn.Linear, x: Any) -> Pre:
    a = st.act(x, f"Linear {st.node.target!r}")
    if a.shape != (m.in_features,):
        raise st.error(f"Linear expects {m.in_features} inputs but gets shape {a.shape}",
                       "flatten the input first (nn.Flatten, x.flatten(1) or x.view(x.size(0), -1))")
    kw = dict(weight=_np(m.weight, 0), bias=_np(m.bias, m.out_features))
    return Pre((Term(ir.Dense, kw, a.name, str(st.node.target)),), (m.out_features,))


def _batchnorm(st: Importer, m: nn.modules.batchnorm._BatchNorm, x: Any) -> Pre:
    what = f"{type(m).__name__} {st.node.target!r}"
    if m.running_mean is None or m.running_var is None:
        raise st.error(f"{what} has no running statistics (track_running_stats=False)", "it cannot be folded")
    n = m.num_features
    shape = x.shape if isinstance(x, (Act, Pre)) else ()
    if not shape or shape[0] != n:
        raise st.error(f"{what} has {n} features, its input has shape {shape}", "check the model")
    gamma = _np(m.weight, n) if m.affine else np.ones(n)
    beta = _np(m.bias, n) if m.affine else np.zeros(n)
    scale = gamma / np.sqrt(_np(m.running_var, n) + m.eps)
    shift = beta - scale * _np(m.running_mean, n)
    st.folded_bn.append(str(st.node.target))
    if isinstance(x, Act):
        a = st.act(x, what)
        return Pre((st.identity_term(a, scale, shift, str(st.node.target)),), a.shape)
    terms = []
    for k, t in enumerate(x.terms):
        w = t.kwargs["weight"] * scale.reshape((-1,) + (1,) * (t.kwargs["weight"].ndim - 1))
        b = scale * t.kwargs["bias"] + (shift if k == 0 else 0.0)
        terms.append(Term(t.cls, {**t.kwargs, "weight": w, "bias": b}, t.source, t.label))
    return Pre(tuple(terms), x.shape)


def _relu(st: Importer, m: Any, x: Any, *args: Any, **kwargs: Any) -> Act:
    return st.rectify(x, st.node.name)


def _clamp(st: Importer, m: Any, x: Any, min: Any = None, max: Any = None, **kwargs: Any) -> Act:
    if min != 0 or (max is not None and not max > 0):
        raise st.error(f"clamp(min={min}, max={max})", "only clamp(min=0) (a ReLU) or clamp(0, c) (a clipped ReLU) "
                       "converts")
    return st.rectify(x, st.node.name, clip=None if max is None else float(max))


def _softlif(st: Importer, m: Any, x: Any, *args: Any, **kwargs: Any) -> Act:
    """SoftLIF (Hunsberger & Eliasmith 2015): the population's activation is the LIF rate curve."""
    return st.rectify(x, st.node.name, rate_curve=m.curve)


def _relu6(st: Importer, m: Any, x: Any, *args: Any, **kwargs: Any) -> Act:
    return st.rectify(x, st.node.name, clip=6.0)


def _hardtanh(st: Importer, m: Any, x: Any, min_val: float = -1.0, max_val: float = 1.0, *args: Any,
              **kwargs: Any) -> Act:
    if m is not None:
        min_val, max_val = m.min_val, m.max_val
    if min_val != 0 or not max_val > 0:
        raise st.error(f"Hardtanh({min_val}, {max_val}) has a negative range",
                       "only Hardtanh(0, c) (a clipped ReLU) converts; retrain with min_val=0")
    return st.rectify(x, st.node.name, clip=float(max_val))


def _pool_args(st: Importer, kernel, stride, padding, dilation, ceil_mode, what: str):
    kernel = ir._pair(kernel, "kernel_size")
    stride = kernel if stride in (None, (), []) else ir._pair(stride, "stride")
    if ir._pair(padding, "padding") != (0, 0) or ir._pair(dilation, "dilation") != (1, 1) or ceil_mode:
        raise st.error(f"{what} with padding, dilation or ceil_mode", "use padding=0, dilation=1, ceil_mode=False")
    return kernel, stride


def _maxpool(st: Importer, m: Any, x: Any, kernel_size=None, stride=None, padding=0, dilation=1, ceil_mode=False,
             return_indices=False) -> Act:
    if m is not None:
        kernel_size, stride, padding, dilation, ceil_mode = m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode
        return_indices = m.return_indices
    if return_indices:
        raise st.error("max-pool with return_indices", "use return_indices=False")
    kernel, stride = _pool_args(st, kernel_size, stride, padding, dilation, ceil_mode, "MaxPool2d")
    pending = ""
    if isinstance(x, Pre):  # relu(max(z)) = max(relu(z)): rectify now, the ReLU must follow
        x, pending = st.population(x, st.node.name), st.node.name
    a = st.act(x, "MaxPool2d")
    out = _per_branch(st, a, lambda src: ir.MaxPool2d(st.unique(st.node.name), src.shape, kernel, stride,
                                                      inputs=(src.name,)))
    return Act(out.name, out.shape, pending)


def _per_branch(st: Importer, a: Act, make: Callable[[Act], ir.Layer]) -> Act:
    """Emit the pool ``make(a)``; a pool of a Concat is emitted per concatenated input (pooling is per
    channel, so this is exact), then concatenated again: a spiking pool reads one population."""
    concat = next((l for l in st.layers if l.name == a.name and isinstance(l, ir.Concat)), None)
    if concat is None:
        layer = st.emit(make(a))
        return Act(layer.name, tuple(layer.output_shape))
    parts = [_per_branch(st, Act(src, shape), make) for src, shape in zip(concat.inputs, concat.input_shapes)]
    layer = st.emit(ir.Concat(st.unique(f"{st.node.name}_cat"), tuple(p.shape for p in parts),
                              tuple(p.name for p in parts)))
    return Act(layer.name, tuple(layer.output_shape))


def _avgpool(st: Importer, m: Any, x: Any, kernel_size=None, stride=None, padding=0, ceil_mode=False,
             count_include_pad=True, divisor_override=None) -> Act:
    if m is not None:
        kernel_size, stride, padding, ceil_mode = m.kernel_size, m.stride, m.padding, m.ceil_mode
        divisor_override = m.divisor_override
    if divisor_override is not None:
        raise st.error("AvgPool2d with divisor_override", "remove it")
    kernel, stride = _pool_args(st, kernel_size, stride, padding, 1, ceil_mode, "AvgPool2d")
    if isinstance(x, Pre):  # avgpool ∘ conv is one conv with a larger kernel (exact with zero padding)
        return _pool_pre(st, x, kernel, stride)
    return _emit_avg(st, x, kernel, stride)


def _pool_pre(st: Importer, pre: Pre, kernel, stride) -> Pre:
    r"""An average pool of a pre-activation, folded into each conv term:
    :math:`W'_{v} = \frac{1}{k_y k_x}\sum_{a, u:\, s a + u = v} W_u` per axis (:math:`s` the conv
    stride), kernel :math:`s(k - 1) + K`, stride :math:`s\,s_p`, same padding and bias."""
    terms = []
    for t in pre.terms:
        kw = t.kwargs
        if t.cls is not ir.Conv2d or tuple(kw["dilation"]) != (1, 1) or kw["padding_mode"] != "zeros":
            raise st.error("an average pool of a pre-activation that is not a plain conv output",
                           "put the ReLU before the average pool")
        w = np.asarray(kw["weight"], np.float64)
        for axis, k, s in ((2, kernel[0], kw["stride"][0]), (3, kernel[1], kw["stride"][1])):
            size = w.shape[axis]
            shape = list(w.shape)
            shape[axis] = s * (k - 1) + size
            out = np.zeros(shape)
            for a in range(k):
                idx = [slice(None)] * 4
                idx[axis] = slice(s * a, s * a + size)
                out[tuple(idx)] += w / k
            w = out
        new = {**kw, "weight": w, "stride": (kw["stride"][0] * stride[0], kw["stride"][1] * stride[1])}
        c, h, wd = pre.shape
        expect = (c, (h - kernel[0]) // stride[0] + 1, (wd - kernel[1]) // stride[1] + 1)
        if tuple(ir.Conv2d(name="probe", **new).output_shape) != expect:
            raise st.error("an average pool of a pre-activation whose windows do not tile the conv output",
                           "put the ReLU before the average pool")
        terms.append(Term(t.cls, new, t.source, t.label))
    return Pre(tuple(terms), expect)


def _emit_avg(st: Importer, x: Any, kernel, stride) -> Act:
    a = st.act(x, "an average pool")
    if len(a.shape) != 3:
        raise st.error(f"average pooling needs a (C, H, W) input, gets {a.shape}", "check the model")
    return _per_branch(st, a, lambda src: ir.AvgPool2d(st.unique(st.node.name), src.shape, kernel, stride,
                                                       inputs=(src.name,)))


def _adaptive_avg(st: Importer, m: Any, x: Any, output_size=None) -> Act:
    size = m.output_size if m is not None else output_size
    a = st.act(x, "AdaptiveAvgPool2d")
    if len(a.shape) != 3:
        raise st.error(f"AdaptiveAvgPool2d needs a (C, H, W) input, gets {a.shape}", "check the model")
    out = (size, size) if isinstance(size, int) else tuple(a.shape[1 + k] if s is None else s for k, s in enumerate(size))
    if any(h % o for h, o in zip(a.shape[1:], out)):
        raise st.error(f"AdaptiveAvgPool2d{out} of a {a.shape[1:]} map is not a uniform average pool",
                       "use an input size that the output size divides, or nn.AvgPool2d")
    kernel = tuple(h // o for h, o in zip(a.shape[1:], out))
    return _emit_avg(st, a, kernel, kernel)


def _flatten(st: Importer, m: Any, x: Any, start_dim: int = 0, end_dim: int = -1) -> Act:
    if m is not None:
        start_dim, end_dim = m.start_dim, m.end_dim
    elif st.node.op == "call_function" and start_dim == 0:
        raise st.error("torch.flatten(x) without start_dim=1 also flattens the batch", "use torch.flatten(x, 1)")
    if start_dim not in (1, -3 if isinstance(x, Act) and len(x.shape) == 3 else 1) or end_dim != -1:
        raise st.error(f"flatten(start_dim={start_dim}, end_dim={end_dim})", "flatten from dim 1 to the end")
    return st.flatten(x)


def _method_flatten(st: Importer, m: Any, x: Any, start_dim: int = 0, end_dim: int = -1) -> Act:
    if start_dim == 0:
        raise st.error("x.flatten() without start_dim=1 also flattens the batch", "use x.flatten(1)")
    return _flatten(st, None, x, start_dim, end_dim)


def _view(st: Importer, m: Any, x: Any, *shape: Any) -> Act:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    a = st.act(x, "view/reshape")
    dims = [s.value if isinstance(s, Size) else s for s in shape]
    n = int(np.prod(a.shape))
    rest = dims[1:]
    ok = len(rest) == 1 and (rest[0] == -1 or rest[0] == n) and (dims[0] == -1 or isinstance(shape[0], Size)
                                                                  or rest[0] == n)
    if ok:
        return st.flatten(a)
    if [d for d in rest] == list(a.shape):
        return a
    raise st.error(f"view/reshape to {tuple(dims)} of a {a.shape} activation",
                   "only flattening to (batch, -1) converts")


def _add(st: Importer, m: Any, x: Any, y: Any, *, alpha: Any = 1) -> Pre:
    if alpha != 1 or not all(isinstance(v, (Act, Pre)) for v in (x, y)):
        raise st.error("an addition of something other than two tensors", "add tensors only (no constants)")
    if tuple(x.shape) != tuple(y.shape):
        raise st.error(f"an addition of shapes {x.shape} and {y.shape} (broadcasting)", "add equal shapes")
    terms: list[Term] = []
    for k, v in enumerate((x, y)):
        if isinstance(v, Act):
            a = st.act(v, "an addition")
            c = a.shape[0]
            terms.append(st.identity_term(a, np.ones(c), np.zeros(c), f"skip{k}"))
        else:
            terms.extend(v.terms)
    return Pre(tuple(terms), tuple(x.shape))


def _cat(st: Importer, m: Any, tensors: Any, dim: int = 0) -> Act:
    acts = [st.act(t, "torch.cat") for t in tensors]
    if dim not in (1, -len(acts[0].shape)):
        raise st.error(f"torch.cat along dim={dim}", "concatenate along the channel dimension (dim=1)")
    layer = st.emit(ir.Concat(st.unique(st.node.name), tuple(a.shape for a in acts), tuple(a.name for a in acts)))
    return Act(layer.name, tuple(layer.output_shape))


def _mean(st: Importer, m: Any, x: Any, dim: Any = None, keepdim: bool = False, **kwargs: Any) -> Act:
    a = st.act(x, "mean")
    dims = tuple(dim) if isinstance(dim, (tuple, list)) else (dim,)
    if len(a.shape) != 3 or sorted(d % 4 for d in dims) != [2, 3]:
        raise st.error(f"mean over dims {dim}", "only the global average x.mean((2, 3)) converts")
    pooled = _emit_avg(st, a, a.shape[1:], a.shape[1:])
    return pooled if keepdim else st.flatten(pooled)


def _passthrough(st: Importer, m: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


def _softmax(st: Importer, m: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    users = list(st.node.users)
    if len(users) != 1 or users[0].op != "output":
        raise st.error("Softmax/LogSoftmax that is not the last operation", "only a final softmax can be dropped")
    st.dropped_softmax = st.node.name
    return x


def _size(st: Importer, m: Any, x: Any, *args: Any) -> Size:
    shape = (-1, *x.shape)
    return Size(shape[args[0]] if args else shape)


def _shape_attr(st: Importer, m: Any, x: Any, attr: str) -> Size:
    if attr != "shape":
        raise st.error(f"attribute {attr!r} of a tensor", "only x.shape is supported")
    return Size((-1, *x.shape))


def _getitem(st: Importer, m: Any, x: Any, index: Any) -> Size:
    if not isinstance(x, Size):
        raise st.error("indexing a tensor", "only x.shape[0] / x.size(0) can be indexed")
    return Size(x.value[index])


MODULES: dict[type, Callable] = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.ReLU: _relu,
    nn.ReLU6: _relu6,
    nn.Hardtanh: _hardtanh,
    SoftLIF: _softlif,
    nn.MaxPool2d: _maxpool,
    nn.AvgPool2d: _avgpool,
    nn.AdaptiveAvgPool2d: _adaptive_avg,
    nn.Flatten: _flatten,
    nn.Dropout: _passthrough,
    nn.Dropout2d: _passthrough,
    nn.Identity: _passthrough,
    nn.Softmax: _softmax,
    nn.LogSoftmax: _softmax,
}
FUNCTIONS: dict[Any, Callable] = {
    F.relu: _relu, torch.relu: _relu, F.relu6: _relu6, F.hardtanh: _hardtanh,
    F.max_pool2d: _maxpool, F.avg_pool2d: _avgpool, F.adaptive_avg_pool2d: _adaptive_avg,
    torch.flatten: _flatten, torch.cat: _cat, torch.concat: _cat, operator.add: _add, torch.add: _add,
    operator.iadd: _add, F.dropout: _passthrough, F.softmax: _softmax, F.log_softmax: _softmax,
    torch.softmax: _softmax, operator.getitem: _getitem, getattr: _shape_attr, torch.mean: _mean,
    torch.clamp: _clamp, torch.clip: _clamp,
}
METHODS: dict[str, Callable] = {
    "relu": _relu, "view": _view, "reshape": _view, "flatten": _method_flatten, "size": _size, "add": _add,
    "softmax": _softmax, "log_softmax": _softmax, "mean": _mean, "contiguous": _passthrough, "clamp": _clamp,
    "clip": _clamp,
}
