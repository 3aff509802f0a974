r"""Data-based normalization: ``max`` (Rueckauer et al. 2017 §2.2.2.1) and ``robust`` (§2.2.2.2).

With :math:`\lambda_n` the maximum (``max``) or the :math:`p`-th percentile (``robust``,
default :math:`p = 99.9`) of the ANN activations of layer :math:`n` on a calibration set,

.. math::
    \tilde w_n = w_n\,\frac{\lambda_{n-1}}{\lambda_n}, \qquad \tilde b_n = \frac{b_n}{\lambda_n},
    \qquad \theta_n = 1,

which is the shared rule of :mod:`bioconv.normalize.scaling` with gains :math:`G_n = 1`
and the same target :math:`\rho` in every layer (:math:`\rho = 1`, i.e. 1000 Hz at
:math:`\tau` = 1 ms, recovers the formula above exactly; another target rate multiplies
weights and biases by :math:`\rho` and the input rate accordingly). The input layer maps
:math:`(0, \lambda_0)` to :math:`(0, \rho_0/\tau)` (the MCR-Norm paper §10).
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Mapping, Optional

from brian2 import Hz, Quantity, ms

from bioconv import ir
from bioconv.normalize.scaling import (
    LayerScaling,
    attach_models,
    check_rate,
    layer_lambda,
    normalization_meta,
    reference_tau_s,
    rescale,
)
from bioconv.normalize.stats import ActivationStats

log = logging.getLogger(__name__)

DataMethod = Literal["max", "robust"]


def data_based_norm(
    graph: ir.Graph,
    stats: ActivationStats,
    percentile: Optional[float] = None,
    target_rate: Quantity = 1000 * Hz,
    input_rate: Optional[Quantity] = None,
    neuron: Any = None,
    synapse: Any = None,
    dt: Quantity = 1 * ms,
    calibration: Optional[Mapping[str, Any]] = None,
) -> ir.Graph:
    """Normalize ``graph`` with :math:`\\lambda_n` = max (``percentile=None``) or a percentile.

    Parameters
    ----------
    graph : Graph
        The ANN graph (thresholds 1), e.g. from :func:`bioconv.from_torch.from_torch`.
    stats : ActivationStats
        From :func:`bioconv.normalize.stats.activation_stats` on the calibration set.
    percentile : float or None
        None (or 100) for max-norm, else the robust-norm percentile (must be in ``stats``).
    target_rate : Quantity
        Max rate :math:`\\rho/\\tau` every layer is scaled to (default 1000 Hz = 1/dt at 1 ms).
    input_rate : Quantity or None
        Input rate for :math:`|x| = \\lambda_0` (default: ``target_rate``).
    neuron, synapse
        Models attached to the graph (default standard IF, reset to zero; delta synapses).
    dt : Quantity
        Simulation step, only to check the rates against 1/dt.
    calibration : dict
        Calibration-set description stored in the metadata (dataset, n, seed).
    """
    method = "max" if percentile is None or float(percentile) == 100.0 else "robust"
    target_hz = check_rate(target_rate, "target_rate", dt)
    input_hz = target_hz if input_rate is None else check_rate(input_rate, "input_rate", dt)
    graph = attach_models(graph, neuron, synapse)
    tau = reference_tau_s(graph)
    scalings = {
        layer.name: LayerScaling(lam=layer_lambda(graph, stats, layer.name, percentile), rho=target_hz * tau)
        for layer in graph.spiking_layers
        if not isinstance(layer, ir.MaxPool2d)
    }
    out, factors = rescale(graph, scalings, stats.input_max, input_hz * tau, tau)
    meta = normalization_meta(
        method,
        out,
        scalings,
        factors,
        stats.input_max,
        input_hz * tau,
        tau,
        calibration,
        percentile=None if method == "max" else float(percentile),
    )
    log.info("%s-norm: λ = %s", method, {k: round(s.lam, 4) for k, s in scalings.items()})
    return out.with_models(normalization=meta)


def max_norm(graph: ir.Graph, stats: ActivationStats, **options: Any) -> ir.Graph:
    """Max-norm (Rueckauer et al. 2017 §2.2.2.1): :math:`\\lambda_n = \\max a_n`; see :func:`data_based_norm`."""
    return data_based_norm(graph, stats, percentile=None, **options)


def robust_norm(graph: ir.Graph, stats: ActivationStats, percentile: float = 99.9, **options: Any) -> ir.Graph:
    """Robust norm (Rueckauer et al. 2017 §2.2.2.2): :math:`\\lambda_n` = p-th percentile; see :func:`data_based_norm`."""
    return data_based_norm(graph, stats, percentile=percentile, **options)
