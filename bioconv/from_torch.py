r"""Convert a trained PyTorch model into a :class:`bioconv.ir.Graph` (needs torch).

An ``nn.Sequential`` (nested Sequentials allowed) is walked module by module with one
converter per torch module type (:data:`CONVERTERS`), layers named ``conv1, pool1, fc1, ...``;
any other ``nn.Module`` (a custom ``forward`` with functional ops, residual additions,
concatenations, a ``torch.fx.GraphModule``) is traced with ``torch.fx`` by
:mod:`bioconv.fx_import`, layers named after their modules. The Sequential rules:

- ``Conv2d`` (any groups, dilation and padding mode) -> :class:`~bioconv.ir.Conv2d`;
  ``Linear`` -> :class:`~bioconv.ir.Dense`; ``AvgPool2d`` / ``MaxPool2d`` (no padding,
  no ceil mode) -> the IR pools; ``Flatten`` -> :class:`~bioconv.ir.Flatten`.
- ``BatchNorm2d`` / ``BatchNorm1d`` right after a conv/linear layer are folded into it
  (the MCR-Norm paper eq. 2-3), with :math:`\sigma = \sqrt{\mathrm{var} + \epsilon}`:

  .. math:: \tilde W = \frac{\gamma}{\sigma} W, \qquad
            \tilde b = \frac{\gamma}{\sigma}(b - \mu) + \beta

- ``Dropout`` / ``Dropout2d`` (identity at inference) and ``Identity`` are dropped.
- ``ReLU`` is implied: every hidden conv/linear layer must be followed by one
  (the spiking neuron *is* the ReLU); the last layer must not have one. ``ReLU6`` and
  ``Hardtanh(0, c)`` count as a ReLU and set the layer's ``clip`` (6 or c);
  :class:`bioconv.ann.activations.SoftLIF` sets its ``rate_curve`` (convert with method
  ``lif-rate``). A final
  ``Softmax`` / ``LogSoftmax`` is dropped with a logged notice (it does not change the argmax).
  ``AdaptiveAvgPool2d`` whose output size divides its input is an ``AvgPool2d``.
- Any other nonlinearity (Sigmoid, Tanh, GELU, LeakyReLU, ...) or module raises
  ``ValueError`` naming it and listing the supported types.
- A ReLU on the raw input is kept only if the data cannot be negative: ``input_range``
  (the range of the data, default [0, 1]) must then start at >= 0, else ``ValueError``.
- TorchScript modules and modules with forward hooks are refused (the converter cannot
  see what they compute).

IR layer names are ``conv1, conv2, ...``, ``pool1, ...``, ``fc1, ...`` and ``flatten``.
The result is checked against the torch model on random inputs (``verify=True``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from bioconv import ir

logger = logging.getLogger(__name__)


class _State:
    """Mutable bookkeeping while walking the modules (local to one conversion)."""

    def __init__(self, input_shape: tuple[int, ...]):
        self.shape = tuple(input_shape)
        self.layers: list[ir.Layer] = []
        self.counts = {"conv": 0, "fc": 0, "pool": 0}
        self.needs_relu: str | None = None  # name of a weighted layer still waiting for its ReLU
        self.folded: list[str] = []
        self.input_relu = False
        self.softmax = ""

    def name(self, kind: str) -> str:
        self.counts[kind] += 1
        return f"{kind}{self.counts[kind]}"

    def check_relu(self, module_name: str, module: nn.Module) -> None:
        if self.needs_relu is not None:
            raise ValueError(
                f"module {module_name!r} ({type(module).__name__}) follows layer {self.needs_relu!r} without a ReLU; "
                "bioconv implies a ReLU after every hidden conv/linear layer (put nn.ReLU() in between)"
            )


def _np(t: torch.Tensor | None, size: int) -> np.ndarray:
    return np.zeros(size) if t is None else t.detach().cpu().double().numpy().copy()


def _conv(st: _State, name: str, m: nn.Conv2d) -> None:
    st.check_relu(name, m)
    if len(st.shape) != 3:
        raise ValueError(f"Conv2d {name!r} needs a (C, H, W) input, got {st.shape}")
    padding = m.padding
    if isinstance(padding, str):  # 'same' (stride 1) or 'valid'
        total = [d * (k - 1) for d, k in zip(m.dilation, m.kernel_size)]
        padding = tuple(t // 2 for t in total) if padding == "same" else (0, 0)
        if m.padding == "same" and any(t % 2 for t in total):
            raise ValueError(f"Conv2d {name!r}: padding='same' with an even kernel is asymmetric; use explicit padding")
    layer = ir.Conv2d(st.name("conv"), st.shape, _np(m.weight, 0), _np(m.bias, m.out_channels),
                      stride=tuple(m.stride), padding=tuple(padding), groups=m.groups, dilation=tuple(m.dilation),
                      padding_mode=m.padding_mode)
    st.layers.append(layer)
    st.shape = layer.output_shape
    st.needs_relu = layer.name


def _linear(st: _State, name: str, m: nn.Linear) -> None:
    st.check_relu(name, m)
    if len(st.shape) != 1:
        raise ValueError(f"Linear {name!r} gets a {st.shape} input; add nn.Flatten() before it")
    layer = ir.Dense(st.name("fc"), _np(m.weight, 0), _np(m.bias, m.out_features))
    if layer.input_shape != st.shape:
        raise ValueError(f"Linear {name!r} expects {layer.input_shape[0]} inputs but gets {st.shape[0]}")
    st.layers.append(layer)
    st.shape = layer.output_shape
    st.needs_relu = layer.name


def _batchnorm(st: _State, name: str, m: nn.modules.batchnorm._BatchNorm) -> None:
    prev = st.layers[-1] if st.layers else None
    if not isinstance(prev, (ir.Conv2d, ir.Dense)) or st.needs_relu != prev.name:
        raise ValueError(f"{type(m).__name__} {name!r} can only be folded right after a Conv2d/Linear layer "
                         "(before its ReLU); move it or fold it by hand")
    if m.running_mean is None or m.running_var is None:
        raise ValueError(f"{type(m).__name__} {name!r} has no running statistics (track_running_stats=False); "
                         "it cannot be folded")
    n = m.num_features
    if n != prev.bias.shape[0]:
        raise ValueError(f"{type(m).__name__} {name!r} has {n} features but layer {prev.name!r} has {prev.bias.shape[0]}")
    gamma = _np(m.weight, n) if m.affine else np.ones(n)
    beta = _np(m.bias, n) if m.affine else np.zeros(n)
    scale = gamma / np.sqrt(_np(m.running_var, n) + m.eps)
    shape = (-1,) + (1,) * (prev.weight.ndim - 1)
    weight = prev.weight * scale.reshape(shape)
    bias = scale * (prev.bias - _np(m.running_mean, n)) + beta
    st.layers[-1] = type(prev)(**{**{f: getattr(prev, f) for f in prev.__dataclass_fields__},
                                   "weight": weight, "bias": bias})
    st.folded.append(prev.name)


def _pool(st: _State, name: str, m: nn.AvgPool2d | nn.MaxPool2d) -> None:
    st.check_relu(name, m)
    if len(st.shape) != 3:
        raise ValueError(f"{type(m).__name__} {name!r} needs a (C, H, W) input, got {st.shape}")
    pad = m.padding if isinstance(m.padding, tuple) else (m.padding, m.padding)
    if any(pad) or m.ceil_mode or getattr(m, "dilation", 1) not in (1, (1, 1)) \
            or getattr(m, "divisor_override", None) is not None:
        raise ValueError(f"{type(m).__name__} {name!r}: only padding=0, ceil_mode=False, dilation=1 and no "
                         "divisor_override are supported")
    stride = m.stride if m.stride is not None else m.kernel_size
    cls = ir.AvgPool2d if isinstance(m, nn.AvgPool2d) else ir.MaxPool2d
    layer = cls(st.name("pool"), st.shape, kernel_size=m.kernel_size, stride=stride)
    st.layers.append(layer)
    st.shape = layer.output_shape


def _flatten(st: _State, name: str, m: nn.Flatten) -> None:
    if m.start_dim != 1 or m.end_dim != -1:
        raise ValueError(f"Flatten {name!r}: only start_dim=1, end_dim=-1 is supported")
    if len(st.shape) > 1:
        layer = ir.Flatten("flatten", st.shape)
        st.layers.append(layer)
        st.shape = layer.output_shape


def _relu(st: _State, name: str, m: nn.ReLU) -> None:
    if not st.layers:
        st.input_relu = True
    st.needs_relu = None


def _clipped_relu(st: _State, name: str, m: nn.Hardtanh) -> None:
    """ReLU6 / Hardtanh(0, c): the ReLU of the layer before, with ``clip = c`` (Ding et al. 2021)."""
    if m.min_val != 0 or not m.max_val > 0:
        raise ValueError(f"module {name!r} is Hardtanh({m.min_val}, {m.max_val}); only Hardtanh(0, c) (a clipped "
                         "ReLU) converts. Retrain with min_val=0 or nn.ReLU")
    prev = st.layers[-1] if st.layers else None
    if st.needs_relu is None or not isinstance(prev, (ir.Conv2d, ir.Dense)) or prev.name != st.needs_relu:
        raise ValueError(f"{type(m).__name__} {name!r} must follow a Conv2d/Linear layer directly (it is its ReLU)")
    st.layers[-1] = replace(prev, clip=float(m.max_val))
    st.needs_relu = None


def _adaptive_avg(st: _State, name: str, m: nn.AdaptiveAvgPool2d) -> None:
    if len(st.shape) != 3:
        raise ValueError(f"AdaptiveAvgPool2d {name!r} needs a (C, H, W) input, got {st.shape}")
    size = m.output_size
    out = (size, size) if isinstance(size, int) else tuple(st.shape[1 + k] if o is None else o for k, o in enumerate(size))
    if any(h % o for h, o in zip(st.shape[1:], out)):
        raise ValueError(f"AdaptiveAvgPool2d {name!r}: output {out} of a {st.shape[1:]} map is not a uniform average "
                         "pool; use an input size that the output size divides, or nn.AvgPool2d")
    kernel = tuple(h // o for h, o in zip(st.shape[1:], out))
    _pool(st, name, nn.AvgPool2d(kernel, kernel))


def _drop(st: _State, name: str, m: nn.Module) -> None:
    """Dropout and Identity: nothing at inference."""


CONVERTERS: dict[type, Callable[[_State, str, nn.Module], None]] = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm2d: _batchnorm,
    nn.BatchNorm1d: _batchnorm,
    nn.AvgPool2d: _pool,
    nn.MaxPool2d: _pool,
    nn.Flatten: _flatten,
    nn.ReLU: _relu,
    nn.ReLU6: _clipped_relu,
    nn.Hardtanh: _clipped_relu,
    nn.AdaptiveAvgPool2d: _adaptive_avg,
    nn.Dropout: _drop,
    nn.Dropout2d: _drop,
    nn.Identity: _drop,
}
FINAL_ONLY = (nn.Softmax, nn.LogSoftmax)
NONLINEARITIES = (nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.PReLU,
                  nn.Softplus, nn.SELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Threshold)


def _supported() -> str:
    return ", ".join(sorted(t.__name__ for t in CONVERTERS)) + " (and a final Softmax/LogSoftmax)"


def _modules(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if type(model).forward is not nn.Sequential.forward:
        raise ValueError(
            f"{type(model).__name__} {'at ' + repr(prefix) + ' ' if prefix else ''}has its own forward()")
    out = []
    for name, child in model.named_children():
        full = f"{prefix}.{name}" if prefix else name
        out.extend(_modules(child, full) if isinstance(child, nn.Sequential) else [(full, child)])
    return out


def _is_plain_sequential(model: nn.Module) -> bool:
    """An nn.Sequential tree whose leaves are all torch.nn modules (user modules are traced with fx)."""
    try:
        mods = _modules(model)
    except ValueError:
        return False
    return all(type(m).__module__.startswith("torch.nn") for _, m in mods)


def _refuse_opaque(model: Any) -> None:
    """TorchScript and hooked modules compute something the converter cannot see."""
    if isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction)):
        raise ValueError(
            f"{type(model).__name__} is a TorchScript module; bioconv converts the Python nn.Module. Build the "
            "model in Python and load its weights (model.load_state_dict(torch.load(path))), or pass "
            "`--model module:factory --weights state_dict.pt` to `bioconv convert`")
    if not isinstance(model, nn.Module):
        raise ValueError(f"from_torch needs a torch nn.Module, got {type(model).__name__}")
    for name, mod in model.named_modules():
        hooks = [h for h in ("_forward_hooks", "_forward_pre_hooks") if getattr(mod, h, None)]
        if hooks:
            where = f"module {name!r}" if name else "the top-level module"
            raise ValueError(f"{where} ({type(mod).__name__}) has forward hooks, which may change what it computes "
                             "and which the converter cannot see; remove the hooks (handle.remove()) or build their "
                             "effect into the model")


def _sequential_layers(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[list[ir.Layer], dict]:
    modules = _modules(model)
    if not modules:
        raise ValueError("the model has no layers")
    st = _State(input_shape)
    for i, (name, module) in enumerate(modules):
        if isinstance(module, FINAL_ONLY):
            if i != len(modules) - 1:
                raise ValueError(f"{type(module).__name__} {name!r} is only supported as the last module")
            st.softmax = name
            logger.info("dropped the final %s %r (it does not change the argmax of the class scores)",
                        type(module).__name__, name)
            continue
        converter = CONVERTERS.get(type(module))
        if converter is None:
            if isinstance(module, NONLINEARITIES):
                raise ValueError(
                    f"module {name!r} is a {type(module).__name__} nonlinearity; converted spiking networks "
                    "implement ReLU (and ReLU6/Hardtanh(0, c)) only. Retrain with nn.ReLU")
            raise ValueError(f"unsupported layer {name!r} of type {type(module).__name__}; supported: {_supported()}")
        converter(st, name, module)
    spiking = [l for l in st.layers if ir.is_spiking(l)]
    if not spiking or not isinstance(spiking[-1], (ir.Conv2d, ir.Dense)):
        raise ValueError("the model must end with a Conv2d or Linear layer (the class scores)")
    if st.needs_relu is None:
        raise ValueError(f"the last layer {spiking[-1].name!r} is followed by a ReLU; remove it (the output layer "
                         "is linear: its spike counts or voltages give the class scores)")
    if isinstance(st.layers[-1], ir.Flatten):
        raise ValueError("the model ends with Flatten; it must end with a Conv2d or Linear layer")
    return st.layers, {"bn_folded": st.folded, "input_relu": st.input_relu, "dropped_softmax": st.softmax}


def from_torch(model: nn.Module, input_shape, rate_scale: float = 1000.0, verify: bool = True,
               meta: dict | None = None, input_range: tuple[float, float] = (0.0, 1.0)) -> ir.Graph:
    """Convert ``model`` for inputs of shape ``input_shape`` (C, H, W) to a Graph.

    An ``nn.Sequential`` is converted module by module; any other module is traced with
    ``torch.fx`` (:mod:`bioconv.fx_import`). The Graph has ``neuron=None`` and
    ``synapse=None`` (an ANN graph); ``meta`` records the source and which layers had
    BatchNorm folded in. ``input_range`` is the range of the data (e.g. (-0.42, 2.8) for
    mean/std-normalized MNIST): a ReLU on the raw input is refused when it can be negative,
    and with ``verify`` the IR forward pass (:meth:`bioconv.ir.Graph.forward`) is compared
    with the torch model in eval mode on random inputs in that range (mismatch: ``ValueError``).
    """
    _refuse_opaque(model)
    shape = tuple(int(s) for s in input_shape)
    lo, hi = (float(v) for v in input_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"input_range must be (low, high) with low < high, got {input_range}")
    if _is_plain_sequential(model):
        layers, record = _sequential_layers(model, shape)
        inp, source = ir.Input(shape, rate_scale=rate_scale), "torch"
    else:
        from bioconv.fx_import import import_fx

        inp, layers, record = import_fx(model, shape)
        inp, source = ir.Input(shape, rate_scale=rate_scale), "torch.fx"
    if record["input_relu"] and lo < 0:
        raise ValueError(
            f"the model applies a ReLU to its raw input, but the data range {input_range} is signed; the spiking "
            "input encodes negative pixels as negative spikes and would not drop them. Remove the ReLU or "
            "rectify the data before conversion")
    graph = ir.Graph(input=inp, layers=tuple(layers),
                     meta={"source": source, "bn_folded": record["bn_folded"], **(meta or {})})
    if verify:
        check(model, graph, input_range=(lo, hi))
    return graph


@torch.no_grad()
def check(model: nn.Module, graph: ir.Graph, n: int = 2, seed: int = 0, rtol: float = 1e-4,
          input_range: tuple[float, float] = (0.0, 1.0)) -> float:
    """Max abs difference between ``model`` (eval mode, float64) and ``graph.forward``.

    The inputs are ``n`` uniform random images in ``input_range`` (seeded). A final
    softmax of the model is compared as the softmax of the graph's output.
    Raises ``ValueError`` if it exceeds ``rtol`` times the output scale.
    """
    x = np.random.default_rng(seed).uniform(*input_range, size=(n, *graph.input.shape))
    got = graph.forward(x)[graph.layers[-1].name]
    if _is_plain_sequential(model):
        mods = [m for _, m in _modules(model)]
        final = mods[-1] if mods and isinstance(mods[-1], FINAL_ONLY) else None
        if final is not None:  # compare logits: the graph drops a final softmax
            mods = mods[:-1]
        ref = copy.deepcopy(nn.Sequential(*mods)).eval().double()(torch.from_numpy(x)).numpy()
    else:
        ref = copy.deepcopy(model).eval().double()(torch.from_numpy(x)).numpy()
        final = _final_softmax(model)
        if final is not None:
            got = final(torch.from_numpy(got)).numpy()
    diff = float(np.max(np.abs(ref - got)))
    if not diff <= rtol * max(1.0, float(np.max(np.abs(ref)))):
        raise ValueError(f"the converted graph differs from the torch model by {diff:.3g} (max abs); the model's "
                         "forward does something the converter did not see")
    return diff


def _final_softmax(model: nn.Module) -> Callable | None:
    """The final softmax/log-softmax of a traced model as a function of the logits, or None."""
    import torch.nn.functional as F

    from bioconv.fx_import import trace

    gm = trace(model)
    out = [n for n in gm.graph.nodes if n.op == "output"][0]
    last = out.args[0]
    if not isinstance(last, torch.fx.Node):
        return None
    kinds = {F.softmax: "softmax", torch.softmax: "softmax", F.log_softmax: "log_softmax", "softmax": "softmax",
             "log_softmax": "log_softmax"}
    kind = None
    if last.op == "call_module":
        mod = dict(gm.named_modules())[last.target]
        kind = {nn.Softmax: "softmax", nn.LogSoftmax: "log_softmax"}.get(type(mod))
    elif last.op in ("call_function", "call_method"):
        kind = kinds.get(last.target)
    if kind is None:
        return None
    return (lambda z: torch.softmax(z, 1)) if kind == "softmax" else (lambda z: torch.log_softmax(z, 1))


def data_range(preprocessing: dict) -> tuple[float, float]:
    """The range of the preprocessed data (for the checks of :func:`from_torch`); [0, 1] if unknown."""
    if "range" in preprocessing:
        lo, hi = preprocessing["range"]
        return float(lo), float(hi)
    if "mean" in preprocessing and "std" in preprocessing:
        mean, std = np.asarray(preprocessing["mean"], float), np.asarray(preprocessing["std"], float)
        return float(np.min(-mean / std)), float(np.max((1.0 - mean) / std))
    return 0.0, 1.0


def from_checkpoint(path, rate_scale: float = 1000.0, verify: bool = True) -> ir.Graph:
    """Load a ``bioconv train`` checkpoint and convert it; the Graph's ``meta`` records its origin.

    ``meta`` gets ``checkpoint`` (path), ``spec``, ``arch``, ``dataset``,
    ``preprocessing`` and ``ann_test_accuracy`` from the checkpoint metadata.
    """
    from bioconv.ann import load_checkpoint

    model, ckpt = load_checkpoint(path)
    info = {"checkpoint": str(path), "spec": ckpt["spec"], "arch": ckpt["arch"], "dataset": ckpt["dataset"],
            "preprocessing": ckpt.get("preprocessing", {}), "ann_test_accuracy": ckpt.get("test_accuracy")}
    return from_torch(model, tuple(ckpt["input_shape"]), rate_scale=rate_scale, verify=verify, meta=info,
                      input_range=data_range(ckpt.get("preprocessing", {})))
