r"""Study 12: does a converted network converge as dt → 0? Both schedules, calibrated at 0.1 and 1 ms.

cnn7 (pools folded) is converted with MCR-Norm (standard IF, reset to zero, delta synapses,
200 Hz, calibrated on 50 training images of 300 ms at the calibration dt) once per schedule
(:data:`bioconv.models.SCHEDULES`) and calibration dt, and each conversion is simulated on
the first 1000 MNIST test images (T = 300 ms, three input seeds, torch engine in float64,
spike-exact with Brian2) at the calibration dt and at smaller steps:

* calibrated at dt = 0.1 ms, run at 0.1, 0.05 and 0.025 ms;
* calibrated at dt = 1 ms, run at 1 and 0.1 ms.

In Brian2's order a reset to zero erases the input that arrives in the step in which the
neuron fires (a dead time of one step per spike, which the per-layer gain absorbs at the
calibration dt and which shrinks with dt, so rates grow with depth as dt shrinks). With
``"reset-first"`` the reset comes before that input. Reported per layer: the max rate (per
seed the maximum over images and neurons, averaged over seeds) and the mean rate, and their
change from the run at the calibration dt; per run the accuracy with its 95 % interval.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from studies import common

NAME = "dt_convergence"
SCHEDULES: tuple[str, ...] = ("brian2", "reset-first")
#: calibration dt (ms) -> simulation dts (ms)
PLAN_MS: dict[float, tuple[float, ...]] = {0.1: (0.1, 0.05, 0.025), 1.0: (1.0, 0.1)}
QUICK_PLAN_MS: dict[float, tuple[float, ...]] = {1.0: (1.0, 0.5)}


def grid(quick: bool = False) -> list[dict]:
    plan = QUICK_PLAN_MS if quick else PLAN_MS
    configs = []
    for schedule in SCHEDULES:
        for cal_dt, dts in plan.items():
            for dt in dts:
                cfg = common.net_config(NAME, quick, method="mcr", rate_hz=200.0, neuron="IF-zero", synapse="delta",
                                        schedule=schedule, dt_ms=cal_dt, sim_dt_ms=dt, rho_from_slope=False,
                                        calib_duration_ms=100.0 if quick else 300.0, calib_n=10 if quick else 50)
                cfg["bin_ms"] = cfg["duration_ms"]
                cfg["cal_dt_ms"] = cal_dt  # the table's dt_ms column is the simulation's
                if quick:
                    cfg["n_images"] = 30
                configs.append(cfg)
    return common.with_seeds(configs, quick)


def run_one(cfg: dict) -> pd.DataFrame:
    return common.run_network(cfg)[0]


def layer_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (schedule, calibration dt, simulation dt, layer): max and mean rate, and their change (%)
    from the same conversion run at its calibration dt."""
    keys = ["schedule", "cal_dt_ms", "sim_dt_ms"]
    layers = table[(table.kind == "layer") & (table.layer != "input")]
    per_seed = layers.groupby(keys + ["layer", "seed"], sort=False).agg(
        max_rate_hz=("max_rate_hz", "max"), mean_rate_hz=("mean_rate_hz", "mean")).reset_index()
    out = per_seed.groupby(keys + ["layer"], sort=False).agg(
        max_rate_hz=("max_rate_hz", "mean"), max_rate_sd_hz=("max_rate_hz", "std"),
        mean_rate_hz=("mean_rate_hz", "mean")).reset_index()
    ref = out[np.isclose(out.sim_dt_ms, out.cal_dt_ms)].set_index(["schedule", "cal_dt_ms", "layer"])
    idx = pd.MultiIndex.from_frame(out[["schedule", "cal_dt_ms", "layer"]])
    for col in ("max_rate_hz", "mean_rate_hz"):
        base = ref[col].reindex(idx).to_numpy()
        out[col.replace("_hz", "_change_pct")] = 100.0 * (out[col].to_numpy() / base - 1.0)
    return out


def accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Per run: SNN and source-ANN accuracy at T with 95 % intervals (bootstrap over images and seeds)."""
    return common.accuracy_summary(table, ["schedule", "cal_dt_ms", "sim_dt_ms"])


def plot(table: pd.DataFrame, outdir) -> list:
    from bioconv.plotting import caption, errorbars, figure, legend_outside, save_figure

    rates = layer_summary(table)
    acc = accuracy(table)
    colors = {"brian2": "#0072B2", "reset-first": "#D55E00"}
    styles = {dt: ls for dt, ls in zip(sorted(rates.cal_dt_ms.unique()), ("-", "--", ":"))}
    fig, axes = figure(ncols=3, height=2.6, width=7.2)
    for ax, col, title in ((axes[0][0], "mean_rate_change_pct", "(a) mean rate"),
                           (axes[0][1], "max_rate_change_pct", "(b) max rate")):
        for (schedule, cal), g in rates.groupby(["schedule", "cal_dt_ms"], sort=False):
            last = g[g.sim_dt_ms == g.sim_dt_ms.min()]
            ax.plot(range(len(last)), last[col], marker="o", color=colors[schedule], ls=styles[cal],
                    label=f"{schedule}, cal. {cal:g} ms, run {last.sim_dt_ms.iloc[0]:g} ms")
            ax.set_xticks(range(len(last)), last.layer, rotation=45)
        ax.axhspan(-5, 5, color="0.9", zorder=0)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel("change from the calibration dt (%)")
        ax.set_title(f"{title}, smallest dt run")
    ax = axes[0][2]
    for k, ((schedule, cal), g) in enumerate(acc.groupby(["schedule", "cal_dt_ms"], sort=False)):
        g = g.sort_values("sim_dt_ms")
        dodge = 1.0 + 0.06 * (k - 1.5)  # side by side on the log axis
        errorbars(ax, g.sim_dt_ms * dodge, 100 * g.snn_accuracy, 100 * g.snn_ci_low, 100 * g.snn_ci_high,
                  color=colors[schedule], fmt="o" + styles[cal])
    ax.set_xscale("log")
    ax.set_xlabel("simulation dt (ms)")
    ax.set_ylabel("accuracy at T (%)")
    ax.set_title("(c) accuracy, 95 % CI")
    legend_outside(axes[0][2], loc="right", handles=axes[0][0].get_legend_handles_labels()[0],
                   labels=axes[0][0].get_legend_handles_labels()[1])
    caption(fig, common.network_label(table), "IF reset to zero, delta synapses",
            "MCR-Norm 200 Hz, calibrated at dt = 0.1 or 1 ms; grey: +-5 %",
            int(acc.snn_n_images.iloc[0]), int(acc.snn_n_seeds.iloc[0]), "torch float64")
    data = pd.concat([rates.assign(part="rate"), acc.assign(part="accuracy")], ignore_index=True)
    return save_figure(fig, data, outdir, "fig12_dt_convergence")
