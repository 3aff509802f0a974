r"""The one conversion pipeline: checkpoint + :class:`~bioconv.pipeline_spec.ConversionSpec` → Graph.

Used by ``bioconv convert``, the demo (``studies/demo.py``) and every study
(``studies/common.py``), so a network converted by any of them is the same network:

1. load the checkpoint, :func:`bioconv.from_torch.from_torch` (batch norm folded into the
   preceding layer), then fold or keep the average pools (``spec.pools``): the *source ANN*;
2. draw ``spec.calib_n`` calibration images from the training split with seed
   ``spec.calib_seed`` and measure the ANN activation statistics (λ per layer);
3. normalize with the method of :data:`METHODS` (a dispatch table: name → normalizer
   function, default target and input rates, option defaults). Probe-based methods
   simulate the first ``spec.calib_sim`` calibration images for ``spec.duration`` at
   ``spec.dt`` with input spikes seeded by ``spec.calib_seed``;
4. optionally move the scales into the thresholds (``spec.form = "thresholds"``).

Adding a normalization method is one entry in :data:`METHODS`: a function taking a
:class:`NormInputs` and returning the normalized Graph.

The source ANN travels with the converted network: :func:`save_conversion` writes the SNN
as a regular ``.bcv`` file (readable by :func:`bioconv.graphio.load_graph`) and adds the
source ANN's layers under the prefix ``source_ann/`` in the same archive, and
:func:`load_source_ann` reads them back without torch. Conversion loss is always measured
against this ANN, never against a forward pass of the normalized graph (MCR-Norm scales
biases differently from weights, so the normalized graph's ANN is not the trained network).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np
from brian2 import Hz, Quantity, second

from bioconv import ir
from bioconv.pipeline_spec import ConversionSpec

log = logging.getLogger(__name__)

SOURCE_PREFIX = "source_ann/"


@dataclass(frozen=True)
class NormInputs:
    """Everything a normalizer may use; built by :func:`convert`."""

    graph: ir.Graph
    stats: Any
    spec: ConversionSpec
    target_rate: Quantity
    input_rate: Quantity
    options: Mapping[str, Any]
    calibration: Mapping[str, Any]
    probe: Any = None
    calib_images: Optional[np.ndarray] = None
    calib_labels: Optional[np.ndarray] = None
    progress: bool = False

    def common(self) -> dict[str, Any]:
        """Keyword arguments every normalize function takes."""
        return {"neuron": self.spec.neuron_model(), "synapse": self.spec.synapse_model(), "dt": self.spec.dt,
                "calibration": dict(self.calibration)}


@dataclass(frozen=True)
class NormMethod:
    """One entry of :data:`METHODS`.

    ``target_rate_hz`` / ``input_rate_hz`` of ``None`` mean ``min(1000 Hz, 1/dt)``.
    ``options`` maps every option the method accepts to its default.
    """

    normalize: Callable[[NormInputs], ir.Graph]
    target_rate_hz: Optional[float]
    input_rate_hz: Optional[float]
    uses_probe: bool
    description: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _max(n: NormInputs) -> ir.Graph:
    from bioconv.normalize import data_based_norm

    return data_based_norm(n.graph, n.stats, percentile=None, target_rate=n.target_rate, input_rate=n.input_rate,
                           **n.common())


def _robust(n: NormInputs) -> ir.Graph:
    from bioconv.normalize import data_based_norm

    return data_based_norm(n.graph, n.stats, percentile=float(n.options["percentile"]), target_rate=n.target_rate,
                           input_rate=n.input_rate, **n.common())


def _mcr(n: NormInputs) -> ir.Graph:
    from bioconv.normalize import mcr_norm

    o = n.options
    eta = None if o["eta"] is None else tuple(float(x) for x in o["eta"])
    return mcr_norm(n.graph, n.stats, n.probe, target_rate=n.target_rate, input_rate=n.input_rate,
                    tolerance=float(o["tolerance"]), statistic=o["rate_stat"],
                    rate_percentile=float(o["rate_percentile"]), rho_from_slope=bool(o["rho_from_slope"]),
                    slopes=o["slopes"], eta_factors=eta, calib_images=n.calib_images, calib_labels=n.calib_labels,
                    progress=n.progress, **n.common())


def _mcr_tf(n: NormInputs) -> ir.Graph:
    from bioconv.normalize.transfer import TransferOptions, transfer_norm

    o = n.options
    opts = TransferOptions(offset=o["offset"], iterations=int(o["iterations"]), bins=int(o["bins"]),
                           tolerance=float(o["tolerance"]), offset_sign=o["offset_sign"],
                           rho_from_slope=bool(o["rho_from_slope"]))
    return transfer_norm(n.graph, n.stats, n.probe, n.calib_images, target_rate=n.target_rate,
                         input_rate=n.input_rate, options=opts, progress=n.progress, **n.common())


def _lif_rate(n: NormInputs) -> ir.Graph:
    from bioconv.normalize.lif_rate import lif_rate_norm

    return lif_rate_norm(n.graph, n.stats, target_rate=n.target_rate, input_rate=n.input_rate,
                         percentile=float(n.options["percentile"]), **n.common())


def _spike(n: NormInputs) -> ir.Graph:
    from bioconv.normalize import spike_norm

    return spike_norm(n.graph, n.stats, n.probe, input_rate=n.input_rate, progress=n.progress, **n.common())


#: normalization methods: name → normalizer, default rates (Hz), options with defaults
METHODS: dict[str, NormMethod] = {
    "mcr": NormMethod(_mcr, 200.0, 400.0, True, "MCR-Norm (the MCR-Norm paper, see REFERENCES.md): per-layer gains scanned so that every "
                      "layer's max rate hits the target",
                      {"tolerance": 0.02, "rate_stat": "max", "rate_percentile": 99.9, "rho_from_slope": True,
                       "slopes": "layer", "eta": None}),
    "mcr-tf": NormMethod(_mcr_tf, 200.0, 400.0, True, "MCR-TF: MCR-Norm's max-rate scan plus an offset current per "
                         "layer fitted against the measured transfer function, at the simulation dt",
                         {"tolerance": 0.02, "offset": "layer", "offset_sign": "positive", "iterations": 10, "bins": 20,
                          "rho_from_slope": True}),
    "max": NormMethod(_max, None, None, False, "max-norm (Diehl et al. 2015): lambda = max activation"),
    "robust": NormMethod(_robust, None, None, False, "robust norm (Rueckauer et al. 2017): lambda = a percentile "
                         "of the activations", {"percentile": 99.9}),
    "spike": NormMethod(_spike, None, None, True, "Spike-Norm (Sengupta et al. 2019) with biases: thresholds from "
                        "the largest per-step input"),
    "lif-rate": NormMethod(_lif_rate, 200.0, 200.0, False, "LIF rate curve (Hunsberger & Eliasmith 2015): a network "
                           "trained with SoftLIF activations maps onto the same LIF without fitting; the target rate "
                           "is the output layer's at the percentile of the calibration logits",
                           {"percentile": 99.9}),
}


def method(name: str) -> NormMethod:
    """The :data:`METHODS` entry; unknown names raise ValueError naming the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown normalization method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def method_options(spec: ConversionSpec) -> dict[str, Any]:
    """The method's options with the spec's values; unknown option names raise ValueError."""
    m = method(spec.method)
    unknown = sorted(set(spec.options) - set(m.options))
    if unknown:
        known = ", ".join(m.options) or "none"
        raise ValueError(f"unknown option(s) {unknown} for method {spec.method!r}; its options: {known}")
    return {**m.options, **spec.options}


def rates(spec: ConversionSpec) -> tuple[Quantity, Quantity]:
    """(target rate, input rate) of a spec: its own, else the method's default, else min(1000 Hz, 1/dt)."""
    m = method(spec.method)
    ceiling = min(1000.0, 1.0 / float(spec.dt / second))
    target = spec.target_rate if spec.target_rate is not None else (m.target_rate_hz or ceiling) * Hz
    inp = spec.input_rate if spec.input_rate is not None else (m.input_rate_hz or ceiling) * Hz
    for name, value in (("target_rate", target), ("input_rate", inp)):
        if float(value * spec.dt) > 1 + 1e-12:
            raise ValueError(f"{name} {value} exceeds 1/dt = {1 / spec.dt}; lower it or the dt")
    return target, inp


# ----------------------------------------------------------------------------- conversion
class Conversion(NamedTuple):
    """The result of :func:`conversion`: the SNN, its source ANN and timing/probe counters."""

    snn: ir.Graph
    ann: ir.Graph
    seconds: float
    probe_calls: int


def file_sha256(path: str | os.PathLike) -> str:
    """First 16 hex digits of a file's SHA-256 (identifies a checkpoint in metadata and caches)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def source_ann(ckpt: str | os.PathLike, pools: str = "fold", model: Optional[str] = None,
               dataset: Optional[str] = None, data_dir: Optional[str] = None) -> tuple[ir.Graph, dict[str, Any]]:
    """(source ANN graph, checkpoint metadata): from_torch (BN folded) + pool handling.

    ``ckpt`` is a ``bioconv train`` checkpoint, or with ``model="MODULE:FACTORY"`` the state_dict
    of a user's own model (:func:`bioconv.user_model.load_user_model`; needs ``dataset``).
    The import checks the model on inputs in the data's range (:func:`bioconv.from_torch.data_range`).
    """
    from bioconv.ann import load_checkpoint
    from bioconv.from_torch import data_range, from_torch
    from bioconv.pool_folding import prepare_pools

    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise FileNotFoundError(f"no checkpoint at {ckpt}; train one with `bioconv train`")
    if model is not None:
        from bioconv.user_model import load_user_model

        if not dataset:
            raise ValueError("a user model (MODULE:FACTORY) needs its dataset (mnist, cifar10 or digits)")
        net, meta = load_user_model(model, ckpt, dataset, data_dir)
    else:
        net, meta = load_checkpoint(ckpt)
    graph = from_torch(net, tuple(meta["input_shape"]),
                       meta={"checkpoint": str(ckpt), "arch": meta.get("arch"), "dataset": meta.get("dataset")},
                       input_range=data_range(meta.get("preprocessing", {})))
    return prepare_pools(graph, pools), meta


def conversion(spec: ConversionSpec, ckpt: str | os.PathLike, data_dir: Optional[str] = None,
               progress: bool = False, model: Optional[str] = None, dataset: Optional[str] = None) -> Conversion:
    """Convert the checkpoint ``ckpt`` as ``spec`` says; see the module docstring for the steps.

    ``model``/``dataset``: a user's own model (``MODULE:FACTORY``) whose state_dict is ``ckpt``."""
    from bioconv.data import load_dataset, subset
    from bioconv.normalize import activation_stats
    from bioconv.normalize.probes import make_probe
    from bioconv.normalize.thresholds import threshold_form

    t0 = time.perf_counter()
    m = method(spec.method)
    options = method_options(spec)
    target, inp = rates(spec)
    if not m.uses_probe and spec.neuron in ("lif", "srm") and spec.method != "lif-rate":
        log.warning("method %r sets each layer's scale from ANN activations alone, assuming a rate proportional "
                    "to the drive; the %s neuron's rate is not (rheobase, leak), so deep layers may fall silent "
                    "(cnn7: 100 %% SNN error for the SRM under max and robust norm). Use method 'mcr-tf', which "
                    "measures the %s's response.", spec.method, spec.neuron.upper(), spec.neuron.upper())
    ann, meta = source_ann(ckpt, spec.pools, model=model, dataset=dataset, data_dir=data_dir)
    ann = ann.with_models(schedule=spec.schedule)  # the calibration runs use the spec's schedule
    curved = [l.name for l in ann.layers if getattr(l, "rate_curve", None) is not None]
    if curved and spec.method != "lif-rate":
        raise ValueError(f"{ckpt} was trained with the LIF rate curve (SoftLIF, layers {curved}); method "
                         f"{spec.method!r} assumes ReLU activations. Convert it with method 'lif-rate'")
    calib = subset(load_dataset(meta["dataset"], "train", data_dir), spec.calib_n, seed=spec.calib_seed)
    percentiles = sorted({99.0, 99.9, 99.99, float(options.get("percentile", 99.9))})
    stats = activation_stats(ann, calib.images, percentiles=percentiles)
    calibration: dict[str, Any] = {"dataset": meta["dataset"], "split": "train", "n": len(calib),
                                   "seed": spec.calib_seed, "checkpoint": str(ckpt)}
    probe, sim = None, None
    if m.uses_probe:
        sim = calib.take(slice(0, min(spec.calib_sim, len(calib))))
        popts = {"device": spec.calib_device} if spec.calib_engine == "brian2" else {}
        probe = make_probe(spec.calib_engine, sim.images, sim.labels, spec.calibration_config(), **popts)
        calibration.update(n_simulated=len(sim), engine=spec.calib_engine, sim=spec.calibration_config().to_dict())
        log.info("scanning %d layers on %d calibration images with the %s engine", len(ann.spiking_layers),
                 len(sim), spec.calib_engine)
    inputs = NormInputs(graph=ann, stats=stats, spec=spec, target_rate=target, input_rate=inp, options=options,
                        calibration=calibration, probe=probe,
                        calib_images=None if sim is None else sim.images,
                        calib_labels=None if sim is None else sim.labels, progress=progress)
    snn = m.normalize(inputs)
    if spec.form == "thresholds":
        snn = threshold_form(snn)
    snn = snn.with_models(checkpoint=str(ckpt), checkpoint_sha256=file_sha256(ckpt), arch=meta.get("arch"),
                          dataset=meta["dataset"], conversion=spec.to_dict(),
                          source_ann={"test_accuracy": meta.get("test_accuracy")})
    return Conversion(snn, ann, time.perf_counter() - t0, int(getattr(probe, "calls", 0) or 0))


def convert(spec: ConversionSpec, ckpt: str | os.PathLike, data_dir: Optional[str] = None,
            progress: bool = False, model: Optional[str] = None, dataset: Optional[str] = None) -> ir.Graph:
    """The converted (normalized) spiking Graph of ``ckpt`` under ``spec``."""
    return conversion(spec, ckpt, data_dir, progress, model, dataset).snn


# ----------------------------------------------------------------------------- files
def save_conversion(snn: ir.Graph, ann: ir.Graph, path: str | os.PathLike) -> Path:
    """Write the SNN as a ``.bcv`` file with the source ANN inside (prefix ``source_ann/``), atomically."""
    from bioconv.atomic import atomic_path
    from bioconv.graphio import graph_to_json

    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    doc = graph_to_json(snn, arrays)
    ann_arrays: dict[str, np.ndarray] = {}
    ann_doc = graph_to_json(ann, ann_arrays)
    payload = {"graph.json": _json_bytes(doc), SOURCE_PREFIX + "graph.json": _json_bytes(ann_doc), **arrays,
               **{SOURCE_PREFIX + k: v for k, v in ann_arrays.items()}}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **payload)
    return path


def load_source_ann(path: str | os.PathLike) -> Optional[ir.Graph]:
    """The source ANN stored by :func:`save_conversion`, or None for files without one (no torch needed)."""
    import tempfile

    from bioconv.graphio import load_graph

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no graph file at {path}; create one with `bioconv convert`")
    with np.load(path, allow_pickle=False) as data:
        if SOURCE_PREFIX + "graph.json" not in data.files:
            return None
        inner = {k[len(SOURCE_PREFIX):]: data[k] for k in data.files if k.startswith(SOURCE_PREFIX)}
    with tempfile.TemporaryDirectory() as tmp:  # reuse the one .bcv reader (format checks included)
        sub = Path(tmp) / "source_ann.bcv"
        with open(sub, "wb") as fh:
            np.savez(fh, **inner)
        return load_graph(sub)


def _json_bytes(doc: Mapping[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(doc, sort_keys=True, allow_nan=False).encode("utf-8"), dtype=np.uint8)


def ann_predictions(ann: ir.Graph, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Class predictions of an (unnormalized) ANN graph, numpy forward in batches."""
    out = []
    last = ann.layers[-1].name
    for start in range(0, len(images), batch_size):
        act = ann.forward(images[start:start + batch_size])[last]
        out.append(np.argmax(act.reshape(len(act), -1), axis=1))
    return np.concatenate(out) if out else np.empty(0, np.int64)
