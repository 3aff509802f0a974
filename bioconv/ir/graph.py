"""The :class:`Graph` of the IR (see :mod:`bioconv.ir`): an Input and layer nodes in topological order."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from bioconv.ir.nodes import (
    Add,
    Concat,
    Conv2d,
    Dense,
    Input,
    Layer,
    Shape,
    is_branch,
    is_spiking,
)


@dataclass(frozen=True, eq=False)
class Graph:
    """A feed-forward network: an :class:`Input` then layers in topological order.

    Each layer reads the layers named in its ``inputs`` (default: the previous layer);
    the last layer is the output. ``neuron`` and ``synapse`` are the default models
    (``bioconv.neurons`` / ``bioconv.synapses`` objects, or None for an unconverted ANN
    graph); ``layer_neurons`` overrides the neuron model per layer name. ``schedule`` is
    the order of the reset and the synaptic input within a time step
    (:data:`bioconv.models.SCHEDULES`: ``"brian2"``, Brian2's default, or ``"reset-first"``).
    ``meta`` holds JSON-serializable normalization metadata (method, λ per layer, gains,
    achieved rates, calibration set, ...).
    """

    input: Input
    layers: tuple[Layer, ...]
    neuron: Any = None
    synapse: Any = None
    layer_neurons: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    schedule: str = "brian2"

    def __post_init__(self) -> None:
        from bioconv.models.dynamics import check_schedule  # local: the models layer imports brian2

        check_schedule(self.schedule)
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("a Graph needs at least one layer")
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names) or self.input.name in names:
            raise ValueError(f"layer names must be unique, got {names}")
        shapes = {self.input.name: tuple(self.input.shape)}
        kinds: dict[str, Layer] = {}
        consumers: dict[str, list[str]] = {}
        prev = self.input.name
        for layer in self.layers:
            sources = tuple(layer.inputs) or (prev,)
            for src in sources:
                if src not in shapes:
                    raise ValueError(f"layer {layer.name!r} reads {src!r}, which is not an earlier layer or the input "
                                     "(layers must be in topological order)")
                consumers.setdefault(src, []).append(layer.name)
                if src in kinds and is_branch(kinds[src]) and not isinstance(layer, Add):
                    raise ValueError(f"branch layer {src!r} (spiking=False) can only feed an Add, not {layer.name!r}")
            if isinstance(layer, Add):
                for src in sources:
                    if src not in kinds or not is_branch(kinds[src]):
                        raise ValueError(f"Add {layer.name!r}: input {src!r} must be a branch layer "
                                         "(Conv2d/Dense with spiking=False)")
                    if shapes[src] != tuple(layer.shape):
                        raise ValueError(f"shape mismatch at Add {layer.name!r}: branch {src!r} gives {shapes[src]}, "
                                         f"the Add has shape {tuple(layer.shape)}")
            elif isinstance(layer, Concat):
                got = tuple(shapes[s] for s in sources)
                if got != tuple(layer.input_shapes):
                    raise ValueError(f"shape mismatch at layer {layer.name!r}: inputs give {got}, "
                                     f"it expects {tuple(layer.input_shapes)}")
            else:
                if len(sources) != 1:
                    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) takes one input, got {sources}")
                if tuple(layer.input_shape) != shapes[sources[0]]:
                    raise ValueError(
                        f"shape mismatch at layer {layer.name!r}: it expects input {tuple(layer.input_shape)} "
                        f"but {sources[0]!r} gives {shapes[sources[0]]}"
                    )
            shapes[layer.name] = tuple(layer.output_shape)
            kinds[layer.name] = layer
            prev = layer.name
        for layer in self.layers:
            if is_branch(layer) and len(consumers.get(layer.name, [])) != 1:
                raise ValueError(f"branch layer {layer.name!r} must feed exactly one Add, "
                                 f"feeds {consumers.get(layer.name, [])}")
        if not is_spiking(self.layers[-1]):
            raise ValueError(f"the last layer must be a spiking layer (Conv2d/Dense/Add/pool), not {type(self.layers[-1]).__name__} "
                             "(a view or a branch)")
        unknown = set(self.layer_neurons) - set(names)
        if unknown:
            raise ValueError(f"layer_neurons names unknown layers {sorted(unknown)}; layers are {names}")

    @property
    def spiking_layers(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if is_spiking(layer))

    @property
    def output_shape(self) -> Shape:
        return tuple(self.layers[-1].output_shape)

    @property
    def is_sequential(self) -> bool:
        """True when every layer reads only the layer before it (no Add, no Concat)."""
        prev = self.input.name
        for layer in self.layers:
            if tuple(layer.inputs) not in ((), (prev,)) or isinstance(layer, (Add, Concat)) or is_branch(layer):
                return False
            prev = layer.name
        return True

    def sources(self, name: str) -> tuple[str, ...]:
        """Names of the layers (or the input) that layer ``name`` reads."""
        prev = self.input.name
        for layer in self.layers:
            if layer.name == name:
                return tuple(layer.inputs) or (prev,)
            prev = layer.name
        raise KeyError(f"no layer {name!r}; layers are {[l.name for l in self.layers]}")

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

    def with_models(self, neuron: Any = None, synapse: Any = None, schedule: str | None = None,
                    **meta: Any) -> "Graph":
        """A new Graph with other default neuron/synapse models, schedule and extra metadata."""
        return replace(
            self,
            neuron=self.neuron if neuron is None else neuron,
            synapse=self.synapse if synapse is None else synapse,
            schedule=self.schedule if schedule is None else schedule,
            meta={**self.meta, **meta},
        )

    def forward(self, x: np.ndarray, upto: str | None = None, relu_last: bool = False) -> dict[str, np.ndarray]:
        """The ANN forward pass in numpy (float64): activations of every layer.

        ``x`` has shape (N, *input.shape). Hidden spiking layers apply ReLU (and their
        ``clip``), or their ``rate_curve``; the last layer is linear unless ``relu_last``. Pools and thresholds are
        as in the spiking network (threshold divides the pre-activation: a layer with
        threshold θ encodes ``z / θ``). Branch layers give their pre-activation, views
        their reshaped input. Returns a dict from layer name to activations.
        """
        from bioconv.forward import layer_forward  # local: avoids an import cycle

        out: dict[str, np.ndarray] = {}
        a = np.asarray(x, dtype=np.float64)
        if a.shape[1:] != tuple(self.input.shape):
            raise ValueError(f"input batch shape {a.shape[1:]} != graph input {self.input.shape}")
        values = {self.input.name: a}
        last = self.layers[-1].name
        prev = self.input.name
        for layer in self.layers:
            srcs = [values[s] for s in (tuple(layer.inputs) or (prev,))]
            a = layer_forward(layer, srcs[0] if len(srcs) == 1 and not isinstance(layer, (Add, Concat)) else srcs)
            if is_spiking(layer):
                th = np.asarray(layer.threshold, dtype=np.float64)
                if th.ndim == 1 and a.ndim == 4:
                    th = th[:, None, None]
                a = a / th
                if getattr(layer, "rate_curve", None) is not None and layer.name != last:
                    a = layer.rate_curve.activation(a)  # SoftLIF: A r(z/θ) (bioconv.ir.rate_curve)
                elif layer.name != last or relu_last:
                    a = np.maximum(a, 0.0)
                    if getattr(layer, "clip", None) is not None:
                        a = np.minimum(a, layer.clip / th)
            values[layer.name] = out[layer.name] = a
            prev = layer.name
            if layer.name == upto:
                break
        return out
