r"""The flat arrays of one converted graph for the fused kernel (:mod:`bioconv.engines.fused`).

Every spiking population :math:`l` (in the graph's topological order) receives the
projections of :func:`bioconv.projections.projections`, delivered in that order (Brian2's
order, and the event path's). A projection :math:`p` has a source population
``psrc[p]`` (an earlier layer, or -1 for the input with its +1 and ``_neg`` pathways) and
is one of:

* a **shared-kernel convolution** (a plain Conv2d reading a single population: groups 1,
  dilation 1, zero padding), geometry row ``geo[p]``. Into a channel-last population: the
  kernel in the row-segment layout of :func:`segment_kernel` plus the segment table of
  :func:`conv_segments` (one contiguous add per presynaptic spike and kernel row); otherwise the
  kernel as (C_in, kH, kW, C_out) plus the target tables of :func:`conv_targets`;
* **explicit synapses** (dense layers, average pools, grouped, dilated or padded
  convolutions, and every weighted layer reading a Concat of several populations): CSR rows
  by presynaptic neuron in Brian2's synapse order, starting at ``row_off[p]``;
* the **gated max-pool** of a max-pool population (its geometry in ``pgeo[l]``).

Populations whose every projection is a shared-kernel convolution (the output excepted) keep
their state channel-last, (position, channel), so the C_out targets of one presynaptic spike
and kernel offset are contiguous; their spike lists are put back into torch order before any
population reads them.
"""

from __future__ import annotations

import numpy as np

from bioconv import ir
from bioconv import projections as pj
from bioconv.connectivity import layer_synapses
from bioconv.simulation import SimConfig

GEO_COLS = 15  # c_out, h_o, w_o, kh, kw, sh, sw, ph, pw, h_in, w_in, kernel base, table base, channel block, rows


def shared_kernel(layer: ir.Layer, n_segments: int) -> bool:
    """Whether a projection of ``layer`` runs through the shared conv kernel (else explicit synapses)."""
    return (isinstance(layer, ir.Conv2d) and n_segments == 1 and layer.groups == 1
            and tuple(layer.dilation) == (1, 1) and layer.padding_mode == "zeros")


def conv_targets(h_in: int, w_in: int, h_o: int, w_o: int, kh: int, kw: int, stride, padding
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per input position, the output positions a presynaptic spike reaches and the kernel offsets.

    Row ``y*w_in + x`` of the (h_in·w_in, kh·kw) tables lists, for kernel offsets (dy, dx) in
    increasing order (the order of Brian2's synapses), the output position ``oy*w_o + ox`` with
    ``oy*s + dy - p = y`` and the offset ``dy*kw + dx``; unused entries are -1. The kernel then
    needs no integer division per synapse.
    """
    (sh, sw), (ph, pw) = stride, padding
    pos = np.full((h_in * w_in, kh * kw), -1, dtype=np.int64)
    off = np.full((h_in * w_in, kh * kw), -1, dtype=np.int64)
    for y in range(h_in):
        for x in range(w_in):
            n = 0
            for dy, oy in _reach(y, kh, sh, ph, h_o):
                for dx, ox in _reach(x, kw, sw, pw, w_o):
                    pos[y * w_in + x, n] = oy * w_o + ox
                    off[y * w_in + x, n] = dy * kw + dx
                    n += 1
    return pos.ravel(), off.ravel()


def _reach(y: int, k: int, s: int, p: int, n_out: int) -> list[tuple[int, int]]:
    """Along one axis, the kernel offsets ``d`` (increasing) by which input ``y`` reaches an output
    ``o`` (``o*s + d - p = y``), as (d, o) pairs."""
    return [(d, (y + p - d) // s) for d in range(k)
            if y + p - d >= 0 and (y + p - d) % s == 0 and (y + p - d) // s < n_out]


def conv_segments(h_in: int, w_in: int, h_o: int, w_o: int, kh: int, kw: int, stride, padding, c_out: int
                  ) -> np.ndarray:
    """Per input position, the contiguous runs of channel-last targets that one spike reaches.

    Row ``(y*w_in + x)*R + n`` of the (h_in·w_in·R, 3) int32 table (``R = ⌈kH/s⌉`` rows per input
    position) is the n-th kernel row ``dy`` (increasing) that reaches an output row ``oy``
    (``oy*s + dy - p = y``): the offset of the first target ``(oy*w_o + ox0)*c_out``, the offset
    of its weights inside the presynaptic channel's block of :func:`segment_kernel`, and the
    run's length ``n_ox*c_out``. The output columns a spike at ``x`` reaches in one kernel row
    are consecutive (``ox = (x + p - dx)/s`` for the kernel columns ``dx`` of one stride phase),
    and :func:`segment_kernel` stores those columns' weights in the same order, so each run is
    one contiguous add. Unused rows have offset -1.
    """
    (sh, sw), (ph, pw) = stride, padding
    nph = -(-kw // sw)  # kernel columns per stride phase
    rows = -(-kh // sh)  # kernel rows that can reach an output row from one input row
    seg = np.full((h_in * w_in, rows, 3), -1, dtype=np.int64)
    for y in range(h_in):
        for x in range(w_in):
            cols = _reach(x, kw, sw, pw, w_o)
            if not cols:
                continue
            dx, ox = cols[-1]  # the largest column offset reaches the leftmost output column
            for n, (dy, oy) in enumerate(_reach(y, kh, sh, ph, h_o)):
                seg[y * w_in + x, n] = ((oy * w_o + ox) * c_out, ((dy * sw + dx % sw) * nph + nph - 1 - dx // sw) * c_out,
                                        len(cols) * c_out)
    if seg.max() > np.iinfo(np.int32).max:
        raise ValueError(f"convolution too large for the fused kernel's int32 segment table ({seg.max()} > 2^31)")
    return seg.reshape(-1, 3).astype(np.int32)


def segment_kernel(w: np.ndarray, stride) -> np.ndarray:
    """A (C_out, C_in, kH, kW) kernel in the row-segment layout of :func:`conv_segments`.

    Shape (C_in, kH, s, ⌈kW/s⌉, C_out): for stride phase ``r`` the columns ``dx = r + j*s`` are
    stored at ``⌈kW/s⌉ - 1 - j`` (decreasing ``dx``, i.e. increasing output column), C_out innermost.
    """
    c_out, c_in, kh, kw = w.shape
    sw = stride[1]
    nph = -(-kw // sw)
    out = np.zeros((c_in, kh, sw, nph, c_out), dtype=w.dtype)
    for dx in range(kw):
        out[:, :, dx % sw, nph - 1 - dx // sw, :] = w[:, :, :, dx].transpose(1, 2, 0)
    return out


def per_neuron(values, shape) -> np.ndarray:
    """A scalar, per-channel or per-neuron value as a flat per-neuron array (torch order)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and len(shape) == 3:
        arr = arr[:, None, None]
    return np.broadcast_to(arr, shape).reshape(-1).copy()


def update_blocks(bias: np.ndarray, theta: np.ndarray, shape: tuple, channel_last: bool,
                  per_image: bool = False) -> tuple[int, bool]:
    """How the generated ``update`` walks a layer: ``(hw, uniform)``.

    ``uniform``: bias and θ are constant over each block of ``hw`` neurons (a channel-first
    layer's channels). Otherwise they repeat with period ``hw``: the channel count of a
    channel-last layer whose values are per channel, else the layer's size. ``per_image``: the
    bias is replaced per image (current input into layer 1), so only the layer's size is safe.
    """
    n = len(bias)
    if per_image or len(shape) != 3:
        return n, False
    c_n, plane = int(shape[0]), int(shape[1] * shape[2])
    if channel_last:
        period = all(np.array_equal(a.reshape(plane, c_n), np.broadcast_to(a[:c_n], (plane, c_n)))
                     for a in (bias, theta))
        return (c_n, False) if period else (n, False)
    blocks = [a.reshape(c_n, plane) for a in (bias, theta)]
    if plane > 1 and all(np.all(x == x[:, :1]) for x in blocks):
        return plane, True
    return n, False


class _Projections:
    """Accumulates the per-projection arrays while :class:`FusedNetwork` walks the populations."""

    def __init__(self) -> None:
        self.src, self.conv, self.geo, self.row_off = [], [], [], []
        self.rowptrs, self.cols, self.weights, self.base = [], [], [], 0
        self.wconv, self.tab_pos, self.tab_k, self.seg = [], [], [], []

    def _rows(self, n_pre: int) -> None:
        self.row_off.append(sum(len(r) for r in self.rowptrs))
        self.rowptrs.append(np.full(n_pre + 1, self.base))

    def gated(self, src: int, n_pre: int) -> None:
        self.src.append(src)
        self.conv.append(False)
        self.geo.append([0] * GEO_COLS)
        self._rows(n_pre)

    def shared(self, src: int, layer: ir.Conv2d, w: np.ndarray, channel_last: bool) -> None:
        (_, h_in, w_in), (c_o, h_o, w_o) = layer.input_shape, layer.output_shape
        kh, kw = w.shape[2], w.shape[3]
        self.src.append(src)
        self.conv.append(True)
        geo = [c_o, h_o, w_o, kh, kw, *layer.stride, *layer.padding, h_in, w_in, sum(len(x) for x in self.wconv)]
        if channel_last:
            kernel = segment_kernel(w, layer.stride)
            self.geo.append(geo + [sum(len(x) for x in self.seg), kernel[0].size, -(-kh // layer.stride[0])])
            self.seg.append(conv_segments(h_in, w_in, h_o, w_o, kh, kw, layer.stride, layer.padding, c_o))
        else:
            kernel = w.transpose(1, 2, 3, 0)
            tpos, tk = conv_targets(h_in, w_in, h_o, w_o, kh, kw, layer.stride, layer.padding)
            self.geo.append(geo + [sum(len(x) for x in self.tab_pos), 0, 0])
            self.tab_pos.append(tpos)
            self.tab_k.append(tk)
        self.wconv.append(kernel.ravel())
        self._rows(int(np.prod(layer.input_shape)))

    def explicit(self, src: int, conn, transform) -> None:
        self.src.append(src)
        self.conv.append(False)
        self.geo.append([0] * GEO_COLS)
        order = np.argsort(conn.i, kind="stable")  # Brian2 order: by presynaptic neuron, then synapse
        deg = np.bincount(conn.i, minlength=conn.n_pre)
        self.row_off.append(sum(len(r) for r in self.rowptrs))
        self.rowptrs.append(self.base + np.concatenate([[0], np.cumsum(deg)]))  # CSR row pointers, absolute
        self.base += len(order)
        self.cols.append(conn.j[order].astype(np.int32))
        self.weights.append(transform(conn.w[order]))


class FusedNetwork:
    """The flat arrays of one converted graph for :func:`bioconv.engines.fused.simulate_batch`."""

    def __init__(self, graph: ir.Graph, config: SimConfig, dtype: np.dtype) -> None:
        from bioconv.engines import fused_codegen
        from bioconv.engines.fused import _dynamics, _second, unsupported

        why = unsupported(graph, config)
        if why is not None:
            raise ValueError(f"propagation='fused' does not support {why}; use propagation='event'")
        dt_s = float(config.dt / _second())
        layers = graph.spiking_layers
        index = {layer.name: k for k, layer in enumerate(layers)}
        sizes = [int(np.prod(l.output_shape)) for l in layers]
        self.off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        dyns = [_dynamics(graph, layer, config, dt_s) for layer in layers]
        signatures: list = []
        model = []
        for dyn in dyns:
            known = [d.signature for d in signatures]
            if dyn.signature not in known:
                signatures.append(dyn)
                known.append(dyn.signature)
            model.append(known.index(dyn.signature))
        self.signatures = signatures
        n_coef = max(1, max(len(d.constants) for d in dyns))
        coef = np.zeros((len(layers), n_coef))
        for k, dyn in enumerate(dyns):
            coef[k, :len(dyn.constants)] = [dyn.constants[name] for name in sorted(dyn.constants)]
        P = _Projections()
        bias, theta, pgeo, pptr, cl = [], [], [], [0], []
        for k, (layer, dyn) in enumerate(zip(layers, dyns)):
            shape = tuple(layer.output_shape)
            projs = [] if isinstance(layer, ir.MaxPool2d) else pj.projections(graph, layer.name, skip_synapses=True)
            # populations fed only by shared-kernel convolutions (not the output) are channel-last
            pure_conv = (bool(projs) and len(shape) == 3 and k < len(layers) - 1
                         and all(shared_kernel(proj.layer, proj.n_segments) for proj in projs))
            if isinstance(layer, ir.MaxPool2d):
                (proj,) = pj.projections(graph, layer.name, skip_synapses=True)
                (c_n, h_in, w_in), (_, h_o, w_o) = layer.input_shape, shape
                pgeo.append([c_n, h_in, w_in, *layer.kernel_size, *layer.stride, h_o, w_o])
                P.gated(index[proj.source], proj.segment.size)
                bias.append(np.zeros(sizes[k]))
            else:
                pgeo.append([0] * 9)
                for proj in projs:
                    src = -1 if proj.source == graph.input.name else index[proj.source]
                    if src >= k:
                        raise ValueError(f"population {layer.name!r} reads {proj.source!r}, which comes after it")
                    if shared_kernel(proj.layer, proj.n_segments):  # through the on_pre expression
                        P.shared(src, proj.layer, dyn.weights(np.asarray(proj.layer.weight, np.float64)), pure_conv)
                    else:
                        P.explicit(src, proj.synapses or layer_synapses(proj.layer), dyn.weights)
                bias.append(per_neuron(pj.bias(graph, layer.name), (sizes[k],)))
            pptr.append(len(P.src))
            theta.append(per_neuron(layer.threshold, shape))
            cl.append(pure_conv)
        self.lshape = np.asarray([tuple(l.output_shape) if len(l.output_shape) == 3 else (1, 1, int(np.prod(l.output_shape)))
                                  for l in layers], dtype=np.int64)
        self.cl = np.asarray(cl, dtype=np.bool_)
        self.perm0 = None
        for k in np.flatnonzero(self.cl):
            c_n, plane = int(self.lshape[k, 0]), int(self.lshape[k, 1] * self.lshape[k, 2])
            perm = np.arange(sizes[k]).reshape(c_n, plane).T.ravel()  # channel-last position -> torch index
            bias[k], theta[k] = bias[k][perm], theta[k][perm]
            if k == 0:
                self.perm0 = perm
        hw, uniform = [], []
        for k, layer in enumerate(layers):  # the update's blocks (see fused_codegen._update_body)
            block, const = update_blocks(bias[k], theta[k], tuple(layer.output_shape), bool(self.cl[k]),
                                         per_image=k == 0 and config.coding == "current")
            hw.append(block)
            uniform.append(const)
        self.pptr = np.asarray(pptr, dtype=np.int64)
        self.psrc = np.asarray(P.src, dtype=np.int64)
        self.pconv = np.asarray(P.conv, dtype=np.bool_)
        self.pcl = np.repeat(self.cl, np.diff(self.pptr))  # a projection writes in its target's layout
        self.geo = np.asarray(P.geo, dtype=np.int64).reshape(-1, GEO_COLS)
        self.row_off = np.asarray(P.row_off, dtype=np.int64)
        self.rowptr = np.concatenate(P.rowptrs).astype(np.int64)
        self.cols = np.concatenate(P.cols) if P.cols else np.zeros(1, np.int32)
        self.weights = (np.concatenate(P.weights) if P.weights else np.zeros(1)).astype(dtype)
        self.wconv = (np.concatenate(P.wconv) if P.wconv else np.zeros(1)).astype(dtype)
        self.ctab_pos = np.concatenate(P.tab_pos) if P.tab_pos else np.zeros(1, np.int64)
        self.ctab_k = np.concatenate(P.tab_k) if P.tab_k else np.zeros(1, np.int64)
        self.seg = np.concatenate(P.seg) if P.seg else np.full((1, 3), -1, np.int32)
        self.hw = np.asarray(hw, dtype=np.int64)
        self.uniform = np.asarray(uniform, dtype=np.bool_)
        self.model = np.asarray(model, dtype=np.int64)
        self.nslot = max(len(d.states) for d in dyns)
        self.tgt = np.asarray([d.states.index(d.target) for d in dyns], dtype=np.int64)
        self.refs = np.asarray([d.ref_steps for d in dyns], dtype=np.int64)
        self.rf = np.asarray([d.reset_first for d in dyns], dtype=np.bool_)
        self.cond = np.asarray([d.ref_steps > 0 and d.target in d.frozen for d in dyns], dtype=np.bool_)
        self.gated = np.asarray([isinstance(l, ir.MaxPool2d) for l in layers], dtype=np.bool_)
        self.pgeo = np.asarray(pgeo, dtype=np.int64)
        self.coef = coef.astype(dtype)
        self.bias = np.concatenate(bias).astype(dtype)
        self.theta = np.concatenate(theta).astype(dtype)
        self.names = [l.name for l in layers]
        self.sizes = sizes
        self.dtype = dtype
        self.module = fused_codegen.kernel(signatures)
