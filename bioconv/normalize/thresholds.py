r"""Threshold balancing and membrane-potential BN folding as Graph transforms.

**Weight scaling ⇔ threshold setting** (Ding et al. 2021 Theorem 1). Multiplying a layer's weights,
bias and threshold by the same :math:`k > 0`,

.. math:: (w, b, \theta) \mapsto (k w, k b, k \theta),

multiplies its membrane state by :math:`k` at every step (IF, LIF, SRM and alpha synapses
are linear in :math:`w, b`; the resets ``v = 0``, ``v -= θ`` and ``r -= 2θ`` scale too), so
every threshold crossing, hence every spike, is unchanged. Theorem 1's condition
:math:`W^{SNN}/v_{th} = W^{ANN}\lambda_{l-1}/\lambda_l`, :math:`b^{SNN}/v_{th} = b^{ANN}/\lambda_l`
is one such family: :func:`weight_form` puts the scale into the weights (θ = 1), and
:func:`threshold_form` keeps the ANN biases and sets :math:`\theta_n = 1/c^b_n` (for
max-norm: :math:`\theta_n = \lambda_n`, :math:`W = W^{ANN}\lambda_{n-1}`; "threshold
balancing"), using the factors recorded by the normalization.

**MPBN folding** (Guo et al. 2023 eq. 8-10). A batch norm of the membrane potential before the
firing decision, spike iff :math:`\gamma_i (u_i - \mu_i)/\sqrt{\sigma_i^2+\epsilon} + \beta_i >
V_{th}`, is the same as :math:`u_i > \tilde V_{th,i}` with

.. math:: \tilde V_{th,i} = \frac{(V_{th} - \beta_i)\sqrt{\sigma_i^2+\epsilon}}{\gamma_i} + \mu_i

for :math:`\gamma_i > 0` (per channel, or per element for element-wise MPBN). Resets act on
the raw :math:`u` (Guo et al. 2023 eq. 2: hard reset to 0); with reset by subtraction, ``v -= θ``
uses the folded threshold.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from bioconv import ir


def scale_layer(layer: ir.Layer, k: float) -> ir.Layer:
    """``(w, b, θ) -> (k w, k b, k θ)`` for one spiking layer (pool: scale and θ); spikes unchanged."""
    if not (np.isfinite(k) and k > 0):
        raise ValueError(f"layer {layer.name!r}: scale factor must be finite and > 0, got {k}")
    theta = np.asarray(layer.threshold, dtype=np.float64) * k
    theta = float(theta) if theta.ndim == 0 else theta
    clip = None if getattr(layer, "clip", None) is None else float(layer.clip * k)
    if isinstance(layer, (ir.Conv2d, ir.Dense)):
        return replace(layer, weight=layer.weight * k, bias=layer.bias * k, threshold=theta, clip=clip)
    if isinstance(layer, ir.Add):  # its branches are scaled by scale_thresholds / weight_form
        return replace(layer, threshold=theta, clip=clip)
    if isinstance(layer, ir.AvgPool2d):
        return replace(layer, scale=float(layer.scale * k), threshold=theta)
    raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no weights to balance against its threshold")


def scale_thresholds(graph: ir.Graph, factors: Mapping[str, float]) -> ir.Graph:
    """Apply :func:`scale_layer` with ``factors[name]`` to the named layers."""
    unknown = set(factors) - {layer.name for layer in graph.layers}
    if unknown:
        raise ValueError(f"factors name unknown layers {sorted(unknown)}")
    factors = dict(factors)
    for layer in graph.layers:  # an Add's branches carry its weights and biases
        if isinstance(layer, ir.Add) and layer.name in factors:
            factors.update({b: factors[layer.name] for b in layer.inputs})
    layers = tuple(_scale_branch(l, float(factors[l.name])) if ir.is_branch(l) and l.name in factors
                   else scale_layer(l, float(factors[l.name])) if l.name in factors else l for l in graph.layers)
    return replace(graph, layers=layers)


def _scale_branch(layer: ir.Layer, k: float) -> ir.Layer:
    return replace(layer, weight=layer.weight * k, bias=layer.bias * k)


def threshold_form(graph: ir.Graph) -> ir.Graph:
    """The threshold-balanced equivalent of a normalized (weight-form) graph.

    Keeps the ANN biases: layer :math:`n` gets :math:`k_n = 1/c^b_n` (``meta["normalization"]
    ["scale"][n]["bias"]``), so :math:`b = b^{ANN}`, :math:`\\theta_n = 1/c^b_n` and
    :math:`W = W^{ANN}\\,\\lambda_{n-1}/\\rho_{n-1}`. Spikes are identical to ``graph``.
    """
    norm = graph.meta.get("normalization")
    if not norm or "scale" not in norm:
        raise ValueError("threshold_form needs a graph normalized by bioconv.normalize (meta['normalization']['scale'])")
    factors = {name: 1.0 / f["bias"] for name, f in norm["scale"].items()}
    for layer in graph.spiking_layers:
        if layer.name in factors and not np.all(np.asarray(layer.threshold) == 1.0):
            raise ValueError(f"layer {layer.name!r} is not in weight form (threshold != 1); use weight_form first")
    out = scale_thresholds(graph, factors)
    return out.with_models(normalization={**norm, "form": "thresholds"})


def weight_form(graph: ir.Graph) -> ir.Graph:
    """Move every threshold into the weights: :math:`(w, b, \\theta) \\to (w/\\theta, b/\\theta, 1)`.

    Per-channel thresholds fold into conv/dense output rows; per-neuron thresholds of a
    convolution (weight sharing) and per-channel thresholds of pools cannot, and raise.
    """
    layers = []
    for layer in graph.layers:
        if not ir.is_spiking(layer) or isinstance(layer, ir.MaxPool2d):
            layers.append(layer)
            continue
        th = np.asarray(layer.threshold, dtype=np.float64)
        if isinstance(layer, ir.Add):
            if th.ndim != 0:
                raise ValueError(f"Add {layer.name!r}: only a scalar threshold moves into its branches")
            branches = set(layer.inputs)
            layers = [_scale_branch(l, 1.0 / float(th)) if l.name in branches else l for l in layers]
            layers.append(scale_layer(layer, 1.0 / float(th)))
            continue
        if th.ndim == 0:
            layers.append(scale_layer(layer, 1.0 / float(th)))
        elif th.ndim == 1 and isinstance(layer, (ir.Conv2d, ir.Dense)):
            k = 1.0 / th
            w = layer.weight * k.reshape((-1,) + (1,) * (layer.weight.ndim - 1))
            layers.append(replace(layer, weight=w, bias=layer.bias * k, threshold=1.0))
        else:
            raise ValueError(
                f"layer {layer.name!r}: {th.shape} thresholds of a {type(layer).__name__} cannot move into shared "
                "weights; keep the thresholds (engines support them)"
            )
    out = replace(graph, layers=tuple(layers))
    norm = graph.meta.get("normalization")
    return out.with_models(normalization={**norm, "form": "weights"}) if norm else out


def mpbn_threshold(
    v_th: float | np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float = 0.0,
) -> np.ndarray:
    """Folded threshold :math:`\\tilde V_{th} = (V_{th}-\\beta)\\sqrt{\\sigma^2+\\epsilon}/\\gamma + \\mu` (Guo et al. 2023 eq. 10)."""
    gamma, beta, mean, var = (np.asarray(a, dtype=np.float64) for a in (gamma, beta, mean, var))
    if np.any(gamma <= 0):
        raise ValueError(
            "MPBN folding needs gamma > 0 (a negative gamma flips the firing inequality; no threshold can express it)"
        )
    if np.any(var + eps <= 0):
        raise ValueError("MPBN variance + eps must be > 0")
    return (np.asarray(v_th, dtype=np.float64) - beta) * np.sqrt(var + eps) / gamma + mean


def mpbn_fires(u: np.ndarray, v_th: float, gamma, beta, mean, var, eps: float = 0.0) -> np.ndarray:
    """The unfolded firing rule (Guo et al. 2023 eq. 9), channel axis 1: ``MPBN(u) > V_th``."""
    shape = (1, -1) + (1,) * (np.ndim(u) - 2) if np.ndim(gamma) == 1 else (1,) + np.shape(gamma)
    g, b, m, s = (np.reshape(np.asarray(a, dtype=np.float64), shape) for a in (gamma, beta, mean, var))
    return g * (u - m) / np.sqrt(s + eps) + b > v_th


def fold_mpbn(graph: ir.Graph, layer: str, gamma, beta, mean, var, eps: float = 1e-5) -> ir.Graph:
    """Fold a membrane-potential BN of ``layer`` into its thresholds (per channel or per element).

    The parameters have shape (C,) (channel-wise MPBN) or the layer's full output shape
    (element-wise); the layer's current threshold plays :math:`V_{th}`. Raises if a folded
    threshold is not > 0 (the IR's spiking rule needs positive thresholds).
    """
    target = graph.layer(layer)
    if not ir.is_spiking(target):
        raise ValueError(f"layer {layer!r} has no neurons to fold an MPBN into")
    out_shape = tuple(target.output_shape)
    shapes = {np.shape(a) for a in (gamma, beta, mean, var)}
    if len(shapes) != 1 or shapes.pop() not in {(out_shape[0],), out_shape}:
        raise ValueError(f"MPBN parameters of {layer!r} must all have shape {(out_shape[0],)} or {out_shape}")
    v_th = np.asarray(target.threshold, dtype=np.float64)
    if v_th.ndim == 1 and len(out_shape) == 3 and np.ndim(gamma) == 3:
        v_th = v_th[:, None, None]
    new = mpbn_threshold(v_th, gamma, beta, mean, var, eps)
    if not np.all(new > 0):
        raise ValueError(
            f"folding the MPBN of {layer!r} gives thresholds <= 0 (min {new.min():g}); the neurons would fire "
            "without input — such an MPBN cannot be folded into a positive threshold"
        )
    return graph.replace_layer(layer, threshold=new)
