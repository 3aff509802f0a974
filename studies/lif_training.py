r"""Training for the LIF: SoftLIF networks (Hunsberger & Eliasmith 2015) converted without fitting
(``lif-rate``).

cnn7 is trained with the LIF's own rate curve as its hidden activation
(:class:`bioconv.ann.activations.SoftLIF`: τ_RC = 20 ms, τ_ref = 2 ms, 5 epochs, seed 0) three ways
(:data:`NETWORKS`): an activation of 1 standing for 50 Hz (``scale50``) or for 10 Hz (``scale10``),
smoothing 0.05; and at the 50 Hz scale with the rate ceiling of
:class:`~bioconv.ann.activations.RateCeiling` at 50 Hz and smoothing 0.3 (``ceiling50``, the
low-rate regime), and that network once more with 10 Hz of Gaussian rate noise in training
(``ceiling50-noise``, as Hunsberger & Eliasmith train for the variability of spiking rates). Each is converted with method
``lif-rate`` (:mod:`bioconv.normalize.lif_rate`) onto the LIF of the conversion studies (τ_m = 20
ms, 2 ms refractory period, reset to zero) with delta and alpha (τ_s = 5 ms) synapses. The hidden
rates are the trained network's own; only the output layer is scaled, so that the 99.9th percentile
of its calibration logits drives it at the target rate (200 Hz for ``scale50``, T = 300 ms; 50 Hz
for the others, T = 1 s; input 2× that rate; the ``ceiling50`` networks with alpha synapses also
with 400 Hz input, :data:`EXTRA_INPUT_HZ`). First 1000 MNIST test images × 3 input seeds; losses are
against each SoftLIF network's own ANN, with the exact McNemar test, and the per-layer rates show
where the network sits. Checkpoints that do not exist are trained
(``runs/ann/cnn7-softlif<scale>[-g<smoothing>][-max<rate>][-n<noise>]-mnist.pt``, 5–10 min each on 2
cores; with ``--quick`` a ``tiny`` net, 1 epoch on 6000 images). Figure ``fig13_lif_training``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from studies import common

NAME = "lif_training"
#: softplus smoothing of the rate-capped network (more than the default 0.05: at 50 Hz most neurons sit
#: near the rheobase, where input noise smooths the LIF's curve)
SMOOTHING_CEILING = 0.3
#: network label → SoftLIF training (rate scale: the rate of activation 1; an optional rate ceiling and
#: its smoothing) and conversion (output target rate, T)
NETWORKS: dict[str, dict] = {
    "scale50": {"rate_scale_hz": 50.0, "max_rate_hz": None, "smoothing": 0.05, "target_hz": 200.0, "T_ms": 300.0},
    "scale10": {"rate_scale_hz": 10.0, "max_rate_hz": None, "smoothing": 0.05, "target_hz": 50.0, "T_ms": 1000.0},
    "ceiling50": {"rate_scale_hz": 50.0, "max_rate_hz": 50.0, "smoothing": SMOOTHING_CEILING, "target_hz": 50.0,
                  "T_ms": 1000.0},
    "ceiling50-noise": {"rate_scale_hz": 50.0, "max_rate_hz": 50.0, "smoothing": SMOOTHING_CEILING, "target_hz": 50.0,
                        "T_ms": 1000.0, "noise_hz": 10.0},
}
#: networks also run with alpha synapses and this input rate (Hz; default: twice the target), to show
#: how much of the loss at low rates is input noise
EXTRA_INPUT_HZ: dict[str, float] = {"ceiling50": 400.0, "ceiling50-noise": 400.0}
SYNAPSES = ("alpha", "delta")
TAU_SYN_MS = 5.0
SOFTLIF = {"tau_rc": 0.02, "tau_ref": 0.002}


def checkpoint(label: str, quick: bool) -> Path:
    """The SoftLIF checkpoint of a network of :data:`NETWORKS`, trained here if it does not exist yet."""
    from bioconv.ann import train_and_save

    net = NETWORKS[label]
    arch, folder = ("tiny", common.cache_dir()) if quick else ("cnn7", common.REPO / "runs" / "ann")
    tag = "" if net["smoothing"] == 0.05 else f"-g{net['smoothing']:g}".replace(".", "")
    tag += "" if net["max_rate_hz"] is None else f"-max{net['max_rate_hz']:g}"
    tag += f"-n{net['noise_hz']:g}" if net.get("noise_hz") else ""
    path = folder / f"{arch}-softlif{net['rate_scale_hz']:g}{tag}-mnist{'-n6000-e1' if quick else ''}.pt"
    if not path.exists():
        common.log.warning("training the SoftLIF %s (%s) into %s", arch, label, path)
        params = {**SOFTLIF, "amplitude": 1.0 / net["rate_scale_hz"], "smoothing": net["smoothing"],
                  "noise_hz": net.get("noise_hz", 0.0)}
        train_and_save(arch, "mnist", path, epochs=1 if quick else 5, seed=0, max_train=6000 if quick else None,
                       progress=False, activation="softlif", softlif=params, max_rate_hz=net["max_rate_hz"])
    return path


def grid(quick: bool = False) -> list[dict]:
    configs = []
    for label, net in NETWORKS.items():
        path = checkpoint(label, quick)
        for synapse in SYNAPSES:
            t = 100.0 if quick else net["T_ms"]
            cfg = common.net_config(NAME, quick, method="lif-rate", rate_hz=net["target_hz"], neuron="LIF-ref2",
                                    synapse=synapse, duration_ms=t, bin_ms=t)
            cfg["ckpt"] = str(path.relative_to(common.REPO)) if path.is_relative_to(common.REPO) else str(path)
            cfg["rate_scale_hz"] = net["rate_scale_hz"]
            if net["max_rate_hz"] is not None:  # the first two networks' configs carry no label: caches stay valid
                cfg["network"] = label
            if synapse == "alpha":
                cfg["tau_syn_ms"] = TAU_SYN_MS
            if quick:
                cfg["n_images"] = 30
            configs.append(cfg)
            if synapse == "alpha" and label in EXTRA_INPUT_HZ:
                configs.append({**cfg, "input_rate_hz": EXTRA_INPUT_HZ[label]})
    return common.with_seeds(configs, quick)


def with_network(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every row's network label (the first two networks' rows: from their rate scale)."""
    label = "scale" + table["rate_scale_hz"].map("{:g}".format)
    return table.assign(network=table["network"].fillna(label) if "network" in table else label)


def run_one(cfg: dict) -> pd.DataFrame:
    table, _graph, _result = common.run_network(cfg)
    return table


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (network, synapse): accuracies with 95 % intervals, loss, McNemar p, per-layer rates."""
    table = with_network(table)
    by = ["network", "rate_scale_hz", "rate_hz", "synapse", "input_rate_hz"]
    out = common.accuracy_summary(table, by)
    out["loss_pct"] = 100.0 * (out.ann_accuracy - out.snn_accuracy)
    layers = table[(table.kind == "layer") & (table.layer != "input")]
    per_layer = layers.groupby(by + ["layer"], sort=False).agg(max_rate_hz=("max_rate_hz", "max"),
                                                                 mean_rate_hz=("mean_rate_hz", "mean")).reset_index()
    for column, prefix in (("max_rate_hz", "max_hz_"), ("mean_rate_hz", "mean_hz_")):
        wide = per_layer.pivot_table(index=by, columns="layer", values=column, sort=False).add_prefix(prefix)
        out = out.merge(wide.reset_index(), on=by)
    spikes = layers.groupby(by + ["seed", "image"], sort=False).spikes.sum().groupby(by, sort=False).mean()
    return out.merge(spikes.rename("spikes_per_image").reset_index(), on=by)


def plot(table: pd.DataFrame, outdir) -> list:
    """Loss against the SoftLIF ANN per network and synapse (left) and the mean and max rate per layer (right)."""
    import matplotlib

    from bioconv.plotting import caption, figure, legend_outside, save_figure

    s = summary(table)
    fig, axes = figure(ncols=2, height=3.0, width=7.0)
    ax = axes[0][0]
    labels = [f"{r.network}, {r.synapse}, {r.T_ms:g} ms, in {r.input_rate_hz:g} Hz" for r in s.itertuples()]
    y = np.arange(len(s))[::-1]  # first row on top
    loss = 100 * (s.ann_accuracy - s.snn_accuracy).to_numpy()
    lo, hi = 100 * (s.ann_accuracy - s.snn_ci_high).to_numpy(), 100 * (s.ann_accuracy - s.snn_ci_low).to_numpy()
    ax.errorbar(loss, y, xerr=[np.maximum(loss - lo, 0.0), np.maximum(hi - loss, 0.0)], fmt="o", capsize=1.5,
                color="#117733")
    ax.axvline(0.0, color="k", lw=0.6)
    ax.set_xscale("symlog", linthresh=1.0)  # losses of 0.2 and of 80 points on one axis
    ax.set_xlim(-2.0, 150.0)
    ax.set_yticks(y, labels, fontsize=5.5)
    ax.set_xlabel("loss vs SoftLIF ANN (points, symlog)")
    ax.set_title("loss, lif-rate", fontsize=7)
    ax = axes[0][1]
    layer_names = [c[len("mean_hz_"):] for c in s.columns if c.startswith("mean_hz_")]
    colors = matplotlib.colormaps["tab10"]
    for k, r in enumerate(s.itertuples()):
        mean = [getattr(r, f"mean_hz_{n}") for n in layer_names]
        peak = [getattr(r, f"max_hz_{n}") for n in layer_names]
        color = colors(k % 10)
        ax.plot(layer_names, mean, "o-", color=color, label=f"{r.network}, {r.synapse}, in {r.input_rate_hz:g} Hz")
        ax.plot(layer_names, peak, "^--", color=color, alpha=0.6)
    ax.set_yscale("log")
    ax.set_ylabel("rate (Hz)")
    ax.set_title("rates per layer (o mean, ^ max)", fontsize=7)
    legend_outside(ax, fontsize=5.5)
    caption(fig, common.network_label(table), "LIF tau_m 20 ms, ref 2 ms, reset to zero; alpha tau_s 5 ms",
            "SoftLIF training (Hunsberger & Eliasmith 2015), method lif-rate (no fitting)",
            int(s.snn_n_images.iloc[0]), int(s.snn_n_seeds.iloc[0]),
            "95 % CI of the SNN accuracy (bootstrap over images and seeds)")
    return save_figure(fig, s, outdir, "fig13_lif_training")
