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

Layout: hidden conv layers keep their state channel-last, (position, channel), so that the
C_out targets of one presynaptic spike and kernel offset are contiguous (vectorized adds);
their spike lists are put back into torch order (a counting sort by channel) before the
next layer reads them, because the order of additions into each target must stay Brian2's.
The kernel counts spikes in torch order. The result arrays of a whole run are allocated once
(:class:`Outputs`); every batch fills its rows, and the per-layer counts are views of one
array, so nothing is copied or concatenated after the run.
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
    if not graph.is_sequential:
        return "a graph with several inputs per layer (Add / Concat)"
    for layer in graph.layers:
        if isinstance(layer, ir.Conv2d) and (layer.groups != 1 or tuple(layer.dilation) != (1, 1)
                                             or layer.padding_mode != "zeros"):
            return f"layer {layer.name!r}: grouped, dilated or non-zero-padded convolution"
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

    @numba.njit(cache=True, inline="always")
    def collect(fired, words, lo, hi, spk):
        """Write the indices k in [lo, hi) with fired[k] to spk[lo:lo+n], ascending; return n.
        Skips 8 silent neurons at a time through the uint64 view ``words`` of ``fired``."""
        n = 0
        k = lo
        while k < hi and (k & 7) != 0:
            if fired[k]:
                spk[lo + n] = k
                n += 1
            k += 1
        while k + 8 <= hi:
            if words[k >> 3] != 0:
                for j in range(k, k + 8):
                    if fired[j]:
                        spk[lo + n] = j
                        n += 1
            k += 8
        while k < hi:
            if fired[k]:
                spk[lo + n] = k
                n += 1
            k += 1
        return n

    @numba.njit(cache=True, inline="always")
    def deliver(dst, lo, l, i, sign, conv, cl, geo, wconv, rowptr, row_off, cols, weights):
        """Add presynaptic neuron i's outgoing weights (times ``sign``) to ``dst[lo + j]``.

        Conv layers use the shared kernel (``wconv``: (C_in, kH, kW, C_out) per layer, the
        targets in torch order, or channel-last (position, channel) where ``cl[l]``; the
        same synapses as the CSR rows); other layers the CSR rows of their synapse list."""
        if conv[l]:
            c_out, h_o, w_o, kh, kw, sh, sw, ph, pw, h_in, w_in, w0 = (
                geo[l, 0], geo[l, 1], geo[l, 2], geo[l, 3], geo[l, 4], geo[l, 5], geo[l, 6], geo[l, 7],
                geo[l, 8], geo[l, 9], geo[l, 10], geo[l, 11])
            c = i // (h_in * w_in)
            rem = i - c * h_in * w_in
            y = rem // w_in
            x = rem - y * w_in
            plane = h_o * w_o
            for dy in range(kh):
                ty = y + ph - dy
                if ty < 0 or ty % sh != 0 or ty // sh >= h_o:
                    continue
                for dx in range(kw):
                    tx = x + pw - dx
                    if tx < 0 or tx % sw != 0 or tx // sw >= w_o:
                        continue
                    pos = (ty // sh) * w_o + tx // sw
                    wb = w0 + ((c * kh + dy) * kw + dx) * c_out
                    src = wconv[wb:wb + c_out]
                    if cl[l]:  # channel-last state: the C_out targets are contiguous (vectorized)
                        tgt = dst[lo + pos * c_out:lo + (pos + 1) * c_out]
                        if sign > 0:
                            for o in range(c_out):
                                tgt[o] += src[o]
                        else:  # v - w == v + (-w) exactly: the <input>_neg pathway's -w
                            for o in range(c_out):
                                tgt[o] -= src[o]
                    elif sign > 0:  # torch order: one target per output-channel plane
                        for o in range(c_out):
                            dst[lo + pos + o * plane] += src[o]
                    else:
                        for o in range(c_out):
                            dst[lo + pos + o * plane] -= src[o]
        else:
            r = row_off[l] + i
            if sign > 0:
                for s in range(rowptr[r], rowptr[r + 1]):
                    dst[lo + cols[s]] += weights[s]
            else:
                for s in range(rowptr[r], rowptr[r + 1]):
                    dst[lo + cols[s]] += -weights[s]

    @numba.njit(parallel=True, cache=True, fastmath=False, nogil=True)
    def run(inp, off, kind, zero, coef, bterm, bterm2, theta, hw, uniform, conv, cl, geo, wconv, rowptr, row_off,
            cols, weights, spb, counts, out_bins, bin_counts, out_v, record_v):
        n_img, n_steps, n_in = inp.shape
        n_layers = off.shape[0] - 1
        n_total = off[n_layers]
        o_lo = off[n_layers - 1]
        n_out = n_total - o_lo
        for b in numba.prange(n_img):
            a1 = np.zeros(n_total, dtype=bterm.dtype)  # v (IF/LIF) or y (SRM)
            a2 = np.zeros(n_total, dtype=bterm.dtype)  # I_syn (alpha) or psi (SRM)
            a3 = np.zeros(n_total, dtype=bterm.dtype)  # x_syn (alpha) or r (SRM)
            fired = np.zeros(n_total + 16 - n_total % 8, dtype=np.uint8)
            words = fired.view(np.uint64)
            spk = np.zeros(n_total, dtype=np.int64)  # spike list of layer l in spk[off[l]:off[l] + nspk[l]]
            nspk = np.zeros(n_layers, dtype=np.int64)
            tmp = np.zeros(n_total, dtype=np.int64)  # counting sort of channel-last spike lists
            per_c = np.zeros(max(1, geo[:, 0].max()) + 1, dtype=np.int64)
            for t in range(n_steps):
                k_bin = t // spb
                for l in range(n_layers):
                    lo = off[l]
                    hi = off[l + 1]
                    em, e_s, i_x, v_i, v_x, psi_y, e_r = (coef[l, 0], coef[l, 1], coef[l, 2], coef[l, 3],
                                                           coef[l, 4], coef[l, 5], coef[l, 6])
                    # 1. groups, 2. thresholds (the same operations, in the same order, as torch_models.step)
                    # (array slices let LLVM vectorize these loops; per-lane IEEE arithmetic, no FMA)
                    f = fired[lo:hi]
                    if kind[l] == 0 and uniform[l]:  # IF/LIF, delta; one θ per layer, one bias per channel
                        th = theta[lo]
                        for base in range(lo, hi, hw[l]):
                            v = a1[base:base + hw[l]]
                            fc = fired[base:base + hw[l]]
                            bb = bterm[base]
                            for k in range(hw[l]):
                                x = v[k] * em + bb
                                v[k] = x
                                fc[k] = np.uint8(x > th)
                    elif kind[l] == 0:  # IF/LIF, delta
                        v, bt, th_ = a1[lo:hi], bterm[lo:hi], theta[lo:hi]
                        for k in range(hi - lo):
                            x = v[k] * em + bt[k]
                            v[k] = x
                            f[k] = np.uint8(x > th_[k])
                    elif kind[l] == 1:  # IF/LIF, alpha
                        v, i_syn, x_syn = a1[lo:hi], a2[lo:hi], a3[lo:hi]
                        bt, th_ = bterm[lo:hi], theta[lo:hi]
                        for k in range(hi - lo):
                            v[k] = ((bt[k] + v_i * i_syn[k]) + v[k] * em) + v_x * x_syn[k]
                        for k in range(hi - lo):
                            i_syn[k] = e_s * i_syn[k] + i_x * x_syn[k]
                        for k in range(hi - lo):
                            x_syn[k] = e_s * x_syn[k]
                        for k in range(hi - lo):
                            f[k] = v[k] > th_[k]
                    else:  # SRM: y = a1, psi = a2, r = a3
                        y, psi, r = a1[lo:hi], a2[lo:hi], a3[lo:hi]
                        bt, bt2, th_ = bterm[lo:hi], bterm2[lo:hi], theta[lo:hi]
                        for k in range(hi - lo):
                            psi[k] = (bt2[k] + psi_y * y[k]) + e_s * psi[k]
                        for k in range(hi - lo):
                            r[k] = e_r * r[k]
                        for k in range(hi - lo):
                            y[k] = bt[k] + e_s * y[k]
                        for k in range(hi - lo):
                            f[k] = (psi[k] + r[k]) > th_[k]
                    n = collect(fired, words, lo, hi, spk)
                    dst = a3 if kind[l] == 1 else a1  # alpha: x_syn; delta: v; SRM: y
                    # 3. synapses: spikes of the layer below (or the input) in this step
                    if l == 0:
                        for sign in (1, -1):
                            for i in range(n_in):
                                if inp[b, t, i] == sign:
                                    deliver(dst, lo, 0, i, sign, conv, cl, geo, wconv, rowptr, row_off, cols, weights)
                    else:
                        plo = off[l - 1]
                        for q in range(nspk[l - 1]):
                            deliver(dst, lo, l, spk[plo + q] - plo, 1, conv, cl, geo, wconv, rowptr, row_off,
                                    cols, weights)
                    # 4. resets
                    for q in range(n):
                        k = spk[lo + q]
                        if not cl[l]:
                            counts[b, k] += 1
                        if kind[l] == 2:
                            a3[k] = a3[k] - 2.0 * theta[k]
                        elif zero[l]:
                            a1[k] = 0.0
                        else:
                            a1[k] = a1[k] - theta[k]
                    if cl[l] and n > 0:  # channel-last (pos, c) order -> torch order (c, pos), stable by c
                        c_n = geo[l, 0]
                        plane = geo[l, 1] * geo[l, 2]
                        per_c[:c_n + 1] = 0
                        for q in range(n):
                            per_c[(spk[lo + q] - lo) % c_n + 1] += 1
                        for c in range(c_n):
                            per_c[c + 1] += per_c[c]
                        for q in range(n):
                            kl = spk[lo + q] - lo
                            c = kl % c_n
                            k = lo + c * plane + kl // c_n
                            tmp[per_c[c]] = k
                            counts[b, k] += 1  # counts are kept in torch order
                            per_c[c] += 1
                        for q in range(n):
                            spk[lo + q] = tmp[q]
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
        kind, zero, coef, bterm, bterm2, theta, hw, uniform = [], [], [], [], [], [], [], []
        conv, geo, wconv = [], [], []
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
            shape = tuple(layer.output_shape)
            hw.append(int(np.prod(shape[1:])) if len(shape) == 3 else 1)
            per_channel = bterm[-1].reshape(-1, hw[-1])
            uniform.append(bool(np.all(theta[-1] == theta[-1][0]) and np.all(per_channel == per_channel[:, :1])))
            if isinstance(layer, ir.Conv2d):  # shared kernel, (C_in, kH, kW, C_out), times the on_pre gain
                w = np.asarray(layer.weight, np.float64) * prop.gain
                (c_in, h_in, w_in), (c_o, h_o, w_o) = layer.input_shape, layer.output_shape
                geo.append([c_o, h_o, w_o, w.shape[2], w.shape[3], *layer.stride, *layer.padding, h_in, w_in,
                            sum(len(x) for x in wconv)])
                wconv.append(w.transpose(1, 2, 3, 0).ravel())
                conv.append(True)
            else:
                geo.append([0] * 12)
                conv.append(False)
            row_off.append(sum(len(r) for r in rowptrs))
            if conv[-1]:  # no CSR rows: delivered through the shared kernel
                rowptrs.append(np.full(int(np.prod(layer.input_shape)) + 1, base))
                continue
            conn = layer_synapses(layer)
            order = np.argsort(conn.i, kind="stable")  # Brian2 order: by presynaptic neuron, then synapse
            deg = np.bincount(conn.i, minlength=conn.n_pre)
            rowptrs.append(base + np.concatenate([[0], np.cumsum(deg)]))  # CSR row pointers, absolute
            base += len(order)
            cols.append(conn.j[order].astype(np.int32))
            weights.append(conn.w[order] * prop.gain)
        self.rowptr = np.concatenate(rowptrs).astype(np.int64)
        self.row_off = np.asarray(row_off, dtype=np.int64)
        self.cols = np.concatenate(cols) if cols else np.zeros(1, np.int32)
        self.weights = (np.concatenate(weights) if weights else np.zeros(1)).astype(dtype)
        # conv layers other than the output keep their state channel-last, (position, channel)
        self.cl = np.asarray([c and k < len(sizes) - 1 for k, c in enumerate(conv)], dtype=np.bool_)
        for k in np.flatnonzero(self.cl):
            c_n, plane = int(geo[k][0]), int(geo[k][1] * geo[k][2])
            for arrays in (bterm, bterm2, theta):
                arrays[k] = arrays[k].reshape(c_n, plane).T.ravel()
            uniform[k] = False
        self.kind = np.asarray(kind, dtype=np.int64)
        self.zero = np.asarray(zero, dtype=np.bool_)
        self.coef = np.asarray(coef, dtype=np.float64).astype(dtype)
        self.bterm = np.concatenate(bterm).astype(dtype)
        self.bterm2 = np.concatenate(bterm2).astype(dtype)
        self.theta = np.concatenate(theta).astype(dtype)
        self.hw = np.asarray(hw, dtype=np.int64)  # neurons per channel (1 for dense layers)
        self.uniform = np.asarray(uniform, dtype=np.bool_)  # one θ per layer and one bias per channel
        self.conv = np.asarray(conv, dtype=np.bool_)
        self.geo = np.asarray(geo, dtype=np.int64)
        self.wconv = (np.concatenate(wconv) if wconv else np.zeros(1)).astype(dtype)
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
    gives views of it, so nothing is copied or concatenated after the run.
    """

    def __init__(self, net: "FusedNetwork", n_img: int, n_bins: int, record_v: bool) -> None:
        n_out = net.sizes[-1]
        self.counts = np.zeros((n_img, int(net.off[-1])), dtype=np.int64)
        self.out_bins = np.zeros((n_img, n_bins, n_out), dtype=np.int64)
        self.bin_counts = np.zeros((n_img, len(net.sizes), n_bins), dtype=np.int64)
        self.record_v = bool(record_v)
        self.out_v = np.zeros((n_img, n_bins, n_out) if record_v else (1, 1, 1), dtype=net.dtype)
        self.net = net

    def per_layer(self) -> dict[str, np.ndarray]:
        return {name: self.counts[:, self.net.off[k]:self.net.off[k + 1]] for k, name in enumerate(self.net.names)}

    def layer_bins(self) -> dict[str, np.ndarray]:
        return {name: self.bin_counts[:, k, :] for k, name in enumerate(self.net.names)}

    def output_v(self) -> np.ndarray | None:
        return self.out_v.astype(np.float64) if self.record_v else None


def simulate_batch(net: FusedNetwork, graph: ir.Graph, images: np.ndarray, config: SimConfig, first_index: int,
                   threads: int, out: Outputs, row: int) -> None:
    """One batch through the fused kernel, written into rows ``row:row + len(images)`` of ``out``."""
    import numba

    from brian2 import second

    rates, signs = encoding.input_rates_hz(images, graph.input)
    inp = _spike_trains_threaded(rates, signs, float(config.dt / second), config, first_index, threads)
    rows = slice(row, row + len(images))
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    _kernel()(inp, net.off, net.kind, net.zero, net.coef, net.bterm, net.bterm2, net.theta, net.hw, net.uniform,
              net.conv, net.cl, net.geo, net.wconv, net.rowptr, net.row_off, net.cols, net.weights, config.steps_per_bin,
              out.counts[rows], out.out_bins[rows], out.bin_counts[rows], out.out_v[rows] if out.record_v else out.out_v,
              out.record_v)
