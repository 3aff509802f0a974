r"""Metrics of one simulated network, as tidy tables (no I/O, no config look-ups).

Metrics written into every network table:

* **latency** — the earliest time :math:`t^*` after which accuracy stays within 0.1 %
  (absolute, 0.001) of the final accuracy: :math:`a(t) \ge a(T) - 0.001\ \forall t \ge t^*`.
* **synaptic operations per image** (seed 004 eq. 10): :math:`\sum_l f_{\mathrm{out},l}\cdot s_l`,
  spikes of each neuron times its fan-out into the next layer (from
  :func:`bioconv.connectivity.layer_synapses`); input spikes count with their expected
  number :math:`\sum_i \min(r_i\,dt, 1)\,n_\mathrm{steps}`.
* **energy** (seed 001 eq. 14): :math:`E = \alpha \cdot N_\mathrm{spikes}` and power
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


def latency_ms(t_ms: np.ndarray, acc: np.ndarray, tol: float = 0.001) -> float:
    """Earliest time after which accuracy stays within ``tol`` of its final value."""
    ok = acc >= acc[-1] - tol
    bad = np.flatnonzero(~ok)
    first = 0 if bad.size == 0 else bad[-1] + 1
    return float(t_ms[first])


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
    pred = result.predictions()[:, -1]
    inp["prediction"] = pred
    inp["correct"] = pred == result.labels
    for col in ("engine", "duration_ms", "dt_ms", "coding"):
        inp[col] = table[col].iloc[0]
    table = pd.concat([inp[table.columns], table], ignore_index=True)
    table.insert(0, "kind", "layer")
    t_ms = result.bin_times_ms()
    acc = result.accuracy_vs_time()
    time_rows = pd.DataFrame({"kind": "time", "engine": result.engine, "layer": "output",
                              "image": -1, "t_ms": t_ms, "accuracy": acc})
    if result.layer_bin_counts:  # mean spikes per image (all layers) up to each bin's end
        time_rows["spikes_to_t"] = result.spikes_vs_time().mean(axis=0)
    table = pd.concat([table, time_rows], ignore_index=True)
    net = table[(table.kind == "layer") & (table.layer != "input")]
    spikes_img = net.groupby("image").spikes.sum()
    duration_s = float(result.config.duration / second)
    table["snn_accuracy"] = float(acc[-1])
    table["latency_ms"] = latency_ms(t_ms, acc)
    table["spikes_per_image"] = float(spikes_img.mean())
    table["synops_per_image"] = float(table[table.kind == "layer"].groupby("image").synops.sum().mean())
    table["energy_alpha"] = float(spikes_img.mean())  # seed 001 eq. 14, E/α
    table["power_alpha_per_s"] = float(spikes_img.mean()) / duration_s  # P/α
    if ann_correct is not None:
        table["ann_accuracy"] = float(np.mean(ann_correct))
        table["loss_pct"] = 100.0 * (float(np.mean(ann_correct)) - float(acc[-1]))
    return table


def response_table(acts: dict[str, np.ndarray], result, norm: dict, bins: int = 20) -> pd.DataFrame:
    r"""Per layer: SNN rate vs normalized ANN activation ``acts`` (a/λ per layer), binned (``kind="curve"``), with the
    least-squares slope through the origin :math:`s = \sum r x / \sum x^2` (Hz per unit
    a/λ) and its ratio to the layer's target max rate (``norm`` = the graph's normalization
    metadata; 1 = no degeneration)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for depth, (name, a) in enumerate(acts.items(), start=1):
        if name not in result.counts:
            continue
        r = result.rates_hz(name).astype(float)
        x = np.clip(a, 0.0, None).ravel()
        r = r.ravel()
        slope = float((r * x).sum() / max((x * x).sum(), 1e-300))
        target = float(norm["target_rate_hz"][name])
        idx = np.clip(np.digitize(x, edges) - 1, 0, bins - 1)
        n = np.bincount(idx, minlength=bins)
        mean = np.bincount(idx, weights=r, minlength=bins) / np.maximum(n, 1)
        sq = np.bincount(idx, weights=r * r, minlength=bins) / np.maximum(n, 1)
        rows.append(pd.DataFrame({
            "kind": "curve", "layer": name, "depth": depth, "x": 0.5 * (edges[:-1] + edges[1:]),
            "n": n, "mean_rate_hz": np.where(n > 0, mean, np.nan),
            "sd_rate_hz": np.sqrt(np.maximum(sq - mean ** 2, 0.0)), "slope_hz": slope, "target_rate_hz": target,
            "rel_slope": slope / target, "layer_max_rate_hz": float(r.max()),
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
