r"""Study 3 (MCR-Norm paper, Fig. 3): max, robust (99.9th percentile), Spike-Norm and MCR-Norm compared.

All on the standard IF neuron (reset to zero) with delta synapses. The three traditional
methods map the layer range to 1000 Hz (:math:`\rho = 1` at τ = 1 ms, input 1000 Hz, as in
the source papers); MCR-Norm scans every layer to a 200 Hz max rate (input 400 Hz, the MCR-Norm paper (sec. 10)).
Reported: response curves (SNN rate vs a/λ, all layers pooled per method), histograms of
the per-neuron rates, spikes per image, the range of layer max rates and the accuracy at T with
its 95 % interval (pooled over input seeds) and McNemar's test of MCR-Norm against each
baseline on the same images. The MCR-Norm paper claims
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
    return common.with_seeds([common.net_config(NAME, quick, method=m, rate_hz=r, neuron="IF-zero", synapse="delta")
                              for m, r in METHODS.items()], quick)


def run_one(cfg: dict) -> pd.DataFrame:
    table, graph, result = common.run_network(cfg)
    curves = common.layer_response(graph, result, cfg)
    hists = common.rate_histograms(result, HIST_BINS_HZ)
    return pd.concat([table, curves, hists], ignore_index=True)


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: accuracy at T with 95 % interval, spikes/image, synops/image, layer max-rate range,
    and McNemar p of MCR-Norm against the method (same images and seeds)."""
    from bioconv.plotting import METHOD_ORDER, ordered

    layers = table[(table.kind == "layer") & ~table.layer.isin(["input"])]
    per_layer_max = layers.groupby(["method", "layer"]).max_rate_hz.max().groupby("method")
    out = table[table.kind == "layer"].groupby("method")[
        ["latency_ms", "spikes_per_image", "synops_per_image", "duration_ms"]].mean()
    out["max_rate_lo_hz"] = per_layer_max.min()
    out["max_rate_hi_hz"] = per_layer_max.max()
    mcr = out.spikes_per_image.get("mcr", np.nan)
    out["spikes_vs_mcr"] = out.spikes_per_image / mcr
    acc = common.accuracy_summary(table, ["method"]).set_index("method")
    out = out.join(acc)
    tests = common.paired_test(table, [], "method", "mcr", [m for m in out.index if m != "mcr"]) \
        if "mcr" in out.index else pd.DataFrame()
    if not tests.empty:
        out["mcnemar_p_vs_mcr"] = tests.set_index("other").p_exact
    out = out.reset_index()
    return out.set_index("method").loc[ordered(out.method, METHOD_ORDER)].reset_index()


def plot(table: pd.DataFrame, outdir) -> list:
    from bioconv.plotting import (METHOD_LABELS, METHOD_ORDER, caption, errorbars, figure, legend_outside,
                                  method_color, ordered, save_figure, zoom_percent)

    fig, axes = figure(ncols=4, height=2.4, width=7.0)
    curves = table[table.kind == "curve"]
    methods = ordered(curves.method, METHOD_ORDER)
    ax = axes[0][0]
    for method in methods:
        g = curves[curves.method == method]
        pooled = g.groupby("x").apply(lambda d: np.average(d.mean_rate_hz.fillna(0), weights=d.n)
                                      if d.n.sum() else np.nan, include_groups=False)
        ax.plot(pooled.index, pooled.values, marker="o", ms=2, color=method_color(method), label=METHOD_LABELS[method])
    ax.set_xlabel("ANN activation a/λ")
    ax.set_ylabel("SNN rate (Hz)")
    ax.set_title("(a) response curves (all layers)")
    legend_outside(ax, loc="below", ncol=2)
    ax = axes[0][1]
    hists = table[(table.kind == "hist")]
    for method in methods:
        h = hists[hists.method == method].groupby("rate_lo_hz").n.sum()
        active = h[h.index > 0]
        ax.step(active.index + 12.5, active.values / max(h.sum(), 1), where="mid", color=method_color(method))
    ax.set_yscale("log")
    ax.set_xlabel("rate of a neuron on an image (Hz)")
    ax.set_ylabel("fraction of neuron-images")
    ax.set_title("(b) rate histograms (> 0 Hz)")
    s = summary(table)
    xs = np.arange(len(s))
    ax = axes[0][2]
    ax.bar(xs, s.spikes_per_image, color=[method_color(m) for m in s.method])
    ax.set_ylim(bottom=0)
    ax.set_xticks(xs, s.method, rotation=45)
    ax.set_ylabel("spikes per image")
    ax.set_title("(c) spikes/image")
    ax = axes[0][3]
    for x, (_, r) in zip(xs, s.iterrows()):
        errorbars(ax, [x], [100 * r.snn_accuracy], [100 * r.snn_ci_low], [100 * r.snn_ci_high],
                  color=method_color(r.method))
    ann = s.ann_accuracy.iloc[0]
    ax.axhline(100 * ann, color="k", ls=":", lw=0.8)
    ax.set_xticks(xs, s.method, rotation=45)
    ax.set_ylabel(f"accuracy at T = {s.T_ms.iloc[0]:g} ms (%)")
    zoom_percent(ax, list(100 * s.snn_ci_low) + list(100 * s.snn_ci_high) + [100 * ann], margin=0.5)
    ax.set_title("(d) accuracy, 95 % CI")
    caption(fig, common.network_label(table), "IF reset to zero, delta synapses",
            "max/robust/Spike-Norm at 1000 Hz, MCR-Norm at 200 Hz; dotted line: source ANN", int(s.snn_n_images.iloc[0]),
            int(s.snn_n_seeds.iloc[0]))
    data = pd.concat([curves.assign(part="curve")[["part", "method", "layer", "x", "n", "mean_rate_hz"]],
                      hists.assign(part="hist")[["part", "method", "layer", "rate_lo_hz", "rate_hi_hz", "n"]],
                      s.assign(part="summary")], ignore_index=True)
    return save_figure(fig, data, outdir, "fig3_norm_comparison")
