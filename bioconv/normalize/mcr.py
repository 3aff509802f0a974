r"""MCR-Norm (minimum chain rule normalization, the MCR-Norm paper §5-10 and Appendix B).

Layer by layer, from the input to the output, the weights and bias of layer :math:`n`
follow the shared rule of :mod:`bioconv.normalize.scaling`,

.. math::
    \tilde w_n = G_n\frac{\rho_n}{\lambda_n}\frac{\lambda_{n-1}}{\rho_{n-1}}\,w_n, \qquad
    \tilde b_n = G_n\frac{\rho_n}{\lambda_n}\,b_n,

(the MCR-Norm paper eq. 4-5 with :math:`g_n/g_{n-1} = G_n` and :math:`\eta_{n-1} = \rho_{n-1}`), and
the gain :math:`G_n` is found by a bracketing scan (bisection, Appendix B) on a calibration
set so that the layer's measured maximum firing rate equals its predefined target
:math:`\rho_n/\tau` (e.g. 200 Hz) within a relative tolerance (default ±2 %). The gain
compensates firing-rate degeneration (the MCR-Norm paper §4): with it, every layer fires in the same
low range. The input maps :math:`(0, \lambda_0)` to :math:`(0, \gamma_0/\tau)` (§10),
negative inputs by signed spikes.

Rates are *measured*, through a probe callback ``probe(graph, layer) -> rates (n_images,
n_neurons) in Hz`` (:mod:`bioconv.normalize.probes`), so this works for every neuron and
synapse model and stays a pure function: statistics and a probe in, a new Graph out.

Options: a robust maximum (``statistic="percentile"``: the p-th percentile of the layer's
rates instead of the raw max), :math:`\rho_{n-1}` estimated from the measured slope of
rate·τ against :math:`a_{n-1}/\lambda_{n-1}` (``rho_from_slope``: least squares through the
origin, :math:`\hat\rho = \lambda\sum r\tau\,a / \sum a^2`, for every source of a layer,
so residual and concatenated graphs too; the default of :func:`bioconv.pipeline.convert`,
while this function's default keeps the paper's assumption :math:`\hat\rho = \rho`; with
``slopes="channel"`` one slope per output channel of a convolution, so that channels whose
neurons respond more steeply than the layer's average reach the next layer with their own
correction), and fine-tuning of the bias factor :math:`\eta` (Appendix B) by calibration accuracy
(``eta_factors``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any, Callable, Literal, Mapping, Optional, Sequence

import numpy as np
from brian2 import Hz, Quantity, ms
from tqdm.auto import tqdm

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

Probe = Callable[[ir.Graph, str], np.ndarray]
RateStatistic = Literal["max", "percentile"]
PoolMode = Literal["auto", "scan", "count"]
SlopeMode = Literal["layer", "channel"]
SLOPE_MODES: tuple[str, ...] = ("layer", "channel")
AVERAGE_MARGIN = 1e-6  # relative excess of k·w over θ in the pool count scan


def _pool_mode(graph: ir.Graph, layer: ir.Layer, pool_mode: str) -> str:
    if not isinstance(layer, ir.AvgPool2d) or pool_mode == "scan":
        return "scan"
    from bioconv.neurons import IF

    return "count" if pool_mode == "count" or isinstance(graph.neuron_for(layer.name), IF) else "scan"


def scan_pool_count(
    evaluate: Callable[[float], float], target: float, tolerance: float, c0: float, area: int, k_max: int = 64
) -> tuple[float, float, list[tuple[float, float]], bool]:
    r"""Scan of an IF average pool over the number :math:`k` of input spikes per output spike.

    With pooling weight :math:`w = c\,\theta/A` (:math:`A` inputs, :math:`c = G c_0`) an IF
    neuron fires after :math:`k = \lfloor A/c \rfloor + 1` input charges: its rate is a
    staircase in :math:`G`. Only the steps matter, so :math:`k` is scanned directly, with
    :math:`G_k = (1+10^{-6})A/(k c_0)` (:math:`k w` just above θ); the rate falls with
    :math:`k`, and the step closest to the target wins.
    """
    gain_of = lambda k: area * (1.0 + AVERAGE_MARGIN) / (k * c0)  # noqa: E731
    history: list[tuple[float, float]] = []
    seen: dict[int, float] = {}

    def f(k: int) -> float:
        if k not in seen:
            seen[k] = float(evaluate(gain_of(k)))
            history.append((gain_of(k), seen[k]))
        return seen[k]

    k = min(max(int(area / c0) + 1, 1), k_max)
    if f(k) > target:
        while k < k_max and f(k) > target:
            k += 1
    else:
        while k > 1 and f(k) <= target:
            k -= 1
    lo_k = k if f(k) <= target else k + 1  # the smallest k at or below the target (if any)
    candidates = [kk for kk in (lo_k - 1, lo_k) if kk in seen]
    best = min(candidates, key=lambda kk: abs(seen[kk] / target - 1.0))
    value = seen[best]
    return gain_of(best), value, history, abs(value / target - 1.0) <= tolerance


def rate_statistic(rates_hz: np.ndarray, statistic: RateStatistic = "max", percentile: float = 99.9) -> float:
    """The layer's max rate (``max``) or the p-th percentile of all its rates (Hz)."""
    r = np.asarray(rates_hz, dtype=np.float64)
    if statistic == "max":
        return float(r.max())
    if statistic == "percentile":
        return float(np.percentile(r, percentile))
    raise ValueError(f"statistic must be 'max' or 'percentile', got {statistic!r}")


def scan_gain(
    evaluate: Callable[[float], float],
    target: float,
    tolerance: float = 0.02,
    g0: float = 1.0,
    bounds: tuple[float, float] = (1e-3, 1e4),
    max_iter: int = 30,
    gain_resolution: float = 1e-3,
) -> tuple[float, float, list[tuple[float, float]], bool]:
    """Find :math:`G` with ``evaluate(G)`` within ``target·(1 ± tolerance)``; evaluate is non-decreasing.

    First the bracket is found by power-law steps (:math:`G \\leftarrow G\\,(t/f(G))^{1/\\alpha}`,
    :math:`\\alpha` the log-log slope of the last two points, 1 at first; at most ×4 per
    step); then the bracket :math:`[G_{lo}, G_{hi}]` is bisected in log
    space, alternating the log-linear interpolation point (kept inside the middle 80 %)
    with the midpoint, so the bracket at least halves every two steps. It stops without
    convergence when the bracket is narrower than ``gain_resolution`` (the statistic jumps
    over the window, e.g. the stepped response of the MCR-Norm paper Fig. 1a). Returns ``(gain,
    value, history, converged)``; when not converged, the best value seen.
    """
    lo: Optional[tuple[float, float]] = None
    hi: Optional[tuple[float, float]] = None
    history: list[tuple[float, float]] = []
    g = float(g0)
    for _ in range(max_iter):
        value = float(evaluate(g))
        history.append((g, value))
        if abs(value / target - 1.0) <= tolerance:
            return g, value, history, True
        if value < target:
            lo = (g, value) if lo is None or g > lo[0] else lo
        else:
            hi = (g, value) if hi is None or g < hi[0] else hi
        if lo is not None and hi is not None:
            if hi[0] / lo[0] < 1 + gain_resolution:
                break  # the statistic jumps over the window at this gain
            a, b = math.log(lo[0]), math.log(hi[0])
            frac = 0.5
            if lo[1] > 0 and len(history) % 2 == 1:  # alternate interpolation and plain bisection
                frac = (math.log(target) - math.log(lo[1])) / (math.log(hi[1]) - math.log(lo[1]))
                frac = min(max(frac, 0.1), 0.9)
            g = math.exp(a + frac * (b - a))
        else:  # not bracketed yet: power-law step from the last two points (slope 1 at first)
            alpha = 1.0
            if len(history) >= 2 and min(history[-1][1], history[-2][1]) > 0 and history[-1][0] != history[-2][0]:
                (g1, v1), (g2, v2) = history[-2], history[-1]
                alpha = min(max(math.log(v2 / v1) / math.log(g2 / g1), 0.2), 3.0)
            if hi is None:  # too low: step up
                g = g * (min((target / value) ** (1 / alpha), 4.0) * 1.02 if value > 0 else 4.0)
            else:  # too high: step down
                g = g * max((target / value) ** (1 / alpha), 0.25) * 0.98
        if not bounds[0] <= g <= bounds[1]:
            raise ValueError(
                f"the rate target {target:g} Hz needs a gain outside {bounds} (last rate {value:g} Hz at "
                f"G = {history[-1][0]:g}); the layer is silent or saturated — check the network or the target"
            )
    best = min(history, key=lambda gv: abs(gv[1] / target - 1.0))
    return best[0], best[1], history, False


def _slope_rho(rates_hz: np.ndarray, acts: np.ndarray, lam: float, tau_s: float) -> float:
    """:math:`\\hat\\rho = \\lambda\\sum r\\tau\\,a/\\sum a^2` (least squares through the origin)."""
    a = acts.reshape(len(acts), -1)
    den = float(np.sum(a * a))
    num = float(np.sum(rates_hz * tau_s * a))
    if not den > 0 or not num > 0:
        raise ValueError("cannot estimate the rate slope: the layer has no activity on the calibration set")
    return lam * num / den


def _channel_slopes(rates_hz: np.ndarray, acts: np.ndarray, lam: float, tau_s: float, layer_rho: float) -> tuple:
    """:func:`_slope_rho` per output channel of a (N, C, H, W) layer; a channel without
    calibration activity keeps the layer's slope ``layer_rho``."""
    a = acts.reshape(len(acts), acts.shape[1], -1)
    r = np.asarray(rates_hz, dtype=np.float64).reshape(a.shape) * tau_s
    den = np.sum(a * a, axis=(0, 2))
    num = np.sum(r * a, axis=(0, 2))
    ok = (den > 0) & (num > 0)
    return tuple(float(v) for v in np.where(ok, lam * num / np.where(ok, den, 1.0), layer_rho))


def _per_channel_ok(graph: ir.Graph, layer: ir.Layer) -> bool:
    """Per-channel slopes need a conv-shaped layer that no average pool reads (a pool has one scale)."""
    from bioconv.projections import segments

    if len(tuple(layer.output_shape)) != 3:
        return False
    for other in graph.layers:
        if isinstance(other, ir.AvgPool2d):
            if any(seg.source == layer.name for seg in segments(graph, graph.sources(other.name)[0])):
                return False
    return True


def _accuracy(rates_hz: np.ndarray, labels: np.ndarray) -> float:
    pred = np.where(rates_hz.max(axis=1) > 0, np.argmax(rates_hz, axis=1), -1)
    return float(np.mean(pred == labels))


def mcr_norm(
    graph: ir.Graph,
    stats: ActivationStats,
    probe: Probe,
    target_rate: Quantity = 200 * Hz,
    input_rate: Quantity = 400 * Hz,
    layer_targets: Optional[Mapping[str, Quantity]] = None,
    neuron: Any = None,
    synapse: Any = None,
    dt: Quantity = 1 * ms,
    tolerance: float = 0.02,
    statistic: RateStatistic = "max",
    rate_percentile: float = 99.9,
    lambda_percentile: Optional[float] = None,
    rho_from_slope: bool = False,
    slopes: SlopeMode = "layer",
    eta_factors: Optional[Sequence[float]] = None,
    calib_images: Optional[np.ndarray] = None,
    calib_labels: Optional[np.ndarray] = None,
    pool_mode: PoolMode = "auto",
    max_iter: int = 30,
    progress: bool = True,
    calibration: Optional[Mapping[str, Any]] = None,
) -> ir.Graph:
    r"""MCR-Norm of an ANN graph; see the module docstring for the maths.

    Parameters
    ----------
    graph : Graph
        ANN graph (thresholds 1), e.g. from :func:`bioconv.from_torch.from_torch`.
    stats : ActivationStats
        :math:`\\lambda_n` source (max, or ``lambda_percentile``) and :math:`\\lambda_0`.
    probe : callable ``(graph, layer) -> rates (n_images, n_neurons) Hz``
        Measures the layer's rates on the calibration images (see :mod:`~bioconv.normalize.probes`).
    target_rate, input_rate : Quantity
        Predefined max rate of every layer (:math:`\\rho_n/\\tau`) and of the input (:math:`\\gamma_0/\\tau`).
    layer_targets : dict layer -> Quantity
        Per-layer targets overriding ``target_rate``.
    tolerance : float
        Relative tolerance of the achieved statistic (0.02 = ±2 %).
    statistic, rate_percentile
        ``max`` (raw max rate) or ``percentile`` (robust max) of the layer's rates.
    rho_from_slope : bool
        Divide the weights a layer receives from each source by that source's measured rate
        slope :math:`\hat\rho` instead of its target :math:`\rho` (needs ``calib_images``: the
        probe's images, in the same order). The pipeline's default; without it, every gain
        :math:`G \ne 1` unbalances the next layer's weights against its bias (see
        :mod:`bioconv.normalize.scaling`).
    slopes : "layer" or "channel"
        With ``rho_from_slope``: one slope per layer, or one per output channel of each
        convolution (dense layers, and layers read by an average pool, keep one per layer).
    eta_factors : sequence of float
        Bias factors to try after the scan; the one with the best calibration accuracy wins
        (needs ``calib_labels``; ties go to the factor closest to 1).
    pool_mode : "auto", "scan" or "count"
        Average pools are scanned like any layer (``scan``), or over the integer number of
        input spikes per output spike (``count``, :func:`scan_pool_count`): a bias-free IF
        pool's rate is a staircase in the gain (the MCR-Norm paper Fig. 1a) that usually jumps over a
        ±2 % window, so ``auto`` uses ``count`` for IF pools (the closest step wins) and
        ``scan`` for other models.
    calibration : dict
        Calibration-set description stored in the metadata (dataset, n, seed, engine, ...).
    """
    if pool_mode not in ("auto", "scan", "count"):
        raise ValueError(f"pool_mode must be 'auto', 'scan' or 'count', got {pool_mode!r}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    target_hz = check_rate(target_rate, "target_rate", dt)
    input_hz = check_rate(input_rate, "input_rate", dt)
    targets = {k: check_rate(v, f"layer_targets[{k!r}]", dt) for k, v in (layer_targets or {}).items()}
    unknown = set(targets) - {layer.name for layer in graph.spiking_layers}
    if unknown:
        raise ValueError(f"layer_targets names unknown layers {sorted(unknown)}")
    if slopes not in SLOPE_MODES:
        raise ValueError(f"slopes must be one of {SLOPE_MODES}, got {slopes!r}")
    if slopes == "channel" and not rho_from_slope:
        raise ValueError("slopes='channel' divides by measured slopes: it needs rho_from_slope=True")
    if rho_from_slope and calib_images is None:
        raise ValueError("rho_from_slope needs calib_images (the probe's calibration images, same order)")
    if eta_factors and calib_labels is None:
        raise ValueError("eta_factors needs calib_labels to pick the factor by calibration accuracy")
    _check_resolution(probe, statistic, target_hz, targets, tolerance)
    ann = graph
    graph = attach_models(graph, neuron, synapse)
    tau = reference_tau_s(graph)
    acts = ann.forward(calib_images, relu_last=True) if rho_from_slope else {}
    output = graph.spiking_layers[-1].name  # feeds no layer: its slope is not needed
    scan_layers = [l for l in graph.spiking_layers if not isinstance(l, ir.MaxPool2d)]
    scalings = {
        l.name: LayerScaling(lam=layer_lambda(graph, stats, l.name, lambda_percentile),
                             rho=targets.get(l.name, target_hz) * tau)
        for l in scan_layers
    }
    scans: dict[str, dict[str, Any]] = {}
    achieved_max: dict[str, float] = {}
    rho_measured: dict[str, float] = {}
    channel_slopes: dict[str, list[float]] = {}
    bar = tqdm(scan_layers, desc="MCR scan", unit="layer", disable=not progress)
    for layer in bar:
        name = layer.name
        base = scalings[name]
        seen: dict[float, np.ndarray] = {}

        def evaluate(g: float, name: str = name, base: LayerScaling = base) -> float:
            trial, _ = rescale(graph, {**scalings, name: replace(base, gain=g)}, stats.input_max, input_hz * tau, tau)
            rates = np.asarray(probe(trial, name), dtype=np.float64)
            seen[g] = rates
            return rate_statistic(rates, statistic, rate_percentile)

        target = base.rho / tau
        mode = _pool_mode(graph, layer, pool_mode)
        if mode == "count":
            _, c0 = rescale(graph, {**scalings, name: base}, stats.input_max, input_hz * tau, tau)
            area = layer.kernel_size[0] * layer.kernel_size[1]
            gain, value, history, ok = scan_pool_count(evaluate, target, tolerance, c0[name]["weight"], area)
        else:
            try:
                gain, value, history, ok = scan_gain(evaluate, target, tolerance, max_iter=max_iter)
            except ValueError as exc:
                raise ValueError(f"MCR-Norm, layer {name!r} ({type(layer).__name__}): {exc}") from None
        if not ok:
            log.warning("layer %s: scan did not reach %g Hz ±%g %% (best %g Hz at G=%g)",
                        name, target, 100 * tolerance, value, gain)
        scalings[name] = replace(base, gain=gain)
        rates = seen[gain]
        achieved_max[name] = float(rates.max())
        scans[name] = {"mode": mode, "history": [list(h) for h in history], "converged": ok,
                       "achieved_stat_hz": value}
        bar.set_postfix_str(f"{name}: G={gain:.3g} rate={value:.1f}Hz")
        if rho_from_slope and name != output:
            try:
                rho_measured[name] = _slope_rho(rates, acts[name], scalings[name].lam, tau)
            except ValueError as exc:
                raise ValueError(f"MCR-Norm, layer {name!r}: {exc}") from None
            rho_out = rho_measured[name]
            if slopes == "channel" and _per_channel_ok(graph, layer):
                rho_out = _channel_slopes(rates, acts[name], scalings[name].lam, tau, rho_measured[name])
                channel_slopes[name] = list(rho_out)
            scalings[name] = replace(scalings[name], rho_out=rho_out)
    eta_search: dict[str, float] = {}
    if eta_factors:
        graph_out, scalings, eta_search, achieved_max = _tune_eta(
            graph, scalings, stats, probe, eta_factors, calib_labels, input_hz * tau, tau, scan_layers, achieved_max
        )
    out, factors = rescale(graph, scalings, stats.input_max, input_hz * tau, tau)
    meta = normalization_meta(
        "mcr", out, scalings, factors, stats.input_max, input_hz * tau, tau, calibration,
        statistic=statistic, rate_percentile=rate_percentile if statistic == "percentile" else None, pool_mode=pool_mode,
        lambda_percentile=lambda_percentile, tolerance=tolerance, rho_from_slope=rho_from_slope,
        slopes=slopes, rho_measured=rho_measured, rho_measured_channels=channel_slopes, achieved_max_rate_hz=achieved_max, scan=scans, eta_search=eta_search,
    )
    return out.with_models(normalization=meta)


def _check_resolution(probe: Any, statistic: str, target_hz: float, targets: Mapping[str, float], tol: float) -> None:
    """With the raw max, rates are multiples of 1/T: the window must hold one of them."""
    duration_s = getattr(probe, "duration_s", None)
    if statistic != "max" or duration_s is None:
        return
    for t in {target_hz, *targets.values()}:
        if math.floor(t * (1 + tol) * duration_s + 1e-9) < math.ceil(t * (1 - tol) * duration_s - 1e-9):
            raise ValueError(
                f"a {duration_s * 1e3:g} ms calibration run measures rates in steps of {1 / duration_s:g} Hz, "
                f"too coarse to hit {t:g} Hz ±{100 * tol:g} %; use a longer duration (>= "
                f"{1 / (2 * tol * t) * 1e3:.0f} ms) or statistic='percentile'"
            )


def _tune_eta(graph, scalings, stats, probe, factors, labels, input_rho, tau, scan_layers, achieved_max):
    """Try bias factors η on every layer; keep the best calibration accuracy (ties: closest to 1)."""
    last = scan_layers[-1].name
    results: dict[str, float] = {}
    best = (-1.0, 0.0, 1.0)
    for f in tqdm(list(factors), desc="MCR eta", unit="factor", leave=False):
        if not f > 0:
            raise ValueError(f"eta_factors must be > 0, got {f}")
        trial_s = {k: replace(s, bias_factor=float(f)) for k, s in scalings.items()}
        trial, _ = rescale(graph, trial_s, stats.input_max, input_rho, tau)
        acc = _accuracy(np.asarray(probe(trial, last)), np.asarray(labels))
        results[repr(float(f))] = acc
        key = (acc, -abs(math.log(f)), f)
        if key[:2] > best[:2]:
            best = key
    f = best[2]
    scalings = {k: replace(s, bias_factor=float(f)) for k, s in scalings.items()}
    if f != 1.0:
        trial, _ = rescale(graph, scalings, stats.input_max, input_rho, tau)
        achieved_max = {l.name: float(np.max(probe(trial, l.name))) for l in scan_layers}
    log.info("eta fine-tuning: accuracies %s, chose %g", results, f)
    return graph, scalings, results, achieved_max
