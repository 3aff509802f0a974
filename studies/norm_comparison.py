r"""Study 3 (MCR-Norm paper, Fig. 3): max, robust (99.9th percentile), Spike-Norm and MCR-Norm compared.

All on the standard IF neuron (reset to zero) with delta synapses. The three traditional
methods map the layer range to 1000 Hz (:math:`\rho = 1` at τ = 1 ms, input 1000 Hz, as in
the seeds); MCR-Norm scans every layer to a 200 Hz max rate (input 400 Hz, the MCR-Norm paper (sec. 10)).
Reported: response curves (SNN rate vs a/λ, all layers pooled per method), histograms of
the per-neuron rates, spikes per image and the range of layer max rates. Seed 000 claims
MCR-Norm fires 2.5× fewer spikes than data-based and 7.5× fewer than percentile norm, in a
(0, 400 Hz) rather than (0, 1000 Hz) range.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from studies import common

NAME = "norm_comparison"
METHODS = {"max": 1000.0, "robust": 1000.0, "spike": 1000.0, "mcr": 200.0}
HIST_BINS_HZ = np.arange(0.0, 1000.0 + 25.0, 25.0)


def grid(quick: bool = False) -> list[dict]:
    return [common.net_config(NAME, quick, method=m, rate_hz=r, neuron="IF-zero", synapse="delta")
            for m, r in METHODS.items()]


def run_one(cfg: dict) -> pd.DataFrame:
    table, graph, result = common.run_network(cfg)
    curves = common.layer_response(graph, result, cfg)
    hists = common.rate_histograms(result, HIST_BINS_HZ)
    return pd.concat([table, curves, hists], ignore_index=True)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: accuracy, spikes/image, synops/image and the layer max-rate range."""
    layers = table[(table.kind == "layer") & ~table.layer.isin(["input"])]
    per_layer_max = layers.groupby(["method", "layer"]).max_rate_hz.max().groupby("method")
    out = table[table.kind == "layer"].groupby("method")[
        ["snn_accuracy", "ann_accuracy", "latency_ms", "spikes_per_image", "synops_per_image", "duration_ms"]].first()
    out["max_rate_lo_hz"] = per_layer_max.min()
    out["max_rate_hi_hz"] = per_layer_max.max()
    mcr = out.spikes_per_image.get("mcr", np.nan)
    out["spikes_vs_mcr"] = out.spikes_per_image / mcr
    return out.reset_index()


def plot(table: pd.DataFrame, outdir) -> list:
    from bioconv.plotting import figure, save_figure

    fig, axes = figure(ncols=3, height=2.4)
    curves = table[table.kind == "curve"]
    ax = axes[0][0]
    for method, g in curves.groupby("method", sort=False):
        pooled = g.groupby("x").apply(lambda d: np.average(d.mean_rate_hz.fillna(0), weights=d.n)
                                      if d.n.sum() else np.nan, include_groups=False)
        ax.plot(pooled.index, pooled.values, marker="o", ms=2, label=method)
    ax.set_xlabel("ANN activation a/λ")
    ax.set_ylabel("SNN rate (Hz)")
    ax.set_title("(a) response curves (all layers)")
    ax.legend()
    ax = axes[0][1]
    hists = table[(table.kind == "hist")]
    for method, g in hists.groupby("method", sort=False):
        h = g.groupby("rate_lo_hz").n.sum()
        active = h[h.index > 0]
        ax.step(active.index + 12.5, active.values / max(h.sum(), 1), where="mid", label=method)
    ax.set_yscale("log")
    ax.set_xlabel("rate of a neuron on an image (Hz)")
    ax.set_ylabel("fraction of neuron-images")
    ax.set_title("(b) rate histograms (> 0 Hz)")
    ax = axes[0][2]
    s = summary(table)
    xs = np.arange(len(s))
    ax.bar(xs, s.spikes_per_image, color="0.6")
    ax.set_xticks(xs, s.method)
    ax.set_ylabel("spikes per image")
    ax2 = ax.twinx()
    ax2.vlines(xs, s.max_rate_lo_hz, s.max_rate_hi_hz, color="C1", lw=3, label="layer max-rate range")
    ax2.set_ylabel("layer max rate (Hz)", color="C1")
    ax2.spines["right"].set_visible(True)
    ax.set_title("(c) spikes and max-rate range")
    data = pd.concat([curves.assign(part="curve")[["part", "method", "layer", "x", "n", "mean_rate_hz"]],
                      hists.assign(part="hist")[["part", "method", "layer", "rate_lo_hz", "rate_hi_hz", "n"]],
                      s.assign(part="summary")], ignore_index=True)
    return save_figure(fig, data, outdir, "fig3_norm_comparison")
