r"""The one scaling rule every normalization method shares, and small Graph helpers.

Units: rates are measured per reference time constant
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
norm; found by scanning in MCR-Norm, the MCR-Norm paper eq. 4-5, where the paper's
:math:`g_n/g_{n-1}` is :math:`G_n` and its :math:`\eta_{n-1}` is :math:`\rho_{n-1}`),
:math:`\rho^{w}_{n-1}` the slope of layer :math:`n-1`'s rates against :math:`a_{n-1}/\lambda_{n-1}`
(``LayerScaling.rho_out``: assumed equal to :math:`\rho_{n-1}`, or measured), and
:math:`\eta_n` an optional bias fine-tuning factor. Average pools scale their pooling
weight like :math:`\tilde w`; max pools pass :math:`(\lambda, \rho^w)` through unchanged.

Why the measured slope matters: the weighted input of layer :math:`n` is
:math:`\sum\tilde w_n r_{n-1}\tau`; if layer :math:`n-1` really fires at
:math:`k\,\rho_{n-1}a_{n-1}/\lambda_{n-1}` (a gain :math:`G_{n-1} \ne 1` raises every rate,
not only the maximum), the weights carry :math:`k` and the bias does not, and with the large
biases of folded batch norm the balance of weights and bias is lost, layer after layer.
Dividing by the measured :math:`\rho^w_{n-1} = k\rho_{n-1}` restores it. :math:`\rho^w` may
also hold one value per output channel of a convolution (``slopes="channel"`` in
:func:`~bioconv.normalize.mcr.mcr_norm`): the weights from channel :math:`j` are then divided by
:math:`\rho^w_{n-1,j}`, per input channel of a conv and per input column of a dense layer.

Graphs with several inputs per layer: the weights a layer :math:`n` receives from
population :math:`m` are scaled with *that* population's scale,
:math:`\tilde w_{nm} = G_n\frac{\rho_n}{\lambda_n}\frac{\lambda_m}{\rho^w_m} w_{nm}`, so
each source contributes :math:`\rho_n a_{nm}/\lambda_n` whatever its own scale. For a
residual :class:`~bioconv.ir.Add` this applies to every branch (its own source), with
:math:`\lambda_n` the statistic of the sum; for a layer reading a :class:`~bioconv.ir.Concat`
it gives per-input-channel (conv) or per-column (dense) factors, one per concatenated
source (an average pool over a Concat needs equal factors). A clipped layer (ReLU6,
Hardtanh(0, c)) keeps its clip in the same units: :math:`\tilde c = G_n\rho_n c/\lambda_n`.
Thresholds stay 1 ("weight form"); :mod:`bioconv.normalize.thresholds` moves the scale
into thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Union

import numpy as np
from brian2 import Hz, Quantity, have_same_dimensions, ms, second

from bioconv import ir


@dataclass(frozen=True)
class LayerScaling:
    """Normalization parameters of one spiking layer (see the module docstring)."""

    lam: float  # λ_n, ANN activation scale
    rho: float  # ρ_n, target max rate·τ
    gain: float = 1.0  # G_n
    #: ρ^w_n seen by the layers this one feeds: None (= rho, assumed), measured for the layer,
    #: or one value per output channel (a tuple; conv layers)
    rho_out: Optional[Union[float, tuple[float, ...]]] = None
    bias_factor: float = 1.0  # η_n

    def __post_init__(self) -> None:
        for name in ("lam", "rho", "gain", "bias_factor"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"LayerScaling.{name} must be finite and > 0, got {value}")
        if self.rho_out is not None:
            values = np.asarray(self.rho_out, dtype=np.float64)
            if values.ndim > 1 or values.size == 0 or not (np.all(np.isfinite(values)) and np.all(values > 0)):
                raise ValueError(f"LayerScaling.rho_out must be finite and > 0 (a number or one per channel), "
                                 f"got {self.rho_out}")


def layer_lambda(graph: ir.Graph, stats: Any, name: str, percentile: Optional[float] = None) -> float:
    """λ of layer ``name``: its clip value when clipped (ReLU6, Hardtanh(0, c): the Rate Norm Layer
    of Ding et al. 2021, where the clip is the activation that maps to the maximal rate), else the
    activation statistic (max, or the percentile)."""
    clip = getattr(graph.layer(name), "clip", None)
    return float(clip) if clip is not None else stats.scale(name, percentile)


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


def _source_factor(graph: ir.Graph, view: str, scale: dict[str, tuple[float, float]]) -> np.ndarray | float:
    """λ_m / ρ^w_m of the sources of a layer reading ``view``: a float, or a per-input-element array."""
    from bioconv.projections import segments

    segs = segments(graph, view)
    vals = []
    for seg in segs:
        lam, rho_w = scale[seg.source]
        factor = lam / np.asarray(rho_w, dtype=np.float64)
        if factor.ndim:  # one ρ^w per channel of the source: channel-major flat order
            if seg.size % factor.size:
                raise ValueError(f"{factor.size} per-channel slopes of {seg.source!r} do not divide its "
                                 f"{seg.size} neurons")
            factor = np.repeat(factor, seg.size // factor.size)
        vals.append(factor)
    if all(np.ndim(v) == 0 for v in vals) and len({float(v) for v in vals}) == 1:
        return float(vals[0])
    return np.concatenate([np.broadcast_to(v, (seg.size,)) for seg, v in zip(segs, vals)])


def _scale_weights(layer: ir.Layer, factor: np.ndarray | float) -> ir.Layer:
    """``layer`` with its input weights times ``factor`` (a float, or one value per flat input element)."""
    if np.ndim(factor) == 0:
        if isinstance(layer, ir.AvgPool2d):
            return replace(layer, scale=float(layer.scale * factor))
        return replace(layer, weight=layer.weight * factor)
    if isinstance(layer, ir.Dense):
        return replace(layer, weight=layer.weight * factor[None, :])
    if isinstance(layer, ir.Conv2d):
        c_in = layer.input_shape[0]
        per_channel = factor.reshape(c_in, -1)[:, 0]
        groups, c_g = layer.groups, layer.weight.shape[1]
        c_out = layer.weight.shape[0]
        idx = (np.arange(c_out)[:, None] // (c_out // groups)) * c_g + np.arange(c_g)[None, :]
        return replace(layer, weight=layer.weight * per_channel[idx][:, :, None, None])
    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) reads inputs with different scales (a "
                     "Concat of differently scaled sources, or per-channel slopes); a pool takes one scale: pool "
                     "each branch before concatenating, or use per-layer slopes")


def rescale(
    graph: ir.Graph,
    scalings: Mapping[str, LayerScaling],
    lambda_0: float,
    input_rho: float,
    tau_s: float = 1e-3,
) -> tuple[ir.Graph, dict[str, dict[str, float]]]:
    """Apply the scaling rule to an ANN graph (thresholds 1).

    Returns the new graph (same layers, scaled weights/biases/pool scales/clips, thresholds
    untouched, new ``Input.rate_scale``) and the factors ``{layer: {"weight": c_w,
    "bias": c_b}}`` that were applied (``c_w`` of the first source when sources differ).
    """
    scale = {graph.input.name: (float(lambda_0), float(input_rho))}
    new: dict[str, ir.Layer] = {}
    factors: dict[str, dict[str, float]] = {}
    for layer in graph.layers:
        if isinstance(layer, ir.VIEWS) or ir.is_branch(layer):
            new.setdefault(layer.name, layer)
            continue
        sources = graph.sources(layer.name)
        if isinstance(layer, ir.MaxPool2d):
            from bioconv.projections import segments

            (seg,) = segments(graph, sources[0])
            scale[layer.name] = scale[seg.source]
            new[layer.name] = layer
            continue
        if layer.name not in scalings:
            raise ValueError(f"no scaling given for layer {layer.name!r}")
        s = scalings[layer.name]
        base = s.gain * s.rho / s.lam
        c_b = base * s.bias_factor
        terms = [(graph.layer(b), graph.sources(b)[0]) for b in layer.inputs] if isinstance(layer, ir.Add) \
            else [(layer, sources[0])]
        first_cw = None
        for w, view in terms:
            c_w = base * _source_factor(graph, view, scale)
            scaled = _scale_weights(w, c_w)
            if isinstance(w, (ir.Conv2d, ir.Dense)):
                scaled = replace(scaled, bias=w.bias * c_b)
            new[w.name] = scaled
            first_cw = float(np.ravel(c_w)[0]) if first_cw is None else first_cw
        if getattr(layer, "clip", None) is not None:
            new[layer.name] = replace(new.get(layer.name, layer), clip=float(layer.clip * base))
        elif isinstance(layer, ir.Add):
            new[layer.name] = layer
        factors[layer.name] = {"weight": first_cw, "bias": float(c_b)}
        scale[layer.name] = (s.lam, s.rho if s.rho_out is None else
                             (np.asarray(s.rho_out) if np.ndim(s.rho_out) else float(s.rho_out)))
    layers = tuple(new[layer.name] for layer in graph.layers)
    inp = input_scale(graph.input, lambda_0, input_rho / tau_s)
    return replace(graph, input=inp, layers=layers), factors


def truncate(graph: ir.Graph, upto: str) -> ir.Graph:
    """The graph up to and including spiking layer ``upto`` (for cheaper probes)."""
    names = [layer.name for layer in graph.layers]
    if upto not in names:
        raise KeyError(f"no layer {upto!r}; layers are {names}")
    keep = graph.layers[: names.index(upto) + 1]
    if not ir.is_spiking(keep[-1]) or ir.is_branch(keep[-1]):
        raise ValueError(f"layer {upto!r} is not a spiking layer")
    kept = {layer.name for layer in keep}
    consumed = {b for layer in keep if isinstance(layer, ir.Add) for b in layer.inputs}
    keep = tuple(layer for layer in keep if not ir.is_branch(layer) or layer.name in consumed)
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
            "rho_out": {k: s.rho_out for k, s in scalings.items()},
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
