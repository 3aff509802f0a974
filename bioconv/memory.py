r"""Memory preflight for Brian2 networks: estimate before building, refuse what cannot fit.

Explicit Brian2 synapses cost, per synapse (measured on cpp_standalone):
int32 pre and post index (8 B), float64 weight (8 B), the per-synapse delay/queue
bookkeeping and the pre/post lookup vectors built at startup (~36 B): about 52 B in the
running binary and about 70 B while Python builds the project in the same process (the
i/j/w arrays and their copies in the static-array files). Neurons cost a few hundred bytes
each for all state variables and monitors, and the input TimedArray holds
``batch × n_steps × n_in`` float64 values.

.. math::
    \mathrm{bytes} \approx n_\mathrm{syn} \cdot b_\mathrm{syn} + n_\mathrm{neurons} \cdot 200
    + 8 \cdot B \cdot n_\mathrm{steps} \cdot n_\mathrm{in}

The limit is a fraction (default 0.8) of ``MemAvailable`` from ``/proc/meminfo``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Mapping, Optional

import numpy as np

from bioconv import ir

log = logging.getLogger(__name__)

Mode = Literal["build", "run"]
#: bytes per synapse while Python builds the project ("build") and when only the binary runs ("run")
BYTES_PER_SYNAPSE: Mapping[str, float] = {"build": 70.0, "run": 52.0}
BYTES_PER_NEURON = 200.0
GIB = 1024**3


def count_synapses(graph: ir.Graph) -> dict[str, int]:
    """Synapses per spiking layer, from shapes only (uses :mod:`bioconv.connectivity`)."""
    from bioconv.connectivity import count_synapses as _count

    return dict(_count(graph))


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated memory of one Brian2 network; ``bytes`` is the total."""

    n_synapses: int
    n_neurons: int
    input_bytes: int
    bytes_per_synapse: float
    mode: Mode

    @property
    def bytes(self) -> int:
        return int(self.n_synapses * self.bytes_per_synapse + self.n_neurons * BYTES_PER_NEURON + self.input_bytes)

    @property
    def gib(self) -> float:
        return self.bytes / GIB


def estimate(graph: ir.Graph, batch_steps: int = 0, mode: Mode = "build", signed: bool = False) -> MemoryEstimate:
    """Estimate the memory of ``graph`` as a Brian2 network.

    Parameters
    ----------
    graph : Graph
    batch_steps : int
        Time steps held in the input TimedArray (images per binary run × steps per image).
    mode : "build" or "run"
        Python builds and runs in one process, or only the compiled binary runs.
    signed : bool
        Signed input spikes double the synapses of the first layer.
    """
    if mode not in BYTES_PER_SYNAPSE:
        raise ValueError(f"mode must be one of {tuple(BYTES_PER_SYNAPSE)}, got {mode!r}")
    counts = count_synapses(graph)
    n_syn = int(sum(counts.values()))
    if signed:
        n_syn += counts[graph.spiking_layers[0].name]
    n_in = int(np.prod(graph.input.shape))
    n_neurons = int(sum(np.prod(layer.output_shape) for layer in graph.spiking_layers)) + n_in * (2 if signed else 1)
    return MemoryEstimate(n_syn, n_neurons, 8 * batch_steps * n_in, BYTES_PER_SYNAPSE[mode], mode)


def available_bytes() -> int:
    """``MemAvailable`` from ``/proc/meminfo`` (falls back to physical pages × page size)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def preflight(
    graph: ir.Graph,
    batch_steps: int = 0,
    mode: Mode = "build",
    signed: bool = False,
    limit_bytes: Optional[int] = None,
    fraction: float = 0.8,
) -> MemoryEstimate:
    """Raise ``MemoryError`` with the estimate, the limit and the options if ``graph`` will not fit.

    ``limit_bytes`` defaults to ``fraction`` of the available memory.
    """
    est = estimate(graph, batch_steps, mode, signed)
    limit = int(fraction * available_bytes()) if limit_bytes is None else int(limit_bytes)
    log.info("memory estimate %.2f GiB for %d synapses (limit %.2f GiB)", est.gib, est.n_synapses, limit / GIB)
    if est.bytes > limit:
        raise MemoryError(
            f"network needs about {est.gib:.1f} GiB ({est.n_synapses:,} synapses x "
            f"{est.bytes_per_synapse:.0f} B + {est.n_neurons:,} neurons + input {est.input_bytes / GIB:.2f} GiB) "
            f"but the limit is {limit / GIB:.1f} GiB ({fraction:.0%} of available memory). Options: "
            "(1) a smaller network (fewer channels, or stride/pooling earlier); "
            "(2) a GPU with enough memory (device='cuda'); "
            "(3) build-then-run mode: generate and compile the cpp project in one process, then run the "
            "binary alone (about 52 B per synapse instead of 70 B); "
            "(4) fewer images per binary run (batch_size) to shrink the input array."
        )
    return est
