r"""How :mod:`bioconv.engines.brian2_build` wires convolutions: explicit or procedural synapses.

``conv="explicit"``: every convolution is unrolled into a ``Synapses`` object with one
synapse per (input neuron, output neuron, kernel element) (:func:`bioconv.connectivity.layer_synapses`).

``conv="procedural"`` (the default of the standalone devices): a ``Conv2d`` layer's input
pathway is a weight-shared :mod:`bioconv.engines.convsyn` object named like the explicit
pathway (``<layer>_syn``, ``<layer>_syn_neg`` for negative input spikes, run parameter
``<layer>_syn.w``) that stores only the kernel :math:`C_\mathrm{out} C_\mathrm{in} k_h k_w`
and computes targets from the geometry. Memory then grows with kernels and neurons, not
synapses, and spikes reach each target in the same order as the explicit build (ascending
presynaptic neuron), so spike counts and float64 states are bit-identical.

Where the procedural path applies: ``Conv2d`` layers (any stride and padding, pools folded
into them or not) in ``cpp`` and ``cuda`` standalone. Dense layers, spiking average pools
and Brian2 runtime mode (numpy/cython: no template for it) keep explicit synapses; so does
any layer with several inputs added by other build code (it uses ``Synapses`` per input).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from bioconv import ir

ConvMode = Literal["procedural", "explicit"]
CONV_MODES: tuple[str, ...] = ("procedural", "explicit")


def check_conv_mode(conv: str) -> None:
    if conv not in CONV_MODES:
        raise ValueError(f"unknown convolution synapses {conv!r}; choose one of {CONV_MODES}")


def effective_conv_mode(conv: str, device: str) -> str:
    """``conv`` where the device supports it; Brian2 runtime mode always builds explicit synapses."""
    check_conv_mode(conv)
    return conv if device in ("cpp", "cuda") else "explicit"


def is_procedural(conv: str, layer: ir.Layer) -> bool:
    """Whether ``layer``'s input pathway is built procedurally under mode ``conv``."""
    return conv == "procedural" and isinstance(layer, ir.Conv2d)


def kernel_weights(layer: ir.Conv2d) -> np.ndarray:
    """The run parameter ``<layer>_syn.w`` of a procedural pathway: the flat kernel (torch order)."""
    return np.ascontiguousarray(layer.weight, dtype=np.float64).ravel().copy()


def synapse_equivalents(layer: ir.Conv2d) -> int:
    """Synapses the explicit build would create for ``layer`` (from shapes only)."""
    from bioconv.engines.convsyn import ConvGeometry

    return int(ConvGeometry.from_layer(layer).out_degree().sum())


def conv_pathway(pre_group, group, layer: ir.Conv2d, on_pre: str, weights, name: str):
    """The procedural pathway ``name`` from ``pre_group`` to ``group`` (needs a bioconv standalone device)."""
    from bioconv.engines.convsyn import ConvGeometry, make_conv_synapses

    geometry = ConvGeometry.from_layer(layer)
    w = np.zeros(geometry.kernel_size) if weights is None else weights
    return make_conv_synapses(pre_group, group, geometry, on_pre, np.broadcast_to(w, (geometry.kernel_size,)), name)


def preflight(graph: ir.Graph, conv: str, batch_steps: int, signed: bool, fraction: float = 0.8):
    """:func:`bioconv.memory.preflight` where procedural convolutions cost no per-synapse memory."""
    import dataclasses

    from bioconv import memory

    if conv == "explicit":
        return memory.preflight(graph, batch_steps=batch_steps, mode="build", signed=signed, fraction=fraction)
    est = memory.estimate(graph, batch_steps, "build", signed)
    layers = graph.spiking_layers
    shared = sum(synapse_equivalents(layer) for layer in layers if is_procedural(conv, layer))
    if signed and layers and is_procedural(conv, layers[0]):
        shared += synapse_equivalents(layers[0])
    est = dataclasses.replace(est, n_synapses=est.n_synapses - shared)
    limit = int(fraction * memory.available_bytes())
    if est.bytes > limit:
        raise MemoryError(
            f"network needs about {est.gib:.1f} GiB ({est.n_synapses:,} explicit synapses of dense layers and pools x "
            f"{est.bytes_per_synapse:.0f} B + {est.n_neurons:,} neurons + input {est.input_bytes / memory.GIB:.2f} GiB; "
            f"convolutions are weight-shared) but the limit is {limit / memory.GIB:.1f} GiB ({fraction:.0%} of "
            "available memory). Options: smaller dense layers, fewer images per binary run (batch_size), or a GPU."
        )
    return est
