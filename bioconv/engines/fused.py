r"""Fused event-driven CPU kernel of the torch engine (``propagation="fused"``), compiled with numba.

One compiled loop runs a whole image through every layer and every time step, with the
state of all layers of that image kept in cache; images of a batch run in parallel threads
(plain threads: the kernel releases the GIL). The per-model code (state update, threshold, reset, readout) is
generated from the models layer (:mod:`bioconv.models`, i.e. Brian2's own generated
statements) by :mod:`bioconv.engines.fused_codegen` and cached on disk; the rest
(:mod:`bioconv.engines.fused_static`) is model-independent. Per step :math:`k` and layer
:math:`l` (Brian2's schedule, :data:`bioconv.models.SCHEDULES`; with ``"reset-first"`` the resets of
step 3 run before step 2):

1. groups + thresholds: the layer's :class:`~bioconv.models.Dynamics` statements on
   scalar locals (the same operations in the same order as Brian2), the refractory clamp,
   the threshold and ``lastspike``;
2. synapses: for each projection onto the layer, in order, every spike of its source
   population in step :math:`k` (input: +1 spikes, then the ``<input>_neg`` pathway's −1
   spikes) adds its outgoing on_pre weights to the
   layer's target state, presynaptic neurons in increasing index and each neuron's
   synapses in Brian2's order (CSR rows of explicit synapses, or the shared conv kernel), so float64 results are Brian2's bit for bit; a refractory
   neuron's frozen target keeps its value. Max-pool layers are relays fed by the gate of
   :class:`bioconv.connectivity.GatedMaxPool` (a spike of a window member whose count
   before it equals the window's running maximum passes, ``v += 1``);
3. resets, spike counts (torch order), per-bin counts, spike times of
   ``config.record_times`` layers, and the readout variable at the end of each bin.

With ``coding="current"`` there are no input spikes: layer 1's bias is
:math:`I_\mathrm{bias} + \tau\sum_i w_i r_i` per image, as in the event path.
Compiled without ``fastmath`` (no reassociation, no FMA contraction). In float32 the
constants are rounded to float32 first, so results may differ from the event path in the
last bit. Layers with several inputs (residual :class:`~bioconv.ir.Add`, layers reading a
:class:`~bioconv.ir.Concat`) receive one projection per source, delivered in
:func:`bioconv.projections.projections` order (see :mod:`bioconv.engines.fused_network`).

Layout: hidden populations fed only by shared-kernel convolutions keep their state channel-last,
(position, channel), so that the targets of one presynaptic spike in one kernel row (consecutive
output columns × C_out) are one contiguous run, added in one vectorized loop (the row-segment
tables of :func:`bioconv.engines.fused_network.conv_segments`);
their spike lists are put back into torch order (a counting sort by channel) before the
next layer reads them, because the order of additions into each target must stay Brian2's.
The result arrays of a whole run are allocated once (:class:`Outputs`), the work arrays once
per thread; the generated step functions are called once per layer and step, never per spike
(every call of a compiled function pays numba's atomic reference counting of its array
arguments, shared between the threads).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from bioconv import encoding, ir
from bioconv.simulation import SimConfig

#: layer types the fused kernel runs (everything else is named by :func:`unsupported`)
LAYERS = (ir.Conv2d, ir.Dense, ir.AvgPool2d, ir.MaxPool2d, ir.Add)


def unsupported(graph: ir.Graph, config: SimConfig) -> Optional[str]:
    """Why the fused kernel cannot run ``graph`` with ``config``, or None if it can."""
    layers = graph.spiking_layers
    if graph.synapse is None or any(graph.neuron_for(layer.name) is None for layer in layers):
        return "a graph without neuron or synapse models"
    for k, layer in enumerate(layers):
        if not isinstance(layer, LAYERS):
            return f"layer {layer.name!r}: {type(layer).__name__}"
        if isinstance(layer, ir.MaxPool2d) and graph.sources(layer.name)[0] == graph.input.name:
            return f"layer {layer.name!r}: a max-pool directly on the input"
    if config.coding == "current":
        from bioconv.projections import projections

        if not isinstance(layers[0], (ir.Conv2d, ir.Dense, ir.AvgPool2d)):
            return "coding='current' into a first layer without weights"
        readers = [l.name for l in layers[1:]
                   if any(p.source == graph.input.name for p in projections(graph, l.name, skip_synapses=True))]
        if readers:
            return f"coding='current' with the input also feeding {readers}"
    return None


def _dynamics(graph: ir.Graph, layer, config: SimConfig, dt_s: float):
    from bioconv.engines.torch_plan import _layer_dynamics

    return _layer_dynamics(graph, layer, graph.neuron_for(layer.name), config, dt_s)


def _second():
    from brian2 import second

    return second


def _in_threads(run, args: tuple, n_chunks: int) -> None:
    """``run(*args, chunk, n_chunks)`` for every chunk at once, each in its own thread: the kernel
    releases the GIL, and chunk k takes the images k, k + n_chunks, ... of the batch. Plain
    threads, not numba's OpenMP layer, which would reset torch's thread count (torch reads it from
    the same OpenMP runtime) and add the parallel compiler's time to every kernel's compile."""
    if n_chunks <= 1:
        run(*args, 0, 1)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n_chunks) as pool:
        for done in [pool.submit(run, *args, k, n_chunks) for k in range(n_chunks)]:
            done.result()  # re-raises a chunk's error


def _spike_trains_threaded(rates, signs, dt_s: float, config: SimConfig, first_index: int, threads: int):
    """:func:`bioconv.encoding.spike_trains` on ``threads`` slices of the batch at once (numpy's
    generators release the GIL). Each image has its own seeded generator, so the trains are
    the same as in one call."""
    from concurrent.futures import ThreadPoolExecutor

    n = len(rates)
    parts = max(1, min(int(threads), n))
    if parts == 1:
        return encoding.spike_trains(rates, signs, dt_s, config.n_steps, config.coding, config.seed, first_index)
    edges = np.linspace(0, n, parts + 1).astype(int)
    with ThreadPoolExecutor(parts) as pool:
        chunks = pool.map(lambda k: encoding.spike_trains(rates[edges[k]:edges[k + 1]], signs[edges[k]:edges[k + 1]],
                                                          dt_s, config.n_steps, config.coding, config.seed,
                                                          first_index + int(edges[k])), range(parts))
        return np.concatenate(list(chunks))


class Outputs:
    """Result arrays of a whole :func:`simulate_batch` sweep, allocated once; batches fill row slices.

    ``counts`` (N, n_total) holds every layer's spike counts in torch order; ``per_layer``
    gives views of it, so nothing is copied or concatenated after the run. ``spike_times``
    collects the recorded layers' (image, neuron, t_ms) per batch.
    """

    def __init__(self, net: "FusedNetwork", n_img: int, n_bins: int, record_v: bool,
                 record_times: tuple[str, ...] = ()) -> None:
        n_out = net.sizes[-1]
        self.counts = np.zeros((n_img, int(net.off[-1])), dtype=np.int64)
        self.out_bins = np.zeros((n_img, n_bins, n_out), dtype=np.int64)
        self.bin_counts = np.zeros((n_img, len(net.sizes), n_bins), dtype=np.int64)
        self.record_v = bool(record_v)
        self.out_v = np.zeros((n_img, n_bins, n_out) if record_v else (1, 1, 1), dtype=net.dtype)
        self.record_times = tuple(name for name in net.names if name in record_times)
        self.times: dict[str, list] = {name: [] for name in self.record_times}
        self.net = net

    def per_layer(self) -> dict[str, np.ndarray]:
        return {name: self.counts[:, self.net.off[k]:self.net.off[k + 1]] for k, name in enumerate(self.net.names)}

    def layer_bins(self) -> dict[str, np.ndarray]:
        return {name: self.bin_counts[:, k, :] for k, name in enumerate(self.net.names)}

    def output_v(self) -> np.ndarray | None:
        return self.out_v.astype(np.float64) if self.record_v else None

    def spike_times(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = {}
        for name, parts in self.times.items():
            out[name] = tuple(np.concatenate([p[k] for p in parts]) if parts else np.zeros(0) for k in range(3))
        return out


def simulate_batch(net: FusedNetwork, graph: ir.Graph, images: np.ndarray, config: SimConfig, first_index: int,
                   threads: int, out: Outputs, row: int) -> None:
    """One batch through the fused kernel, written into rows ``row:row + len(images)`` of ``out``."""
    from brian2 import second

    n = len(images)
    threads = max(1, int(threads))
    rates, signs = encoding.input_rates_hz(images, graph.input)
    current = config.coding == "current"
    if current:
        first = graph.spiking_layers[0]
        tau_s = float(graph.neuron_for(first.name).tau / second)
        i_bias = net.bias[net.off[0]:net.off[1]].astype(np.float64)
        extra = encoding.input_current(rates, signs, first) * tau_s  # (B, n0) in torch order
        if net.perm0 is not None:
            extra = extra[:, net.perm0]
        bias0 = (i_bias[None, :] + extra).astype(net.dtype)  # I_bias + tau*I, as the event path
        inp = np.zeros((n, config.n_steps, 0), dtype=np.int8)
    else:
        bias0 = np.zeros((1, 1), dtype=net.dtype)
        inp = _spike_trains_threaded(rates, signs, float(config.dt / second), config, first_index, threads)
    rows = slice(row, row + n)
    rec_slot = np.full(len(net.names), -1, dtype=np.int64)
    for r, name in enumerate(out.record_times):
        rec_slot[net.names.index(name)] = r
    n_rec = max(1, len(out.record_times))
    # spike-time buffers: per recorded layer r, n images × cap[r] entries (1/16 spike per neuron
    # and step to start with; a batch that overflows is rerun with room for every spike)
    cap = np.ones(n_rec, dtype=np.int64)
    for r, name in enumerate(out.record_times):
        cap[r] = max(1024, net.sizes[net.names.index(name)] * config.n_steps // 16)
    while True:
        start = np.concatenate([[0], np.cumsum(n * cap)])
        base = start[None, :-1] + np.arange(n, dtype=np.int64)[:, None] * cap[None, :]  # (n, n_rec)
        rec_t = np.empty(int(start[-1]), dtype=np.int32)
        rec_i = np.empty(int(start[-1]), dtype=np.int32)
        rec_n = np.zeros((n, n_rec), dtype=np.int64)
        for a in (out.counts[rows], out.out_bins[rows], out.bin_counts[rows]):
            a[...] = 0
        args = (inp, net.off, net.model, net.nslot, net.tgt, net.cond, net.refs, net.rf, net.gated, net.pgeo,
                net.coef, net.bias, bias0, current, net.theta, net.hw, net.uniform, net.cl, net.lshape,
                net.pptr, net.psrc, net.pconv, net.pcl, net.geo,
                net.wconv, net.ctab_pos, net.ctab_k, net.seg, net.rowptr, net.row_off, net.cols, net.weights,
                config.steps_per_bin, out.counts[rows], out.out_bins[rows], out.bin_counts[rows],
                out.out_v[rows] if out.record_v else out.out_v, out.record_v, rec_slot, rec_t, rec_i, rec_n, base, cap)
        _in_threads(net.module.run, args, min(n, threads))
        if not out.record_times or np.all(rec_n.max(axis=0) <= cap):
            break
        cap = np.maximum(cap, rec_n.max(axis=0))  # rerun the batch with room for every spike
    from brian2 import ms

    dt_ms = float(config.dt / ms)
    for r, name in enumerate(out.record_times):
        img = np.repeat(np.arange(row, row + n), rec_n[:, r])
        idx = np.concatenate([np.arange(base[b, r], base[b, r] + rec_n[b, r]) for b in range(n)])
        out.times[name].append((img, rec_i[idx].astype(np.int64), rec_t[idx] * dt_ms))


from bioconv.engines.fused_network import FusedNetwork  # noqa: E402  (re-exported; imports this module lazily)
