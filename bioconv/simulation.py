"""What every engine takes (:class:`SimConfig`) and gives back (:class:`SimResult`).

Both engines (``bioconv.engines.brian2`` and ``bioconv.engines.torch``) share these types,
so their results compare field by field and turn into the same tidy table.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional

import numpy as np
import pandas as pd
from brian2 import Quantity, ms, second

from bioconv.atomic import atomic_path
from bioconv.neurons import _check_time, time_field

Coding = Literal["bernoulli", "poisson", "current"]
Readout = Literal["count", "count-voltage", "voltage", "integrate"]
CODINGS: tuple[str, ...] = ("bernoulli", "poisson", "current")
READOUTS: tuple[str, ...] = ("count", "count-voltage", "voltage", "integrate")
#: readouts that need the output layer's readout variable at the end of each bin
POTENTIAL_READOUTS: tuple[str, ...] = ("count-voltage", "voltage", "integrate")


@dataclass(frozen=True)
class SimConfig:
    """How to simulate: duration per image, time step, input coding, readout and seed.

    ``bin`` is the width of the time bins in which output counts (and, for the voltage and
    integrating readouts, output membrane potentials) are sampled, giving accuracy vs time.
    ``readout``: ``"count"`` (most output spikes), ``"count-voltage"`` (most output spikes,
    ties broken by the highest potential of the tied neurons, :func:`bioconv.stats.count_voltage_predictions`),
    ``"voltage"`` (highest potential of the
    spiking output neurons, which still fire and reset) or ``"integrate"`` (the output layer
    is a non-spiking, non-leaky integrator of its synaptic input and bias,
    :func:`bioconv.models.readout_dynamics`; its potential is the class score).
    ``record_times`` names the layers whose spike times are recorded (counts are always
    recorded for every layer).
    """

    duration: Quantity = time_field(100)
    dt: Quantity = time_field(1)
    coding: Coding = "bernoulli"
    readout: Readout = "count"
    seed: int = 0
    bin: Quantity = time_field(1)
    record_times: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("duration", "dt", "bin"):
            _check_time("SimConfig", name, getattr(self, name))
        if self.coding not in CODINGS:
            raise ValueError(f"SimConfig.coding must be one of {CODINGS}, got {self.coding!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"SimConfig.readout must be one of {READOUTS}, got {self.readout!r}")
        for name, value in (("duration", self.duration), ("bin", self.bin)):
            ratio = float(value / self.dt)
            if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
                raise ValueError(f"SimConfig.{name} ({value}) must be a whole multiple of dt ({self.dt})")
        if self.n_steps % self.steps_per_bin:
            raise ValueError(f"SimConfig.duration ({self.duration}) must be a whole number of bins ({self.bin})")
        object.__setattr__(self, "record_times", tuple(self.record_times))

    @property
    def n_steps(self) -> int:
        return int(round(float(self.duration / self.dt)))

    @property
    def steps_per_bin(self) -> int:
        return int(round(float(self.bin / self.dt)))

    @property
    def n_bins(self) -> int:
        return self.n_steps // self.steps_per_bin

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: times in ms."""
        out = asdict(self)
        for name in ("duration", "dt", "bin"):
            out[f"{name}_ms"] = float(out.pop(name) / ms)
        out["record_times"] = list(self.record_times)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SimConfig":
        data = dict(data)
        for name in ("duration", "dt", "bin"):
            if f"{name}_ms" in data:
                data[name] = data.pop(f"{name}_ms") * ms
        data["record_times"] = tuple(data.get("record_times", ()))
        return cls(**data)


@dataclass(frozen=True, eq=False)
class SimResult:
    """Spike counts of one simulated batch of images.

    Attributes
    ----------
    counts : dict layer name -> int array (n_images, n_neurons)
        Total spikes of every neuron per image (neurons in torch flatten order).
    output_counts : int array (n_images, n_bins, n_classes)
        Cumulative output spike counts at the end of each time bin.
    output_v : float array (n_images, n_bins, n_classes) or None
        Output readout variable (membrane potential) at the end of each bin (``count-voltage``,
        ``voltage`` and ``integrate`` readouts).
    labels : int array (n_images,)
    spike_times : dict layer name -> (image, neuron, t_ms) arrays, for ``config.record_times``.
    layer_bin_counts : dict layer name -> int array (n_images, n_bins)
        Spikes of the whole layer in each time bin (not cumulative); their sum over bins is
        ``counts[layer].sum(axis=1)``. Gives spikes per image up to any time (:meth:`spikes_vs_time`).
    """

    engine: str
    config: SimConfig
    counts: Mapping[str, np.ndarray]
    output_counts: np.ndarray
    labels: np.ndarray
    output_v: Optional[np.ndarray] = None
    spike_times: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    layer_bin_counts: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.labels.shape[0])

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(self.counts)

    def predictions(self, readout: Optional[Readout] = None) -> np.ndarray:
        """Predicted class per image and time bin, shape (n_images, n_bins).

        Count readout: argmax of cumulative output spikes (lowest index wins ties);
        an image whose output layer has not spiked yet is predicted ``-1`` (wrong).
        Count-voltage readout: most spikes, ties broken by the potential
        (:func:`bioconv.stats.count_voltage_predictions`; ``-1`` if still tied).
        Voltage readout: argmax of the output membrane potential of the (spiking, resetting)
        output neurons. Integrating readout: argmax of the potential of non-spiking output
        neurons that integrate their input without reset (their count is always 0).
        """
        readout = readout or self.config.readout
        if readout in POTENTIAL_READOUTS:
            if self.output_v is None:
                raise ValueError(f"this result has no membrane potentials; simulate with readout in "
                                 f"{POTENTIAL_READOUTS}")
            if readout == "count-voltage":
                from bioconv.stats import count_voltage_predictions

                return count_voltage_predictions(self.output_counts, self.output_v)
            return np.argmax(self.output_v, axis=-1)
        pred = np.argmax(self.output_counts, axis=-1)
        return np.where(self.output_counts.max(axis=-1) > 0, pred, -1)

    def accuracy_vs_time(self, readout: Optional[Readout] = None) -> np.ndarray:
        """Fraction correct at the end of each time bin, shape (n_bins,)."""
        return (self.predictions(readout) == self.labels[:, None]).mean(axis=0)

    @property
    def accuracy(self) -> float:
        return float(self.accuracy_vs_time()[-1])

    def bin_times_ms(self) -> np.ndarray:
        """End time of each bin in ms."""
        return float(self.config.bin / ms) * np.arange(1, self.config.n_bins + 1)

    def rates_hz(self, layer: str) -> np.ndarray:
        """Firing rate of every neuron of ``layer`` per image, in Hz."""
        return self.counts[layer] / float(self.config.duration / second)

    def spikes_per_image(self) -> np.ndarray:
        return sum(c.sum(axis=1) for c in self.counts.values())

    def spikes_vs_time(self) -> np.ndarray:
        """Spikes per image (all layers) up to the end of each bin, shape (n_images, n_bins)."""
        if not self.layer_bin_counts:
            raise ValueError("this result has no per-bin layer counts (layer_bin_counts)")
        return np.cumsum(sum(self.layer_bin_counts.values()), axis=1)

    def to_table(self) -> pd.DataFrame:
        """Tidy table: one row per image × layer (rates in Hz, times in ms)."""
        pred = self.predictions()[:, -1]
        rows = []
        for layer, counts in self.counts.items():
            rates = self.rates_hz(layer)
            rows.append(
                pd.DataFrame(
                    {
                        "image": np.arange(self.n_images),
                        "label": self.labels,
                        "prediction": pred,
                        "correct": pred == self.labels,
                        "layer": layer,
                        "n_neurons": counts.shape[1],
                        "spikes": counts.sum(axis=1),
                        "mean_rate_hz": rates.mean(axis=1),
                        "max_rate_hz": rates.max(axis=1),
                    }
                )
            )
        table = pd.concat(rows, ignore_index=True)
        table.insert(0, "engine", self.engine)
        table["duration_ms"] = float(self.config.duration / ms)
        table["dt_ms"] = float(self.config.dt / ms)
        table["coding"] = self.config.coding
        return table

    def accuracy_table(self) -> pd.DataFrame:
        """Accuracy vs time: one row per bin (time in ms)."""
        return pd.DataFrame({"engine": self.engine, "t_ms": self.bin_times_ms(), "accuracy": self.accuracy_vs_time()})


def concat_results(results: list[SimResult]) -> SimResult:
    """Join results of consecutive batches (same engine and config) into one."""
    if not results:
        raise ValueError("no results to concatenate")
    first = results[0]
    cat = lambda arrs: np.concatenate(arrs, axis=0)  # noqa: E731
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + float(v)
    spike_times = {}
    offset = 0
    for r in results:
        for layer, (img, nrn, t) in r.spike_times.items():
            prev = spike_times.get(layer, (np.empty(0, int), np.empty(0, int), np.empty(0)))
            spike_times[layer] = (np.r_[prev[0], img + offset], np.r_[prev[1], nrn], np.r_[prev[2], t])
        offset += r.n_images
    return SimResult(
        engine=first.engine,
        config=first.config,
        counts={k: cat([r.counts[k] for r in results]) for k in first.counts},
        output_counts=cat([r.output_counts for r in results]),
        labels=cat([r.labels for r in results]),
        output_v=None if first.output_v is None else cat([r.output_v for r in results]),
        spike_times=spike_times,
        timings=timings,
        meta=dict(first.meta),
        layer_bin_counts={k: cat([r.layer_bin_counts[k] for r in results]) for k in first.layer_bin_counts},
    )


def write_table_atomic(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a parquet (or .csv) table atomically: temp file in the same folder, then rename."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
    return path
