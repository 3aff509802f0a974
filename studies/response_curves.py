r"""Study 1 (MCR-Norm paper, Fig. 1): single-neuron response curves vs ReLU.

Each neuron receives a drive ``x`` (input per reference time constant τ = 1 ms, in units of
the threshold θ = 1) through its synapse model: a source fires every step, and the synapse
weight is redrawn each step as

.. math:: w = x\,\frac{dt}{\tau} + \sigma\sqrt{\frac{dt}{\tau}}\;\xi,\qquad \xi\sim\mathcal N(0, 1),

with ``sigma > 0``: a Gaussian-noise current (Fig. 1b, smoothed). With delta synapses the
charge jumps straight into ``v`` (and, as in the network, charge arriving in the step in
which the neuron fires is erased by a reset to zero: Brian2's schedule is threshold →
synapses → reset); with alpha synapses it is filtered by the alpha PSC of unit charge.
The constant current of Fig. 1a (stepped) is the bias current ``I_bias = x`` itself
(``synapse = "none"``). The target response is ReLU,
:math:`r = x/\tau`. The analytic LIF curve (reset to zero, no refractory period) is

.. math:: r = \left[\tau_m \ln\frac{x\tau_m/\tau}{x\tau_m/\tau - \theta}\right]^{-1}
          \quad (x\tau_m/\tau > \theta).

Runs directly in Brian2 (numpy target) on groups built from :mod:`bioconv.neurons` and
:mod:`bioconv.synapses`; no network, no engine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from studies.common import NEURONS

NAME = "response_curves"
COLORS = {"IF-zero": "C0", "IF-sub": "C1", "LIF": "C2", "SRM": "C3"}


def grid(quick: bool = False) -> list[dict]:
    """Constant current (synapse "none") per neuron; noise through delta and alpha synapses
    (SRM only with delta: its kernel is its synapse)."""
    configs = []
    for neuron in COLORS:  # the four models of the figure (NEURONS also has study-only variants)
        for synapse in ("none", "delta", "alpha"):
            if neuron == "SRM" and synapse == "alpha":
                continue
            for drive, sigma in (("current", 0.0), ("noise", 0.5)):
                if (drive == "current") != (synapse == "none"):
                    continue
                configs.append({
                    "study": NAME, "neuron": neuron, "synapse": synapse, "drive": drive, "sigma": sigma,
                    "x_max": 1.0, "n_points": 41 if quick else 201, "trials": 1 if quick else 5,
                    "duration_ms": 200.0 if quick else 2000.0, "warmup_ms": 20.0, "dt_ms": 1.0, "seed": 0,
                })
    return configs


def make_models(neuron: str, synapse: str):
    """(neuron model, synapse model); synapse ``none`` (constant current) gets an unused delta."""
    from studies.common import make_models as _make

    return _make(neuron, "delta" if synapse == "none" else synapse)


def lif_analytic_hz(x: np.ndarray, tau_m_ms: float = 20.0, tau_ms: float = 1.0, theta: float = 1.0) -> np.ndarray:
    """Analytic LIF rate (Hz) for constant drive ``x`` per τ, reset to zero, no refractoriness."""
    ri = np.asarray(x, dtype=float) * tau_m_ms / tau_ms
    out = np.zeros_like(ri)
    above = ri > theta
    out[above] = 1000.0 / (tau_m_ms * np.log(ri[above] / (ri[above] - theta)))
    return out


def run_one(cfg: dict) -> pd.DataFrame:
    """Simulate ``n_points × trials`` independent neurons; one row per input value."""
    import brian2 as b2
    from brian2 import ms

    b2.prefs.codegen.target = "numpy"
    b2.start_scope()
    b2.seed(cfg["seed"])
    neuron, synapse = make_models(cfg["neuron"], cfg["synapse"])
    dt = cfg["dt_ms"] * ms
    x = np.linspace(0.0, cfg["x_max"], cfg["n_points"])
    n = x.size * cfg["trials"]
    xs = np.repeat(x, cfg["trials"])
    eqs = neuron.equations() + synapse.post_equations(neuron)
    kw = {"refractory": neuron.refractory} if float(neuron.refractory) > 0 else {}
    group = b2.NeuronGroup(n, eqs, threshold=neuron.threshold, reset=neuron.reset_code,
                           method=neuron.method, dt=dt, name="neuron", **kw)
    group.theta = 1.0
    direct = cfg["synapse"] == "none"  # constant current: the bias current I_bias, no synapse
    group.I_bias = xs if direct else 0.0
    source = b2.NeuronGroup(n, "", threshold="True", reset="", dt=dt, name="drive")
    syn = b2.Synapses(source, group, "w : 1\nmu : 1 (constant)\nsigma_w : 1 (constant)",
                      on_pre=synapse.on_pre(neuron), dt=dt, name="synapses")
    syn.connect(j="i")
    step = cfg["dt_ms"] / float(neuron.tau / ms)
    syn.mu = 0.0 if direct else xs * step
    syn.sigma_w = cfg["sigma"] * np.sqrt(step)
    syn.run_regularly("w = mu + sigma_w*randn()", dt=dt, when="before_synapses", name="redraw")
    mon = b2.SpikeMonitor(group, name="spikes")
    net = b2.Network(group, source, syn, mon)
    net.run(cfg["duration_ms"] * ms)
    t = np.asarray(mon.t / ms)
    idx = np.asarray(mon.i)[t >= cfg["warmup_ms"]]
    window_s = (cfg["duration_ms"] - cfg["warmup_ms"]) / 1000.0
    rates = (np.bincount(idx, minlength=n) / window_s).reshape(x.size, cfg["trials"])
    table = pd.DataFrame({
        "sample": np.arange(x.size), "layer": "neuron", "x": x,
        "rate_hz": rates.mean(axis=1), "rate_sd_hz": rates.std(axis=1),
        "relu_hz": np.maximum(x, 0.0) * 1000.0 / float(neuron.tau / ms),
    })
    if cfg["neuron"] == "LIF":
        tau_m = NEURONS["LIF"][1]["tau_m_ms"]
        table["analytic_hz"] = lif_analytic_hz(x, tau_m_ms=tau_m, tau_ms=float(neuron.tau / ms))
    else:
        table["analytic_hz"] = np.nan
    return table


def plot(table: pd.DataFrame, outdir) -> list:
    """Fig. 1: panel (a) constant current, panel (b) Gaussian-noise current; one line per model."""
    from bioconv.plotting import figure, save_figure

    fig, axes = figure(ncols=2, height=2.6, sharey=True)
    keep = ["drive", "neuron", "synapse", "x", "rate_hz", "rate_sd_hz", "relu_hz", "analytic_hz"]
    data = table[keep].sort_values(["drive", "neuron", "synapse", "x"])
    for ax, drive, title in zip(axes[0], ("current", "noise"), ("(a) constant current", "(b) Gaussian-noise current")):
        sub = data[data.drive == drive]
        ref = sub.drop_duplicates("x")
        ax.plot(ref.x, ref.relu_hz, color="k", lw=1.6, label="ReLU")
        for (neuron, synapse), g in sub.groupby(["neuron", "synapse"], sort=False):
            ls = "--" if synapse == "alpha" else "-"
            ax.plot(g.x, g.rate_hz, ls=ls, color=COLORS[neuron],
                    label=neuron if synapse == "none" else f"{neuron}, {synapse}")
        lif = sub[sub.neuron == "LIF"].drop_duplicates("x")
        if drive == "current" and len(lif):
            ax.plot(lif.x, lif.analytic_hz, color="0.5", ls=":", lw=1.0, label="LIF analytic")
        ax.set_title(title)
        ax.set_xlabel("input drive x (θ per τ = 1 ms)")
    axes[0][0].set_ylabel("output rate (Hz)")
    for ax in axes[0]:
        ax.legend(loc="upper left", ncol=1)
    return save_figure(fig, data, outdir, "fig1_response_curves")
