r"""Study 7 (new, not in the source papers): neuron and synapse models at a fixed 200 Hz target.

MCR-Norm scanned to 200 Hz for IF (reset to zero / by subtraction), LIF (τ_m = 20 ms) and
SRM (τ_s = τ_r = 1 ms), each with delta and alpha (τ_s = 1 ms) synapses (SRM: delta only).
Reported: accuracy, latency, spikes and synaptic operations per image, and the per-neuron
rate distributions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from studies import common

NAME = "neuron_models"
COMBOS = (("IF-zero", "delta"), ("IF-sub", "delta"), ("LIF", "delta"), ("SRM", "delta"),
          ("IF-zero", "alpha"), ("IF-sub", "alpha"), ("LIF", "alpha"))
HIST_BINS_HZ = np.arange(0.0, 400.0 + 10.0, 10.0)


def grid(quick: bool = False) -> list[dict]:
    combos = COMBOS[:5] if quick else COMBOS
    return common.with_seeds([common.net_config(NAME, quick, method="mcr", rate_hz=200.0, neuron=n, synapse=s)
                              for n, s in combos], quick)


def run_one(cfg: dict) -> pd.DataFrame:
    table, graph, result = common.run_network(cfg)
    return pd.concat([table, common.rate_histograms(result, HIST_BINS_HZ)], ignore_index=True)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (neuron, synapse): accuracy at T with 95 % interval (seeds pooled), latency, spikes, synops."""
    layer_rows = table[table.kind == "layer"]
    s = layer_rows.groupby(["neuron", "synapse"], sort=False)[
        ["loss_pct", "latency_ms", "spikes_per_image", "synops_per_image", "energy_alpha"]].mean().reset_index()
    acc = common.accuracy_summary(table, ["neuron", "synapse"])
    s = s.merge(acc, on=["neuron", "synapse"])
    s["model"] = s.neuron + ", " + s.synapse
    return s


def plot(table: pd.DataFrame, outdir) -> list:
    from bioconv.plotting import NEURON_COLORS, caption, errorbars, figure, legend_outside, save_figure, zoom_percent

    table = table.copy()
    table["model"] = table.neuron + ", " + table.synapse
    s = summary(table)
    fig, axes = figure(ncols=3, height=2.5, width=7.0)
    xs = np.arange(len(s))
    marker = {"delta": "o", "alpha": "s"}
    ax = axes[0][0]
    for x, (_, r) in zip(xs, s.iterrows()):
        errorbars(ax, [x], [100 * r.snn_accuracy], [100 * r.snn_ci_low], [100 * r.snn_ci_high],
                  color=NEURON_COLORS.get(r.neuron, "k"), fmt=marker[r.synapse])
    ax.axhline(100 * s.ann_accuracy.iloc[0], color="k", ls=":", lw=0.8)
    ax.set_xticks(xs, s.model, rotation=90, fontsize=6)
    ax.set_ylabel(f"accuracy at T = {s.T_ms.iloc[0]:g} ms (%)")
    zoom_percent(ax, list(100 * s.snn_ci_low) + list(100 * s.snn_ci_high) + [100 * s.ann_accuracy.iloc[0]])
    ax.set_title("(a) accuracy, 95 % CI")
    ax = axes[0][1]
    for _, r in s.iterrows():
        ax.scatter(r.spikes_per_image, r.latency_ms, color=NEURON_COLORS.get(r.neuron, "k"), marker=marker[r.synapse],
                   label=r.model)
    ax.set_xlabel("spikes per image")
    ax.set_ylabel("time to stable decision (ms)")
    ax.set_title("(b) latency vs spikes")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    legend_outside(ax, loc="below", ncol=2, fontsize=5)
    ax = axes[0][2]
    hists = table[table.kind == "hist"]
    for model, g in hists.groupby("model", sort=False):
        h = g.groupby("rate_lo_hz").n.sum()
        active = h[h.index > 0]
        neuron = model.split(", ")[0]
        ax.step(active.index + 5, active.values / max(h.sum(), 1), where="mid", color=NEURON_COLORS.get(neuron, "k"),
                ls="-" if model.endswith("delta") else "--")
    ax.set_yscale("log")
    ax.set_xlabel("rate of a neuron on an image (Hz)")
    ax.set_ylabel("fraction of neuron-images")
    ax.set_title("(c) rates > 0 Hz (-- alpha)")
    caption(fig, common.network_label(table), "IF, LIF (tau_m 20 ms), SRM (tau_s = tau_r = 1 ms); alpha tau_s 1 ms "
            "(o delta, s alpha); dotted line: source ANN", "MCR-Norm 200 Hz; latency: median time to a stable decision", int(s.snn_n_images.iloc[0]), int(s.snn_n_seeds.iloc[0]))
    data = pd.concat([s.assign(part="summary"),
                      hists.assign(part="hist")[["part", "model", "layer", "rate_lo_hz", "rate_hi_hz", "n"]]],
                     ignore_index=True)
    return save_figure(fig, data, outdir, "fig7_neuron_models")
