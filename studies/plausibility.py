r"""Study: the converted network in the biologically plausible regime (``bioconv study plausibility``).

Two parts, both MCR-Norm on cnn7 (pools folded), delta synapses, dt = 1 ms, torch engine,
for the standard IF neuron (reset to zero) and a LIF neuron with realistic parameters
(τ_m = 20 ms, absolute refractory period 2 ms):

``regime`` (max rates 20, 50 and 200 Hz, input at twice the max rate): per layer, input
included, the distribution of per-neuron rates on log-spaced bins with the silent fraction,
median and 95th percentile (all neuron-image pairs); spikes per neuron per inference; per
image the first output spike and the time to a stable decision (:mod:`studies.metrics`).
On a small subset (``n_repeat_images`` images, each simulated ``n_repeats`` times with
different input spikes) the spike times of every layer give the coefficient of variation of
the inter-spike intervals, :math:`CV = \sigma_\mathrm{ISI}/\mu_\mathrm{ISI}` (neurons with
≥ 3 spikes on an image), and the Fano factor across repeats,
:math:`F = \mathrm{Var}(N)/\mathrm{E}(N)` of the spike count N of one neuron on one image
(pairs with E(N) > 0), plus a raster of one image through all layers.

``sweep`` (max rates 10–400 Hz, T up to 2 s): accuracy at fixed times T (250, 500, 1000 and
2000 ms, chosen in advance) per image, pooled over input seeds with 95 % intervals.

The tables are cached by config hash (:mod:`bioconv.sweep`); :func:`plot` only reads them.
Published cortical figures for comparison are quoted in ``figures/README.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from studies import common

NAME = "plausibility"
NEURONS = ("IF-zero", "LIF-ref2")
REGIME_RATES_HZ = (20.0, 50.0, 200.0)
SWEEP_RATES_HZ = (10.0, 20.0, 50.0, 100.0, 200.0, 400.0)
CHECK_TIMES_MS = (250.0, 500.0, 1000.0, 2000.0)
LOG_BINS_HZ = np.logspace(-1, np.log10(1000.0), 41)


def grid(quick: bool = False) -> list[dict]:
    configs = []
    regime = dict(duration_ms=200.0, n_images=20, n_repeat_images=2, n_repeats=3, bin_ms=5.0) if quick else \
        dict(duration_ms=1000.0, n_images=1000, n_repeat_images=20, n_repeats=10, bin_ms=5.0)
    for neuron in NEURONS:
        for rate in REGIME_RATES_HZ[::2] if quick else REGIME_RATES_HZ:
            configs.append(common.net_config(NAME, quick, part="regime", method="mcr", rate_hz=rate,
                                             neuron=neuron, synapse="delta", **regime, **_calib(rate, quick)))
    sweep = dict(duration_ms=250.0, n_images=20, bin_ms=5.0) if quick else \
        dict(duration_ms=2000.0, n_images=1000, bin_ms=10.0)
    for neuron in NEURONS:
        for rate in (20.0, 200.0) if quick else SWEEP_RATES_HZ:
            configs.append(common.net_config(NAME, quick, part="sweep", method="mcr", rate_hz=rate,
                                             neuron=neuron, synapse="delta", **sweep, **_calib(rate, quick)))
    return common.with_seeds(configs, quick)


def _calib(rate_hz: float, quick: bool) -> dict:
    """Calibration runs long enough for about 10 spikes at the max rate (at least 100 ms), quick runs
    too: at 20 Hz a 100 ms run resolves the max rate only to a whole spike (±50 %), and the measured
    slopes that the next layers' weights use are as coarse."""
    return {"calib_duration_ms": max(100.0, 1e4 / rate_hz)}


def run_one(cfg: dict) -> pd.DataFrame:
    table, graph, result = common.run_network(cfg)
    parts = [table, rate_distributions(graph, result, cfg)]
    if cfg["part"] == "sweep":
        parts.append(common.correct_at(result, CHECK_TIMES_MS))
    elif cfg["seed"] == 0:  # irregularity and raster once per network
        parts.append(irregularity(graph, cfg))
    return pd.concat(parts, ignore_index=True)


def _input_rates(graph, cfg) -> np.ndarray:
    from bioconv.encoding import input_rates_hz

    x, _ = common.images(cfg["dataset"], "test", cfg["n_images"])
    return input_rates_hz(x, graph.input)[0]


def rate_distributions(graph, result, cfg) -> pd.DataFrame:
    """Per layer (input first): log-binned histogram of neuron-image rates and their summary statistics."""
    rows = []
    layers = {"input": _input_rates(graph, cfg), **{n: result.rates_hz(n) for n in result.counts}}
    t_s = cfg["duration_ms"] / 1000.0
    for depth, (name, r) in enumerate(layers.items()):
        flat = np.asarray(r, dtype=float).ravel()
        hist, _ = np.histogram(flat[flat > 0], bins=LOG_BINS_HZ)
        rows.append(pd.DataFrame({
            "kind": "rate_hist", "layer": name, "depth": depth, "rate_lo_hz": LOG_BINS_HZ[:-1],
            "rate_hi_hz": LOG_BINS_HZ[1:], "n": hist, "frac_silent": float(np.mean(flat == 0)),
            "median_rate_hz": float(np.median(flat)), "p95_rate_hz": float(np.percentile(flat, 95)),
            "median_active_rate_hz": float(np.median(flat[flat > 0])) if (flat > 0).any() else np.nan,
            "mean_rate_hz": float(flat.mean()), "layer_max_rate_hz": float(flat.max()),
            "spikes_per_neuron": float(flat.mean() * t_s)}))
    return pd.concat(rows, ignore_index=True)


def irregularity(graph, cfg) -> pd.DataFrame:
    """CV of ISIs, Fano factors across repeats and a one-image raster, from a small repeated subset."""
    from bioconv.engines import simulate as engine_simulate
    from bioconv.encoding import input_rates_hz, spike_trains
    from bioconv.simulation import SimConfig
    from brian2 import ms, second

    m, k = int(cfg["n_repeat_images"]), int(cfg["n_repeats"])
    x, y = common.images(cfg["dataset"], "test", m)
    xr, yr = np.repeat(x, k, axis=0), np.repeat(y, k)  # image i, repeat j at index i*k + j: its own input spikes
    layers = tuple(l.name for l in graph.spiking_layers)
    config = SimConfig(duration=cfg["duration_ms"] * ms, dt=cfg["dt_ms"] * ms, coding=cfg["coding"],
                       seed=cfg["seed"] + 1000, bin=cfg["duration_ms"] * ms, record_times=layers)
    res = engine_simulate(graph, xr, yr, config, engine="torch")
    rows = []
    for depth, name in enumerate(layers, start=1):
        img, nrn, t = res.spike_times[name]
        cv = _isi_cv(img, nrn, t)
        counts = res.counts[name].reshape(m, k, -1).astype(float)
        mean, var = counts.mean(axis=1), counts.var(axis=1, ddof=1)
        fano = (var / mean)[mean > 0]
        rows.append(pd.DataFrame({"kind": "irregularity", "layer": [name], "depth": depth,
                                  "cv_isi_median": np.median(cv) if cv.size else np.nan, "n_cv": cv.size,
                                  "cv_isi_p25": np.percentile(cv, 25) if cv.size else np.nan,
                                  "cv_isi_p75": np.percentile(cv, 75) if cv.size else np.nan,
                                  "fano_median": np.median(fano) if fano.size else np.nan, "n_fano": fano.size}))
        first = img < 1  # raster: image 0, repeat 0
        rows.append(pd.DataFrame({"kind": "raster", "layer": name, "depth": depth, "neuron_index": nrn[first],
                                  "t_ms": t[first]}))
    rates, signs = input_rates_hz(x[:1], graph.input)
    trains = spike_trains(rates, signs, float(config.dt / second), config.n_steps, cfg["coding"], config.seed)
    step, inp = np.nonzero(trains[0])
    rows.append(pd.DataFrame({"kind": "raster", "layer": "input", "depth": 0, "neuron_index": inp,
                              "t_ms": (step + 1) * cfg["dt_ms"]}))
    return pd.concat(rows, ignore_index=True)


def _isi_cv(img: np.ndarray, nrn: np.ndarray, t: np.ndarray) -> np.ndarray:
    """CV of the inter-spike intervals of every (image, neuron) train with at least 3 spikes."""
    if img.size == 0:
        return np.empty(0)
    df = pd.DataFrame({"img": img, "nrn": nrn, "t": t}).sort_values(["img", "nrn", "t"])
    df["isi"] = df.groupby(["img", "nrn"]).t.diff()
    isi = df.dropna(subset=["isi"]).groupby(["img", "nrn"]).isi
    stats = pd.DataFrame({"n": isi.size(), "mean": isi.mean(), "sd": isi.std(ddof=0)})
    stats = stats[stats.n >= 2]  # >= 3 spikes
    return (stats.sd / stats["mean"]).to_numpy()


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Regime part: one row per (neuron, rate, layer) with rate statistics, irregularity and latency."""
    regime = table[table.part == "regime"]
    hist = regime[regime.kind == "rate_hist"].groupby(["neuron", "rate_hz", "layer"], sort=False)[
        ["depth", "frac_silent", "median_rate_hz", "median_active_rate_hz", "p95_rate_hz", "mean_rate_hz",
         "layer_max_rate_hz",
         "spikes_per_neuron"]].mean().reset_index()
    irr = regime[regime.kind == "irregularity"][["neuron", "rate_hz", "layer", "cv_isi_median", "cv_isi_p25",
                                                   "cv_isi_p75", "fano_median", "n_cv", "n_fano"]]
    out = hist.merge(irr, on=["neuron", "rate_hz", "layer"], how="left")
    per_image = regime[(regime.kind == "layer") & (regime.layer == "input")]
    lat = per_image.groupby(["neuron", "rate_hz"]).agg(
        decision_ms_median=("decision_ms", "median"), first_spike_ms_median=("first_output_spike_ms", "median"),
        undecided_fraction=("decision_ms", lambda s: float(s.isna().mean()))).reset_index()
    acc = common.accuracy_summary(regime, ["neuron", "rate_hz"])
    return out.merge(lat, on=["neuron", "rate_hz"]).merge(acc, on=["neuron", "rate_hz"])


def sweep_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Sweep part: accuracy at each fixed T per (neuron, rate), pooled over seeds, with 95 % intervals."""
    from bioconv.stats import accuracy_row

    acc = table[(table.part == "sweep") & (table.kind == "acc_at")]
    rows = []
    for (neuron, rate, t), g in acc.groupby(["neuron", "rate_hz", "t_ms"]):
        wide = g.pivot_table(index="seed", columns="image", values="correct", aggfunc="first").to_numpy(dtype=bool)
        rows.append({"neuron": neuron, "rate_hz": rate, "t_ms": t, **accuracy_row(wide, n_boot=1000)})
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, outdir) -> list:
    from bioconv.plotting import NEURON_COLORS, caption, errorbars, figure, legend_outside, ordered_colors, \
        rate_ticks, save_figure, zoom_percent

    s = summary(table)
    sw = sweep_summary(table)
    regime = table[table.part == "regime"]
    rates = sorted(regime.rate_hz.unique())
    colors = ordered_colors(rates, log=True)
    neurons = [n for n in NEURONS if n in set(regime.neuron)]
    fig, axes = figure(ncols=4, nrows=1 + len(neurons), width=7.0, height=2.0 * (1 + len(neurons)))
    for row, neuron in enumerate(neurons):
        hist = regime[(regime.kind == "rate_hist") & (regime.neuron == neuron)]
        layers = list(dict.fromkeys(hist.layer))
        ax = axes[row][0]  # (a) rate distributions on log axes, highest rate only, one line per layer
        top = hist[hist.rate_hz == max(rates)]
        depth_colors = ordered_colors(range(len(layers)), cmap="magma")
        for d, name in enumerate(layers):
            g = top[top.layer == name].groupby("rate_lo_hz").n.sum()
            ax.step(g.index, g / max(g.sum(), 1), where="post", color=depth_colors[d], label=name)
        ax.set_xscale("log")
        ax.set_xlabel("rate (Hz), active neuron-images")
        ax.set_ylabel("fraction")
        ax.set_title(f"{neuron}: rates at {max(rates):g} Hz max", fontsize=7)
        if row == 0:
            legend_outside(ax, loc="below", ncol=4, fontsize=5, offset=-0.45)
        ax = axes[row][1]  # (b) silent fraction, median, p95 per layer and max rate
        for rate in rates:
            g = s[(s.neuron == neuron) & (s.rate_hz == rate)].sort_values("depth")
            ax.plot(g.depth, g.p95_rate_hz, marker="^", color=colors[rate], label=f"{rate:g} Hz p95")
            ax.plot(g.depth, g.mean_rate_hz, marker="o", ls="--", color=colors[rate], label=f"{rate:g} Hz mean")
        ax.set_yscale("log")
        ax.set_xticks(range(len(layers)), layers, rotation=45, fontsize=5)
        ax.set_ylabel("rate (Hz)")
        ax.set_title("mean (o) and 95th pct (^)", fontsize=7)
        ax = axes[row][2]  # (c) CV and Fano
        for rate in rates:
            g = s[(s.neuron == neuron) & (s.rate_hz == rate)].sort_values("depth")
            g = g[g.layer != "input"]
            ax.plot(g.depth, g.cv_isi_median, marker="o", color=colors[rate], label=f"CV {rate:g} Hz")
            ax.plot(g.depth, g.fano_median, marker="s", ls="--", color=colors[rate], label=f"Fano {rate:g} Hz")
        ax.axhline(1.0, color="0.5", lw=0.6, ls=":")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("CV of ISI (o), Fano (s)")
        ax.set_xticks(range(len(layers)), layers, rotation=45, fontsize=5)
        ax.set_title("irregularity (1 = Poisson)", fontsize=7)
        ax = axes[row][3]  # (d) decision latency per image
        per_image = regime[(regime.kind == "layer") & (regime.layer == "input") & (regime.neuron == neuron)]
        for rate in rates:
            d = np.sort(per_image[per_image.rate_hz == rate].decision_ms.dropna().to_numpy())
            if d.size:
                ax.plot(d, np.arange(1, d.size + 1) / len(per_image[per_image.rate_hz == rate]),
                        color=colors[rate], label=f"{rate:g} Hz")
        ax.set_ylim(0, 1)
        ax.set_xlabel("time to a stable decision (ms)")
        ax.set_ylabel("fraction of images")
        if row == 0:
            legend_outside(ax, fontsize=5)
    ax = axes[-1][0]  # raster of one image, all layers, IF at the highest rate
    raster = regime[(regime.kind == "raster") & (regime.neuron == neurons[0]) & (regime.rate_hz == max(rates))]
    offset, ticks = 0, []
    for name, g in raster.groupby("depth"):
        ax.scatter(g.t_ms, g.neuron_index + offset, s=0.2, lw=0, color="k")
        n = int(max(g.neuron_index.max() + 1, 1)) if len(g) else 1
        ticks.append((offset + n / 2, g.layer.iloc[0] if len(g) else str(name)))
        offset += n
    ax.set_yticks([t for t, _ in ticks], [l for _, l in ticks], fontsize=5)
    ax.set_xlabel("time (ms)")
    ax.set_title(f"raster, one image ({neurons[0]}, {max(rates):g} Hz)", fontsize=7)
    ax = axes[-1][1]  # input rates
    inp = regime[(regime.kind == "rate_hist") & (regime.layer == "input")]
    for rate in rates:
        g = inp[inp.rate_hz == rate].groupby("rate_lo_hz").n.sum()
        ax.step(g.index, g / max(g.sum(), 1), where="post", color=colors[rate], label=f"{rate:g} Hz max")
    ax.set_xscale("log")
    ax.set_xlabel("input rate (Hz), active pixels")
    ax.set_title("input rates", fontsize=7)
    for j, neuron in enumerate(neurons):  # accuracy vs max rate with intervals
        ax = axes[-1][2 + j] if 2 + j < 4 else axes[-1][3]
        g = sw[sw.neuron == neuron]
        tcol = ordered_colors(sorted(g.t_ms.unique()), cmap="viridis")
        for t, gt in g.groupby("t_ms"):
            errorbars(ax, gt.rate_hz, 100 * gt.accuracy, 100 * gt.ci_low, 100 * gt.ci_high, color=tcol[t],
                      label=f"T = {t:g} ms", ms=2)
        ax.set_xscale("log")
        rate_ticks(ax, g.rate_hz)
        ax.set_xlabel("max rate (Hz)")
        ax.set_ylabel("accuracy (%)")
        zoom_percent(ax, list(100 * g.ci_low) + list(100 * g.ci_high))
        ax.set_title(f"{neuron}: accuracy vs max rate", fontsize=7, color=NEURON_COLORS.get(neuron, "k"))
        legend_outside(ax, loc="below", ncol=2, fontsize=5, offset=-0.4)
    n_img = int(regime[(regime.kind == "layer") & (regime.layer == "input")].image.nunique())
    caption(fig, common.network_label(regime), "IF reset to zero; LIF tau_m 20 ms, refractory 2 ms; delta synapses",
            "MCR-Norm", n_img, int(regime.seed.nunique()),
            f"regime T = {regime.duration_ms.max():g} ms; CV/Fano on {int(regime.n_repeat_images.max())} images "
            f"x {int(regime.n_repeats.max())} repeats")
    data = pd.concat([s.assign(part="regime_summary"), sw.assign(part="sweep_accuracy"),
                      regime[regime.kind == "rate_hist"].assign(part="rate_hist")[
                          ["part", "neuron", "rate_hz", "layer", "rate_lo_hz", "rate_hi_hz", "n"]]],
                     ignore_index=True)
    return save_figure(fig, data, outdir, "fig10_plausibility")
