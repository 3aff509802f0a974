r"""``lif-rate``: conversion of a network trained with the LIF rate curve (SoftLIF), without fitting.

A network trained with :class:`bioconv.ann.activations.SoftLIF` (Hunsberger & Eliasmith 2015)
computes :math:`a_n = A\,r_\gamma(z_n)` in every hidden layer, where :math:`r_\gamma` is the
(smoothed) rate of a LIF neuron under the constant drive :math:`z_n = W_n a_{n-1} + b_n`
(:class:`bioconv.ir.LIFRate`). A :class:`~bioconv.neurons.LIF` neuron (reset to zero,
:math:`\tau_m = \tau_\mathrm{RC}`, refractory period :math:`\tau_\mathrm{ref}`, threshold 1) settles at
:math:`v_\infty = \tau_m(I_\mathrm{bias}/\tau + \langle I_\mathrm{syn}\rangle)`, and a presynaptic
neuron firing at :math:`r` contributes :math:`\langle I_\mathrm{syn}\rangle = \tilde w\,r` for delta and
alpha synapses alike (unit charge per unit weight). So with

.. math::
    \tilde w_n = \frac{A_{n-1}}{\tau_m}\,W_n, \qquad \tilde b_n = \frac{\tau}{\tau_m}\,b_n,

where :math:`A_{n-1} = 1/\mathrm{rate\ per\ unit\ activation}` of the source (the amplitude of its
rate curve; for the input, which encodes a pixel :math:`x` at :math:`x\,\rho_0/(\lambda_0\tau)` Hz,
:math:`A_0 = \lambda_0\tau/\rho_0`), each neuron's drive is its ANN pre-activation and it fires at
:math:`r_0(z_n) = a_n/A` up to the smoothing :math:`\gamma` and the spike noise of its input. The
output layer is linear in the ANN; any positive gain keeps its argmax, so it gets
:math:`k = z^\ast/\lambda_\mathrm{out}` on top, with :math:`z^\ast` the drive at which a LIF fires at
the target rate and :math:`\lambda_\mathrm{out}` the 99.9th percentile of the calibration logits.

This is the shared scaling rule of :mod:`bioconv.normalize.scaling` with
:math:`\rho_n = \lambda_n\tau/A_n` (the rate·τ that the curve assigns to the activation :math:`\lambda_n`)
and :math:`G_n = A_n/\tau_m`. Max pools pass rates through (the gated pool relays the
fastest input); average pools must be folded (``pools="fold"``): a spiking pool would apply the
LIF curve a second time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any, Mapping, Optional

from brian2 import Hz, Quantity, ms, second

from bioconv import ir
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


def _curve(graph: ir.Graph) -> ir.LIFRate:
    """The one rate curve of the graph's hidden layers (ValueError if missing or mixed)."""
    layers = [l for l in graph.spiking_layers if not isinstance(l, ir.MaxPool2d)]
    hidden, last = layers[:-1], layers[-1]
    curves = {l.name: getattr(l, "rate_curve", None) for l in hidden}
    missing = [name for name, c in curves.items() if c is None]
    if missing:
        if isinstance(graph.layer(missing[0]), ir.AvgPool2d):
            raise ValueError(f"method 'lif-rate' needs the average pools folded (pools='fold'); {missing} would be "
                             "LIF neurons, which apply the rate curve a second time")
        raise ValueError(f"method 'lif-rate' converts networks trained with the LIF rate curve; layers {missing} have "
                         "none (a ReLU network). Train with `bioconv train --activation softlif`, or use method "
                         "'mcr-tf' for a ReLU network")
    if getattr(last, "rate_curve", None) is not None:
        raise ValueError(f"the output layer {last.name!r} has a rate curve; it must be linear (no activation)")
    distinct = {c for c in curves.values()}
    if len(distinct) != 1:
        raise ValueError(f"method 'lif-rate' needs one rate curve for all hidden layers (one LIF model), got {distinct}")
    return distinct.pop()


def check_neuron(curve: ir.LIFRate, neuron: Any) -> None:
    """ValueError unless ``neuron`` is the LIF whose rate the curve is (reset to zero, same τ_m and t_ref)."""
    from bioconv.neurons import LIF

    want = f"LIF(tau_m={curve.tau_rc * 1e3:g}*ms, refractory={curve.tau_ref * 1e3:g}*ms, reset='zero')"
    if not isinstance(neuron, LIF):
        raise ValueError(f"the network was trained with the rate curve of {want}; convert it to that neuron "
                         f"(--neuron lif --tau-m {curve.tau_rc * 1e3:g}ms --refractory {curve.tau_ref * 1e3:g}ms), "
                         f"not {type(neuron).__name__}")
    tau_m, t_ref = float(neuron.tau_m / second), float(neuron.refractory / second)
    if neuron.reset != "zero" or not math.isclose(tau_m, curve.tau_rc, rel_tol=1e-9) \
            or not math.isclose(t_ref, curve.tau_ref, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(f"the network was trained with the rate curve of {want}, but the neuron is "
                         f"LIF(tau_m={tau_m * 1e3:g}*ms, refractory={t_ref * 1e3:g}*ms, reset={neuron.reset!r}); "
                         f"use --tau-m {curve.tau_rc * 1e3:g}ms --refractory {curve.tau_ref * 1e3:g}ms --reset zero")


def lif_rate_norm(
    graph: ir.Graph,
    stats: ActivationStats,
    target_rate: Quantity = 200 * Hz,
    input_rate: Quantity = 200 * Hz,
    neuron: Any = None,
    synapse: Any = None,
    dt: Quantity = 1 * ms,
    calibration: Optional[Mapping[str, Any]] = None,
    percentile: float = 99.9,
) -> ir.Graph:
    """Map a SoftLIF-trained ANN graph onto LIF neurons (see the module docstring).

    Parameters
    ----------
    graph : Graph
        The ANN graph with ``rate_curve`` on its hidden layers (from a ``bioconv train
        --activation softlif`` checkpoint), pools folded.
    stats : ActivationStats
        Calibration statistics: :math:`\\lambda_0` (input) and the output layer's percentile.
    target_rate : Quantity
        Rate of an output neuron at the ``percentile`` of the calibration logits (sets the
        output gain :math:`k`; the hidden rates are the trained network's own).
    input_rate : Quantity
        Input rate for :math:`|x| = \\lambda_0`.
    neuron, synapse
        The LIF model (must match the curve) and the synapse model (delta or alpha).
    dt : Quantity
        Simulation step, only to check the rates against 1/dt.
    calibration : dict
        Calibration-set description stored in the metadata.
    percentile : float
        Percentile of the calibration logits that maps to ``target_rate``.
    """
    curve = _curve(graph)
    if neuron is None:
        from bioconv.neurons import LIF

        neuron = LIF(tau_m=curve.tau_rc * second, refractory=curve.tau_ref * second, reset="zero")
    check_neuron(curve, neuron)
    target_hz = check_rate(target_rate, "target_rate", dt)
    input_hz = check_rate(input_rate, "input_rate", dt)
    if not target_hz < 1.0 / curve.tau_ref:
        raise ValueError(f"target_rate {target_hz:g} Hz must be below the LIF's maximum 1/t_ref = "
                         f"{1 / curve.tau_ref:g} Hz")
    graph = attach_models(graph, neuron, synapse)
    tau, tau_m = reference_tau_s(graph), curve.tau_rc
    layers = [l for l in graph.spiking_layers if not isinstance(l, ir.MaxPool2d)]
    scalings: dict[str, LayerScaling] = {}
    for layer in layers[:-1]:
        lam = max(stats.scale(layer.name, percentile), 1e-12)  # a reference activation; the scale is λ-free
        rho = lam * tau / curve.amplitude  # rate·τ of the activation λ on the trained curve
        scalings[layer.name] = LayerScaling(lam=lam, rho=rho, gain=curve.amplitude / tau_m)
    out = layers[-1]
    lam_out = stats.scale(out.name, percentile)
    if not lam_out > 0:
        raise ValueError(f"the output layer {out.name!r} has no positive logits on the calibration images "
                         f"({percentile}th percentile {lam_out:g}); the LIF output neurons would stay silent")
    z_star = curve.drive_for_rate(target_hz)
    rho_out = target_hz * tau
    scalings[out.name] = LayerScaling(lam=lam_out, rho=rho_out, gain=z_star * tau / (tau_m * rho_out))
    new, factors = rescale(graph, scalings, stats.input_max, input_hz * tau, tau)
    new = replace(new, layers=tuple(replace(l, rate_curve=None) if getattr(l, "rate_curve", None) is not None else l
                                    for l in new.layers))  # the SNN's neurons are the curve now
    meta = normalization_meta("lif-rate", new, scalings, factors, stats.input_max, input_hz * tau, tau, calibration,
                              rate_curve=curve.to_dict(), output_gain=z_star / lam_out, percentile=float(percentile))
    log.info("lif-rate: tau_m %.3g ms, t_ref %.3g ms, A %.4g s, output gain %.4g", tau_m * 1e3, curve.tau_ref * 1e3,
             curve.amplitude, z_star / lam_out)
    return new.with_models(normalization=meta)
