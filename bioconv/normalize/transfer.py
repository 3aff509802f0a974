r"""MCR-TF: calibration of every layer against its measured transfer function.

MCR-Norm (:mod:`bioconv.normalize.mcr`) fits one gain per layer so that
the layer's *maximum* rate hits its target. That is right only for a neuron whose rate is a
straight line through the origin of its drive (IF with reset by subtraction at small dt).
Other neurons are not: the LIF has a rheobase (no spike below :math:`\theta/\tau_m` of
drive), the SRM's rate is :math:`1/(\tau_r\ln\frac{P+\theta}{P-\theta})` of its filtered
input :math:`P`, and the IF with reset to zero loses the charge that arrives in the step in
which it fires (rate :math:`\approx x/(\theta + x\,dt)`). MCR-TF fits a *gain and an offset*
per layer so that the rates follow the ANN over the whole activation range, at the time
step that will be simulated.

Maths. Layer :math:`n` is scaled by the shared rule (:mod:`bioconv.normalize.scaling`,
weights :math:`\tilde w_n = G_n\frac{\rho_n}{\lambda_n}\frac{\lambda_{n-1}}{\rho_{n-1}}w_n`,
bias :math:`\tilde b_n = G_n\frac{\rho_n}{\lambda_n}b_n`) and an offset current
:math:`\beta_n` (in units of :math:`\theta` per reference time constant :math:`\tau`, like
``I_bias``) is added to every neuron's bias: :math:`I_\mathrm{bias} = \tilde b_n + \beta_n`.
The ideal rate of a neuron with ANN activation :math:`a` is
:math:`t = \rho_n a/(\lambda_n\tau)`. Layer by layer (the layers below already calibrated,
so the layer sees the real spikes of its inputs):

1. scan :math:`G_n` (:func:`~bioconv.normalize.mcr.scan_gain`) so that the layer's max rate
   on the calibration images is the target :math:`\rho_n/\tau` (±``tolerance``);
2. measure the rates :math:`r` and fit the line :math:`r \approx k\,t + c` over the active
   range (neurons with :math:`t > 0`, averaged in ``bins`` equal-width bins of :math:`t`, so
   every part of the range weighs the same);
3. linearize the local response :math:`r \approx s\,(G t\tau + \beta)/\tau + r_0`
   (:math:`k = sG`, :math:`c = s\beta/\tau + r_0`) and move the offset to where the
   intercept vanishes: :math:`\beta \leftarrow \beta - c\,\tau\,G/k`;
4. repeat 1–3 ``iterations`` times (or until :math:`|c| <` ``intercept_tolerance`` of the
   target), then keep the last scanned gain.

With ``offset="none"`` only step 1 runs: plain MCR-Norm with the probe at the simulation dt.
``offset="channel"`` fits one intercept per output channel of convolution layers (a common
gain). The fit of each layer (slope, intercept, :math:`R^2` of the binned means, offsets,
gains) is stored in ``graph.meta["normalization"]["fit"]``.

The offset acts on every neuron of the layer, also on those whose ANN pre-activation is
negative; for a LIF below its rheobase these stay silent, for an IF a positive offset makes
them fire. The fit therefore reports the rate of the ANN-silent neurons
(``silent_rate_hz``) as a check.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping, Optional

import numpy as np
from brian2 import Hz, Quantity, ms
from tqdm.auto import tqdm

from bioconv import ir
from bioconv.normalize.mcr import Probe, scan_gain
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

OffsetMode = Literal["none", "layer", "channel"]
OFFSET_MODES: tuple[str, ...] = ("none", "layer", "channel")
OffsetSign = Literal["any", "positive"]
OFFSET_SIGNS: tuple[str, ...] = ("any", "positive")


@dataclass(frozen=True)
class TransferOptions:
    r"""Options of :func:`transfer_norm`.

    Attributes
    ----------
    offset : "none", "layer" or "channel"
        What is fitted besides the gain: nothing (MCR-Norm at the simulation dt), one offset
        current per layer, or one per output channel (conv layers; dense layers per layer).
        On cnn7 (``figures/README.md``, Fig. 11) per channel helped the LIF with alpha synapses at
        200 Hz and the SRM and hurt the IF with reset to zero and the LIF with delta synapses.
    iterations : int
        Most fit/scan rounds per layer (each costs one scan of the gain); the rounds stop
        earlier once the intercept is within ``intercept_tolerance``. The offset step is a
        linearization that under-corrects where raising the offset also lowers the scanned
        gain: the LIF near its rheobase at 50 Hz needed 6–7 rounds on cnn7 (with 4, its
        intercepts stayed at −1.5 to −2.4 Hz and the conversion lost 0.7 points more;
        ``figures/README.md``, Fig. 11), while IF layers stop after 1–3.
    bins : int
        Equal-width bins of the ideal rate over which the rates are averaged for the fit.
    tolerance : float
        Relative tolerance of the max-rate scan (0.02 = ±2 %).
    intercept_tolerance : float
        Stop iterating when the fitted intercept is below this fraction of the target rate.
    max_offset : float
        Bound on :math:`|\beta|` (units of θ per τ); a fit that asks for more is clipped.
    offset_sign : "positive" or "any"
        ``"positive"`` (default) keeps :math:`\beta \ge 0`: the offset may lift a rheobase or
        a leak but never lowers the drive. A response that saturates at the top (reset to
        zero, refractory period) asks for a negative offset, which silences the weakest
        ANN-active neurons and costs more accuracy than the straighter line gains (cnn7:
        ``figures/README.md``, Fig. 11); ``"any"`` allows it.
    rho_from_slope : bool
        The layers a layer feeds divide its rates by its fitted slope, :math:`\rho^w = k\rho`
        (``LayerScaling.rho_out``), instead of assuming :math:`k = 1`; see
        :mod:`bioconv.normalize.scaling`.
    """

    offset: OffsetMode = "layer"
    iterations: int = 10
    bins: int = 20
    tolerance: float = 0.02
    intercept_tolerance: float = 0.01
    max_offset: float = 1.0
    offset_sign: OffsetSign = "positive"
    rho_from_slope: bool = True

    def __post_init__(self) -> None:
        if self.offset not in OFFSET_MODES:
            raise ValueError(f"TransferOptions.offset must be one of {OFFSET_MODES}, got {self.offset!r}")
        if int(self.iterations) != self.iterations or self.iterations < 0:
            raise ValueError(f"TransferOptions.iterations must be an integer >= 0, got {self.iterations}")
        if int(self.bins) != self.bins or self.bins < 2:
            raise ValueError(f"TransferOptions.bins must be an integer >= 2, got {self.bins}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"TransferOptions.tolerance must be in (0, 1), got {self.tolerance}")
        if not 0 < self.intercept_tolerance < 1:
            raise ValueError(f"TransferOptions.intercept_tolerance must be in (0, 1), got {self.intercept_tolerance}")
        if self.offset_sign not in OFFSET_SIGNS:
            raise ValueError(f"TransferOptions.offset_sign must be one of {OFFSET_SIGNS}, got {self.offset_sign!r}")
        if not (self.max_offset > 0 and math.isfinite(self.max_offset)):
            raise ValueError(f"TransferOptions.max_offset must be finite and > 0, got {self.max_offset}")


@dataclass(frozen=True)
class LineFit:
    """Binned least-squares line :math:`r = k\\,t + c` (Hz) of measured against ideal rates."""

    slope: float
    intercept_hz: float
    r2: float
    n_bins: int
    silent_rate_hz: float  # mean rate of the neurons whose ideal rate is 0

    def to_dict(self) -> dict[str, float]:
        return {"slope": self.slope, "intercept_hz": self.intercept_hz, "r2": self.r2, "n_bins": self.n_bins,
                "silent_rate_hz": self.silent_rate_hz}


def fit_line(ideal_hz: np.ndarray, rates_hz: np.ndarray, bins: int = 20) -> LineFit:
    """Fit :math:`r = k t + c` to the bin means of ``rates_hz`` over equal-width bins of ``ideal_hz`` > 0.

    Every non-empty bin weighs the same, so the fit follows the whole activation range
    rather than the many weakly active neurons. Raises ``ValueError`` when fewer than two
    bins are occupied (the layer has no activation range to fit).
    """
    t = np.asarray(ideal_hz, dtype=np.float64).ravel()
    r = np.asarray(rates_hz, dtype=np.float64).ravel()
    if t.shape != r.shape:
        raise ValueError(f"ideal and measured rates differ in size: {t.shape} vs {r.shape}")
    active = t > 0
    silent = float(r[~active].mean()) if np.any(~active) else 0.0
    if not np.any(active):
        raise ValueError("no neuron of the layer is active in the ANN on the calibration images; nothing to fit")
    edges = np.linspace(0.0, float(t[active].max()), bins + 1)
    which = np.clip(np.searchsorted(edges, t[active], side="right") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    keep = count > 0
    x = np.bincount(which, weights=t[active], minlength=bins)[keep] / count[keep]
    y = np.bincount(which, weights=r[active], minlength=bins)[keep] / count[keep]
    if len(x) < 2:
        raise ValueError("the layer's ANN activations fill fewer than two bins; cannot fit a transfer line")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss if ss > 0 else 1.0
    return LineFit(float(slope), float(intercept), r2, int(len(x)), silent)


def _channels(layer: ir.Layer) -> int:
    shape = tuple(layer.output_shape)
    return shape[0] if len(shape) == 3 else 1


def with_offsets(graph: ir.Graph, offsets: Mapping[str, np.ndarray]) -> ir.Graph:
    """``graph`` with offset currents added to the biases (scalar or per output channel)."""
    for name, beta in offsets.items():
        layer = graph.layer(name)
        if getattr(layer, "bias", None) is None:
            if np.any(np.asarray(beta) != 0):
                raise ValueError(f"layer {name!r} ({type(layer).__name__}) has no bias to carry an offset")
            continue
        beta = np.asarray(beta, dtype=np.float64)
        if isinstance(layer, ir.Dense) and beta.size > 1:
            raise ValueError(f"dense layer {name!r} takes one offset, got {beta.size}")
        graph = graph.replace_layer(name, bias=layer.bias + (beta if beta.size > 1 else float(beta.reshape(-1)[0])))
    return graph


def transfer_norm(
    graph: ir.Graph,
    stats: ActivationStats,
    probe: Probe,
    calib_images: np.ndarray,
    target_rate: Quantity = 200 * Hz,
    input_rate: Quantity = 400 * Hz,
    neuron: Any = None,
    synapse: Any = None,
    dt: Quantity = 1 * ms,
    options: TransferOptions = TransferOptions(),
    layer_targets: Optional[Mapping[str, Quantity]] = None,
    progress: bool = True,
    calibration: Optional[Mapping[str, Any]] = None,
) -> ir.Graph:
    """MCR-TF normalization of an ANN graph; see the module docstring for the maths.

    Parameters
    ----------
    graph : Graph
        ANN graph (thresholds 1, average pools folded or spiking), e.g. from ``from_torch``.
    stats : ActivationStats
        :math:`\\lambda_n` (max) per layer and :math:`\\lambda_0` of the input.
    probe : callable ``(graph, layer) -> rates (n_images, n_neurons) Hz``
        Runs the graph on ``calib_images`` (same order) at the dt that will be simulated.
    calib_images : array (N, ...)
        The probe's calibration images: the ideal rates are the ANN's activations on them.
    target_rate, input_rate : Quantity
        Max rate of every layer (:math:`\\rho_n/\\tau`) and of the largest input pixel.
    neuron, synapse
        Models of the spiking network (defaults: IF reset to zero, delta synapses).
    dt : Quantity
        The simulation time step (checks the rate ceiling 1/dt; the probe must use it too).
    options : TransferOptions
        Offset mode, iterations, bins, tolerances.
    layer_targets : dict layer -> Quantity
        Per-layer max-rate targets overriding ``target_rate``.
    calibration : dict
        Calibration-set description stored in the metadata.
    """
    target_hz = check_rate(target_rate, "target_rate", dt)
    input_hz = check_rate(input_rate, "input_rate", dt)
    targets = {k: check_rate(v, f"layer_targets[{k!r}]", dt) for k, v in (layer_targets or {}).items()}
    unknown = set(targets) - {layer.name for layer in graph.spiking_layers}
    if unknown:
        raise ValueError(f"layer_targets names unknown layers {sorted(unknown)}")
    calib_images = np.asarray(calib_images)
    probe_images = getattr(probe, "images", None)
    if probe_images is not None and len(probe_images) != len(calib_images):
        raise ValueError(f"calib_images has {len(calib_images)} images but the probe runs {len(probe_images)}; "
                         "pass the probe's own calibration images")
    ann = graph
    graph = attach_models(graph, neuron, synapse)
    tau = reference_tau_s(graph)
    acts = ann.forward(calib_images, relu_last=True)
    layers = [l for l in graph.spiking_layers if not isinstance(l, ir.MaxPool2d)]
    scalings = {l.name: LayerScaling(lam=stats.scale(l.name), rho=targets.get(l.name, target_hz) * tau) for l in layers}
    offsets: dict[str, np.ndarray] = {}
    fits: dict[str, Any] = {}
    achieved: dict[str, float] = {}
    bar = tqdm(layers, desc="MCR-TF", unit="layer", disable=not progress)
    for layer in bar:
        name = layer.name
        s = scalings[name]
        target = s.rho / tau
        ideal = acts[name].reshape(len(calib_images), -1) * (s.rho / s.lam) / tau  # Hz
        n_ch = _channels(layer) if options.offset == "channel" and isinstance(layer, ir.Conv2d) else 1
        beta = np.zeros(n_ch)
        can_offset = options.offset != "none" and getattr(layer, "bias", None) is not None
        seen: dict[tuple, np.ndarray] = {}

        def measure(g: float, b: np.ndarray, name: str = name, s: LayerScaling = s) -> np.ndarray:
            key = (g, tuple(b))
            if key not in seen:
                trial, _ = rescale(graph, {**scalings, name: replace(s, gain=g)}, stats.input_max, input_hz * tau, tau)
                trial = with_offsets(trial, {**offsets, name: b})
                seen[key] = np.asarray(probe(trial, name), dtype=np.float64)
            return seen[key]

        history: list[dict[str, Any]] = []
        gain = s.gain
        for it in range(1 + (options.iterations if can_offset else 0)):
            b_now = beta.copy()
            gain, value, scan, ok = scan_gain(lambda g: float(measure(g, b_now).max()), target, options.tolerance,
                                              g0=gain)
            if not ok:
                log.warning("layer %s: max-rate scan did not reach %g Hz ±%g %% (best %g Hz at G=%g)",
                            name, target, 100 * options.tolerance, value, gain)
            rates = measure(gain, b_now)
            fit = fit_line(ideal, rates, options.bins)
            step = {"iteration": it, "gain": gain, "offset": b_now.tolist(), "max_rate_hz": value, "converged": ok,
                    "scan": [list(h) for h in scan], **fit.to_dict()}
            if n_ch > 1:
                per = _channel_intercepts(ideal, rates, n_ch, fit.slope)
                step["channel_intercept_hz"] = per.tolist()
            history.append(step)
            if not can_offset or it == options.iterations:
                break
            if fit.slope <= 0:
                log.warning("layer %s: fitted slope %g <= 0, offset not updated", name, fit.slope)
                break
            intercept = per if n_ch > 1 else np.array([fit.intercept_hz])
            if np.all(np.abs(intercept) < options.intercept_tolerance * target):
                break
            # r ≈ s (G t τ + β)/τ + r0 with k = s G: the intercept vanishes at β - c τ G / k
            low = 0.0 if options.offset_sign == "positive" else -options.max_offset
            beta = np.clip(beta - intercept * tau * gain / fit.slope, low, options.max_offset)
            if np.array_equal(beta, b_now):
                break  # the bound holds the offset where it is: another round changes nothing
        scalings[name] = replace(s, gain=gain)
        if options.rho_from_slope and name != layers[-1].name and history[-1]["slope"] > 0:
            scalings[name] = replace(scalings[name], rho_out=s.rho * history[-1]["slope"])
        offsets[name] = np.asarray(history[-1]["offset"], dtype=np.float64)
        achieved[name] = float(seen[(gain, tuple(np.asarray(history[-1]["offset"])))].max())
        last = history[-1]
        fits[name] = {"slope": last["slope"], "intercept_hz": last["intercept_hz"], "r2": last["r2"],
                      "silent_rate_hz": last["silent_rate_hz"], "offset": last["offset"], "history": history}
        bar.set_postfix_str(f"{name}: G={gain:.3g} β={np.mean(last['offset']):+.3g} k={last['slope']:.3f}")
        log.info("MCR-TF %s: G=%.4g offset=%s slope=%.3f intercept=%.2f Hz R2=%.4f", name, gain,
                 np.round(last["offset"], 4).tolist(), last["slope"], last["intercept_hz"], last["r2"])
    out, factors = rescale(graph, scalings, stats.input_max, input_hz * tau, tau)
    out = with_offsets(out, offsets)
    meta = normalization_meta(
        "mcr-tf", out, scalings, factors, stats.input_max, input_hz * tau, tau, calibration,
        offset_mode=options.offset, offset_sign=options.offset_sign, iterations=options.iterations, bins=options.bins, tolerance=options.tolerance,
        rho_from_slope=options.rho_from_slope,
        dt_ms=float(dt / ms), achieved_max_rate_hz=achieved, fit=fits,
        offset={k: np.asarray(v, dtype=float).tolist() for k, v in offsets.items()},
    )
    return out.with_models(normalization=meta)


def _channel_intercepts(ideal: np.ndarray, rates: np.ndarray, n_ch: int, slope: float) -> np.ndarray:
    """Per-channel intercept with the layer's common slope: mean of :math:`r - k t` over active neurons."""
    n_img = ideal.shape[0]
    t = ideal.reshape(n_img, n_ch, -1)
    r = rates.reshape(n_img, n_ch, -1)
    active = t > 0
    resid = np.where(active, r - slope * t, 0.0).sum(axis=(0, 2))
    count = active.sum(axis=(0, 2))
    return np.where(count > 0, resid / np.maximum(count, 1), 0.0)
