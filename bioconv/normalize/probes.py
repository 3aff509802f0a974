"""Probe factories: measure a layer's firing rates with an engine, for MCR-Norm and Spike-Norm.

A probe is a callable ``probe(graph, layer) -> rates`` (float64, (n_images, n_neurons),
Hz) that simulates ``graph`` on a fixed calibration batch with a fixed
:class:`~bioconv.simulation.SimConfig` (so the same seed gives the same input spike
trains on every call) and returns the rates of spiking layer ``layer``. The probes also
offer ``all_rates(graph)`` (every spiking layer) and ``spikes(graph, layer)`` (the spike
raster of a layer, or of the input when ``layer`` is the input's name) for Spike-Norm.

- :class:`TorchProbe` runs :func:`bioconv.engines.torch.simulate` on the graph truncated
  after ``layer`` (feed-forward: later layers cannot change it), so early layers are cheap.
- :class:`Brian2Probe` builds one :class:`bioconv.engines.brian2.Simulator` for the full
  graph on the first call and reruns that compiled network with new weights/biases
  (``Simulator.run(images, labels, graph=new_graph)``): no recompilation during a scan.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Optional

import numpy as np
from brian2 import ms, second

from bioconv import ir
from bioconv.normalize.scaling import truncate
from bioconv.simulation import SimConfig, SimResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpikeRaster:
    """Spikes of one layer on the calibration batch: ``image``, ``neuron``, ``step`` (and ``sign``)."""

    n_images: int
    n_steps: int
    n_neurons: int
    image: np.ndarray
    neuron: np.ndarray
    step: np.ndarray
    sign: Optional[np.ndarray] = None

    def dense(self, k: int) -> np.ndarray:
        """Spike trains of image ``k`` as a float (n_steps, n_neurons) array (signed if ``sign``)."""
        out = np.zeros((self.n_steps, self.n_neurons))
        sel = self.image == k
        np.add.at(out, (self.step[sel], self.neuron[sel]), 1.0 if self.sign is None else self.sign[sel])
        return out


class _Probe:
    engine = "none"

    def __init__(self, images: np.ndarray, labels: Optional[np.ndarray], config: SimConfig) -> None:
        self.images = np.asarray(images)
        if self.images.ndim < 2 or len(self.images) == 0:
            raise ValueError(f"calibration images must be a non-empty batch (N, C, H, W), got {self.images.shape}")
        self.labels = np.zeros(len(self.images), np.int64) if labels is None else np.asarray(labels)
        if config.coding == "current":
            log.info("probe with current input coding: no input spikes, the first layer gets Σ w·rate")
        self.config = config
        self.calls = 0
        self.seconds = 0.0

    @property
    def duration_s(self) -> float:
        return float(self.config.duration / second)

    def _simulate(self, graph: ir.Graph, layer: str, config: SimConfig) -> SimResult:
        raise NotImplementedError

    def _run(self, graph: ir.Graph, layer: str, config: Optional[SimConfig] = None) -> SimResult:
        if graph.neuron is None or graph.synapse is None:
            raise ValueError("the probed graph needs neuron and synapse models (normalize attaches them)")
        start = time.perf_counter()
        result = self._simulate(graph, layer, config or self.config)
        self.calls += 1
        self.seconds += time.perf_counter() - start
        return result

    def __call__(self, graph: ir.Graph, layer: str) -> np.ndarray:
        return np.asarray(self._run(graph, layer).rates_hz(layer), dtype=np.float64)

    def all_rates(self, graph: ir.Graph) -> dict[str, np.ndarray]:
        """Rates (Hz) of every spiking layer from one run of the full graph."""
        result = self._run(graph, graph.layers[-1].name)
        return {name: np.asarray(result.rates_hz(name), dtype=np.float64) for name in result.counts}

    def spikes(self, graph: ir.Graph, layer: str) -> SpikeRaster:
        """The spike raster of ``layer``, or of the input spike trains if ``layer == graph.input.name``."""
        cfg = self.config
        if layer == graph.input.name:
            from bioconv.encoding import input_rates_hz, spike_trains

            rates, signs = input_rates_hz(self.images, graph.input)
            trains = spike_trains(rates, signs, float(cfg.dt / second), cfg.n_steps, cfg.coding, cfg.seed)
            img, step, nrn = np.nonzero(trains)
            return SpikeRaster(len(self.images), cfg.n_steps, rates.shape[1], img, nrn, step, trains[img, step, nrn])
        result = self._run(graph, layer, replace(cfg, record_times=(layer,)))
        img, nrn, t_ms = result.spike_times[layer]
        step = np.rint(np.asarray(t_ms) / float(cfg.dt / ms)).astype(np.int64)
        n = int(np.prod(graph.layer(layer).output_shape))
        return SpikeRaster(len(self.images), cfg.n_steps, n, np.asarray(img), np.asarray(nrn), step)


class TorchProbe(_Probe):
    """Probe with the torch engine (``bioconv.engines.torch.simulate``), on the graph truncated after the layer."""

    engine = "torch"

    def __init__(self, images, labels=None, config: SimConfig = SimConfig(), device: str = "cpu",
                 dtype: str = "float64", batch_size: int = 100) -> None:
        super().__init__(images, labels, config)
        self.device, self.dtype, self.batch_size = device, dtype, batch_size

    def _simulate(self, graph, layer, config):
        from bioconv.engines.torch import simulate

        return simulate(truncate(graph, layer), self.images, self.labels, config,
                        device=self.device, dtype=self.dtype, batch_size=self.batch_size, progress=False)


class Brian2Probe(_Probe):
    """Probe with one reusable Brian2 ``Simulator`` (compiled once, rerun with new parameters)."""

    engine = "brian2"

    def __init__(self, images, labels=None, config: SimConfig = SimConfig(), device: str = "cpp",
                 workers: int = 1, build_dir: Optional[str] = None, target: str = "numpy",
                 batch_size: Optional[int] = None) -> None:
        super().__init__(images, labels, config)
        self.device, self.workers, self.build_dir = device, workers, build_dir
        self.target, self.batch_size = target, batch_size
        self._sims: dict[tuple, Any] = {}

    def _simulate(self, graph, layer, config):
        from bioconv.engines.brian2 import Simulator

        key = tuple(config.record_times)
        if key not in self._sims:
            self._sims[key] = Simulator(
                graph, config, device=self.device, workers=self.workers, target=self.target,
                batch_size=self.batch_size,
                build_dir=None if self.build_dir is None else f"{self.build_dir}/probe{len(self._sims)}",
            )
        return self._sims[key].run(self.images, self.labels, graph=graph)


def make_probe(engine: str, images: np.ndarray, labels: Optional[np.ndarray], config: SimConfig, **options: Any) -> _Probe:
    """``TorchProbe`` or ``Brian2Probe`` by engine name."""
    if engine == "torch":
        return TorchProbe(images, labels, config, **options)
    if engine == "brian2":
        return Brian2Probe(images, labels, config, **options)
    raise ValueError(f"unknown probe engine {engine!r}; choose 'torch' or 'brian2'")
