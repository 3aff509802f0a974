r"""Activation statistics of the ANN on a calibration subset (numpy only, no torch).

For every spiking layer :math:`n` of an unconverted Graph (thresholds 1), the ANN
activations :math:`a_n = \mathrm{ReLU}(W_n a_{n-1} + b_n)` (the last layer linear) are
computed with :meth:`bioconv.ir.Graph.forward`, and summarized as

- :math:`\lambda_n = \max a_n` over all neurons and calibration images (max-norm, Rueckauer et al. 2017
  §2.2.2.1), and
- the :math:`p`-th percentiles of the *positive* activations of the layer (robust norm,
  Rueckauer et al. 2017 §2.2.2.2; zeros are left out as in the SNN toolbox, so a sparse layer does
  not get a zero scale),
- optionally the per-channel maximum (C,) of convolution and pooling layers.

The input scale is :math:`\lambda_0 = \max |x|` over the calibration images (the MCR-Norm paper
§10: the input range :math:`(0, \lambda_0)` maps to input rates :math:`(0, \gamma_0/\tau)`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from bioconv import ir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActivationStats:
    """Per-layer ANN activation statistics (JSON-friendly through :meth:`to_dict`).

    Attributes
    ----------
    input_max : float
        :math:`\\lambda_0 = \\max |x|` of the calibration images.
    layer_max : dict layer name -> float
        :math:`\\lambda_n = \\max a_n`.
    percentiles : dict layer name -> dict percentile -> float
        Percentiles of the positive activations of each layer.
    channel_max : dict layer name -> (C,) array, or empty
        Per-channel maxima (4-D layers only), when requested.
    n_images : int
        Number of calibration images the statistics were taken on.
    """

    input_max: float
    layer_max: Mapping[str, float]
    percentiles: Mapping[str, Mapping[float, float]]
    channel_max: Mapping[str, np.ndarray] = field(default_factory=dict)
    n_images: int = 0

    def scale(self, layer: str, percentile: float | None = None) -> float:
        """:math:`\\lambda_n`: the max (``percentile=None`` or 100) or the given percentile."""
        if percentile is None or float(percentile) == 100.0:
            return float(self.layer_max[layer])
        table = self.percentiles.get(layer, {})
        if float(percentile) not in table:
            raise ValueError(
                f"percentile {percentile} of layer {layer!r} was not computed; pass "
                f"percentiles=({percentile},) to activation_stats (have {sorted(table)})"
            )
        return float(table[float(percentile)])

    def lambdas(self, percentile: float | None = None) -> dict[str, float]:
        """:math:`\\lambda_n` of every layer (max or percentile)."""
        return {name: self.scale(name, percentile) for name in self.layer_max}

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_max": float(self.input_max),
            "layer_max": {k: float(v) for k, v in self.layer_max.items()},
            "percentiles": {k: {str(p): float(v) for p, v in d.items()} for k, d in self.percentiles.items()},
            "n_images": int(self.n_images),
        }


def _check_ann_graph(graph: ir.Graph) -> None:
    for layer in graph.spiking_layers:
        if not np.all(np.asarray(layer.threshold) == 1.0):
            raise ValueError(
                f"layer {layer.name!r} has thresholds != 1: statistics and normalization need the "
                "unconverted ANN graph (bioconv.from_torch.from_torch), not a normalized one"
            )


def activation_stats(
    graph: ir.Graph,
    images: np.ndarray,
    percentiles: Sequence[float] = (99.0, 99.9, 99.99),
    per_channel: bool = False,
    batch_size: int = 100,
) -> ActivationStats:
    """Activation statistics of ``graph`` (an ANN graph, thresholds 1) on ``images``.

    Parameters
    ----------
    graph : Graph
        The unconverted network, e.g. from :func:`bioconv.from_torch.from_torch`.
    images : array (N, *graph.input.shape)
        Calibration images (e.g. a seeded subset of the training split).
    percentiles : sequence of float in (0, 100]
        Percentiles of positive activations to keep per layer.
    per_channel : bool
        Also keep the per-channel max of 4-D (conv/pool) layers.
    batch_size : int
        Images per numpy forward pass (memory vs speed).
    """
    x = np.asarray(images)
    if x.ndim < 2 or x.shape[1:] != tuple(graph.input.shape) or len(x) == 0:
        raise ValueError(
            f"calibration images must have shape (N>0, {', '.join(map(str, graph.input.shape))}), got {x.shape}"
        )
    for p in percentiles:
        if not 0.0 < float(p) <= 100.0:
            raise ValueError(f"percentiles must be in (0, 100], got {p}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_ann_graph(graph)
    names = [layer.name for layer in graph.spiking_layers]
    maxima = {name: -np.inf for name in names}
    positives: dict[str, list[np.ndarray]] = {name: [] for name in names}
    chmax: dict[str, np.ndarray] = {}
    for start in range(0, len(x), batch_size):
        acts = graph.forward(x[start : start + batch_size])
        for name in names:
            a = acts[name]
            maxima[name] = max(maxima[name], float(a.max()))
            positives[name].append(a[a > 0].astype(np.float32))
            if per_channel and a.ndim == 4:
                m = a.max(axis=(0, 2, 3))
                chmax[name] = m if name not in chmax else np.maximum(chmax[name], m)
    pct: dict[str, dict[float, float]] = {}
    for name in names:
        pos = np.concatenate(positives[name]) if positives[name] else np.empty(0, np.float32)
        if pos.size == 0:
            raise ValueError(
                f"layer {name!r} is never active (all activations <= 0) on the {len(x)} calibration images; "
                "use more calibration images or check the trained network"
            )
        values = np.percentile(pos.astype(np.float64), [float(p) for p in percentiles]) if percentiles else []
        pct[name] = {float(p): float(v) for p, v in zip(percentiles, values)}
        positives[name] = []
    input_max = float(np.abs(x).max())
    if not input_max > 0:
        raise ValueError("calibration images are all zero; cannot set the input scale λ_0")
    log.info("activation stats on %d images: %s", len(x), {k: round(v, 4) for k, v in maxima.items()})
    return ActivationStats(input_max=input_max, layer_max=maxima, percentiles=pct, channel_max=chmax, n_images=len(x))
