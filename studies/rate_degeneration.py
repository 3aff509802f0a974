r"""Study 2 (MCR-Norm paper, Fig. 2): firing-rate degeneration across layers, and MCR-Norm removing it.

For every spiking layer :math:`n` the SNN rate of each neuron on each test image is set
against its normalized ANN activation :math:`a_n/\lambda_n`. An ideal rate code gives the
straight line :math:`r = (\rho_n/\tau)\,a_n/\lambda_n`. The layer-wise slope (least squares
through the origin) divided by the target :math:`\rho_n/\tau` measures degeneration: it
drifts below 1 with depth under data-based max norm on the standard IF neuron (reset to
zero, 1000 Hz range) and should stay near (or above, by the gain :math:`G_n`) 1 under
MCR-Norm (200 Hz range).
"""

from __future__ import annotations

import pandas as pd

from studies import common

NAME = "rate_degeneration"
SETTINGS = {"max": {"rate_hz": 1000.0}, "mcr": {"rate_hz": 200.0}}


def grid(quick: bool = False) -> list[dict]:
    return common.with_seeds([common.net_config(NAME, quick, method=m, neuron="IF-zero", synapse="delta", **kw)
                              for m, kw in SETTINGS.items()], quick)


def run_one(cfg: dict) -> pd.DataFrame:
    table, graph, result = common.run_network(cfg)
    curves = common.layer_response(graph, result, cfg)
    return pd.concat([table, curves], ignore_index=True)


def plot(table: pd.DataFrame, outdir) -> list:
    """(a) max norm, (b) MCR-Norm: binned rate vs a/λ per layer; (c) slope/target vs depth."""
    from bioconv.plotting import METHOD_LABELS, caption, figure, legend_outside, method_color, ordered_colors, \
        save_figure

    curves = table[table.kind == "curve"].groupby(["method", "layer", "depth", "x"], sort=False)[
        ["n", "mean_rate_hz", "sd_rate_hz", "slope_hz", "target_rate_hz", "rel_slope", "layer_max_rate_hz"]
    ].mean().reset_index()  # mean over input seeds
    depth_colors = ordered_colors(curves.depth.unique(), cmap="viridis")
    fig, axes = figure(ncols=3, height=2.4, width=7.0)
    titles = {"max": "(a) max norm, IF-zero", "mcr": "(b) MCR-Norm, IF-zero"}
    for ax, method in zip(axes[0][:2], ("max", "mcr")):
        sub = curves[curves.method == method]
        for layer, g in sub.groupby("layer", sort=False):
            g = g[g.n > 0]
            ax.plot(g.x, g.mean_rate_hz, marker="o", ms=2, color=depth_colors[g.depth.iloc[0]],
                    label=f"{layer} (L{int(g.depth.iloc[0])})")
        if len(sub):
            target = sub.target_rate_hz.max()
            ax.plot([0, 1], [0, target], color="k", ls=":", lw=0.8, label="ideal")
        ax.set_title(titles[method])
        ax.set_xlabel("ANN activation a/λ")
        ax.set_ylabel("SNN rate (Hz)")
    legend_outside(axes[0][0], loc="below", ncol=3, fontsize=5)
    summary = curves.drop_duplicates(["method", "layer"])[["method", "layer", "depth", "slope_hz", "target_rate_hz",
                                                           "rel_slope", "layer_max_rate_hz"]]
    ax = axes[0][2]
    for method, g in summary.groupby("method"):
        ax.plot(g.depth, g.rel_slope, marker="o", color=method_color(method), label=METHOD_LABELS.get(method, method))
    ax.axhline(1.0, color="k", ls=":", lw=0.8)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("layer depth")
    ax.set_ylabel("slope / target rate")
    ax.set_title("(c) layer-wise slope")
    legend_outside(ax, loc="below", ncol=2)
    per_image = table[(table.kind == "layer") & (table.layer == "input")]
    caption(fig, common.network_label(table), "IF reset to zero, delta synapses", "max-norm 1000 Hz, MCR-Norm 200 Hz",
            int(per_image.image.nunique()), int(per_image.seed.nunique()), "rates averaged over seeds")
    data = curves[["method", "layer", "depth", "x", "n", "mean_rate_hz", "sd_rate_hz", "slope_hz",
                   "target_rate_hz", "rel_slope", "layer_max_rate_hz"]]
    return save_figure(fig, data, outdir, "fig2_rate_degeneration")
