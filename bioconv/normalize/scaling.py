r"""The one scaling rule every normalization method shares, and small Graph helpers.

Units (DESIGN §2, "consistent reading"): rates are measured per reference time constant
:math:`\tau` (1 ms), so :math:`\rho = 0.2` means 200 Hz. Layer :math:`k` is meant to encode
an ANN activation :math:`a` as :math:`r_k\tau \approx \rho_k\,a/\lambda_k`, and the input
encodes a pixel :math:`x` as :math:`r_0\tau = \rho_0\,x/\lambda_0` (``Input.rate_scale`` =
:math:`\rho_0/(\lambda_0\tau)` Hz per unit; signed spikes carry negative pixels).

An IF neuron with reset by subtraction, threshold 1, weights :math:`\tilde w` (charge per
spike) and bias :math:`\tilde b` (current per :math:`\tau`) fires at exactly
:math:`r\tau = \sum \tilde w\, r_\mathrm{in}\tau + \tilde b`. Choosing

.. math::
    \tilde w_n = G_n\frac{\rho_n}{\lambda_n}\,\frac{\lambda_{n-1}}{\rho^{w}_{n-1}}\, w_n,
    \qquad
    \tilde b_n = G_n\frac{\rho_n}{\lambda_n}\,\eta_n\, b_n

therefore gives :math:`r_n\tau = G_n\rho_n a_n/\lambda_n` when :math:`\rho^{w}_{n-1} =
\rho_{n-1}` and :math:`\eta_n = 1`. :math:`G_n` is the per-layer gain (1 for max/robust
norm; found by scanning in MCR-Norm, seed 000 eq. 4-5, where the paper's
:math:`g_n/g_{n-1}` is :math:`G_n` and its :math:`\eta_{n-1}` is :math:`\rho_{n-1}`),
:math:`\rho^{w}_{n-1}` the slope assumed (or measured) for the previous layer, and
:math:`\eta_n` an optional bias fine-tuning factor. Average pools scale their pooling
weight like :math:`\tilde w`; max pools pass :math:`(\lambda, \rho)` through unchanged.
Thresholds stay 1 ("weight form"); :mod:`bioconv.normalize.thresholds` moves the scale
into thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

import numpy as np
from brian2 import Hz, Quantity, have_same_dimensions, ms, second

from bioconv import ir


@dataclass(frozen=True)
class LayerScaling:
    """Normalization parameters of one spiking layer (see the module docstring)."""

    lam: float  # λ_n, ANN activation scale
    rho: float  # ρ_n, target max rate·τ
    gain: float = 1.0  # G_n
    rho_in: Optional[float] = None  # ρ^w_{n-1}; None: the previous layer's rho
    bias_factor: float = 1.0  # η_n

    def __post_init__(self) -> None:
        for name in ("lam", "rho", "gain", "bias_factor"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"LayerScaling.{name} must be finite and > 0, got {value}")
        if self.rho_in is not None and not (np.isfinite(self.rho_in) and self.rho_in > 0):
            raise ValueError(f"LayerScaling.rho_in must be finite and > 0, got {self.rho_in}")


def reference_tau_s(graph: ir.Graph) -> float:
    """The reference time constant τ (s) of the graph's neuron model (1 ms if unset)."""
    tau = getattr(graph.neuron, "tau", None)
    return 1e-3 if tau is None else float(tau / second)


def rate_hz(value: Any, what: str) -> float:
    """A Brian2 rate quantity (e.g. ``200*Hz``) as float Hz, with a clear error otherwise."""
    if not isinstance(value, Quantity) or not have_same_dimensions(value, Hz):
        raise ValueError(f"{what} must be a Brian2 rate such as 200*Hz (from brian2 import Hz), got {value!r}")
    hz = float(value / Hz)
    if not (np.isfinite(hz) and hz > 0):
        raise ValueError(f"{what} must be > 0 Hz, got {value}")
    return hz


def check_rate(value: Any, what: str, dt: Quantity = 1 * ms) -> float:
    """:func:`rate_hz` plus the ceiling: at most one spike per step, rate <= 1/dt."""
    hz = rate_hz(value, what)
    ceiling = 1.0 / float(dt / second)
    if hz > ceiling * (1 + 1e-12):
        raise ValueError(
            f"{what} = {hz:g} Hz is above 1/dt = {ceiling:g} Hz: a neuron fires at most once per step; "
            "lower the rate or use a smaller dt"
        )
    return hz


def input_scale(inp: ir.Input, lambda_0: float, input_rate_hz: float) -> ir.Input:
    """``Input`` mapping :math:`|x| \\in (0, \\lambda_0)` to rates :math:`(0, \\gamma_0/\\tau)` Hz."""
    if not (np.isfinite(lambda_0) and lambda_0 > 0):
        raise ValueError(f"input scale λ_0 must be > 0, got {lambda_0}")
    return replace(inp, rate_scale=float(input_rate_hz) / float(lambda_0))


def rescale(
    graph: ir.Graph,
    scalings: Mapping[str, LayerScaling],
    lambda_0: float,
    input_rho: float,
    tau_s: float = 1e-3,
) -> tuple[ir.Graph, dict[str, dict[str, float]]]:
    """Apply the scaling rule to an ANN graph (thresholds 1).

    Returns the new graph (same layers, scaled weights/biases/pool scales, thresholds
    untouched, new ``Input.rate_scale``) and the factors ``{layer: {"weight": c_w,
    "bias": c_b}}`` that were applied.
    """
    prev_lam, prev_rho = float(lambda_0), float(input_rho)
    layers = []
    factors: dict[str, dict[str, float]] = {}
    for layer in graph.layers:
        if not ir.is_spiking(layer) or isinstance(layer, ir.MaxPool2d):
            layers.append(layer)
            continue
        if layer.name not in scalings:
            raise ValueError(f"no scaling given for layer {layer.name!r}")
        s = scalings[layer.name]
        rho_w = prev_rho if s.rho_in is None else s.rho_in
        base = s.gain * s.rho / s.lam
        c_w = base * prev_lam / rho_w
        c_b = base * s.bias_factor
        if isinstance(layer, ir.AvgPool2d):
            layers.append(replace(layer, scale=float(layer.scale * c_w)))
        else:
            layers.append(replace(layer, weight=layer.weight * c_w, bias=layer.bias * c_b))
        factors[layer.name] = {"weight": float(c_w), "bias": float(c_b)}
        prev_lam, prev_rho = s.lam, s.rho
    inp = input_scale(graph.input, lambda_0, input_rho / tau_s)
    return replace(graph, input=inp, layers=tuple(layers)), factors


def truncate(graph: ir.Graph, upto: str) -> ir.Graph:
    """The graph up to and including spiking layer ``upto`` (for cheaper probes)."""
    names = [layer.name for layer in graph.layers]
    if upto not in names:
        raise KeyError(f"no layer {upto!r}; layers are {names}")
    keep = graph.layers[: names.index(upto) + 1]
    if not ir.is_spiking(keep[-1]):
        raise ValueError(f"layer {upto!r} is not a spiking layer")
    kept = {layer.name for layer in keep}
    return replace(graph, layers=keep, layer_neurons={k: v for k, v in graph.layer_neurons.items() if k in kept})


def predicted_rates_hz(graph: ir.Graph, images: np.ndarray) -> dict[str, np.ndarray]:
    """Rates (Hz) an ideal rate code would give: the ANN forward of the normalized graph.

    The input is fed as rate·τ (:math:`x\\,\\mathrm{rate\\_scale}\\,\\tau`, sign kept), so each
    layer's ReLU activation is its ideal rate·τ (IF, reset by subtraction, T → ∞, no
    saturation). The last layer is rectified too, since spikes cannot be negative.
    """
    tau = reference_tau_s(graph)
    x = np.asarray(images, dtype=np.float64) * graph.input.rate_scale * tau
    acts = graph.forward(x, relu_last=True)
    return {
        layer.name: acts[layer.name].reshape(len(x), -1) / tau
        for layer in graph.spiking_layers
    }


def normalization_meta(
    method: str,
    graph: ir.Graph,
    scalings: Mapping[str, LayerScaling],
    factors: Mapping[str, Mapping[str, float]],
    lambda_0: float,
    input_rho: float,
    tau_s: float,
    calibration: Optional[Mapping[str, Any]] = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON-serializable record stored as ``graph.meta["normalization"]``."""
    from bioconv.neurons import model_to_dict

    def clean(value: Any) -> Any:  # JSON: no numpy scalars, no NaN/inf
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, (np.floating, float)):
            return float(value) if np.isfinite(value) else None
        if isinstance(value, np.integer):
            return int(value)
        return value

    return clean(
        {
            "method": method,
            "tau_ms": tau_s * 1e3,
            "lambda_input": lambda_0,
            "input_rate_hz": input_rho / tau_s,
            "lambda": {k: s.lam for k, s in scalings.items()},
            "target_rate_hz": {k: s.rho / tau_s for k, s in scalings.items()},
            "gain": {k: s.gain for k, s in scalings.items()},
            "rho_in": {k: s.rho_in for k, s in scalings.items()},
            "bias_factor": {k: s.bias_factor for k, s in scalings.items()},
            "scale": dict(factors),
            "calibration": dict(calibration or {}),
            "neuron": None if graph.neuron is None else model_to_dict(graph.neuron),
            "synapse": None if graph.synapse is None else model_to_dict(graph.synapse),
            **extra,
        }
    )


def attach_models(graph: ir.Graph, neuron: Any, synapse: Any) -> ir.Graph:
    """``graph`` with the given models (defaults: standard IF reset to zero, delta synapses)."""
    from bioconv.neurons import IF
    from bioconv.synapses import Delta

    if "normalization" in graph.meta:
        raise ValueError(
            "this graph is already normalized (meta has 'normalization'); normalize the ANN graph "
            "from bioconv.from_torch.from_torch instead"
        )
    return replace(graph, neuron=IF() if neuron is None else neuron, synapse=Delta() if synapse is None else synapse)
