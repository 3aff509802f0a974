r"""Metrics of one simulated network, as tidy tables (no I/O, no config look-ups).

Metrics written into every network table:

* **readout** — spike counts at the end of T (fixed in advance); an image whose top output
  count is tied (or whose output is silent) counts as wrong (:func:`bioconv.stats.count_predictions`);
  ``tie_fraction`` reports how often that happens (with the count-voltage readout: how often count
  and potential are both tied). The best accuracy over time is stored as
  ``best_accuracy_over_time`` (chosen on the test images: optimistic, labelled as such).
* **intervals** — ``snn_ci_low``/``snn_ci_high`` and ``ann_ci_*``: Wilson 95 % over the
  ``n_images`` images of the one input-spike seed of the config (figures pool seeds with the
  bootstrap of :mod:`bioconv.stats`); ``mcnemar_p``: exact McNemar test, source ANN vs SNN.
* **latency** — per image, the *time to a stable decision*: the end of the first time bin
  from which the prediction no longer changes until T (``decision_ms``; NaN for images that
  are undecided at T), and the time of the first output spike (``first_output_spike_ms``).
  The run's ``latency_ms`` is the median time to a stable decision over the images decided at T,
  and NaN when the network does not classify (Wilson lower bound of the accuracy at or below
  chance), so that no latency is reported for a network that never classifies.
* **synaptic operations per image** (Rueckauer et al. 2017, eq. 10): :math:`\sum_l f_{\mathrm{out},l}\cdot s_l`,
  spikes of each neuron times its fan-out into the next layer (from
  :func:`bioconv.connectivity.layer_synapses`); input spikes count with their expected
  number :math:`\sum_i \min(r_i\,dt, 1)\,n_\mathrm{steps}`.
* **energy** (Ding et al. 2021, eq. 14): :math:`E = \alpha \cdot N_\mathrm{spikes}` and power
  :math:`P = E/T`; reported in units of the per-spike energy α (``energy_alpha`` = spikes
  of all spiking layers per image, ``power_alpha_per_s`` = that over the duration).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd


def fan_out(graph) -> dict[str, np.ndarray]:
    """Outgoing synapses per neuron for the input and every spiking layer (0 for the output)."""
    from bioconv import ir
    from bioconv.connectivity import layer_synapses

    sizes = {"input": int(np.prod(graph.input.shape))}
    out: dict[str, np.ndarray] = {}
    prev = "input"
    for layer in graph.layers:
        if isinstance(layer, ir.Flatten):
            continue
        conn = layer_synapses(layer)
        if not hasattr(conn, "i"):
            raise ValueError(f"layer {layer.name!r}: synaptic-operation count needs explicit synapses")
        out[prev] = np.bincount(np.asarray(conn.i), minlength=sizes[prev]).astype(np.int64)
        sizes[layer.name] = int(np.prod(layer.output_shape))
        prev = layer.name
    out[prev] = np.zeros(sizes[prev], dtype=np.int64)
    return out


def predictions_vs_time(result) -> np.ndarray:
    """(n_images, n_bins) predictions; count readout with ties and silence as ``-1`` (wrong); the voltage
    and integrating readouts take the highest output potential, the count-voltage readout breaks count
    ties by it."""
    from bioconv.simulation import POTENTIAL_READOUTS
    from bioconv.stats import count_predictions

    if result.config.readout in POTENTIAL_READOUTS:
        return result.predictions(result.config.readout)
    return count_predictions(result.output_counts)


def decision_times_ms(pred: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
    """Per image: end of the first bin from which the prediction stays at its final, decided value."""
    final = pred[:, -1:]
    changed = pred != final  # (n, bins)
    last_change = np.where(changed.any(axis=1), changed.shape[1] - 1 - np.argmax(changed[:, ::-1], axis=1), -1)
    out = t_ms[np.minimum(last_change + 1, len(t_ms) - 1)].astype(float)
    out[final[:, 0] < 0] = np.nan
    return out


def first_spike_ms(output_counts: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
    """Per image: end of the first bin with an output spike (NaN if the output stays silent)."""
    any_spike = output_counts.sum(axis=-1) > 0
    out = t_ms[np.argmax(any_spike, axis=1)].astype(float)
    out[~any_spike.any(axis=1)] = np.nan
    return out


def latency_ms(decision_ms: np.ndarray, correct: np.ndarray, n_classes: int) -> float:
    """Median time to a stable decision; NaN if the accuracy's Wilson lower bound is at or below chance."""
    from bioconv.stats import wilson_interval

    lo, _ = wilson_interval(int(np.sum(correct)), len(correct))
    decided = decision_ms[np.isfinite(decision_ms)]
    if lo <= 1.0 / n_classes or decided.size == 0:
        return float("nan")
    return float(np.median(decided))


def summarize(result, graph, x: np.ndarray, ann_correct: Optional[np.ndarray] = None) -> pd.DataFrame:
    """Tidy table of one simulation of images ``x``: ``kind="layer"`` rows (image × layer, incl.
    the input) and ``kind="time"`` rows (accuracy and mean spikes per image ``spikes_to_t`` up to each time bin), with per-run metrics broadcast."""
    from brian2 import second

    from bioconv.encoding import input_rates_hz, spike_probability

    fan = fan_out(graph)
    table = result.to_table()
    table["synops"] = 0.0
    for layer, counts in result.counts.items():
        table.loc[table.layer == layer, "synops"] = counts @ fan[layer]
    rates, _signs = input_rates_hz(x, graph.input)
    dt_s = float(result.config.dt / second)
    p = spike_probability(rates, dt_s, result.config.coding) if result.config.coding != "current" else 0 * rates
    n_steps = result.config.n_steps
    inp = pd.DataFrame({"image": np.arange(result.n_images), "label": result.labels, "layer": "input",
                        "n_neurons": rates.shape[1], "spikes": (p * n_steps).sum(axis=1),
                        "mean_rate_hz": rates.mean(axis=1), "max_rate_hz": rates.max(axis=1),
                        "synops": (p * n_steps) @ fan["input"]})
    from bioconv.stats import mcnemar, tie_fraction, wilson_interval

    t_ms = result.bin_times_ms()
    pred_t = predictions_vs_time(result)
    pred = pred_t[:, -1]
    correct = pred == result.labels
    table["prediction"] = np.tile(pred, len(result.counts))  # to_table's rows: layer-major, images in order
    table["correct"] = np.tile(correct, len(result.counts))
    inp["prediction"] = pred
    inp["correct"] = correct
    for col in ("engine", "duration_ms", "dt_ms", "coding"):
        inp[col] = table[col].iloc[0]
    table = pd.concat([inp[table.columns], table], ignore_index=True)
    table.insert(0, "kind", "layer")
    decision = decision_times_ms(pred_t, t_ms)
    first = first_spike_ms(result.output_counts, t_ms)
    table["decision_ms"] = decision[table.image.to_numpy()]
    table["first_output_spike_ms"] = first[table.image.to_numpy()]
    acc = (pred_t == result.labels[:, None]).mean(axis=0)
    time_rows = pd.DataFrame({"kind": "time", "engine": result.engine, "layer": "output",
                              "image": -1, "t_ms": t_ms, "accuracy": acc})
    if result.layer_bin_counts:  # mean spikes per image (all layers) up to each bin's end
        time_rows["spikes_to_t"] = result.spikes_vs_time().mean(axis=0)
    table = pd.concat([table, time_rows], ignore_index=True)
    net = table[(table.kind == "layer") & (table.layer != "input")]
    spikes_img = net.groupby("image").spikes.sum()
    duration_s = float(result.config.duration / second)
    n = result.n_images
    lo, hi = wilson_interval(int(correct.sum()), n)
    n_classes = result.output_counts.shape[-1]
    table["n_images"] = n
    table["n_seeds"] = 1
    table["snn_accuracy"] = float(acc[-1])
    table["snn_ci_low"], table["snn_ci_high"] = lo, hi
    table["accuracy_at_ms"] = float(t_ms[-1])
    # images lost to a tie: of spike counts (count readout); of count and potential (count-voltage, whose
    # count ties the potential breaks); potentials alone (voltage and integrating readouts) do not tie
    readout = result.config.readout
    table["tie_fraction"] = (float(tie_fraction(result.output_counts[:, -1, :])) if readout == "count" else
                             float((pred < 0).mean()) if readout == "count-voltage" else 0.0)
    best = int(np.argmax(acc))
    table["best_accuracy_over_time"] = float(acc[best])
    table["best_accuracy_t_ms"] = float(t_ms[best])
    table["latency_ms"] = latency_ms(decision, correct, n_classes)
    table["first_output_spike_median_ms"] = float(np.nanmedian(first)) if np.isfinite(first).any() else float("nan")
    table["spikes_per_image"] = float(spikes_img.mean())
    table["synops_per_image"] = float(table[table.kind == "layer"].groupby("image").synops.sum().mean())
    table["energy_alpha"] = float(spikes_img.mean())  # Ding et al. 2021, eq. 14: E/α
    table["power_alpha_per_s"] = float(spikes_img.mean()) / duration_s  # P/α
    if ann_correct is not None:
        ann_correct = np.asarray(ann_correct, bool)
        table["ann_accuracy"] = float(np.mean(ann_correct))
        table["ann_ci_low"], table["ann_ci_high"] = wilson_interval(int(ann_correct.sum()), n)
        table["loss_pct"] = 100.0 * (float(np.mean(ann_correct)) - float(acc[-1]))
        table["mcnemar_p"] = mcnemar(ann_correct, correct).p_exact
        img = table.image.to_numpy()
        table["ann_correct"] = np.where(img >= 0, ann_correct[np.clip(img, 0, None)], False)
    return table


def response_table(acts: dict[str, np.ndarray], result, norm: dict, bins: int = 20,
                   active_only: bool = False) -> pd.DataFrame:
    r"""Per layer: SNN rate vs normalized ANN activation ``acts`` (a/λ per layer), binned (``kind="curve"``), with the
    least-squares slope through the origin :math:`s = \sum r x / \sum x^2` (Hz per unit
    a/λ) and its ratio to the layer's target max rate (``norm`` = the graph's normalization
    metadata; 1 = no degeneration). ``active_only``: bin only the neurons the ANN activates
    (a > 0), so the first bin holds weak activations rather than the many ANN-silent neurons, whose
    mean rate is the column ``silent_rate_hz``."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for depth, (name, a) in enumerate(acts.items(), start=1):
        if name not in result.counts:
            continue
        r = result.rates_hz(name).astype(float).ravel()
        x = np.clip(a, 0.0, None).ravel()
        silent = float(r[x <= 0].mean()) if np.any(x <= 0) else float("nan")
        layer_max = float(r.max())
        if active_only:
            x, r = x[x > 0], r[x > 0]
        slope = float((r * x).sum() / max((x * x).sum(), 1e-300))
        target = float(norm["target_rate_hz"][name])
        idx = np.clip(np.digitize(x, edges) - 1, 0, bins - 1)
        n = np.bincount(idx, minlength=bins)
        mean = np.bincount(idx, weights=r, minlength=bins) / np.maximum(n, 1)
        sq = np.bincount(idx, weights=r * r, minlength=bins) / np.maximum(n, 1)
        x_mean = np.bincount(idx, weights=x, minlength=bins) / np.maximum(n, 1)
        rows.append(pd.DataFrame({
            "kind": "curve", "layer": name, "depth": depth, "x": 0.5 * (edges[:-1] + edges[1:]),
            "x_mean": np.where(n > 0, x_mean, np.nan), "n": n, "mean_rate_hz": np.where(n > 0, mean, np.nan),
            "sd_rate_hz": np.sqrt(np.maximum(sq - mean ** 2, 0.0)), "slope_hz": slope, "target_rate_hz": target,
            "rel_slope": slope / target, "layer_max_rate_hz": layer_max,
            "silent_rate_hz": silent,
        }))
    return pd.concat(rows, ignore_index=True)


def rate_histograms(result, bins_hz: np.ndarray) -> pd.DataFrame:
    """Per layer: histogram of per-neuron, per-image firing rates (``kind="hist"``)."""
    rows = []
    for name in result.counts:
        r = result.rates_hz(name).ravel()
        counts, _ = np.histogram(r, bins=bins_hz)
        rows.append(pd.DataFrame({"kind": "hist", "layer": name, "rate_lo_hz": bins_hz[:-1], "rate_hi_hz": bins_hz[1:],
                                  "n": counts, "frac_silent": float(np.mean(r == 0))}))
    return pd.concat(rows, ignore_index=True)


def correct_at(result, times_ms) -> pd.DataFrame:
    """Per image (``kind="acc_at"``): correct or not at each fixed time T ≤ the duration (ties and silence wrong)."""
    pred = predictions_vs_time(result)
    t = result.bin_times_ms()
    rows = []
    for T in times_ms:
        if T > t[-1] + 1e-9:
            continue
        k = int(np.searchsorted(t, T - 1e-9))
        rows.append(pd.DataFrame({"kind": "acc_at", "layer": "output", "image": np.arange(result.n_images),
                                  "t_ms": float(t[k]), "correct": pred[:, k] == result.labels}))
    return pd.concat(rows, ignore_index=True)
