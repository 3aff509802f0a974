"""Normalization of converted networks: pure functions, statistics in and a new Graph out.

- :mod:`~bioconv.normalize.stats`: ANN activation statistics on a calibration set (λ_n, λ_0).
- :mod:`~bioconv.normalize.data_based`: ``max`` and ``robust`` (percentile) norm (Rueckauer et al. 2017 §2.2.2).
- :mod:`~bioconv.normalize.mcr`: MCR-Norm, per-layer gains scanned to a target max rate (the MCR-Norm paper).
- :mod:`~bioconv.normalize.spike_norm`: Spike-Norm (Sengupta et al. 2019) with biases.
- :mod:`~bioconv.normalize.thresholds`: threshold balancing ⇔ weight scaling (Ding et al. 2021
  Theorem 1) and MPBN folding into thresholds (Guo et al. 2023 eq. 10).
- :mod:`~bioconv.normalize.probes`: engine probes that measure rates for the scans.
- :mod:`~bioconv.normalize.scaling`: the scaling rule they all share.

No function here caches, plots, reads configuration or does I/O; the rates that MCR-Norm
and Spike-Norm need come from a probe callback.
"""

from bioconv.normalize.data_based import data_based_norm, max_norm, robust_norm
from bioconv.normalize.mcr import mcr_norm, rate_statistic, scan_gain
from bioconv.normalize.scaling import LayerScaling, predicted_rates_hz, rescale, truncate
from bioconv.normalize.spike_norm import spike_norm
from bioconv.normalize.stats import ActivationStats, activation_stats
from bioconv.normalize.thresholds import fold_mpbn, mpbn_threshold, scale_thresholds, threshold_form, weight_form

METHODS: tuple[str, ...] = ("mcr", "max", "robust", "spike")

__all__ = [
    "METHODS",
    "ActivationStats",
    "LayerScaling",
    "activation_stats",
    "data_based_norm",
    "fold_mpbn",
    "max_norm",
    "mcr_norm",
    "mpbn_threshold",
    "predicted_rates_hz",
    "rate_statistic",
    "rescale",
    "robust_norm",
    "scale_thresholds",
    "scan_gain",
    "spike_norm",
    "threshold_form",
    "truncate",
    "weight_form",
]
