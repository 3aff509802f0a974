r"""Study 7 (new, not in the seeds): neuron and synapse models at a fixed 200 Hz target.

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
    return [common.net_config(NAME, quick, method="mcr", rate_hz=200.0, neuron=n, synapse=s) for n, s in combos]


def run_one(cfg: dict) -> pd.DataFrame:
    table, graph, result = common.run_network(cfg)
    return pd.concat([table, common.rate_histograms(result, HIST_BINS_HZ)], ignore_index=True)


def plot(table: pd.DataFrame, outdir) -> list:
    from bioconv.plotting import figure, save_figure

    table = table.copy()
    table["model"] = table.neuron + ", " + table.synapse
    s = table[table.kind == "layer"].groupby("model", sort=False)[
        ["neuron", "synapse", "snn_accuracy", "ann_accuracy", "loss_pct", "latency_ms", "spikes_per_image",
         "synops_per_image", "energy_alpha"]].first().reset_index()
    fig, axes = figure(ncols=3, height=2.5)
    xs = np.arange(len(s))
    ax = axes[0][0]
    ax.bar(xs, 100 * s.snn_accuracy, color=["C0" if n == "delta" else "C1" for n in s.synapse])
    ax.axhline(100 * s.ann_accuracy.iloc[0], color="k", ls=":", lw=0.8, label="ANN")
    ax.set_xticks(xs, s.model, rotation=90, fontsize=6)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(max(0, 100 * s.snn_accuracy.min() - 10), 100)
    ax.set_title("(a) accuracy (blue delta, orange alpha)")
    ax = axes[0][1]
    ax.scatter(s.spikes_per_image, s.latency_ms, c=["C0" if n == "delta" else "C1" for n in s.synapse])
    for _, r in s.iterrows():
        ax.annotate(r.model, (r.spikes_per_image, r.latency_ms), fontsize=5)
    ax.set_xlabel("spikes per image")
    ax.set_ylabel("latency (ms)")
    ax.set_title("(b) latency vs spikes")
    ax = axes[0][2]
    hists = table[table.kind == "hist"]
    for model, g in hists.groupby("model", sort=False):
        h = g.groupby("rate_lo_hz").n.sum()
        active = h[h.index > 0]
        ax.step(active.index + 5, active.values / max(h.sum(), 1), where="mid", label=model,
                ls="-" if model.endswith("delta") else "--")
    ax.set_yscale("log")
    ax.set_xlabel("rate of a neuron on an image (Hz)")
    ax.set_ylabel("fraction of neuron-images")
    ax.set_title("(c) rate distributions (> 0 Hz)")
    ax.legend(fontsize=5)
    data = pd.concat([s.assign(part="summary"),
                      hists.assign(part="hist")[["part", "model", "layer", "rate_lo_hz", "rate_hi_hz", "n"]]],
                     ignore_index=True)
    return save_figure(fig, data, outdir, "fig7_neuron_models")
