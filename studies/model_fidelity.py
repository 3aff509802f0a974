r"""Faithful conversion of every neuron model: MCR-Norm against MCR-TF on the same images.

Each neuron/synapse combination is converted seven times (:data:`METHODS`), with MCR-Norm
(one gain per layer scanned to the target max rate) and with MCR-TF
(:mod:`bioconv.normalize.transfer`: the same scan plus an offset current per layer fitted
against the measured transfer function), each with the MCR-Norm paper's assumed slopes and
with measured slopes (``rho_from_slope``, the pipeline's default; variants ``mcr-slope`` and
``mcr-tf-slope``; the latter also with the offsets kept >= 0, MCR-TF's default since), MCR-TF
with one offset per output channel (``mcr-tf-channel``), and the last two also with MCR-TF's
earlier default of at most 4 fit rounds per layer instead of 10 (``-4``), plus the default
run with a non-spiking integrating output layer where the spiking one misses its target
(``mcr-tf-slope-integrate``, :data:`INTEGRATE`), and the defaults with one offset per layer and
per channel read out with the spiking output's count ties broken by the potential
(``readout="count-voltage"``, variants ``mcr-tf-slope-cv`` and ``mcr-tf-channel-cv``,
:data:`COUNT_VOLTAGE`), all calibrated
at the simulation time step on 50 training images of 300 ms, and simulated on the first 1000
MNIST test images with three input-spike seeds. Reported per combination and method: the
source ANN's and the SNN's accuracy at the fixed T with 95 % intervals (bootstrap over images
and seeds), the conversion loss, the exact McNemar test of SNN against source ANN, and the
per-layer max and mean rates.

Grids: at 200 Hz and T = 300 ms, the IF with reset to zero and by subtraction (delta
synapses), the IF (reset to zero) with alpha synapses, the LIF (τ_m = 20 ms, 2 ms refractory
period) with delta and alpha synapses, and the SRM with τ_s = τ_r = 5 ms; at 50 Hz and
T = 1 s, the IF with reset to zero and the LIF with alpha synapses. Alpha synapses have
τ_s = 5 ms. A third grid sweeps the SRM's refractory time constant τ_r (2–50 ms, τ_s = 5 ms,
200 Hz, T = 300 ms) under the pipeline's default (``mcr-tf-slope``): the SRM has no integrator,
so τ_r sets both its rheobase (the drive at 200 Hz is only :math:`(e^{1/(200\,\mathrm{Hz}\,\tau_r)}+1)/
(e^{1/(200\,\mathrm{Hz}\,\tau_r)}-1)` times the threshold: 2.2 at 5 ms, 4.1 at 10 ms, 8.0 at 20 ms)
and how long it remembers upward fluctuations of its filtered input, which it rectifies.
The LIF is also run with reset by subtraction (:data:`RESET_SUBTRACT`). Six combinations are run
once more with the layer responses recorded (:data:`RESPONSE`, variant ``mcr-tf-slope-response``):
each ANN-active neuron's rate against its ideal rate ρa/λ, binned, per hidden layer.
The settings chosen on the first 1000 images (the LIF's reset, the SRM's τ_r) are run with their
alternatives on test images 1000–2999 (:data:`HELD_OUT`, variant ``mcr-tf-slope-cv-heldout``).
Figures ``fig11_model_fidelity`` and ``fig11b_layer_response`` (:func:`response_summary`), and
the table ``model_fidelity_summary.csv``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from studies import common

NAME = "model_fidelity"
#: (neuron label of common.NEURONS, synapse) at each (max rate Hz, T ms)
GRIDS: tuple[tuple[float, float, tuple[tuple[str, str], ...]], ...] = (
    (200.0, 300.0, (("IF-zero", "delta"), ("IF-sub", "delta"), ("IF-zero", "alpha"), ("LIF-ref2", "delta"),
                    ("LIF-ref2", "alpha"), ("SRM-5", "delta"))),
    (50.0, 1000.0, (("IF-zero", "delta"), ("LIF-ref2", "alpha"))),
)
#: variant label → (method, rho_from_slope, MCR-TF offset sign, MCR-TF offset mode, MCR-TF rounds):
#: the first run (the MCR-Norm paper's assumed slopes, offsets of either sign, 4 rounds), the
#: pipeline's defaults (measured slopes, offsets >= 0, one offset per layer, up to 10 rounds), one
#: offset per channel, and both of those with the earlier default of 4 rounds (``-4``: kept in the
#: tables, not drawn)
METHODS: dict[str, tuple[str, bool, str, str, int | None]] = {
    "mcr": ("mcr", False, "", "", None), "mcr-tf": ("mcr-tf", False, "any", "", 4),
    "mcr-slope": ("mcr", True, "", "", None),
    "mcr-tf-slope": ("mcr-tf", True, "positive", "", 10),
    "mcr-tf-channel": ("mcr-tf", True, "positive", "channel", 10),
    "mcr-tf-slope-4": ("mcr-tf", True, "positive", "", 4),
    "mcr-tf-channel-4": ("mcr-tf", True, "positive", "channel", 4),
}
#: variants left out of the quick (CI) grid
FULL_ONLY = ("mcr-tf-slope", "mcr-tf-channel", "mcr-tf-slope-4", "mcr-tf-channel-4")
#: variants drawn in the figure (all are in the tables)
PLOTTED = ("mcr", "mcr-tf", "mcr-slope", "mcr-tf-slope", "mcr-tf-channel", "mcr-tf-slope-cv", "mcr-tf-channel-cv")
TAU_SYN_MS = 5.0
#: SRM refractory-kernel sweep (τ_s = 5 ms, 200 Hz, T = 300 ms): neuron label → τ_r in ms
SRM_TAU_R_MS: dict[str, float] = {"SRM-5-r2": 2.0, "SRM-5": 5.0, "SRM-5-r10": 10.0, "SRM-5-r20": 20.0,
                                  "SRM-5-r50": 50.0}
#: combinations above target with the spiking output, run again with a non-spiking integrating output
#: layer (``readout="integrate"``, variant ``mcr-tf-slope-integrate``; in the tables, not drawn):
#: (max rate Hz, T ms, neuron label, synapse)
INTEGRATE: tuple[tuple[float, float, str, str], ...] = ((200.0, 300.0, "LIF-ref2", "alpha"), (200.0, 300.0, "SRM-5-r10", "delta"),
                                                         (50.0, 1000.0, "LIF-ref2", "alpha"))
#: variants simulated again with the count-voltage readout (spiking output layer, count ties broken by the
#: potential; the conversion is the base variant's, cached): new variant label → base variant. They run on
#: every combination of :data:`GRIDS` and on :data:`COUNT_VOLTAGE_SRM`.
COUNT_VOLTAGE: dict[str, str] = {"mcr-tf-slope-cv": "mcr-tf-slope", "mcr-tf-channel-cv": "mcr-tf-channel"}
COUNT_VOLTAGE_SRM = "SRM-5-r10"
#: the LIF of :data:`GRIDS` (τ_m 20 ms, 2 ms refractory) with reset by subtraction instead of to zero:
#: (max rate Hz, T ms, neuron label, synapse), each with :data:`RESET_SUBTRACT_VARIANTS`
RESET_SUBTRACT: tuple[tuple[float, float, str, str], ...] = (
    (200.0, 300.0, "LIF-sub-ref2", "delta"), (200.0, 300.0, "LIF-sub-ref2", "alpha"), (50.0, 1000.0, "LIF-sub-ref2", "alpha"))
#: MCR-Norm and the default MCR-TF, with the count readout; the ``-cv`` variant re-reads the latter by count-voltage
RESET_SUBTRACT_VARIANTS = ("mcr", "mcr-tf-slope", "mcr-tf-slope-cv")
#: combinations whose layer responses (binned rate against ANN activation, every hidden layer) are
#: recorded, with the default conversion (variant ``mcr-tf-slope-response``; 200 Hz, T = 300 ms)
RESPONSE: tuple[tuple[str, str], ...] = (("IF-zero", "delta"), ("LIF-ref2", "delta"), ("LIF-ref2", "alpha"),
                                         ("LIF-sub-ref2", "alpha"), ("SRM-5", "delta"), ("SRM-5-r10", "delta"))
#: equal-width bins of a/λ (10 Hz of ideal rate at 200 Hz); only ANN-active neurons are binned
RESPONSE_BINS = 20
#: settings chosen on the first 1000 test images (the LIF's reset per synapse, the SRM's τ_r), checked with
#: their alternatives on test images they were not chosen on: 200 Hz, T = 300 ms, default conversion,
#: count-voltage readout (variant ``mcr-tf-slope-cv-heldout``), test images HELD_OUT_IMAGES
HELD_OUT: tuple[tuple[str, str], ...] = (("LIF-ref2", "alpha"), ("LIF-sub-ref2", "alpha"), ("LIF-ref2", "delta"),
                                         ("LIF-sub-ref2", "delta"), ("SRM-5", "delta"), ("SRM-5-r10", "delta"),
                                         ("SRM-5-r20", "delta"))
HELD_OUT_IMAGES = (1000, 2000)  # (first test image, number of images)
#: the variant the sweep draws (the pipeline's defaults); it also runs the 4-round one
SWEEP_VARIANT = "mcr-tf-slope"
SWEEP_VARIANTS = ("mcr-tf-slope", "mcr-tf-slope-4")


def _config(rate: float, t_ms: float, neuron: str, synapse: str, variant: str, quick: bool) -> dict:
    method, slope, sign, offset, rounds = METHODS[variant]
    cfg = common.net_config(NAME, quick, method=method, rate_hz=rate, neuron=neuron, synapse=synapse,
                            duration_ms=t_ms, bin_ms=t_ms, calib_duration_ms=100.0 if quick else 300.0,
                            calib_n=10 if quick else 50)
    options = {"offset_sign": sign} if sign else {}
    if offset:
        options["offset"] = offset
    if rounds is not None:
        options["iterations"] = rounds
    if quick:
        cfg["n_images"] = 30
        options = {**options, "iterations": 1} if method == "mcr-tf" else options
    if options:
        cfg["method_options"] = options
    if synapse == "alpha":
        cfg["tau_syn_ms"] = TAU_SYN_MS
    cfg["rho_from_slope"] = slope
    if slope:  # the first run's configs carry no variant key, so their cached tables stay valid
        cfg["variant"] = variant
    return cfg


def grid(quick: bool = False) -> list[dict]:
    plan = [(rate, t_ms, combo) for rate, t_ms, combos in GRIDS for combo in combos]
    sweep = [label for label in SRM_TAU_R_MS if (200.0, 300.0, (label, "delta")) not in plan]
    if quick:
        plan, sweep = [(200.0, 100.0, ("LIF-ref2", "alpha"))], ["SRM-5-r10"]
    configs = [_config(rate, t_ms, neuron, synapse, variant, quick)
               for rate, t_ms, (neuron, synapse) in plan for variant in METHODS
               if not (quick and variant in FULL_ONLY)]
    configs += [_config(200.0, 100.0 if quick else 300.0, label, "delta", variant, quick) for label in sweep
                for variant in (SWEEP_VARIANTS[:1] if quick else SWEEP_VARIANTS)]
    if not quick:
        for rate, t_ms, neuron, synapse in INTEGRATE:  # the conversion is the default's (cached), the readout differs
            cfg = _config(rate, t_ms, neuron, synapse, "mcr-tf-slope", quick)
            configs.append({**cfg, "readout": "integrate", "variant": "mcr-tf-slope-integrate"})
        combos = [(rate, t_ms, neuron, synapse) for rate, t_ms, c in GRIDS for neuron, synapse in c]
        combos.append((200.0, 300.0, COUNT_VOLTAGE_SRM, "delta"))
        for rate, t_ms, neuron, synapse in combos:
            for variant, base in COUNT_VOLTAGE.items():
                cfg = _config(rate, t_ms, neuron, synapse, base, quick)
                configs.append({**cfg, "readout": "count-voltage", "variant": variant})
        for neuron, synapse in RESPONSE:  # the conversion is the default's (cached); the run records responses
            configs.append(_response_config(200.0, 300.0, neuron, synapse, "mcr-tf-slope", quick))
        for neuron, synapse in HELD_OUT:
            cfg = _config(200.0, 300.0, neuron, synapse, "mcr-tf-slope", quick)
            configs.append({**cfg, "readout": "count-voltage", "variant": "mcr-tf-slope-cv-heldout",
                            "image_offset": HELD_OUT_IMAGES[0], "n_images": HELD_OUT_IMAGES[1]})
        for rate, t_ms, neuron, synapse in RESET_SUBTRACT:
            for variant in RESET_SUBTRACT_VARIANTS:
                if variant in COUNT_VOLTAGE:
                    cfg = _config(rate, t_ms, neuron, synapse, COUNT_VOLTAGE[variant], quick)
                    configs.append({**cfg, "readout": "count-voltage", "variant": variant})
                else:
                    configs.append(_config(rate, t_ms, neuron, synapse, variant, quick))
    else:  # the quick grid records the responses of its one combination (conversion: its MCR-TF run's)
        configs.append(_response_config(200.0, 100.0, "LIF-ref2", "alpha", "mcr-tf", quick))
    return common.with_seeds(configs, quick)


def _response_config(rate: float, t_ms: float, neuron: str, synapse: str, base: str, quick: bool) -> dict:
    return {**_config(rate, t_ms, neuron, synapse, base, quick), "variant": f"{base}-response", "response": True}


def run_one(cfg: dict) -> pd.DataFrame:
    table, graph, result = common.run_network(cfg)
    if cfg.get("response"):
        curves = common.layer_response(graph, result, cfg, bins=RESPONSE_BINS, active_only=True)
        table = pd.concat([table, curves], ignore_index=True)
    return table


def with_variant(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its variant label in ``method`` (the first run's rows: the method name)."""
    if "variant" in table.columns:
        table = table.assign(method=table["variant"].fillna(table["method"]))
    return table


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (rate, neuron, synapse, variant): accuracies with 95 % intervals, loss, McNemar p, rates.

    ``method`` holds the variant label of :data:`METHODS` (``mcr-slope``: MCR-Norm with measured slopes).
    """
    table = with_variant(table)
    by = ["rate_hz", "neuron", "synapse", "method"]
    out = common.accuracy_summary(table, by)
    out["loss_pct"] = 100.0 * (out.ann_accuracy - out.snn_accuracy)
    layers = table[(table.kind == "layer") & (table.layer != "input")]
    per_layer = layers.groupby(by + ["layer"], sort=False).agg(max_rate_hz=("max_rate_hz", "max"),
                                                                 mean_rate_hz=("mean_rate_hz", "mean")).reset_index()
    wide_max = per_layer.pivot_table(index=by, columns="layer", values="max_rate_hz", sort=False).add_prefix("max_hz_")
    wide_mean = per_layer.pivot_table(index=by, columns="layer", values="mean_rate_hz", sort=False).add_prefix(
        "mean_hz_")
    out = out.merge(wide_max.reset_index(), on=by).merge(wide_mean.reset_index(), on=by)
    spikes = layers.groupby(by + ["seed", "image"], sort=False).spikes.sum().groupby(by, sort=False).mean()
    out = out.merge(spikes.rename("spikes_per_image").reset_index(), on=by)
    out["tau_r_ms"] = out.neuron.map(SRM_TAU_R_MS)  # the SRM sweep's refractory time constant (NaN: not an SRM)
    return out


def _loss_bars(ax, rows: pd.DataFrame, x, method: str, label: str) -> None:
    """Loss against the source ANN with the 95 % interval of the SNN accuracy, in points."""
    from bioconv.plotting import errorbars, method_color

    errorbars(ax, x, 100 * (rows.ann_accuracy - rows.snn_accuracy), 100 * (rows.ann_accuracy - rows.snn_ci_high),
              100 * (rows.ann_accuracy - rows.snn_ci_low), color=method_color(method), label=label)


def plot(table: pd.DataFrame, outdir) -> list:
    """Losses per combination and variant (one panel per max rate) and the SRM's τ_r sweep (last panel)."""
    from bioconv.plotting import METHOD_LABELS, caption, figure, legend_outside, rate_ticks, save_figure

    s = summary(table)
    sweep_only = [label for label in SRM_TAU_R_MS if label not in {n for _, _, c in GRIDS for n, _ in c}]
    main = s[~s.neuron.isin(sweep_only)]
    rates = sorted(main.rate_hz.unique(), reverse=True)
    sweep = s[s.neuron.isin(list(SRM_TAU_R_MS)) & (s.method == SWEEP_VARIANT)].sort_values("tau_r_ms")
    fig, axes = figure(ncols=len(rates) + (len(sweep) > 0), height=2.6, width=7.0)
    for ax, rate in zip(axes[0], rates):
        part = main[main.rate_hz == rate]
        combos = list(dict.fromkeys(zip(part.neuron, part.synapse)))
        present = [m for m in PLOTTED if m in set(part.method)]
        step = min(0.18, 0.84 / max(len(present), 1))
        for k, method in enumerate(present):
            rows = part[part.method == method].set_index(["neuron", "synapse"]).reindex(combos)
            _loss_bars(ax, rows, np.arange(len(combos)) + (k - (len(present) - 1) / 2) * step, method,
                       METHOD_LABELS[method])
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_yscale("symlog", linthresh=1.0)  # losses of 0.1 points and of 70 points on one axis
        ax.set_ylim(-2.0, 150.0)
        ax.set_xticks(np.arange(len(combos)), [f"{n}, {syn}" for n, syn in combos], rotation=60, ha="right",
                      fontsize=6)
        ax.set_ylabel("loss vs source ANN (points, symlog)")
        ax.set_title(f"max rate {rate:g} Hz, T = {float(part.T_ms.iloc[0]):g} ms")
    if len(sweep):
        ax = axes[0][-1]
        _loss_bars(ax, sweep, sweep.tau_r_ms.to_numpy(), SWEEP_VARIANT, METHOD_LABELS[SWEEP_VARIANT])
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xscale("log")
        rate_ticks(ax, sweep.tau_r_ms)  # plain tick labels at the swept values
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(-2.0, 150.0)
        ax.set_xlabel("SRM refractory kernel tau_r (ms)")
        ax.set_title(f"SRM tau_s 5 ms, {float(sweep.rate_hz.iloc[0]):g} Hz, T = {float(sweep.T_ms.iloc[0]):g} ms")
    # the legend sits below the last panel, whose x axis has no rotated tick labels
    handles, labels = axes[0][0].get_legend_handles_labels()  # every variant is in the 200 Hz panel
    legend_outside(axes[0][-1], loc="below", ncol=1, fontsize=5.5, offset=-0.3, handles=handles, labels=labels)
    caption(fig, common.network_label(table), "IF, LIF (tau_m 20 ms, ref 2 ms; reset to zero, LIF-sub: by subtraction), SRM (tau_s 5 ms; "
            "tau_r 5 ms, swept in the last panel); alpha tau_s 5 ms",
            "MCR-Norm vs MCR-TF (first run up to 4 fit rounds, defaults up to 10), slopes assumed or "
            "measured, calibrated at the simulation dt; spike-count readout, ties wrong (\"ties by potential\": "
            "count ties broken by the output potential)",
            int(s.snn_n_images.iloc[0]), int(s.snn_n_seeds.iloc[0]),
            "95 % CI of the SNN accuracy (bootstrap over images and seeds)")
    paths = save_figure(fig, s, outdir, "fig11_model_fidelity")
    return paths + (plot_response(table, outdir) if (table.kind == "curve").any() else [])


def response_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Binned layer responses pooled over input seeds: per (neuron, synapse, layer, bin of a/λ) the ideal
    rate ρa/λ (Hz, at the bin's mean activation), the mean measured rate, the neurons × images × seeds
    in the bin, and the mean rate of the ANN-silent neurons (``silent_rate_hz``)."""
    c = table[table.kind == "curve"].assign(w_rate=lambda d: d.mean_rate_hz.fillna(0) * d.n,
                                            w_x=lambda d: d.x_mean.fillna(0) * d.n)
    by = ["rate_hz", "neuron", "synapse", "layer", "depth", "x"]
    out = c.groupby(by, sort=False).agg(n=("n", "sum"), w_rate=("w_rate", "sum"), w_x=("w_x", "sum"),
                                         target_rate_hz=("target_rate_hz", "first"),
                                         silent_rate_hz=("silent_rate_hz", "mean")).reset_index()
    out = out[out.n > 0]
    out["ideal_rate_hz"] = out.w_x / out.n * out.target_rate_hz
    out["mean_rate_hz"] = out.w_rate / out.n
    return out.drop(columns=["w_rate", "w_x"])


def plot_response(table: pd.DataFrame, outdir) -> list:
    """Fig. 11b: measured against ideal rate of every hidden layer, one panel per combination."""
    from bioconv.plotting import caption, figure, legend_outside, ordered_colors, save_figure

    r = response_summary(table)
    runs = table[(table.kind == "layer") & (table.layer == "input") & table.variant.fillna("").str.endswith("-response")]
    combos = list(dict.fromkeys(zip(r.neuron, r.synapse)))
    ncols = min(3, len(combos))
    fig, axes = figure(ncols=ncols, nrows=-(-len(combos) // ncols), width=7.0, height=2.2 * -(-len(combos) // ncols))
    colors = ordered_colors(r.depth.unique())
    for ax, (neuron, synapse) in zip(axes.ravel(), combos):
        part = r[(r.neuron == neuron) & (r.synapse == synapse)]
        for layer, g in part.groupby("layer", sort=False):
            ax.plot(g.ideal_rate_hz, g.mean_rate_hz, marker="o", ms=2, color=colors[float(g.depth.iloc[0])], label=layer)
        top = float(part.target_rate_hz.max())
        ax.plot([0, top], [0, top], color="k", ls=":", lw=0.8, label="ideal")
        ax.set_title(f"{neuron}, {synapse}")
        ax.set_xlabel("ideal rate ρa/λ (Hz)")
        ax.set_ylabel("SNN rate (Hz)")
    for ax in axes.ravel()[len(combos):]:
        ax.set_visible(False)
    legend_outside(axes.ravel()[ncols - 1], loc="right", fontsize=5.5)
    caption(fig, common.network_label(table), "IF, LIF (tau_m 20 ms, ref 2 ms), SRM (tau_s 5 ms, tau_r as named); "
            "alpha tau_s 5 ms", f"MCR-TF ({', '.join(sorted(set(runs.variant)))}), 200 Hz, T = "
            f"{float(runs.duration_ms.iloc[0]):g} ms; ANN-active neurons "
            f"binned in {RESPONSE_BINS} bins of a/λ, mean over neurons, images and seeds",
            int(runs.image.nunique()), int(runs.seed.nunique()))
    return save_figure(fig, r, outdir, "fig11b_layer_response")
