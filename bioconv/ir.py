"""The network IR: small typed layer nodes and a Graph that holds them in order.

Modelled on NIR's node style (``nir/ir/conv.py``): one frozen dataclass per layer,
the maths in the docstring, one field per parameter, and ``ValueError`` on bad
shapes. Weights are numpy arrays; nothing here imports torch, so a saved Graph can
be read in the Python 3.12 brian2cuda environment.

Every layer except :class:`Flatten` is a *spiking* layer: it owns one neuron per
output element and its threshold θ (scalar, per channel or per neuron). Inputs to
the network are encoded by :class:`Input`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Union

import numpy as np

Shape = tuple[int, ...]


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    try:
        pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(int(p) != p for p in pair):
        raise ValueError(f"{what} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _pool_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


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
    r"""2-D convolution (cross-correlation, as in torch), groups = 1, dilation = 1.

    .. math::
        z_{c_o}(y, x) = b_{c_o} + \sum_{c_i, k_y, k_x} W_{c_o c_i k_y k_x}\,
            a_{c_i}(s_y y + k_y - p_y,\; s_x x + k_x - p_x)

    ``weight`` has shape (C_out, C_in, kH, kW); ``bias`` has shape (C_out,).
    """

    name: str
    input_shape: Shape  # (C_in, H, W)
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    threshold: Union[float, np.ndarray] = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "stride", _pair(self.stride, "stride"))
        object.__setattr__(self, "padding", _pair(self.padding, "padding"))
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if self.weight.ndim != 4:
            raise ValueError(f"layer {self.name!r}: conv weight must be 4-D, got {self.weight.shape}")
        if len(self.input_shape) != 3 or self.input_shape[0] != self.weight.shape[1]:
            raise ValueError(
                f"layer {self.name!r}: input shape {self.input_shape} does not match weight "
                f"{self.weight.shape} (expected (C_in={self.weight.shape[1]}, H, W))"
            )
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
            _pool_out(h, kh, self.stride[0], self.padding[0]),
            _pool_out(w, kw, self.stride[1], self.padding[1]),
        )


@dataclass(frozen=True, eq=False)
class Dense:
    r"""Fully connected layer, :math:`z = W a + b`; ``weight`` has shape (N_out, N_in)."""

    name: str
    weight: np.ndarray
    bias: np.ndarray
    threshold: Union[float, np.ndarray] = 1.0

    def __post_init__(self) -> None:
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
    uniform pooling weight :math:`1/(k_y k_x)`. No padding (as in the seeds' nets).
    """

    name: str
    input_shape: Shape  # (C, H, W)
    kernel_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    scale: float = 1.0
    threshold: Union[float, np.ndarray] = 1.0

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
    running firing rate. Engines that cannot do this raise an error that says to
    use average pooling.
    """

    name: str
    input_shape: Shape
    kernel_size: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    threshold: Union[float, np.ndarray] = 1.0

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))

    @property
    def output_shape(self) -> Shape:
        return (int(np.prod(self.input_shape)),)


Layer = Union[Conv2d, Dense, AvgPool2d, MaxPool2d, Flatten]
SPIKING_LAYERS = (Conv2d, Dense, AvgPool2d, MaxPool2d)


def is_spiking(layer: Layer) -> bool:
    """True for layers that own neurons (everything but Flatten)."""
    return isinstance(layer, SPIKING_LAYERS)


@dataclass(frozen=True, eq=False)
class Graph:
    """A feed-forward network: an :class:`Input` then layers in order.

    ``neuron`` and ``synapse`` are the default models (``bioconv.neurons`` /
    ``bioconv.synapses`` objects, or None for an unconverted ANN graph);
    ``layer_neurons`` overrides the neuron model per layer name. ``meta`` holds
    JSON-serializable normalization metadata (method, λ per layer, gains, achieved
    rates, calibration set, ...).
    """

    input: Input
    layers: tuple[Layer, ...]
    neuron: Any = None
    synapse: Any = None
    layer_neurons: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("a Graph needs at least one layer")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names) or self.input.name in names:
            raise ValueError(f"layer names must be unique, got {names}")
        shape = tuple(self.input.shape)
        for layer in self.layers:
            if tuple(layer.input_shape) != shape:
                raise ValueError(
                    f"shape mismatch at layer {layer.name!r}: it expects input {tuple(layer.input_shape)} "
                    f"but the previous layer gives {shape}"
                )
            shape = tuple(layer.output_shape)
        if not is_spiking(self.layers[-1]):
            raise ValueError("the last layer must be a spiking layer (Conv2d/Dense/pool), not Flatten")
        unknown = set(self.layer_neurons) - set(names)
        if unknown:
            raise ValueError(f"layer_neurons names unknown layers {sorted(unknown)}; layers are {names}")

    @property
    def spiking_layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if is_spiking(layer))

    @property
    def output_shape(self) -> Shape:
        return tuple(self.layers[-1].output_shape)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer {name!r}; layers are {[l.name for l in self.layers]}")

    def neuron_for(self, name: str) -> Any:
        """The neuron model of layer ``name`` (override or the Graph default)."""
        return self.layer_neurons.get(name, self.neuron)

    def replace_layer(self, name: str, **changes: Any) -> "Graph":
        """A new Graph with ``dataclasses.replace(layer, **changes)`` for one layer."""
        layers = tuple(replace(l, **changes) if l.name == name else l for l in self.layers)
        if all(l.name != name for l in self.layers):
            raise KeyError(f"no layer {name!r}")
        return replace(self, layers=layers)

    def with_models(self, neuron: Any = None, synapse: Any = None, **meta: Any) -> "Graph":
        """A new Graph with other default neuron/synapse models and extra metadata."""
        return replace(
            self,
            neuron=self.neuron if neuron is None else neuron,
            synapse=self.synapse if synapse is None else synapse,
            meta={**self.meta, **meta},
        )

    def forward(self, x: np.ndarray, upto: str | None = None, relu_last: bool = False) -> dict[str, np.ndarray]:
        """The ANN forward pass in numpy (float64): activations of every layer.

        ``x`` has shape (N, *input.shape). Hidden spiking layers apply ReLU; the last
        layer is linear unless ``relu_last``. Pools and thresholds are as in the
        spiking network (threshold divides the pre-activation: a layer with
        threshold θ encodes ``z / θ``). Returns a dict from layer name to activations.
        """
        from bioconv.forward import layer_forward  # local: avoids an import cycle

        out: dict[str, np.ndarray] = {}
        a = np.asarray(x, dtype=np.float64)
        if a.shape[1:] != tuple(self.input.shape):
            raise ValueError(f"input batch shape {a.shape[1:]} != graph input {self.input.shape}")
        last = self.layers[-1].name
        for layer in self.layers:
            a = layer_forward(layer, a)
            if is_spiking(layer):
                th = np.asarray(layer.threshold, dtype=np.float64)
                if th.ndim == 1 and a.ndim == 4:
                    th = th[:, None, None]
                a = a / th
                if layer.name != last or relu_last:
                    a = np.maximum(a, 0.0)
            out[layer.name] = a
            if layer.name == upto:
                break
        return out
