r"""Shared pieces of the network studies: checkpoint → converted Graph (cached), simulation, metrics.

A network study's config names everything that determines its result (dataset, ANN,
normalization method and target rate, neuron and synapse model, simulation settings,
engine, seed), so :func:`bioconv.sweep.config_hash` identifies it. Converted graphs are
cached as ``.bcv`` files by the hash of the conversion keys only, so many simulation
configs share one (expensive) normalization.

The metrics are in :mod:`studies.metrics`.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from studies.metrics import fan_out, latency_ms, rate_histograms, response_table, summarize  # noqa: F401  (re-exported)

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
                   "calib_n", "calib_duration_ms", "dt_ms", "norm_engine", "seed", "pools", "rho_from_slope")


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
        "bin_ms": 1.0, "engine": "torch", "coding": "bernoulli", "seed": 0, "pools": "fold",
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

    key = {k: cfg[k] for k in CONVERSION_KEYS if k in cfg}  # optional keys only when set (stable hashes)
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
    from bioconv.pool_folding import prepare_pools

    ann = prepare_pools(ann_graph(key["ckpt"]), cfg.get("pools", "fold"))
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
                             rho_from_slope=bool(cfg.get("rho_from_slope", False)), progress=False, **common)
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


def brian2_workers() -> int:
    """Standalone binaries run in parallel per simulation (``$BIOCONV_BRIAN2_WORKERS``, default 1).

    Results do not depend on it (every image has its own seeded input and starts from rest)."""
    return max(1, int(os.environ.get("BIOCONV_BRIAN2_WORKERS", "1")))


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
            opts["workers"] = brian2_workers()
            from bioconv.sweep import config_hash

            opts["build_dir"] = str(cache_dir() / "brian2_build" / config_hash(cfg))
    return engine_simulate(graph, x, y, sim_config(cfg, duration_ms), engine=cfg["engine"], **opts)


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
    x, _ = images(cfg["dataset"], "test", cfg["n_images"])
    table = summarize(result, graph, x, ann_correct(cfg))
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
    lam = graph.meta["normalization"]["lambda"]  # JSON from a cached graph: keys sorted, so use graph order
    return {l.name: acts[l.name].reshape(len(x), -1) / lam[l.name] for l in graph.spiking_layers if l.name in lam}


def config_label(row) -> str:
    """Readable label ``method, neuron, synapse`` of a table row or config."""
    return f"{row['method']}, {row['neuron']}, {row['synapse']}"


def layer_response(graph, result, cfg: dict, bins: int = 20) -> pd.DataFrame:
    """:func:`studies.metrics.response_table` for a config's test images and graph."""
    return response_table(normalized_activations(graph, cfg), result, graph.meta["normalization"], bins)
