"""Simulation engines. Both take a Graph, a batch of images and a :class:`~bioconv.simulation.SimConfig`
and return a :class:`~bioconv.simulation.SimResult`:

- ``brian2``: the simulator of record (runtime numpy/cython, cpp_standalone, cuda_standalone);
- ``torch``: a batched clock-driven mirror of the same equations for scans and sweeps.

Both draw input spikes from :func:`bioconv.encoding.spike_trains` with the config's seed, so
for the same seed they see identical input spike trains.
"""

from __future__ import annotations

import importlib
from typing import Any

ENGINES = {"brian2": "bioconv.engines.brian2", "torch": "bioconv.engines.torch"}


def get_engine(name: str) -> Any:
    """The engine module for ``name`` (``brian2`` or ``torch``)."""
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}")
    return importlib.import_module(ENGINES[name])


def simulate(graph, images, labels, config, engine: str = "brian2", **options: Any):
    """Run ``images`` through ``graph`` with the named engine; see each engine's ``simulate``."""
    return get_engine(engine).simulate(graph, images, labels, config, **options)
