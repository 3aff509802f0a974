r"""Import any traceable PyTorch CNN into a :class:`bioconv.ir.Graph` with ``torch.fx``.

``torch.fx.symbolic_trace`` turns the module's ``forward`` into a graph of nodes
(``call_module``, ``call_function``, ``call_method``). Every node is converted by one
entry of a dispatch table (:data:`MODULES`, :data:`FUNCTIONS`, :data:`METHODS`) into one
of two kinds of value:

- :class:`Act`: a non-negative activation, i.e. the spikes of a population (or the
  input, or a Flatten/Concat view of them);
- :class:`Pre`: a pre-activation not yet rectified, :math:`z = \sum_k A_k a_{s_k} + b`,
  a list of *terms* (a conv/linear layer ``A_k`` reading activation ``s_k``).

Rules (each exact in the ANN):

- ``Conv2d`` (any groups, dilation, padding mode) / ``Linear`` on an ``Act`` give a
  one-term ``Pre``; on a ``Pre`` they raise (a ReLU is needed between two weighted layers).
- ``BatchNorm`` on a ``Pre`` scales every term (:math:`s = \gamma/\sigma`, folded exactly
  as :math:`\tilde W = sW`, :math:`\tilde b = s(b - \mu) + \beta`); on an ``Act`` it becomes
  an identity term (depthwise 1×1 conv / diagonal linear) with that scale.
- ``+`` (``operator.add``, ``torch.add``, ``x.add``) joins the terms of both sides (an
  ``Act`` side becomes an identity term): a residual addition.
- ``ReLU`` (module, ``F.relu``, ``torch.relu``, ``x.relu()``) turns a ``Pre`` into a spiking
  population: one ``Conv2d``/``Dense`` layer for one term, otherwise branch layers plus an
  :class:`~bioconv.ir.Add`; ``ReLU6`` and ``Hardtanh(0, c)`` do the same with ``clip = c``
  (the Rate Norm Layer idea of Ding et al. 2021: the clip value is the activation that
  maps to the maximal rate; normalization uses it as λ). ReLU of an ``Act`` is the identity.
- ``MaxPool2d`` of a ``Pre`` rectifies it first (max and ReLU commute) and requires a ReLU
  next; ``AvgPool2d`` of a ``Pre`` of conv terms folds into the convs (a larger kernel);
  ``AdaptiveAvgPool2d`` (where the output size divides the input: an exact average
  pool) and ``mean((2, 3))`` need an ``Act``. ``clamp(0, c)`` is a clipped ReLU.
- ``flatten``/``view``/``reshape`` to (N, -1) give a Flatten view, ``torch.cat(dim=1)`` of
  activations a :class:`~bioconv.ir.Concat`; Dropout and Identity are dropped, a final
  Softmax/LogSoftmax is dropped with a logged notice.
- The output must be a ``Pre``: the last layer is linear (its spike counts or voltages
  give the class scores).

Anything else raises ``ValueError`` naming the node, its type and what to do.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from bioconv import ir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Act:
    """A non-negative activation: population, input or view ``name`` of ``shape``."""

    name: str
    shape: tuple[int, ...]
    pending_relu: str = ""  # a max-pool of a pre-activation that still needs its ReLU (node name)


@dataclass(frozen=True)
class Term:
    """One weighted layer (IR class and keyword arguments, no name) reading activation ``source``."""

    cls: type
    kwargs: dict
    source: str
    label: str  # module path or node name, for layer names and messages


@dataclass(frozen=True)
class Pre:
    """A pre-activation: the sum of ``terms`` (biases included), of ``shape``."""

    terms: tuple[Term, ...]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Size:
    """A shape (or one dimension) read from a tensor; only used as a view/reshape argument."""

    value: Any


class Importer:
    """The state of one import: emitted layers, unique names and the values of fx nodes."""

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...]):
        self.module = module
        self.modules = dict(module.named_modules())
        self.input = ir.Input(tuple(int(s) for s in input_shape))
        self.layers: list[ir.Layer] = []
        self.names: set[str] = {self.input.name}
        self.folded_bn: list[str] = []
        self.input_relu = False
        self.dropped_softmax = ""
        self.node: fx.Node | None = None

    # ------------------------------------------------------------------ helpers
    def error(self, what: str, fix: str) -> ValueError:
        node = self.node
        where = f"node {node.name!r} ({node.op} {_target_name(node)})" if node is not None else "the model"
        if node is not None and node.op == "call_module":
            where += f", a {type(self.modules[node.target]).__name__}"
            parent = str(node.target).rpartition(".")[0]
            while parent and isinstance(self.modules.get(parent), (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
                parent = parent.rpartition(".")[0]
            if parent:
                where += f" in {type(self.modules[parent]).__name__} {parent!r}"
        return ValueError(f"{type(self.module).__name__}: {where}: {what}; {fix}")

    def unique(self, label: str) -> str:
        base = "".join(c if c.isalnum() or c == "_" else "_" for c in label).strip("_") or "layer"
        if not base[0].isalpha():
            base = "l_" + base
        name, k = base, 1
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def emit(self, layer: ir.Layer) -> ir.Layer:
        self.layers.append(layer)
        return layer

    def act(self, value: Any, what: str) -> Act:
        if isinstance(value, Pre):
            raise self.error(f"{what} gets a pre-activation (a conv/linear output without ReLU)",
                             "put a ReLU before it (converted networks rectify every hidden layer)")
        if not isinstance(value, Act):
            raise self.error(f"{what} gets {type(value).__name__}, not a tensor", "pass the tensor itself")
        if value.pending_relu:
            raise self.error(f"{what} reads the max-pool {value.pending_relu!r} of a pre-activation",
                             "apply the ReLU right after that max-pool (or before it)")
        return value

    def identity_term(self, a: Act, scale: np.ndarray, shift: np.ndarray, label: str) -> Term:
        """z = scale ⊙ a + shift as a depthwise 1×1 conv (C, H, W) or a diagonal linear (N,)."""
        if len(a.shape) == 3:
            c = a.shape[0]
            kw = dict(input_shape=a.shape, weight=scale.reshape(c, 1, 1, 1).astype(np.float64),
                      bias=shift.astype(np.float64), groups=c)
            return Term(ir.Conv2d, kw, a.name, label)
        return Term(ir.Dense, dict(weight=np.diag(scale).astype(np.float64), bias=shift.astype(np.float64)),
                    a.name, label)

    def rectify(self, value: Any, label: str, clip: float | None = None) -> Act:
        """ReLU (and clip): a ``Pre`` becomes a spiking population; an ``Act`` stays."""
        if isinstance(value, Act):
            if value.name == self.input.name:
                self.input_relu = True
            if clip is not None:
                raise self.error("a clipping activation on an activation that is already rectified",
                                 "apply ReLU6/Hardtanh directly to the conv/linear output")
            return Act(value.name, value.shape)
        if not isinstance(value, Pre):
            raise self.error(f"ReLU of {type(value).__name__}", "apply it to a tensor")
        return self.population(value, label, clip)

    def population(self, pre: Pre, label: str, clip: float | None = None) -> Act:
        if len(pre.terms) == 1:
            t = pre.terms[0]
            layer = self.emit(t.cls(name=self.unique(t.label), **t.kwargs, inputs=(t.source,), clip=clip))
            return Act(layer.name, tuple(layer.output_shape))
        name = self.unique(label)
        branches = [self.emit(t.cls(name=self.unique(f"{name}_{t.label}"), **t.kwargs, inputs=(t.source,),
                                    spiking=False)) for t in pre.terms]
        layer = self.emit(ir.Add(name, pre.shape, tuple(b.name for b in branches), clip=clip))
        return Act(layer.name, layer.shape)

    def flatten(self, a: Act) -> Act:
        a = self.act(a, "flatten")
        if len(a.shape) == 1:
            return a
        layer = self.emit(ir.Flatten(self.unique(f"{self.node.name}"), a.shape, inputs=(a.name,)))
        return Act(layer.name, tuple(layer.output_shape))


def _target_name(node: fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", repr(t))


def _np(t: torch.Tensor | None, size: int) -> np.ndarray:
    return np.zeros(size) if t is None else t.detach().cpu().double().numpy().copy()


# ---------------------------------------------------------------------------- converters


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


def _convert_node(st: Importer, node: fx.Node, values: dict[str, Any]) -> Any:
    args = fx.node.map_arg(node.args, lambda n: values[n.name])
    kwargs = fx.node.map_arg(node.kwargs, lambda n: values[n.name])
    if node.op == "call_module":
        module = st.modules[node.target]
        fn = MODULES.get(type(module))
        if fn is None:
            raise st.error(f"module of type {type(module).__name__} has no converter",
                           f"supported modules: {', '.join(sorted(t.__name__ for t in MODULES))}; nonlinearities "
                           "other than ReLU/ReLU6/Hardtanh(0, c) cannot be converted (retrain with nn.ReLU)")
        return fn(st, module, *args, **kwargs)
    if node.op == "call_function":
        fn = FUNCTIONS.get(node.target)
        if fn is None:
            raise st.error(f"function {_target_name(node)} has no converter",
                           "use one of: " + ", ".join(sorted({_name_of(f) for f in FUNCTIONS})))
        return fn(st, None, *args, **kwargs)
    if node.op == "call_method":
        fn = METHODS.get(node.target)
        if fn is None:
            raise st.error(f"tensor method .{node.target}() has no converter",
                           f"use one of: {', '.join(sorted(METHODS))}")
        return fn(st, None, *args, **kwargs)
    raise st.error(f"a {node.op} node (parameters read in forward)", "use modules (nn.Conv2d, nn.Linear) for weights")


def _name_of(f: Any) -> str:
    return getattr(f, "__name__", repr(f))


def trace(model: nn.Module) -> fx.GraphModule:
    """``torch.fx.symbolic_trace`` with a clear error for models it cannot trace."""
    try:
        return model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    except Exception as exc:  # torch.fx raises TraceError, TypeError, NotImplementedError, ...
        raise ValueError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {exc}); remove data-dependent "
            "control flow from forward() or build the model from nn modules") from exc


def import_fx(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[ir.Input, list[ir.Layer], dict]:
    """The Input, the layers and a record (folded BNs, dropped softmax, input ReLU) of ``model``."""
    gm = trace(model)
    st = Importer(gm, input_shape)
    st.module = model
    named = dict(model.named_modules())
    st.modules = {k: named.get(k, v) for k, v in st.modules.items()}
    values: dict[str, Any] = {}
    result = None
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"the model's forward takes {len(placeholders)} inputs; bioconv converts models with one")
    for node in gm.graph.nodes:
        st.node = node
        if node.op == "placeholder":
            values[node.name] = Act(st.input.name, st.input.shape)
        elif node.op == "output":
            result = fx.node.map_arg(node.args[0], lambda n: values[n.name])
        else:
            values[node.name] = _convert_node(st, node, values)
    st.node = None
    if not isinstance(result, Pre):
        raise ValueError(
            "the model's output is a rectified activation (a final ReLU) or a pool, not a conv/linear output; "
            "end the model with a Linear/Conv2d layer without ReLU (its spike counts or voltages give the scores)"
            if isinstance(result, Act) else f"the model returns {type(result).__name__}; return one tensor")
    st.population(result, "output")
    if st.dropped_softmax:
        log.info("dropped the final softmax %r (it does not change the argmax of the class scores)",
                 st.dropped_softmax)
    return st.input, st.layers, {"bn_folded": st.folded_bn, "dropped_softmax": st.dropped_softmax,
                                 "input_relu": st.input_relu}
