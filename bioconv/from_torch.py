r"""Convert a trained ``torch.nn.Sequential`` into a :class:`bioconv.ir.Graph` (needs torch).

One converter per torch module type (:data:`CONVERTERS`). The rules:

- ``Conv2d`` (groups 1, dilation 1, zero padding) -> :class:`~bioconv.ir.Conv2d`;
  ``Linear`` -> :class:`~bioconv.ir.Dense`; ``AvgPool2d`` / ``MaxPool2d`` (no padding,
  no ceil mode) -> the IR pools; ``Flatten`` -> :class:`~bioconv.ir.Flatten`.
- ``BatchNorm2d`` / ``BatchNorm1d`` right after a conv/linear layer are folded into it
  (seed 000 eq. 2-3), with :math:`\sigma = \sqrt{\mathrm{var} + \epsilon}`:

  .. math:: \tilde W = \frac{\gamma}{\sigma} W, \qquad
            \tilde b = \frac{\gamma}{\sigma}(b - \mu) + \beta

- ``Dropout`` / ``Dropout2d`` (identity at inference) and ``Identity`` are dropped.
- ``ReLU`` is implied: every hidden conv/linear layer must be followed by one
  (the spiking neuron *is* the ReLU); the last layer must not have one. A final
  ``Softmax`` / ``LogSoftmax`` is dropped (it does not change the argmax).
- Any other nonlinearity (Sigmoid, Tanh, GELU, LeakyReLU, ...) or module raises
  ``ValueError`` naming it and listing the supported types. A model that is not a
  plain ``nn.Sequential`` (a custom ``forward`` with functional ops) is refused, since
  the converter cannot see what it computes.

IR layer names are ``conv1, conv2, ...``, ``pool1, ...``, ``fc1, ...`` and ``flatten``.
The result is checked against the torch model on random inputs (``verify=True``).
"""

from __future__ import annotations

import copy
import logging
from typing import Callable

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
    if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
        raise ValueError(f"Conv2d {name!r}: only groups=1, dilation=1 and zero padding are supported "
                         f"(got groups={m.groups}, dilation={m.dilation}, padding_mode={m.padding_mode!r})")
    padding = m.padding
    if isinstance(padding, str):  # 'same' (stride 1) or 'valid'
        padding = tuple(k // 2 for k in m.kernel_size) if padding == "same" else (0, 0)
        if m.padding == "same" and any(k % 2 == 0 for k in m.kernel_size):
            raise ValueError(f"Conv2d {name!r}: padding='same' with an even kernel is asymmetric; use explicit padding")
    layer = ir.Conv2d(st.name("conv"), st.shape, _np(m.weight, 0), _np(m.bias, m.out_channels),
                      stride=tuple(m.stride), padding=tuple(padding))
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
    st.needs_relu = None


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
    nn.Dropout: _drop,
    nn.Dropout2d: _drop,
    nn.Identity: _drop,
}
FINAL_ONLY = (nn.Softmax, nn.LogSoftmax)
NONLINEARITIES = (nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.ReLU6, nn.PReLU, nn.Hardtanh,
                  nn.Softplus, nn.SELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Softsign, nn.Threshold)


def _supported() -> str:
    return ", ".join(sorted(t.__name__ for t in CONVERTERS)) + " (and a final Softmax/LogSoftmax)"


def _modules(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if type(model).forward is not nn.Sequential.forward:
        raise ValueError(
            f"from_torch needs an nn.Sequential of supported modules, got {type(model).__name__} "
            f"{'at ' + repr(prefix) + ' ' if prefix else ''}with its own forward(); functional ops in a custom "
            f"forward cannot be seen by the converter. Rewrite it as nn.Sequential of: {_supported()}"
        )
    out = []
    for name, child in model.named_children():
        full = f"{prefix}.{name}" if prefix else name
        out.extend(_modules(child, full) if isinstance(child, nn.Sequential) else [(full, child)])
    return out


def from_torch(model: nn.Module, input_shape, rate_scale: float = 1000.0, verify: bool = True,
               meta: dict | None = None) -> ir.Graph:
    """Convert ``model`` (an ``nn.Sequential``) for inputs of shape ``input_shape`` (C, H, W) to a Graph.

    The Graph has ``neuron=None`` and ``synapse=None`` (an ANN graph); ``meta`` records
    the source and which layers had BatchNorm folded in. With ``verify``, the IR
    forward pass (:meth:`bioconv.ir.Graph.forward`) is compared with the torch model
    in eval mode on two random inputs and a mismatch raises ``ValueError``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"from_torch needs a torch nn.Module, got {type(model).__name__}")
    modules = _modules(model)
    if not modules:
        raise ValueError("the model has no layers")
    st = _State(tuple(int(s) for s in input_shape))
    for i, (name, module) in enumerate(modules):
        if isinstance(module, FINAL_ONLY):
            if i != len(modules) - 1:
                raise ValueError(f"{type(module).__name__} {name!r} is only supported as the last module")
            continue
        converter = CONVERTERS.get(type(module))
        if converter is None:
            if isinstance(module, NONLINEARITIES):
                raise ValueError(
                    f"module {name!r} is a {type(module).__name__} nonlinearity; converted spiking networks "
                    "implement ReLU only. Retrain with nn.ReLU")
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
    graph = ir.Graph(input=ir.Input(tuple(int(s) for s in input_shape), rate_scale=rate_scale),
                     layers=tuple(st.layers), meta={"source": "torch", "bn_folded": st.folded, **(meta or {})})
    if verify:
        check(model, graph)
    return graph


@torch.no_grad()
def check(model: nn.Module, graph: ir.Graph, n: int = 2, seed: int = 0, rtol: float = 1e-4) -> float:
    """Max abs difference between ``model`` (eval mode, float64, final softmax left out) and ``graph.forward``.

    The inputs are ``n`` uniform random images in [0, 1] (seeded).
    Raises ``ValueError`` if it exceeds ``rtol`` times the output scale.
    """
    x = np.random.default_rng(seed).uniform(0.0, 1.0, size=(n, *graph.input.shape))
    mods = [m for _, m in _modules(model)]
    if mods and isinstance(mods[-1], FINAL_ONLY):  # compare logits: the graph drops a final softmax
        mods = mods[:-1]
    ref = copy.deepcopy(nn.Sequential(*mods)).eval().double()(torch.from_numpy(x)).numpy()
    got = graph.forward(x)[graph.layers[-1].name]
    diff = float(np.max(np.abs(ref - got)))
    if diff > rtol * max(1.0, float(np.max(np.abs(ref)))):
        raise ValueError(f"the converted graph differs from the torch model by {diff:.3g} (max abs); the model's "
                         "forward does something the converter did not see")
    return diff


def from_checkpoint(path, rate_scale: float = 1000.0, verify: bool = True) -> ir.Graph:
    """Load a ``bioconv train`` checkpoint and convert it; the Graph's ``meta`` records its origin.

    ``meta`` gets ``checkpoint`` (path), ``spec``, ``arch``, ``dataset``,
    ``preprocessing`` and ``ann_test_accuracy`` from the checkpoint metadata.
    """
    from bioconv.ann import load_checkpoint

    model, ckpt = load_checkpoint(path)
    info = {"checkpoint": str(path), "spec": ckpt["spec"], "arch": ckpt["arch"], "dataset": ckpt["dataset"],
            "preprocessing": ckpt.get("preprocessing", {}), "ann_test_accuracy": ckpt.get("test_accuracy")}
    return from_torch(model, tuple(ckpt["input_shape"]), rate_scale=rate_scale, verify=verify, meta=info)
