r"""Study 5 (MCR-Norm paper, Fig. 5): accuracy vs simulated time.

MCR-Norm on the standard IF neuron (200 Hz range) against data-based max norm on IF with
reset by subtraction (1000 Hz range, Rueckauer et al. (2017)), plus max norm on the standard IF for
reference. The MCR-Norm paper: MNIST converges within 100 ms and MCR-Norm adds no latency over
the IF-subtract baseline while firing in (0, 400 Hz) instead of (0, 1000 Hz).
"""

from __future__ import annotations

import pandas as pd

from studies import common

NAME = "convergence"
SETTINGS = (("mcr", 200.0, "IF-zero"), ("max", 1000.0, "IF-sub"), ("max", 1000.0, "IF-zero"))


def grid(quick: bool = False) -> list[dict]:
    return common.with_seeds([common.net_config(NAME, quick, method=m, rate_hz=r, neuron=n, synapse="delta")
                              for m, r, n in SETTINGS], quick)


def run_one(cfg: dict) -> pd.DataFrame:
    return common.run_network(cfg)[0]


def plot(table: pd.DataFrame, outdir) -> list:
    """Accuracy vs time (mean over seeds) per setting, colour by method; the final accuracy's 95 % CI at T."""
    from bioconv.plotting import caption, errorbars, figure, legend_outside, method_color, save_figure

    time_rows = table[table.kind == "time"].copy()
    time_rows["label"] = time_rows.apply(common.config_label, axis=1)
    curves = time_rows.groupby(["label", "method", "neuron", "rate_hz", "t_ms"], sort=False).accuracy.mean().reset_index()
    acc = common.accuracy_summary(table, ["method", "neuron", "rate_hz"])
    fig, axes = figure(ncols=1, width=4.6, height=2.5)
    ax = axes[0][0]
    styles = ["-", "--", ":"]
    for i, (label, g) in enumerate(curves.groupby("label", sort=False)):
        ax.plot(g.t_ms, 100 * g.accuracy, color=method_color(g.method.iloc[0]), ls=styles[i % 3], label=label)
        a = acc[(acc.method == g.method.iloc[0]) & (acc.neuron == g.neuron.iloc[0]) & (acc.rate_hz == g.rate_hz.iloc[0])]
        errorbars(ax, [a.T_ms.iloc[0] + 3 * i], 100 * a.snn_accuracy, 100 * a.snn_ci_low, 100 * a.snn_ci_high,
                  color=method_color(g.method.iloc[0]), ms=2)
    ann = acc.ann_accuracy.dropna()
    if len(ann):
        ax.axhline(100 * ann.iloc[0], color="k", ls=":", lw=0.8, label="source ANN")
    ax.set_xlabel("simulated time (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    legend_outside(ax)
    caption(fig, common.network_label(table), "IF reset to zero / subtract, delta synapses", "MCR-Norm 200 Hz, max-norm 1000 Hz",
            int(acc.snn_n_images.iloc[0]), int(acc.snn_n_seeds.iloc[0]), "points: accuracy at T with 95 % CI")
    data = curves.merge(acc, on=["method", "neuron", "rate_hz"])
    return save_figure(fig, data, outdir, "fig5_convergence")
