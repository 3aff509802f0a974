r"""Shared pieces of the network studies: checkpoint → converted Graph (cached), simulation, metrics.

A network study's config names everything that determines its result (dataset, ANN,
normalization method and target rate, neuron and synapse model, simulation settings,
engine, seeds), so :func:`bioconv.sweep.config_hash` identifies it. The conversion is
:func:`bioconv.pipeline.convert` on the :class:`~bioconv.pipeline_spec.ConversionSpec` that
:func:`conversion_spec` builds from the config (the same code as ``bioconv convert`` and the
demo); converted graphs are cached as ``.bcv`` files (with their source ANN) by the hash of
the spec and the checkpoint, so many simulation configs share one normalization.

Runtime settings that do not change results (cache folder, Brian2 worker processes, torch
threads) are config keys starting with ``_`` (:data:`bioconv.sweep.RUNTIME_PREFIX`): they
are not hashed and not stored as columns. Nothing is read from environment variables.

The metrics are in :mod:`studies.metrics`.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from studies.metrics import (correct_at, fan_out, latency_ms, rate_histograms, response_table,  # noqa: F401
                             summarize)  # (re-exported)

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = REPO / "runs" / "ann" / "cnn7-mnist.pt"
#: neuron labels used in every study → (bioconv.neurons kind, parameters; *_ms in milliseconds)
NEURONS = {
    "IF-zero": ("if", {"reset": "zero"}),
    "IF-sub": ("if", {"reset": "subtract"}),
    "LIF": ("lif", {"tau_m_ms": 20.0, "reset": "zero"}),
    "SRM": ("srm", {"tau_s_ms": 1.0, "tau_r_ms": 1.0}),
    "LIF-ref2": ("lif", {"tau_m_ms": 20.0, "reset": "zero", "refractory_ms": 2.0}),
    "LIF-sub-ref2": ("lif", {"tau_m_ms": 20.0, "reset": "subtract", "refractory_ms": 2.0}),
    "SRM-5": ("srm", {"tau_s_ms": 5.0, "tau_r_ms": 5.0}),
    **{f"SRM-5-r{t:g}": ("srm", {"tau_s_ms": 5.0, "tau_r_ms": t}) for t in (2.0, 10.0, 20.0, 50.0)},
}
#: study neuron label → ConversionSpec fields (SRM: the PSP kernel τ_s is the spec's tau_syn)
SPEC_FIELDS = {"tau_m_ms": "tau_m", "refractory_ms": "refractory", "tau_s_ms": "tau_syn", "tau_r_ms": "tau_r"}
DEFAULT_CACHE = REPO / "results" / "studies" / "_cache"


def cache_dir(cfg: Optional[dict] = None) -> Path:
    """Where converted graphs and quick checkpoints live: the config's ``_cache_dir`` or ``results/studies/_cache``."""
    path = Path((cfg or {}).get("_cache_dir") or DEFAULT_CACHE)
    path.mkdir(parents=True, exist_ok=True)
    return path


def torch_threads(cfg: dict) -> int:
    """Torch CPU threads of a simulation (config key ``_torch_threads``, default 1)."""
    return max(1, int(cfg.get("_torch_threads", 1)))


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


def test_images(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """The config's test images and labels: ``n_images`` from test image ``image_offset`` (default 0) on.

    An offset gives images disjoint from the first ones, on which a setting chosen there can be checked."""
    offset = int(cfg.get("image_offset", 0))
    x, y = images(cfg["dataset"], "test", offset + cfg["n_images"])
    if len(x) < offset + cfg["n_images"]:
        raise ValueError(f"the {cfg['dataset']} test set has {len(x)} images, fewer than image_offset "
                         f"{offset} + n_images {cfg['n_images']}")
    return x[offset:], y[offset:]


def resolve_checkpoint(ckpt: str, dataset: str = "mnist", cache: Optional[Path] = None) -> Path:
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
    return quick_checkpoint(dataset, cache=cache)


def quick_checkpoint(dataset: str = "mnist", n_train: int = 6000, epochs: int = 1, seed: int = 0,
                     cache: Optional[Path] = None) -> Path:
    """Train (once, cached) the zoo's ``tiny`` net briefly; for CI on a fresh machine."""
    path = (cache or cache_dir()) / f"tiny-{dataset}-n{n_train}-e{epochs}-s{seed}.pt"
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
    """The source ANN Graph of a checkpoint (BN folded; thresholds 1; pools as trained)."""
    from bioconv.pipeline import source_ann

    return source_ann(ckpt_path, "spiking")[0]


# ----------------------------------------------------------------------------- conversion
def net_config(study: str, quick: bool, **overrides: Any) -> dict:
    """The default network-study config; ``overrides`` replace entries.

    Quick: 50 test images of 100 ms, 20 calibration images of 100 ms. Full: the first 1000 test
    images of 300 ms (accuracy read at T = ``duration_ms``, fixed in advance), 100 calibration
    images of 100 ms. ``seed`` is the input-spike seed of the test run (grids repeat every
    config for :func:`seeds`); the conversion uses ``calib_seed`` (0), so all seeds of a
    config share one converted network.
    The input rate follows the MCR-Norm paper (γ₀ = 2η: 400 Hz input for a 200 Hz target), capped at 1000 Hz.
    ``ckpt`` stays as given (default ``"auto"``); ``bioconv study`` resolves it to a concrete
    file and adds its SHA-256 (:func:`set_checkpoint`) before hashing the config.
    """
    cfg = {
        "study": study, "dataset": "mnist", "ckpt": "auto", "method": "mcr", "rate_hz": 200.0,
        "input_rate_hz": None, "neuron": "IF-zero", "synapse": "delta",
        "calib_n": 20 if quick else 100, "calib_duration_ms": 100.0, "norm_engine": "torch",
        "n_images": 50 if quick else 1000, "duration_ms": 100.0 if quick else 300.0, "dt_ms": 1.0,
        "bin_ms": 1.0, "engine": "torch", "coding": "bernoulli", "seed": 0, "calib_seed": 0, "pools": "fold",
    }
    cfg.update(overrides)
    if cfg["input_rate_hz"] is None:
        cfg["input_rate_hz"] = min(2.0 * cfg["rate_hz"], 1000.0 / cfg["dt_ms"])
    return cfg


#: input-spike seeds of the full runs (every network study repeats each config for each)
SEEDS_FULL: tuple[int, ...] = (0, 1, 2)


def seeds(quick: bool) -> tuple[int, ...]:
    """Input-spike seeds of a grid: one with ``--quick``, :data:`SEEDS_FULL` otherwise."""
    return (0,) if quick else SEEDS_FULL


def with_seeds(configs: list[dict], quick: bool) -> list[dict]:
    """Each config once per input-spike seed (the conversion, seeded by ``calib_seed``, is shared)."""
    return [{**cfg, "seed": s} for cfg in configs for s in seeds(quick)]


def accuracy_summary(table: pd.DataFrame, by: list[str], n_boot: int = 1000) -> pd.DataFrame:
    """Per group: SNN and source-ANN accuracy at T with 95 % intervals, pooled over input seeds.

    From the per-image rows (``kind == "layer"``, ``layer == "input"``). One seed: Wilson;
    several: bootstrap over images and seeds (:func:`bioconv.stats.accuracy_row`). ``mcnemar_p``:
    exact McNemar test of SNN vs source ANN on the (image, seed) pairs. Ties count as wrong.
    """
    from bioconv.stats import accuracy_row, mcnemar

    rows = table[(table.kind == "layer") & (table.layer == "input")]
    out = []
    for keys, g in rows.groupby(by, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        wide = g.pivot_table(index="seed", columns="image", values="correct", aggfunc="first")
        row = dict(zip(by, keys))
        row.update(accuracy_row(wide.to_numpy(dtype=bool), n_boot=n_boot, prefix="snn_"))
        if "ann_correct" in g:
            ann = g[g.seed == g.seed.min()].sort_values("image").ann_correct.to_numpy(dtype=bool)
            row.update({k: v for k, v in accuracy_row(ann, prefix="ann_").items() if k != "ann_n_seeds"})
            row["mcnemar_p"] = mcnemar(np.tile(ann, wide.shape[0]), wide.to_numpy(dtype=bool).ravel()).p_exact
        row["tie_fraction"] = float(g.groupby("seed").tie_fraction.first().mean()) if "tie_fraction" in g else np.nan
        row["T_ms"] = float(g.duration_ms.iloc[0])
        out.append(row)
    return pd.DataFrame(out)


def network_label(table: pd.DataFrame) -> str:
    """The network of a study table for figure captions: checkpoint name and pool handling."""
    ckpts = sorted({Path(str(c)).stem for c in table["ckpt"].dropna()}) if "ckpt" in table else []
    pools = sorted(set(table["pools"].dropna())) if "pools" in table else []
    name = ", ".join(ckpts) or "network"
    return f"{name} (pools {'/'.join(pools)})" if pools else name


def paired_test(table: pd.DataFrame, by: list[str], column: str, reference, others) -> pd.DataFrame:
    """McNemar (exact and mid-p) of ``column == reference`` against each of ``others`` on the same (image, seed) pairs."""
    from bioconv.stats import mcnemar

    rows = table[(table.kind == "layer") & (table.layer == "input")]
    out = []
    groups = rows.groupby(by, sort=False) if by else [((), rows)]
    for keys, g in groups:
        keys = keys if isinstance(keys, tuple) else (keys,)
        ref = g[g[column] == reference].set_index(["seed", "image"]).correct
        for other in others:
            alt = g[g[column] == other].set_index(["seed", "image"]).correct
            common_idx = ref.index.intersection(alt.index)
            if len(common_idx) == 0:
                continue
            res = mcnemar(ref.loc[common_idx].to_numpy(bool), alt.loc[common_idx].to_numpy(bool))
            out.append({**dict(zip(by, keys)), "reference": reference, "other": other, "n_pairs": len(common_idx),
                        f"{reference}_only_right": res.b, "other_only_right": res.c, "p_exact": res.p_exact,
                        "p_mid": res.p_mid})
    return pd.DataFrame(out)


def set_checkpoint(cfg: dict, ckpt: str) -> dict:
    """Point a config at a checkpoint (``"auto"`` resolves to a concrete file); its SHA-256 is hashed too."""
    path = resolve_checkpoint(str(ckpt), cfg.get("dataset", "mnist"), cache_dir(cfg))
    cfg["ckpt"] = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
    cfg["ckpt_sha256"] = _sha256(path)
    return cfg


@lru_cache(maxsize=8)
def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def conversion_spec(cfg: dict):
    """The :class:`~bioconv.pipeline_spec.ConversionSpec` of a network-study config.

    Calibration: ``calib_n`` training images drawn with seed ``calib_seed`` (default: the
    config's ``seed``), all of them simulated for ``calib_duration_ms`` by ``norm_engine``
    (Brian2: runtime device), input spikes seeded by the same seed.
    """
    from bioconv.pipeline_spec import ConversionSpec

    if cfg["neuron"] not in NEURONS:
        raise ValueError(f"unknown neuron label {cfg['neuron']!r}; choose one of {sorted(NEURONS)}")
    kind, params = NEURONS[cfg["neuron"]]
    fields = {"neuron": kind, **{SPEC_FIELDS.get(k, k): (f"{v}ms" if k.endswith("_ms") else v)
                                 for k, v in params.items()}}
    if "tau_syn_ms" in cfg:  # the alpha synapse's τ (not for SRM, whose kernel τ_s is its label's)
        fields["tau_syn"] = f"{cfg['tau_syn_ms']}ms"
    options = {} if cfg.get("rho_from_slope") is None else {"rho_from_slope": bool(cfg["rho_from_slope"])}
    options.update(cfg.get("method_options") or {})
    calib_seed = int(cfg.get("calib_seed", cfg["seed"]))
    return ConversionSpec.from_dict({
        **fields, "method": cfg["method"], "target_rate": f"{cfg['rate_hz']}Hz",
        "input_rate": f"{cfg['input_rate_hz']}Hz", "synapse": cfg["synapse"], "dt": f"{cfg['dt_ms']}ms",
        "duration": f"{cfg['calib_duration_ms']}ms", "coding": cfg.get("coding", "bernoulli"),
        "pools": cfg.get("pools", "fold"), "schedule": cfg.get("schedule", "brian2"),
        "calib_n": int(cfg["calib_n"]), "calib_sim": int(cfg["calib_n"]),
        "calib_seed": calib_seed, "calib_engine": cfg["norm_engine"], "calib_device": "runtime",
        "options": options})


def _calib(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    spec = conversion_spec(cfg)
    return images(cfg["dataset"], "train", spec.calib_n, seed=spec.calib_seed)


def make_probe(cfg: dict, calib_x: np.ndarray, calib_y: np.ndarray):
    """The normalization probe (:mod:`bioconv.normalize.probes`) on the calibration images."""
    from bioconv.normalize.probes import make_probe as probe

    spec = conversion_spec(cfg)
    opts = {"device": spec.calib_device} if spec.calib_engine == "brian2" else {}
    return probe(spec.calib_engine, calib_x, calib_y, spec.calibration_config(), **opts)


def _graph_path(cfg: dict) -> Path:
    from bioconv.sweep import config_hash

    spec = conversion_spec(cfg)
    ckpt = resolve_checkpoint(cfg["ckpt"], cfg["dataset"], cache_dir(cfg))
    key = {"spec": spec.to_dict(), "ckpt_sha256": _sha256(ckpt), "dataset": cfg["dataset"]}
    return cache_dir(cfg) / "graphs" / f"{cfg['method']}-{config_hash(key)}.bcv"


def converted_graph(cfg: dict):
    """:func:`bioconv.pipeline.convert` of the config (cached with its source ANN)."""
    import torch

    from bioconv.graphio import load_graph
    from bioconv.pipeline import conversion, save_conversion

    path = _graph_path(cfg)
    if path.exists():
        return load_graph(path)
    torch.set_num_threads(torch_threads(cfg))
    result = conversion(conversion_spec(cfg), resolve_checkpoint(cfg["ckpt"], cfg["dataset"], cache_dir(cfg)))
    save_conversion(result.snn, result.ann, path)
    return result.snn


# ----------------------------------------------------------------------------- simulation
def sim_config(cfg: dict, duration_ms: Optional[float] = None):
    """The :class:`~bioconv.simulation.SimConfig` of a study config (bins of ``bin_ms``, default dt)."""
    from brian2 import ms

    from bioconv.simulation import SimConfig

    dt = cfg.get("sim_dt_ms") or cfg.get("dt_ms", 1.0)
    return SimConfig(duration=(duration_ms or cfg["duration_ms"]) * ms, dt=dt * ms,
                     coding=cfg.get("coding", "bernoulli"), seed=cfg["seed"],
                     bin=cfg.get("bin_ms", dt) * ms, readout=cfg.get("readout", "count"))


def brian2_workers(cfg: dict) -> int:
    """Standalone binaries run in parallel per simulation (config key ``_brian2_workers``, default 1).

    Results do not depend on it (every image has its own seeded input and starts from rest)."""
    return max(1, int(cfg.get("_brian2_workers", 1)))


def simulate(graph, cfg: dict, duration_ms: Optional[float] = None):
    """Simulate the config's test images (the first ``n_images``) with its engine."""
    import torch

    from bioconv.engines import simulate as engine_simulate

    torch.set_num_threads(torch_threads(cfg))
    x, y = test_images(cfg)
    opts: dict[str, Any] = {}
    if cfg["engine"] == "brian2":
        opts = {"device": cfg.get("device", "runtime"), "target": cfg.get("target", "numpy")}
        if opts["device"] != "runtime":
            opts["workers"] = brian2_workers(cfg)
            from bioconv.sweep import config_hash

            opts["build_dir"] = str(cache_dir(cfg) / "brian2_build" / config_hash(cfg))
    return engine_simulate(graph, x, y, sim_config(cfg, duration_ms), engine=cfg["engine"], **opts)


def ann_correct(cfg: dict) -> np.ndarray:
    """Per-image correctness of the unconverted ANN (numpy forward) on the config's test images."""
    ann = ann_graph(str(resolve_checkpoint(cfg["ckpt"], cfg["dataset"], cache_dir(cfg))))
    x, y = test_images(cfg)
    out = ann.forward(x)[ann.layers[-1].name]
    return np.argmax(out.reshape(len(x), -1), axis=1) == y


def run_network(cfg: dict) -> tuple[pd.DataFrame, Any, Any]:
    """Convert (cached), simulate and summarize one network config: (table, graph, result)."""
    graph = converted_graph(cfg)
    result = simulate(graph, cfg)
    x, _ = test_images(cfg)
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
    ann = ann_graph(str(resolve_checkpoint(cfg["ckpt"], cfg["dataset"], cache_dir(cfg))))
    x, _ = test_images(cfg)
    acts = ann.forward(x, relu_last=True)
    lam = graph.meta["normalization"]["lambda"]  # JSON from a cached graph: keys sorted, so use graph order
    return {l.name: acts[l.name].reshape(len(x), -1) / lam[l.name] for l in graph.spiking_layers if l.name in lam}


def config_label(row) -> str:
    """Readable label ``method, neuron, synapse`` of a table row or config."""
    return f"{row['method']}, {row['neuron']}, {row['synapse']}"


def layer_response(graph, result, cfg: dict, bins: int = 20, active_only: bool = False) -> pd.DataFrame:
    """:func:`studies.metrics.response_table` for a config's test images and graph."""
    return response_table(normalized_activations(graph, cfg), result, graph.meta["normalization"], bins, active_only)
