r"""Study 4 (MCR-Norm paper, Fig. 4): accuracy loss and latency vs the target max firing rate.

MCR-Norm on the standard IF neuron (reset to zero, delta synapses) with every layer scanned
to a max rate from 50 to 500 Hz (input at twice the target, capped at 1000 Hz). Latency
is the time after which accuracy stays within 0.1 % of its final value; the figure also
shows the first time accuracy reaches 95 %, which is less sensitive to single late flips. The MCR-Norm paper finds the
accuracy dropping at high rates, latency growing at low rates, and the balance at
200-400 Hz, close to the ~200 Hz biological ceiling (shaded/dotted in the figure). Targets
above 500 Hz are unreachable for the standard IF neuron at dt = 1 ms (see :func:`run_one`);
the scan then fails with "needs a gain outside", which :func:`run_one` records.
"""

from __future__ import annotations

import pandas as pd

from studies import common

NAME = "rate_range"
RATES_HZ = (50.0, 100.0, 200.0, 300.0, 400.0, 450.0, 500.0)
QUICK_RATES_HZ = (100.0, 200.0, 400.0)
REACH = 0.95  # second, less noisy latency: first time the accuracy reaches 95 %


def grid(quick: bool = False) -> list[dict]:
    return common.with_seeds([common.net_config(NAME, quick, method="mcr", rate_hz=r, neuron="IF-zero",
                                                synapse="delta", calib_duration_ms=max(100.0, 20_000.0 / r))
                              for r in (QUICK_RATES_HZ if quick else RATES_HZ)], quick)


def run_one(cfg: dict) -> pd.DataFrame:
    """One target rate; a target the scan cannot reach is recorded (``kind="unreachable"``), not dropped.

    With Brian2's schedule (threshold → synapses → reset) a spike arriving in the step in
    which an IF-zero neuron fires is erased by the reset, so spike-driven layers cannot
    exceed 1/(2 dt) = 500 Hz at dt = 1 ms.
    """
    try:
        return common.run_network(cfg)[0]
    except ValueError as exc:
        if "needs a gain outside" not in str(exc):
            raise
        return pd.DataFrame({"kind": ["unreachable"], "layer": [""], "error": [str(exc)]})


def plot(table: pd.DataFrame, outdir) -> list:
    from bioconv.plotting import caption, errorbars, figure, legend_outside, mark_rate_band, save_figure

    bad = sorted(table[table.kind == "unreachable"].rate_hz.unique())
    rows = table[table.kind == "layer"].groupby("rate_hz")[
        ["loss_pct", "latency_ms", "spikes_per_image", "synops_per_image", "energy_alpha", "duration_ms"]
    ].mean().reset_index()
    rows = rows.merge(common.accuracy_summary(table, ["rate_hz"]), on="rate_hz")
    layers = table[(table.kind == "layer") & (table.layer != "input")]
    per_layer = layers.groupby(["rate_hz", "layer"]).max_rate_hz.max().groupby("rate_hz")
    rows["layer_max_rate_lo_hz"] = rows.rate_hz.map(per_layer.min())
    rows["layer_max_rate_hi_hz"] = rows.rate_hz.map(per_layer.max())
    t = table[table.kind == "time"].groupby(["rate_hz", "t_ms"]).accuracy.mean().reset_index()
    reach = t[t.accuracy >= REACH].groupby("rate_hz").t_ms.min()
    rows[f"t_reach_{int(100 * REACH)}pct_ms"] = rows.rate_hz.map(reach)
    fig, axes = figure(ncols=2, height=2.4)
    ax = axes[0][0]
    mark_rate_band(ax)
    loss = 100 * (rows.ann_accuracy - rows.snn_accuracy)
    errorbars(ax, rows.rate_hz, loss, 100 * rows.ann_accuracy - 100 * rows.snn_ci_high,
              100 * rows.ann_accuracy - 100 * rows.snn_ci_low, color="C0", label="loss, 95 % CI of the SNN")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("target max rate (Hz)")
    ax.set_ylabel("accuracy loss ANN − SNN (points)")
    ax.set_title("(a) conversion loss at T")
    ax = axes[0][1]
    mark_rate_band(ax)
    ax.plot(rows.rate_hz, rows.latency_ms, marker="o", color="C1", label="median time to a stable decision")
    ax.plot(rows.rate_hz, rows[f"t_reach_{int(100 * REACH)}pct_ms"], marker="s", color="C2",
            label=f"first ≥ {100 * REACH:g} % accuracy")
    ax.set_xlabel("target max rate (Hz)")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    legend_outside(ax, loc="below", ncol=1)
    ax.set_title("(b) inference latency")
    for ax in axes[0]:
        for r in bad:
            ax.axvline(r, color="C3", lw=0.8, ls="--")
    if bad:
        axes[0][1].text(bad[0], ax.get_ylim()[1], " unreachable", color="C3", fontsize=6, va="top", ha="right",
                        rotation=90)
    caption(fig, common.network_label(table), "IF reset to zero, delta synapses", "MCR-Norm", int(rows.snn_n_images.iloc[0]),
            int(rows.snn_n_seeds.iloc[0]), f"T = {rows.T_ms.iloc[0]:g} ms")
    rows = pd.concat([rows, pd.DataFrame({"rate_hz": bad, "unreachable": True})], ignore_index=True)
    return save_figure(fig, rows, outdir, "fig4_rate_range")
