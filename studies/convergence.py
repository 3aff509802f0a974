r"""Study 5 (MCR-Norm paper, Fig. 5): accuracy vs simulated time.

MCR-Norm on the standard IF neuron (200 Hz range) against data-based max norm on IF with
reset by subtraction (1000 Hz range, Rueckauer et al. (2017)), plus max norm on the standard IF for
reference. Seed 000: MNIST converges within 100 ms and MCR-Norm adds no latency over
the IF-subtract baseline while firing in (0, 400 Hz) instead of (0, 1000 Hz).
"""

from __future__ import annotations

import pandas as pd

from studies import common

NAME = "convergence"
SETTINGS = (("mcr", 200.0, "IF-zero"), ("max", 1000.0, "IF-sub"), ("max", 1000.0, "IF-zero"))


def grid(quick: bool = False) -> list[dict]:
    return [common.net_config(NAME, quick, method=m, rate_hz=r, neuron=n, synapse="delta")
            for m, r, n in SETTINGS]


def run_one(cfg: dict) -> pd.DataFrame:
    return common.run_network(cfg)[0]


def plot(table: pd.DataFrame, outdir) -> list:
    from bioconv.plotting import figure, save_figure

    time_rows = table[table.kind == "time"].copy()
    time_rows["label"] = time_rows.apply(common.config_label, axis=1)
    fig, axes = figure(ncols=1, width=3.4, height=2.5)
    ax = axes[0][0]
    for label, g in time_rows.groupby("label", sort=False):
        ax.plot(g.t_ms, 100 * g.accuracy, label=f"{label} ({g.latency_ms.iloc[0]:.0f} ms)")
    ann = table.ann_accuracy.dropna()
    if len(ann):
        ax.axhline(100 * ann.iloc[0], color="k", ls=":", lw=0.8, label="ANN")
    ax.set_xlabel("simulated time (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    data = time_rows[["label", "method", "neuron", "rate_hz", "t_ms", "accuracy", "latency_ms", "ann_accuracy"]]
    return save_figure(fig, data, outdir, "fig5_convergence")
