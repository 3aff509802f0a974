r"""Study 8: the same converted network at dt = 1, 0.1 and 0.01 ms.

The network is converted once with MCR-Norm at dt = 1 ms (200 Hz target, standard IF,
delta synapses) and then simulated at smaller steps (``--quick``: Brian2 runtime mode, numpy
target; full: the torch engine, whose float64 spike counts equal Brian2's, on 1000 images):
the neuron equations are integrated exactly, the bias is a current (``I_bias·dt/τ`` per
step) and input spikes are Bernoulli with ``p = rate·dt``, so dt → 0 approaches the
continuous-time network. Does the conversion survive leaving the discrete-time
idealization (one spike per layer per step, one step of delay per layer)?
"""

from __future__ import annotations

import pandas as pd

from studies import common

NAME = "dt_fidelity"
DTS_MS = (1.0, 0.1, 0.01)


def grid(quick: bool = False) -> list[dict]:
    """Quick: Brian2 runtime mode on 5 images (the cross-check of the engines). Full: the torch
    engine (fused kernel, float64, spike counts equal to Brian2's) on the first 1000 test images."""
    if quick:
        kw = {"engine": "brian2", "device": "runtime", "n_images": 5, "duration_ms": 30.0}
    else:
        kw = {"engine": "torch", "n_images": 1000, "duration_ms": 100.0}
    return common.with_seeds([common.net_config(NAME, quick, method="mcr", rate_hz=200.0, neuron="IF-zero",
                                                synapse="delta", sim_dt_ms=dt, **kw) for dt in DTS_MS], quick)


def run_one(cfg: dict) -> pd.DataFrame:
    return common.run_network(cfg)[0]


def plot(table: pd.DataFrame, outdir) -> list:
    """Accuracy vs time and per-layer mean rates per dt (ordered palette); the CSV holds every layer's
    max and mean rate per dt (``part="rate"``) and the accuracy with its 95 % interval (``part="summary"``)."""
    from bioconv.plotting import caption, figure, legend_outside, ordered_colors, save_figure

    fig, axes = figure(ncols=2, height=2.4, width=6.0)
    time_rows = table[table.kind == "time"]
    colors = ordered_colors(table.sim_dt_ms.dropna().unique(), log=True)
    curves = time_rows.groupby(["sim_dt_ms", "t_ms"]).accuracy.mean().reset_index()
    ax = axes[0][0]
    for dt, g in curves.groupby("sim_dt_ms"):
        ax.plot(g.t_ms, 100 * g.accuracy, color=colors[dt], label=f"dt = {dt:g} ms")
    ax.set_xlabel("simulated time (ms)")
    ax.set_ylabel("test accuracy (%), mean over seeds")
    ax.set_ylim(0, 100)
    ax.set_title(f"(a) accuracy vs time, {table.engine.dropna().iloc[0]}")
    legend_outside(ax, loc="below", ncol=3)
    layers = table[(table.kind == "layer") & (table.layer != "input")]
    rates = layers.groupby(["sim_dt_ms", "layer"], sort=False).agg(
        mean_rate_hz=("mean_rate_hz", "mean"), max_rate_hz=("max_rate_hz", "max")).reset_index()
    ax = axes[0][1]
    for dt, g in rates.groupby("sim_dt_ms"):
        ax.plot(range(len(g)), g.mean_rate_hz, marker="o", color=colors[dt], label=f"dt = {dt:g} ms")
        ax.set_xticks(range(len(g)), g.layer, rotation=45)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("mean rate (Hz)")
    ax.set_title("(b) mean rate per layer")
    summary = layers.groupby("sim_dt_ms")[["latency_ms", "spikes_per_image", "synops_per_image",
                                            "duration_ms"]].mean().reset_index()
    summary = summary.merge(common.accuracy_summary(table, ["sim_dt_ms"]), on="sim_dt_ms")
    caption(fig, common.network_label(table), "IF reset to zero, delta synapses", "MCR-Norm 200 Hz (calibrated at dt = 1 ms)",
            int(summary.snn_n_images.iloc[0]), int(summary.snn_n_seeds.iloc[0]), f"engine {table.engine.dropna().iloc[0]}")
    data = pd.concat([curves.assign(part="time"), rates.assign(part="rate"), summary.assign(part="summary")],
                     ignore_index=True)
    return save_figure(fig, data, outdir, "fig8_dt_fidelity")
