r"""Spike-Norm (Sengupta et al. 2019), extended to biases and folded BN (the MCR-Norm paper §2).

Original algorithm: layer by layer, with the layers below already normalized, run the
spiking network on calibration inputs for a time window and set the threshold of layer
:math:`n` to the largest synaptic input any of its neurons receives in one time step,

.. math:: \theta_n = \max_{\text{images},\,t,\,i} \Big(\sum_j w_{ij}\, s_j(t)\Big).

Extension (the original had neither bias nor BN; BN is already folded into :math:`w, b`
by :func:`bioconv.from_torch.from_torch`): the bias is a constant current that adds
:math:`b\,\Delta t/\tau` per step, so it enters the maximum, and the weights carry the
compensation for the previous layer's rate code, so weights and biases stay balanced
(the MCR-Norm paper §4, challenge 2). With the previous layer encoding :math:`a \mapsto r\tau =
\rho_{n-1} a/\lambda_{n-1}`,

.. math::
    I_i(t) = \frac{\lambda_{n-1}}{\rho_{n-1}}\sum_j w_{ij}\, s_j(t) + b_i\frac{\Delta t}{\tau},
    \qquad \theta^u_n = \max I_i(t),

and layer :math:`n` is scaled to threshold 1 by :math:`1/\theta^u_n` (weight form; the
shared rule of :mod:`~bioconv.normalize.scaling` with :math:`\rho_n = \Delta t/\tau`, one
spike per step, and :math:`\lambda_n = \theta^u_n\rho_n`). :func:`~bioconv.normalize.thresholds.threshold_form`
turns it into the original's threshold form (ANN bias kept, :math:`\theta_n = \theta^u_n`).
Spike trains come from a probe's ``spikes(graph, layer)`` (:mod:`~bioconv.normalize.probes`).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Mapping, Optional

import numpy as np
from brian2 import Hz, Quantity, ms, second
from tqdm.auto import tqdm

from bioconv import ir
from bioconv.forward import layer_forward
from bioconv.normalize.scaling import (
    LayerScaling,
    attach_models,
    check_rate,
    normalization_meta,
    reference_tau_s,
    rescale,
)
from bioconv.normalize.stats import ActivationStats

log = logging.getLogger(__name__)


def max_step_current(layer: ir.Layer, raster: Any, bias_per_step: float) -> float:
    """:math:`\\max I_i(t)` of ``layer`` (already carrying its weight factor) for the input ``raster``.

    ``bias_per_step`` is :math:`\\Delta t/\\tau`: the bias adds :math:`b\\,\\Delta t/\\tau` per step.
    """
    if isinstance(layer, (ir.Conv2d, ir.Dense)):
        layer = replace(layer, bias=layer.bias * bias_per_step)
    best = -np.inf
    for k in range(raster.n_images):
        s = raster.dense(k).reshape((raster.n_steps, *layer.input_shape))
        best = max(best, float(layer_forward(layer, s).max()))
    return best


def spike_norm(
    graph: ir.Graph,
    stats: ActivationStats,
    probe: Any,
    input_rate: Quantity = 1000 * Hz,
    neuron: Any = None,
    synapse: Any = None,
    dt: Quantity = 1 * ms,
    progress: bool = True,
    calibration: Optional[Mapping[str, Any]] = None,
) -> ir.Graph:
    """Spike-Norm with biases; ``probe`` must offer ``spikes(graph, layer)`` (the probes of this package do).

    Parameters
    ----------
    graph : Graph
        ANN graph (thresholds 1).
    stats : ActivationStats
        Only :math:`\\lambda_0` (input scale) is used; the thresholds come from spikes.
    probe : TorchProbe or Brian2Probe
        Its calibration images, duration (the time window) and seed are used.
    input_rate : Quantity
        Input rate for :math:`|x| = \\lambda_0` (1000 Hz in the original, rate = pixel/ms).
    """
    dt_s = float(dt / second)
    input_hz = check_rate(input_rate, "input_rate", dt)
    if not hasattr(probe, "spikes"):
        raise ValueError("spike_norm needs a probe with a spikes(graph, layer) method (bioconv.normalize.probes)")
    if not graph.is_sequential:
        raise ValueError("Spike-Norm reads each layer's input raster from the layer before it and needs a sequential "
                         "graph; this one has Add/Concat layers: use MCR-Norm or max/robust norm")
    graph = attach_models(graph, neuron, synapse)
    tau = reference_tau_s(graph)
    rho = dt_s / tau  # one spike per step
    layers = [l for l in graph.spiking_layers if not isinstance(l, ir.MaxPool2d)]
    unit = {l.name: LayerScaling(lam=rho, rho=rho) for l in layers}
    scalings: dict[str, LayerScaling] = {}
    thresholds: dict[str, float] = {}
    prev_name = graph.input.name
    for layer in tqdm(graph.spiking_layers, desc="Spike-Norm", unit="layer", disable=not progress):
        if isinstance(layer, ir.MaxPool2d):  # gated max pool: passes spikes through
            prev_name = layer.name
            continue
        trial, _ = rescale(graph, {**unit, **scalings}, stats.input_max, input_hz * tau, tau)
        raster = probe.spikes(trial, prev_name)
        theta = max_step_current(trial.layer(layer.name), raster, dt_s / tau)
        if not theta > 0:
            raise ValueError(
                f"layer {layer.name!r} receives no positive input in {raster.n_steps} steps on "
                f"{raster.n_images} images; use a longer time window or more calibration images"
            )
        thresholds[layer.name] = theta
        scalings[layer.name] = LayerScaling(lam=theta * rho, rho=rho)
        prev_name = layer.name
    out, factors = rescale(graph, scalings, stats.input_max, input_hz * tau, tau)
    achieved = {}
    if hasattr(probe, "all_rates"):
        achieved = {k: float(v.max()) for k, v in probe.all_rates(out).items()}
    meta = normalization_meta(
        "spike", out, scalings, factors, stats.input_max, input_hz * tau, tau, calibration,
        spike_threshold=thresholds, achieved_max_rate_hz=achieved, window_ms=getattr(probe, "duration_s", 0) * 1e3,
    )
    log.info("Spike-Norm thresholds: %s", {k: round(v, 4) for k, v in thresholds.items()})
    return out.with_models(normalization=meta)
