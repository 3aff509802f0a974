r"""Fused event-driven CPU kernel of the torch engine (``propagation="fused"``), compiled with numba.

One compiled loop runs a whole image through every layer and every time step, with the
state of all layers of that image kept in cache; images of a batch run in parallel threads
(``numba.prange``). Per step :math:`k` and layer :math:`l` (Brian2's schedule, as
:mod:`bioconv.engines.torch_models` describes):

1. groups: the exact one-step update of :mod:`bioconv.engines.torch_models`, with the same
   operations in the same order (IF/LIF delta: :math:`v \leftarrow e_m v + c_b I_\mathrm{bias}`,
   :math:`e_m = 1` for IF since :math:`1\cdot v = v` exactly; IF/LIF alpha: ``v``, ``I_syn``,
   ``x_syn``; SRM: ``y``, ``psi``, ``r``);
2. thresholds: spike iff :math:`v > \theta` (SRM: :math:`\psi + r > \theta`);
3. synapses: every spike of layer :math:`l-1` in step :math:`k` (input: +1 spikes, then the
   ``<input>_neg`` pathway's −1 spikes) adds its outgoing weights (times the on_pre gain) to
   ``v`` (delta), ``x_syn`` (alpha) or ``y`` (SRM) of layer :math:`l`, presynaptic neurons in
   increasing index and each neuron's synapses in Brian2's order (CSR rows from
   :func:`bioconv.connectivity.layer_synapses`). Every target gets its additions in the same
   order as in Brian2 and the event path, so float64 results are theirs bit for bit;
4. resets: :math:`v = 0` or :math:`v \leftarrow v - \theta` (SRM :math:`r \leftarrow r - 2\theta`)
   for the neurons that spiked.

Compiled without ``fastmath`` (no reassociation, no FMA contraction). In float32 the
coefficients are rounded to float32 first, while the event path multiplies float32 state by
float64 scalars, so LIF's ``e_m·v`` may differ in the last bit (counts agree on ≥ 99.9 % of
neurons, tested). Supported: IF, LIF and SRM neurons with delta synapses and IF/LIF with
alpha synapses (the combinations the Brian2 engine has), without refractory period, with
spike input (Bernoulli/Poisson) and layers with explicit synapses (conv, dense, average
pool). Refractoriness, current input, the gated max-pool and spike-time recording make
:func:`unsupported` name the reason; ``propagation="auto"`` then uses ``"event"``. The work
per image is proportional to the synaptic events, as in Brian2, but without Brian2's
per-synapse bookkeeping (spike queues, delays, one network per batch of images).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from bioconv import encoding, ir
from bioconv.connectivity import layer_synapses
from bioconv.simulation import SimConfig


def unsupported(graph: ir.Graph, config: SimConfig) -> Optional[str]:
    """Why the fused kernel cannot run ``graph`` with ``config``, or None if it can."""
    from bioconv.neurons import IF, LIF, SRM

    if config.coding == "current":
        return "coding='current' (fused needs input spikes)"
    if config.record_times:
        return "record_times (spike-time recording)"
    for layer in graph.spiking_layers:
        neuron = graph.neuron_for(layer.name)
        if not isinstance(neuron, (IF, LIF, SRM)):
            return f"layer {layer.name!r}: neuron {type(neuron).__name__} (fused supports IF, LIF and SRM)"
        if float(getattr(neuron, "refractory", 0.0)) > 0:
            return f"layer {layer.name!r}: refractory period {neuron.refractory}"
        if isinstance(layer, ir.MaxPool2d):
            return f"layer {layer.name!r}: gated max-pool"
    return None


def _kernel():
    """Compile (once per process; cached on disk under $NUMBA_CACHE_DIR) and return the kernel."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import numba

    @numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
    def run(inp, off, kind, zero, coef, bterm, bterm2, theta, rowptr, row_off, cols, weights, spb,
            counts, out_bins, bin_counts, out_v, record_v):
        n_img, n_steps, n_in = inp.shape
        n_layers = off.shape[0] - 1
        n_total = off[n_layers]
        o_lo = off[n_layers - 1]
        n_out = n_total - o_lo
        for b in numba.prange(n_img):
            a1 = np.zeros(n_total, dtype=bterm.dtype)  # v (IF/LIF) or y (SRM)
            a2 = np.zeros(n_total, dtype=bterm.dtype)  # I_syn (alpha) or psi (SRM)
            a3 = np.zeros(n_total, dtype=bterm.dtype)  # x_syn (alpha) or r (SRM)
            fired = np.zeros(n_total, dtype=np.uint8)
            nspk = np.zeros(n_layers, dtype=np.int64)
            for t in range(n_steps):
                k_bin = t // spb
                for l in range(n_layers):
                    lo = off[l]
                    hi = off[l + 1]
                    em, e_s, i_x, v_i, v_x, psi_y, e_r = (coef[l, 0], coef[l, 1], coef[l, 2], coef[l, 3],
                                                           coef[l, 4], coef[l, 5], coef[l, 6])
                    # 1. groups, 2. thresholds (the same operations, in the same order, as torch_models.step)
                    if kind[l] == 0:  # IF/LIF, delta
                        for k in range(lo, hi):
                            x = a1[k] * em + bterm[k]
                            a1[k] = x
                            fired[k] = x > theta[k]
                    elif kind[l] == 1:  # IF/LIF, alpha
                        for k in range(lo, hi):
                            i_syn = a2[k]
                            x_syn = a3[k]
                            x = ((bterm[k] + v_i * i_syn) + a1[k] * em) + v_x * x_syn
                            a2[k] = e_s * i_syn + i_x * x_syn
                            a3[k] = e_s * x_syn
                            a1[k] = x
                            fired[k] = x > theta[k]
                    else:  # SRM: y = a1, psi = a2, r = a3
                        for k in range(lo, hi):
                            psi = (bterm2[k] + psi_y * a1[k]) + e_s * a2[k]
                            r = e_r * a3[k]
                            a1[k] = bterm[k] + e_s * a1[k]
                            a2[k] = psi
                            a3[k] = r
                            fired[k] = (psi + r) > theta[k]
                    dst = a3 if kind[l] == 1 else a1  # alpha: x_syn; delta: v; SRM: y
                    # 3. synapses: spikes of the layer below (or the input) in this step
                    if l == 0:
                        for sign in (1, -1):
                            for i in range(n_in):
                                if inp[b, t, i] == sign:
                                    for s in range(rowptr[row_off[0] + i], rowptr[row_off[0] + i + 1]):
                                        if sign == 1:
                                            dst[lo + cols[s]] += weights[s]
                                        else:
                                            dst[lo + cols[s]] += -weights[s]
                    elif nspk[l - 1] > 0:
                        plo = off[l - 1]
                        for i in range(lo - plo):
                            if fired[plo + i]:
                                for s in range(rowptr[row_off[l] + i], rowptr[row_off[l] + i + 1]):
                                    dst[lo + cols[s]] += weights[s]
                    # 4. resets
                    n = 0
                    for k in range(lo, hi):
                        if fired[k]:
                            n += 1
                            counts[b, k] += 1
                            if kind[l] == 2:
                                a3[k] = a3[k] - 2.0 * theta[k]
                            elif zero[l]:
                                a1[k] = 0.0
                            else:
                                a1[k] = a1[k] - theta[k]
                    nspk[l] = n
                    bin_counts[b, l, k_bin] += n
                if (t + 1) % spb == 0:
                    for j in range(n_out):
                        out_bins[b, k_bin, j] = counts[b, o_lo + j]
                        if record_v:
                            if kind[n_layers - 1] == 2:
                                out_v[b, k_bin, j] = a2[o_lo + j] + a3[o_lo + j]
                            else:
                                out_v[b, k_bin, j] = a1[o_lo + j]
        return 0

    _KERNEL = run
    return run


_KERNEL = None
#: kernel code of each (neuron kind, synapse kind) of :class:`bioconv.engines.torch_models.Propagator`
KINDS = {("if", "delta"): 0, ("lif", "delta"): 0, ("if", "alpha"): 1, ("lif", "alpha"): 1, ("srm", "delta"): 2}


class FusedNetwork:
    """The flat arrays of one converted graph for :func:`simulate_batch` (built once per simulate call)."""

    def __init__(self, graph: ir.Graph, config: SimConfig, dtype: np.dtype) -> None:
        from bioconv.engines import torch_models as tm

        why = unsupported(graph, config)
        if why is not None:
            raise ValueError(f"propagation='fused' does not support {why}; use propagation='event'")
        dt_s = float(config.dt / _second())
        layers = graph.spiking_layers
        sizes = [int(np.prod(l.output_shape)) for l in layers]
        self.off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        kind, zero, coef, bterm, bterm2, theta = [], [], [], [], [], []
        rowptrs, cols, weights, row_off, base = [], [], [], [], 0
        for layer, n in zip(layers, sizes):
            prop = tm.make_propagator(graph.neuron_for(layer.name), graph.synapse, dt_s)
            c = prop.c
            kind.append(KINDS[(prop.kind, prop.synapse)])
            zero.append(prop.reset == "zero")
            coef.append([c.get("e_m", 1.0), c.get("e_s", 0.0), c.get("I_x", 0.0), c.get("v_I", 0.0),
                         c.get("v_x", 0.0), c.get("psi_y", 0.0), c.get("e_r", 0.0)])
            bias = _per_neuron(0.0 if getattr(layer, "bias", None) is None else layer.bias, layer.output_shape)
            if prop.kind == "srm":  # the same products torch_models.bias_terms forms
                bterm.append(c["y_b"] * bias)
                bterm2.append(c["psi_b"] * bias)
            else:
                bterm.append(c["b"] * bias)
                bterm2.append(np.zeros(n))
            theta.append(_per_neuron(layer.threshold, layer.output_shape))
            conn = layer_synapses(layer)
            order = np.argsort(conn.i, kind="stable")  # Brian2 order: by presynaptic neuron, then synapse
            deg = np.bincount(conn.i, minlength=conn.n_pre)
            row_off.append(sum(len(r) for r in rowptrs))
            rowptrs.append(base + np.concatenate([[0], np.cumsum(deg)]))  # CSR row pointers, absolute
            base += len(order)
            cols.append(conn.j[order].astype(np.int32))
            weights.append(conn.w[order] * prop.gain)
        self.rowptr = np.concatenate(rowptrs).astype(np.int64)
        self.row_off = np.asarray(row_off, dtype=np.int64)
        self.cols = np.concatenate(cols)
        self.weights = np.concatenate(weights).astype(dtype)
        self.kind = np.asarray(kind, dtype=np.int64)
        self.zero = np.asarray(zero, dtype=np.bool_)
        self.coef = np.asarray(coef, dtype=np.float64).astype(dtype)
        self.bterm = np.concatenate(bterm).astype(dtype)
        self.bterm2 = np.concatenate(bterm2).astype(dtype)
        self.theta = np.concatenate(theta).astype(dtype)
        self.names = [l.name for l in layers]
        self.sizes = sizes
        self.dtype = dtype


def _second():
    from brian2 import second

    return second


def _per_neuron(values, shape) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and len(shape) == 3:
        arr = arr[:, None, None]
    return np.broadcast_to(arr, shape).reshape(-1).copy()


def simulate_batch(net: FusedNetwork, graph: ir.Graph, images: np.ndarray, config: SimConfig, first_index: int,
                   threads: int):
    """One batch through the fused kernel: counts, cumulative output bins, output v, bin counts."""
    import numba

    from brian2 import second

    rates, signs = encoding.input_rates_hz(images, graph.input)
    inp = encoding.spike_trains(rates, signs, float(config.dt / second), config.n_steps, config.coding,
                                config.seed, first_index)
    n_img, nb, n_layers = len(images), config.n_bins, len(net.sizes)
    n_out = net.sizes[-1]
    counts = np.zeros((n_img, int(net.off[-1])), dtype=np.int64)
    out_bins = np.zeros((n_img, nb, n_out), dtype=np.int64)
    bin_counts = np.zeros((n_img, n_layers, nb), dtype=np.int64)
    record_v = config.readout == "voltage"
    out_v = np.zeros((n_img, nb, n_out) if record_v else (1, 1, 1), dtype=net.dtype)
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    _kernel()(inp, net.off, net.kind, net.zero, net.coef, net.bterm, net.bterm2, net.theta, net.rowptr, net.row_off,
              net.cols, net.weights, config.steps_per_bin, counts, out_bins, bin_counts, out_v, record_v)
    per_layer = {name: counts[:, net.off[k]:net.off[k + 1]] for k, name in enumerate(net.names)}
    layer_bins = {name: bin_counts[:, k, :] for k, name in enumerate(net.names)}
    return per_layer, out_bins, (out_v.astype(np.float64) if record_v else None), layer_bins
