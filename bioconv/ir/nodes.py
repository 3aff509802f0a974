"""Layer nodes of the IR (see :mod:`bioconv.ir`): one frozen dataclass per layer, the maths in
its docstring, ``ValueError`` on bad shapes, and the shape checks they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from bioconv.ir.rate_curve import LIFRate

Shape = tuple[int, ...]


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    try:
        pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(int(p) != p for p in pair):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _pool_out(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _names(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    out = tuple(value)
    if not all(isinstance(v, str) and v for v in out):
        raise ValueError(f"{what} must be a tuple of layer names, got {value!r}")
    return out


def _check_clip(layer) -> None:
    """Checks ``clip`` and ``rate_curve`` (the layer's activation: ReLU, clipped ReLU or LIF rate curve)."""
    curve = layer.rate_curve
    if curve is not None:
        if isinstance(curve, dict):
            curve = LIFRate(**curve)
            object.__setattr__(layer, "rate_curve", curve)
        if not isinstance(curve, LIFRate):
            raise ValueError(f"layer {layer.name!r}: rate_curve must be a bioconv.ir.LIFRate, got {type(curve).__name__}")
        if layer.clip is not None:
            raise ValueError(f"layer {layer.name!r}: a layer has either a clip (ReLU6) or a rate curve (SoftLIF), not both")
    if layer.clip is not None:
        clip = float(layer.clip)
        if not (np.isfinite(clip) and clip > 0):
            raise ValueError(f"layer {layer.name!r}: clip must be finite and > 0 (or None), got {layer.clip}")
        object.__setattr__(layer, "clip", clip)


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_threshold(threshold: float | np.ndarray, out_shape: Shape, name: str) -> None:
    th = np.asarray(threshold, dtype=float)
    allowed = {(), (out_shape[0],), tuple(out_shape)}
    if th.shape not in allowed:
        raise ValueError(
            f"layer {name!r}: threshold shape {th.shape} must be scalar, per channel "
            f"{(out_shape[0],)} or per neuron {tuple(out_shape)}"
        )
    if not np.all(np.isfinite(th)) or np.any(th <= 0):
        raise ValueError(f"layer {name!r}: thresholds must be finite and > 0")


def _check_finite(name: str, **arrays: np.ndarray) -> None:
    for key, arr in arrays.items():
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"layer {name!r}: {key} contains NaN or inf; retrain or fix the checkpoint "
                "before converting"
            )


def _pool_output_shape(layer) -> Shape:
    c, h, w = layer.input_shape
    return (
        c,
        _pool_out(h, layer.kernel_size[0], layer.stride[0], 0),
        _pool_out(w, layer.kernel_size[1], layer.stride[1], 0),
    )


def _check_pool(layer) -> None:
    object.__setattr__(layer, "kernel_size", _pair(layer.kernel_size, "kernel_size"))
    object.__setattr__(layer, "stride", _pair(layer.stride, "stride"))
    object.__setattr__(layer, "input_shape", tuple(int(s) for s in layer.input_shape))
    if len(layer.input_shape) != 3:
        raise ValueError(f"layer {layer.name!r}: pooling needs a (C, H, W) input, got {layer.input_shape}")
    if min(_pool_output_shape(layer)) <= 0:
        raise ValueError(f"layer {layer.name!r}: pool kernel larger than input {layer.input_shape}")
    _check_threshold(layer.threshold, _pool_output_shape(layer), layer.name)


@dataclass(frozen=True, eq=False)
class Input:
    r"""Rate encoding of the network input.

    A pixel value :math:`x` becomes a firing rate :math:`r = \mathrm{rate\_scale} \cdot |x|`
    (in Hz), with the spike sign given by :math:`\mathrm{sign}(x)` (signed spikes for
    inputs that can be negative, such as mean/std-normalized CIFAR-10).
    """

    shape: Shape
    rate_scale: float = 1000.0  # Hz per unit of input
    name: str = "input"

    def __post_init__(self) -> None:
        if len(self.shape) == 0 or any(int(s) <= 0 for s in self.shape):
            raise ValueError(f"input shape must be positive, got {self.shape}")
        if not (self.rate_scale > 0 and np.isfinite(self.rate_scale)):
            raise ValueError(f"input rate_scale must be > 0 Hz, got {self.rate_scale}")


@dataclass(frozen=True, eq=False)
class Conv2d:
    r"""2-D convolution (cross-correlation, as in torch) with groups, dilation and padding modes.

    With :math:`g` groups, :math:`C_i/g` input channels per group and dilation :math:`d`:

    .. math::
        z_{c_o}(y, x) = b_{c_o} + \sum_{c, k_y, k_x} W_{c_o c k_y k_x}\,
            a_{\gamma(c_o) C_i/g + c}(s_y y + d_y k_y - p_y,\; s_x x + d_x k_x - p_x),
        \qquad \gamma(c_o) = \lfloor c_o g / C_o \rfloor

    ``weight`` has shape (C_out, C_in/groups, kH, kW); ``bias`` has shape (C_out,). Pixels
    outside the image are 0 (``padding_mode="zeros"``) or taken from the image as torch's
    ``reflect``/``replicate``/``circular`` padding does. ``spiking=False`` makes it a branch
    of an :class:`Add` (no neurons, no ReLU); ``clip`` (ReLU6, Hardtanh(0, c)) caps the
    activation, :math:`a = \min(\max(z, 0), c)`, in units of :math:`z`; ``rate_curve`` (a
    :class:`~bioconv.ir.LIFRate`, from a SoftLIF activation) replaces the ReLU by the LIF rate curve.
    """

    name: str
    input_shape: Shape  # (C_in, H, W)
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    threshold: Union[float, np.ndarray] = 1.0
    groups: int = 1
    dilation: tuple[int, int] = (1, 1)
    padding_mode: str = "zeros"
    inputs: tuple[str, ...] = ()
    spiking: bool = True
    clip: Optional[float] = None
    rate_curve: Optional[LIFRate] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "padding", _pair(self.padding, "padding"))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation"))
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "inputs", _names(self.inputs, "inputs"))
        object.__setattr__(self, "groups", int(self.groups))
        object.__setattr__(self, "spiking", bool(self.spiking))
        _check_clip(self)
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"layer {self.name!r}: padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}")
        if self.weight.ndim != 4:
            raise ValueError(f"layer {self.name!r}: conv weight must be 4-D, got {self.weight.shape}")
        if self.groups < 1 or self.weight.shape[0] % self.groups or min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"layer {self.name!r}: groups ({self.groups}) must divide C_out={self.weight.shape[0]}; "
                             "stride and dilation must be >= 1")
        if len(self.input_shape) != 3 or self.input_shape[0] != self.weight.shape[1] * self.groups:
            raise ValueError(
                f"layer {self.name!r}: input shape {self.input_shape} does not match weight "
                f"{self.weight.shape} with groups={self.groups} (expected (C_in={self.weight.shape[1] * self.groups}, H, W))"
            )
        if self.padding_mode != "zeros" and any(p >= n for p, n in zip(self.padding, self.input_shape[1:])):
            raise ValueError(f"layer {self.name!r}: {self.padding_mode} padding {self.padding} must be smaller than the image")
        if self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"layer {self.name!r}: bias shape {self.bias.shape} != ({self.weight.shape[0]},)")
        if min(self.output_shape) <= 0:
            raise ValueError(f"layer {self.name!r}: kernel larger than padded input {self.input_shape}")
        _check_finite(self.name, weight=self.weight, bias=self.bias)
        _check_threshold(self.threshold, self.output_shape, self.name)

    @property
    def output_shape(self) -> Shape:
        _, h, w = self.input_shape
        kh, kw = self.weight.shape[2:]
        return (
            self.weight.shape[0],
            _pool_out(h, kh, self.stride[0], self.padding[0], self.dilation[0]),
            _pool_out(w, kw, self.stride[1], self.padding[1], self.dilation[1]),
        )


@dataclass(frozen=True, eq=False)
class Dense:
    r"""Fully connected layer, :math:`z = W a + b`; ``weight`` has shape (N_out, N_in).

    ``inputs``, ``spiking``, ``clip`` and ``rate_curve`` as for :class:`Conv2d`.
    """

    name: str
    weight: np.ndarray
    bias: np.ndarray
    threshold: Union[float, np.ndarray] = 1.0
    inputs: tuple[str, ...] = ()
    spiking: bool = True
    clip: Optional[float] = None
    rate_curve: Optional[LIFRate] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _names(self.inputs, "inputs"))
        object.__setattr__(self, "spiking", bool(self.spiking))
        _check_clip(self)
        if self.weight.ndim != 2:
            raise ValueError(f"layer {self.name!r}: dense weight must be 2-D, got {self.weight.shape}")
        if self.bias.shape != (self.weight.shape[0],):
            raise ValueError(f"layer {self.name!r}: bias shape {self.bias.shape} != ({self.weight.shape[0]},)")
        _check_finite(self.name, weight=self.weight, bias=self.bias)
        _check_threshold(self.threshold, self.output_shape, self.name)

    @property
    def input_shape(self) -> Shape:
        return (self.weight.shape[1],)

    @property
    def output_shape(self) -> Shape:
        return (self.weight.shape[0],)


@dataclass(frozen=True, eq=False)
class AvgPool2d:
    r"""Average pooling, :math:`z_c(y, x) = \frac{s}{k_y k_x} \sum_{k} a_c(s_y y + k_y, s_x x + k_x)`.

    ``scale`` (default 1) is the factor :math:`s` that normalization puts on the
    uniform pooling weight :math:`1/(k_y k_x)`. No padding (as in the source papers' nets).
    """

    name: str
    input_shape: Shape  # (C, H, W)
    kernel_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    scale: float = 1.0
    threshold: Union[float, np.ndarray] = 1.0
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_pool(self)
        if not np.isfinite(self.scale):
            raise ValueError(f"layer {self.name!r}: scale must be finite")

    @property
    def output_shape(self) -> Shape:
        return _pool_output_shape(self)


@dataclass(frozen=True, eq=False)
class MaxPool2d:
    r"""Max pooling, :math:`z_c(y, x) = \max_{k} a_c(s_y y + k_y, s_x x + k_x)`.

    In a spiking network this is the gated max-pool of Rueckauer et al. (2017, §2.2.6):
    each pooling unit passes the spikes of the input neuron with the highest
    running firing rate. The pool unit is a *relay*, whatever the graph's neuron model:
    a passed spike sets its state to 1, it fires when the state exceeds 0.5 and resets
    to 0 (no bias, no leak), so it repeats its winner's spikes one for one, one step
    later. ``threshold`` is kept for the ANN forward (it is 1 after conversion).
    """

    name: str
    input_shape: Shape
    kernel_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    threshold: Union[float, np.ndarray] = 1.0
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_pool(self)

    @property
    def output_shape(self) -> Shape:
        return _pool_output_shape(self)


@dataclass(frozen=True, eq=False)
class Flatten:
    """Reshape (C, H, W) to (C·H·W,) in torch's (row-major, channel-first) order. No neurons."""

    name: str
    input_shape: Shape
    inputs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "inputs", _names(self.inputs, "inputs"))

    @property
    def output_shape(self) -> Shape:
        return (int(np.prod(self.input_shape)),)


@dataclass(frozen=True, eq=False)
class Concat:
    r"""Channel concatenation of several inputs (torch ``cat(dim=1)``). No neurons.

    For (C_k, H, W) inputs the output is :math:`(\sum_k C_k, H, W)`; for 1-D inputs the
    vectors are joined. In flat (C, H, W) order the output is the inputs' flat vectors one
    after the other, so a layer reading a Concat reads segment :math:`k` from input
    :math:`k`.
    """

    name: str
    input_shapes: tuple[Shape, ...]
    inputs: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shapes", tuple(tuple(int(v) for v in s) for s in self.input_shapes))
        object.__setattr__(self, "inputs", _names(self.inputs, "inputs"))
        if len(self.inputs) < 1 or len(self.inputs) != len(self.input_shapes):
            raise ValueError(f"layer {self.name!r}: Concat needs one input shape per input, got "
                             f"{len(self.input_shapes)} shapes for inputs {self.inputs}")
        rests = {s[1:] for s in self.input_shapes}
        if len(rests) != 1 or len({len(s) for s in self.input_shapes}) != 1:
            raise ValueError(f"layer {self.name!r}: Concat inputs must agree in all but the channel dimension, "
                             f"got {self.input_shapes}")

    @property
    def input_shape(self) -> Shape:
        return self.output_shape

    @property
    def output_shape(self) -> Shape:
        return (sum(s[0] for s in self.input_shapes), *self.input_shapes[0][1:])


@dataclass(frozen=True, eq=False)
class Add:
    r"""A spiking layer fed by the sum of several branches (residual addition).

    .. math:: z = \sum_k z^{(k)}, \qquad a = \min(\max(z / \theta, 0), c / \theta)

    where :math:`z^{(k)}` is the pre-activation of branch layer ``inputs[k]`` (a
    ``Conv2d``/``Dense`` with ``spiking=False``, bias included; an identity skip is a
    depthwise 1×1 conv with weight 1). In a spiking network the branches' synapses all
    end on this layer's neurons; its bias is the sum of the branch biases.
    """

    name: str
    shape: Shape
    inputs: tuple[str, ...]
    threshold: Union[float, np.ndarray] = 1.0
    clip: Optional[float] = None
    rate_curve: Optional[LIFRate] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))
        object.__setattr__(self, "inputs", _names(self.inputs, "inputs"))
        _check_clip(self)
        if not self.inputs:
            raise ValueError(f"layer {self.name!r}: Add needs at least one branch")
        _check_threshold(self.threshold, self.shape, self.name)

    @property
    def input_shape(self) -> Shape:
        return self.shape

    @property
    def output_shape(self) -> Shape:
        return self.shape


Layer = Union[Conv2d, Dense, AvgPool2d, MaxPool2d, Flatten, Concat, Add]
SPIKING_LAYERS = (Conv2d, Dense, AvgPool2d, MaxPool2d, Add)
VIEWS = (Flatten, Concat)


def is_spiking(layer: Layer) -> bool:
    """True for layers that own neurons (not views, not branch layers)."""
    return isinstance(layer, SPIKING_LAYERS) and getattr(layer, "spiking", True)


def is_branch(layer: Layer) -> bool:
    """True for a weighted layer without neurons that feeds an :class:`Add`."""
    return isinstance(layer, (Conv2d, Dense)) and not layer.spiking
