r"""Shared pieces of the network studies: checkpoint → converted Graph (cached), simulation, metrics.

A network study's config names everything that determines its result (dataset, ANN,
normalization method and target rate, neuron and synapse model, simulation settings,
engine, seed), so :func:`bioconv.sweep.config_hash` identifies it. Converted graphs are
cached as ``.bcv`` files by the hash of the conversion keys only, so many simulation
configs share one (expensive) normalization.

Metrics written into every network table:

* **latency** — the earliest time :math:`t^*` after which accuracy stays within 0.1 %
  (absolute, 0.001) of the final accuracy: :math:`a(t) \ge a(T) - 0.001\ \forall t \ge t^*`.
* **synaptic operations per image** (seed 004 eq. 10): :math:`\sum_l f_{\mathrm{out},l}\cdot s_l`,
  spikes of each neuron times its fan-out into the next layer (from
  :func:`bioconv.connectivity.layer_synapses`); input spikes count with their expected
  number :math:`\sum_i \min(r_i\,dt, 1)\,n_\mathrm{steps}`.
* **energy** (seed 001 eq. 14): :math:`E = \alpha \cdot N_\mathrm{spikes}` and power
  :math:`P = E/T`; reported in units of the per-spike energy α (``energy_alpha`` = spikes
  of all spiking layers per image, ``power_alpha_per_s`` = that over the duration).
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = REPO / "runs" / "ann" / "cnn7-mnist.pt"
#: neuron labels used in every study → (bioconv.neurons kind, parameters; *_ms in milliseconds)
NEURONS = {
    "IF-zero": ("if", {"reset": "zero"}),
    "IF-sub": ("if", {"reset": "subtract"}),
    "LIF": ("lif", {"tau_m_ms": 20.0, "reset": "zero"}),
    "SRM": ("srm", {"tau_s_ms": 1.0, "tau_r_ms": 1.0}),
}
CONVERSION_KEYS = ("dataset", "ckpt", "ckpt_sha256", "method", "rate_hz", "input_rate_hz", "neuron", "synapse",
                   "calib_n", "calib_duration_ms", "dt_ms", "norm_engine", "seed")


def cache_dir() -> Path:
    """Where converted graphs and quick checkpoints live (``$BIOCONV_STUDY_CACHE``)."""
    path = Path(os.environ.get("BIOCONV_STUDY_CACHE", REPO / "results" / "studies" / "_cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_models(neuron: str, synapse: str):
    """(neuron model, synapse model) for a label of :data:`NEURONS` and ``delta``/``alpha``."""
    from brian2 import ms

    from bioconv.neurons import make_neuron
    from bioconv.synapses import make_synapse

    if neuron not in NEURONS:
        raise ValueError(f"unknown neuron label {neuron!r}; choose one of {sorted(NEURONS)}")
    kind, params = NEURONS[neuron]
    kwargs = {(k[:-3] if k.endswith("_ms") else k): (v * ms if k.endswith("_ms") else v) for k, v in params.items()}
    return make_neuron(kind, **kwargs), make_synapse(synapse)


# ----------------------------------------------------------------------------- data and ANN
@lru_cache(maxsize=4)
def _dataset(name: str, split: str):
    from bioconv.data import load_dataset

    return load_dataset(name, split)


def images(name: str, split: str, n: int, seed: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images and labels: the first ``n`` (test) or a seeded subset (calibration)."""
    from bioconv.data import subset

    ds = subset(_dataset(name, split), n, seed)
    return ds.images, ds.labels


def resolve_checkpoint(ckpt: str, dataset: str = "mnist") -> Path:
    """``"auto"``: the shared trained cnn7 if present, else a quick ``tiny`` net trained here.

    The quick net (1 epoch on 6000 training images, about 20 s on one core) exists so that
    ``--quick`` studies run on a fresh machine; full runs should name a real checkpoint.
    """
    if ckpt != "auto":
        path = Path(ckpt)
        if not path.is_absolute():
            path = REPO / path
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} not found; train it with `bioconv train` or pass ckpt='auto'")
        return path
    if DEFAULT_CKPT.exists() and dataset == "mnist":
        return DEFAULT_CKPT
    return quick_checkpoint(dataset)


def quick_checkpoint(dataset: str = "mnist", n_train: int = 6000, epochs: int = 1, seed: int = 0) -> Path:
    """Train (once, cached) the zoo's ``tiny`` net briefly; for CI on a fresh machine."""
    path = cache_dir() / f"tiny-{dataset}-n{n_train}-e{epochs}-s{seed}.pt"
    if not path.exists():
        log.warning("no trained checkpoint at %s; training a quick 'tiny' net into %s", DEFAULT_CKPT, path)
        _train_quick(path, dataset, n_train, epochs, seed)
    return path


def _train_quick(path: Path, dataset: str, n_train: int, epochs: int, seed: int) -> None:
    import torch

    from bioconv.ann import train_and_save

    torch.set_num_threads(1)
    train_and_save("tiny", dataset, path, epochs=epochs, seed=seed, max_train=n_train, progress=False)


@lru_cache(maxsize=4)
def ann_graph(ckpt_path: str):
    """The unconverted ANN Graph of a checkpoint (BN folded; thresholds 1)."""
    from bioconv.ann import load_checkpoint
    from bioconv.from_torch import from_torch

    model, meta = load_checkpoint(ckpt_path)
    return from_torch(model, tuple(meta["input_shape"]))


# ----------------------------------------------------------------------------- conversion
def net_config(study: str, quick: bool, **overrides: Any) -> dict:
    """The default network-study config; ``overrides`` replace entries.

    Quick: 50 test images of 100 ms, 20 calibration images of 100 ms. Full: 300 test images of
    300 ms, 100 calibration images of 100 ms (2 shared cores; see figures/README.md).
    The input rate follows seed 000 §10 (γ₀ = 2η: 400 Hz input for a 200 Hz target), capped at 1000 Hz.
    """
    cfg = {
        "study": study, "dataset": "mnist", "ckpt": os.environ.get("BIOCONV_STUDY_CKPT", "auto"), "method": "mcr", "rate_hz": 200.0,
        "input_rate_hz": None, "neuron": "IF-zero", "synapse": "delta",
        "calib_n": 20 if quick else 100, "calib_duration_ms": 100.0, "norm_engine": "torch",
        "n_images": 50 if quick else 300, "duration_ms": 100.0 if quick else 300.0, "dt_ms": 1.0,
        "bin_ms": 1.0, "engine": "torch", "coding": "bernoulli", "seed": 0,
    }
    cfg.update(overrides)
    path = resolve_checkpoint(cfg["ckpt"], cfg["dataset"])  # "auto" → a concrete file, hashed into the config
    cfg["ckpt"] = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    cfg["ckpt_sha256"] = _sha256(path)
    if cfg["input_rate_hz"] is None:
        cfg["input_rate_hz"] = min(2.0 * cfg["rate_hz"], 1000.0 / cfg["dt_ms"])
    return cfg


@lru_cache(maxsize=8)
def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _calib(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    return images(cfg["dataset"], "train", cfg["calib_n"], seed=cfg["seed"])


def make_probe(cfg: dict, calib_x: np.ndarray, calib_y: np.ndarray):
    """The normalization probe (:mod:`bioconv.normalize.probes`) on the calibration images."""
    from brian2 import ms

    from bioconv.normalize.probes import Brian2Probe, TorchProbe
    from bioconv.simulation import SimConfig

    config = SimConfig(duration=cfg["calib_duration_ms"] * ms, dt=cfg["dt_ms"] * ms, coding=cfg["coding"],
                       seed=cfg["seed"] + 1, bin=cfg["calib_duration_ms"] * ms)
    if cfg["norm_engine"] == "torch":
        return TorchProbe(calib_x, calib_y, config)
    return Brian2Probe(calib_x, calib_y, config, device="runtime")


def converted_graph(cfg: dict):
    """checkpoint → from_torch → normalize(method, rate) → Graph, cached by the conversion keys."""
    from brian2 import Hz, ms

    from bioconv.graphio import load_graph, save_graph
    from bioconv.sweep import config_hash

    key = {k: cfg.get(k) for k in CONVERSION_KEYS}
    key["ckpt"] = str(resolve_checkpoint(cfg["ckpt"], cfg["dataset"]))
    if cfg["method"] in ("max", "robust"):  # no simulation involved
        key.pop("calib_duration_ms"), key.pop("norm_engine")
    path = cache_dir() / "graphs" / f"{cfg['method']}-{config_hash(key)}.bcv"
    if path.exists():
        return load_graph(path)
    import torch

    from bioconv.normalize import data_based, mcr
    from bioconv.normalize.stats import activation_stats

    torch.set_num_threads(int(os.environ.get("BIOCONV_TORCH_THREADS", "1")))
    ann = ann_graph(key["ckpt"])
    cx, cy = _calib(cfg)
    stats = activation_stats(ann, cx)
    neuron, synapse = make_models(cfg["neuron"], cfg["synapse"])
    common = {"target_rate": cfg["rate_hz"] * Hz, "input_rate": cfg["input_rate_hz"] * Hz, "neuron": neuron,
              "synapse": synapse, "dt": cfg["dt_ms"] * ms,
              "calibration": {"dataset": cfg["dataset"], "split": "train", "n": cfg["calib_n"], "seed": cfg["seed"]}}
    method = cfg["method"]
    if method == "max":
        graph = data_based.max_norm(ann, stats, **common)
    elif method == "robust":
        graph = data_based.robust_norm(ann, stats, percentile=99.9, **common)
    elif method == "mcr":
        graph = mcr.mcr_norm(ann, stats, make_probe(cfg, cx, cy), calib_images=cx, calib_labels=cy,
                             progress=False, **common)
    elif method == "spike":
        graph = _spike_norm(ann, stats, cfg, cx, cy, common)
    else:
        raise ValueError(f"unknown normalization method {method!r}; choose max, robust, spike or mcr")
    save_graph(graph, path)
    return graph


def _spike_norm(ann, stats, cfg, cx, cy, common):
    """Spike-Norm: thresholds from the largest per-step input on the calibration spikes (1000 Hz range)."""
    from bioconv.normalize.spike_norm import spike_norm

    kwargs = {k: v for k, v in common.items() if k != "target_rate"}
    return spike_norm(ann, stats, make_probe(cfg, cx, cy), progress=False, **kwargs)


# ----------------------------------------------------------------------------- simulation
def sim_config(cfg: dict, duration_ms: Optional[float] = None):
    """The :class:`~bioconv.simulation.SimConfig` of a study config (bins of ``bin_ms``, default dt)."""
    from brian2 import ms

    from bioconv.simulation import SimConfig

    dt = cfg.get("sim_dt_ms") or cfg.get("dt_ms", 1.0)
    return SimConfig(duration=(duration_ms or cfg["duration_ms"]) * ms, dt=dt * ms,
                     coding=cfg.get("coding", "bernoulli"), seed=cfg["seed"],
                     bin=cfg.get("bin_ms", dt) * ms)


def simulate(graph, cfg: dict, duration_ms: Optional[float] = None):
    """Simulate the config's test images (the first ``n_images``) with its engine."""
    import torch

    from bioconv.engines import simulate as engine_simulate

    torch.set_num_threads(int(os.environ.get("BIOCONV_TORCH_THREADS", "1")))
    x, y = images(cfg["dataset"], "test", cfg["n_images"])
    opts: dict[str, Any] = {}
    if cfg["engine"] == "brian2":
        opts = {"device": cfg.get("device", "runtime"), "target": cfg.get("target", "numpy")}
        if opts["device"] != "runtime":
            from bioconv.sweep import config_hash

            opts["build_dir"] = str(cache_dir() / "brian2_build" / config_hash(cfg))
    return engine_simulate(graph, x, y, sim_config(cfg, duration_ms), engine=cfg["engine"], **opts)


def fan_out(graph) -> dict[str, np.ndarray]:
    """Outgoing synapses per neuron for the input and every spiking layer (0 for the output)."""
    from bioconv import ir
    from bioconv.connectivity import layer_synapses

    sizes = {"input": int(np.prod(graph.input.shape))}
    out: dict[str, np.ndarray] = {}
    prev = "input"
    for layer in graph.layers:
        if isinstance(layer, ir.Flatten):
            continue
        conn = layer_synapses(layer)
        if not hasattr(conn, "i"):
            raise ValueError(f"layer {layer.name!r}: synaptic-operation count needs explicit synapses")
        out[prev] = np.bincount(np.asarray(conn.i), minlength=sizes[prev]).astype(np.int64)
        sizes[layer.name] = int(np.prod(layer.output_shape))
        prev = layer.name
    out[prev] = np.zeros(sizes[prev], dtype=np.int64)
    return out


def latency_ms(t_ms: np.ndarray, acc: np.ndarray, tol: float = 0.001) -> float:
    """Earliest time after which accuracy stays within ``tol`` of its final value."""
    ok = acc >= acc[-1] - tol
    bad = np.flatnonzero(~ok)
    first = 0 if bad.size == 0 else bad[-1] + 1
    return float(t_ms[first])


def summarize(result, graph, cfg: dict, ann_correct: Optional[np.ndarray] = None) -> pd.DataFrame:
    """Tidy table of one simulation: ``kind="layer"`` rows (image × layer, incl. the input) and
    ``kind="time"`` rows (accuracy per time bin), with config-level metrics broadcast."""
    from brian2 import second

    from bioconv.encoding import input_rates_hz, spike_probability

    fan = fan_out(graph)
    table = result.to_table()
    table["synops"] = 0.0
    for layer, counts in result.counts.items():
        table.loc[table.layer == layer, "synops"] = counts @ fan[layer]
    x, _ = images(cfg["dataset"], "test", cfg["n_images"])
    rates, _signs = input_rates_hz(x, graph.input)
    dt_s = float(result.config.dt / second)
    p = spike_probability(rates, dt_s, result.config.coding) if result.config.coding != "current" else 0 * rates
    n_steps = result.config.n_steps
    inp = pd.DataFrame({"image": np.arange(result.n_images), "label": result.labels, "layer": "input",
                        "n_neurons": rates.shape[1], "spikes": (p * n_steps).sum(axis=1),
                        "mean_rate_hz": rates.mean(axis=1), "max_rate_hz": rates.max(axis=1),
                        "synops": (p * n_steps) @ fan["input"]})
    pred = result.predictions()[:, -1]
    inp["prediction"] = pred
    inp["correct"] = pred == result.labels
    for col in ("engine", "duration_ms", "dt_ms", "coding"):
        inp[col] = table[col].iloc[0]
    table = pd.concat([inp[table.columns], table], ignore_index=True)
    table.insert(0, "kind", "layer")
    t_ms = result.bin_times_ms()
    acc = result.accuracy_vs_time()
    time_rows = pd.DataFrame({"kind": "time", "engine": result.engine, "layer": "output",
                              "image": -1, "t_ms": t_ms, "accuracy": acc})
    table = pd.concat([table, time_rows], ignore_index=True)
    net = table[(table.kind == "layer") & (table.layer != "input")]
    spikes_img = net.groupby("image").spikes.sum()
    duration_s = float(result.config.duration / second)
    table["snn_accuracy"] = float(acc[-1])
    table["latency_ms"] = latency_ms(t_ms, acc)
    table["spikes_per_image"] = float(spikes_img.mean())
    table["synops_per_image"] = float(table[table.kind == "layer"].groupby("image").synops.sum().mean())
    table["energy_alpha"] = float(spikes_img.mean())  # seed 001 eq. 14, E/α
    table["power_alpha_per_s"] = float(spikes_img.mean()) / duration_s  # P/α
    if ann_correct is not None:
        table["ann_accuracy"] = float(np.mean(ann_correct))
        table["loss_pct"] = 100.0 * (float(np.mean(ann_correct)) - float(acc[-1]))
    return table


def ann_correct(cfg: dict) -> np.ndarray:
    """Per-image correctness of the unconverted ANN (numpy forward) on the config's test images."""
    ann = ann_graph(str(resolve_checkpoint(cfg["ckpt"], cfg["dataset"])))
    x, y = images(cfg["dataset"], "test", cfg["n_images"])
    out = ann.forward(x)[ann.layers[-1].name]
    return np.argmax(out.reshape(len(x), -1), axis=1) == y


def run_network(cfg: dict) -> tuple[pd.DataFrame, Any, Any]:
    """Convert (cached), simulate and summarize one network config: (table, graph, result)."""
    graph = converted_graph(cfg)
    result = simulate(graph, cfg)
    table = summarize(result, graph, cfg, ann_correct(cfg))
    norm = graph.meta.get("normalization", {})
    layer_rows = table.kind == "layer"
    table.loc[layer_rows, "target_rate_hz"] = table.loc[layer_rows, "layer"].map(norm.get("target_rate_hz", {}))
    table.loc[layer_rows, "gain"] = table.loc[layer_rows, "layer"].map(norm.get("gain", {}))
    return table, graph, result


def normalized_activations(graph, cfg: dict) -> dict[str, np.ndarray]:
    """ANN activations a_n/λ_n (n_images, n_neurons) of the test images, per spiking layer.

    From the unconverted ANN graph of the config's checkpoint and the λ_n that the
    normalization used (``graph.meta["normalization"]["lambda"]``).
    """
    ann = ann_graph(str(resolve_checkpoint(cfg["ckpt"], cfg["dataset"])))
    x, _ = images(cfg["dataset"], "test", cfg["n_images"])
    acts = ann.forward(x, relu_last=True)
    lam = graph.meta["normalization"]["lambda"]
    return {name: acts[name].reshape(len(x), -1) / lam[name] for name in lam}


def response_table(graph, result, cfg: dict, bins: int = 20) -> pd.DataFrame:
    """Per layer: SNN rate vs normalized ANN activation, binned (``kind="curve"``), with the
    least-squares slope through the origin :math:`s = \sum r x / \sum x^2` (Hz per unit
    a/λ) and its ratio to the layer's target max rate (1 = no degeneration)."""
    acts = normalized_activations(graph, cfg)
    norm = graph.meta["normalization"]
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for depth, (name, a) in enumerate(acts.items(), start=1):
        if name not in result.counts:
            continue
        r = result.rates_hz(name).astype(float)
        x = np.clip(a, 0.0, None).ravel()
        r = r.ravel()
        slope = float((r * x).sum() / max((x * x).sum(), 1e-300))
        target = float(norm["target_rate_hz"][name])
        idx = np.clip(np.digitize(x, edges) - 1, 0, bins - 1)
        n = np.bincount(idx, minlength=bins)
        mean = np.bincount(idx, weights=r, minlength=bins) / np.maximum(n, 1)
        sq = np.bincount(idx, weights=r * r, minlength=bins) / np.maximum(n, 1)
        rows.append(pd.DataFrame({
            "kind": "curve", "layer": name, "depth": depth, "x": 0.5 * (edges[:-1] + edges[1:]),
            "n": n, "mean_rate_hz": np.where(n > 0, mean, np.nan),
            "sd_rate_hz": np.sqrt(np.maximum(sq - mean ** 2, 0.0)), "slope_hz": slope, "target_rate_hz": target,
            "rel_slope": slope / target, "layer_max_rate_hz": float(r.max()),
        }))
    return pd.concat(rows, ignore_index=True)


def rate_histograms(result, bins_hz: np.ndarray) -> pd.DataFrame:
    """Per layer: histogram of per-neuron, per-image firing rates (``kind="hist"``)."""
    rows = []
    for name in result.counts:
        r = result.rates_hz(name).ravel()
        counts, _ = np.histogram(r, bins=bins_hz)
        rows.append(pd.DataFrame({"kind": "hist", "layer": name, "rate_lo_hz": bins_hz[:-1], "rate_hi_hz": bins_hz[1:],
                                  "n": counts, "frac_silent": float(np.mean(r == 0))}))
    return pd.concat(rows, ignore_index=True)


def config_label(row) -> str:
    """Readable label ``method, neuron, synapse`` of a table row or config."""
    return f"{row['method']}, {row['neuron']}, {row['synapse']}"
