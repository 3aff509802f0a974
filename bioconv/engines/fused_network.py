r"""The flat arrays of one converted graph for the fused kernel (:mod:`bioconv.engines.fused`).

Every spiking population :math:`l` (in the graph's topological order) receives the
projections of :func:`bioconv.projections.projections`, delivered in that order (Brian2's
order, and the event path's). A projection :math:`p` has a source population
``psrc[p]`` (an earlier layer, or -1 for the input with its +1 and ``_neg`` pathways) and
is one of:

* a **shared-kernel convolution** (a plain Conv2d reading a single population: groups 1,
  dilation 1, zero padding): the kernel as (C_in, kH, kW, C_out) plus the target tables of
  :func:`conv_targets`, geometry row ``geo[p]``;
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

GEO_COLS = 13  # c_out, h_o, w_o, kh, kw, sh, sw, ph, pw, h_in, w_in, kernel base, table base


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
            for dy in range(kh):
                ty = y + ph - dy
                if ty < 0 or ty % sh or ty // sh >= h_o:
                    continue
                for dx in range(kw):
                    tx = x + pw - dx
                    if tx < 0 or tx % sw or tx // sw >= w_o:
                        continue
                    pos[y * w_in + x, n] = (ty // sh) * w_o + tx // sw
                    off[y * w_in + x, n] = dy * kw + dx
                    n += 1
    return pos.ravel(), off.ravel()


def per_neuron(values, shape) -> np.ndarray:
    """A scalar, per-channel or per-neuron value as a flat per-neuron array (torch order)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and len(shape) == 3:
        arr = arr[:, None, None]
    return np.broadcast_to(arr, shape).reshape(-1).copy()


class _Projections:
    """Accumulates the per-projection arrays while :class:`FusedNetwork` walks the populations."""

    def __init__(self) -> None:
        self.src, self.conv, self.geo, self.row_off = [], [], [], []
        self.rowptrs, self.cols, self.weights, self.base = [], [], [], 0
        self.wconv, self.tab_pos, self.tab_k = [], [], []

    def _rows(self, n_pre: int) -> None:
        self.row_off.append(sum(len(r) for r in self.rowptrs))
        self.rowptrs.append(np.full(n_pre + 1, self.base))

    def gated(self, src: int, n_pre: int) -> None:
        self.src.append(src)
        self.conv.append(False)
        self.geo.append([0] * GEO_COLS)
        self._rows(n_pre)

    def shared(self, src: int, layer: ir.Conv2d, w: np.ndarray) -> None:
        (_, h_in, w_in), (c_o, h_o, w_o) = layer.input_shape, layer.output_shape
        tpos, tk = conv_targets(h_in, w_in, h_o, w_o, w.shape[2], w.shape[3], layer.stride, layer.padding)
        self.src.append(src)
        self.conv.append(True)
        self.geo.append([c_o, h_o, w_o, w.shape[2], w.shape[3], *layer.stride, *layer.padding, h_in, w_in,
                         sum(len(x) for x in self.wconv), sum(len(x) for x in self.tab_pos)])
        self.tab_pos.append(tpos)
        self.tab_k.append(tk)
        self.wconv.append(w.transpose(1, 2, 3, 0).ravel())
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
            pure_conv = True
            if isinstance(layer, ir.MaxPool2d):
                (proj,) = pj.projections(graph, layer.name, skip_synapses=True)
                (c_n, h_in, w_in), (_, h_o, w_o) = layer.input_shape, shape
                pgeo.append([c_n, h_in, w_in, *layer.kernel_size, *layer.stride, h_o, w_o])
                P.gated(index[proj.source], proj.segment.size)
                bias.append(np.zeros(sizes[k]))
                pure_conv = False
            else:
                pgeo.append([0] * 9)
                for proj in pj.projections(graph, layer.name, skip_synapses=True):
                    src = -1 if proj.source == graph.input.name else index[proj.source]
                    if src >= k:
                        raise ValueError(f"population {layer.name!r} reads {proj.source!r}, which comes after it")
                    if shared_kernel(proj.layer, proj.n_segments):  # through the on_pre expression
                        P.shared(src, proj.layer, dyn.weights(np.asarray(proj.layer.weight, np.float64)))
                    else:
                        P.explicit(src, proj.synapses or layer_synapses(proj.layer), dyn.weights)
                        pure_conv = False
                bias.append(per_neuron(pj.bias(graph, layer.name), (sizes[k],)))
            pptr.append(len(P.src))
            theta.append(per_neuron(layer.threshold, shape))
            # populations fed only by shared-kernel convolutions (not the output) are channel-last
            cl.append(pure_conv and len(shape) == 3 and k < len(layers) - 1)
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
        for k, layer in enumerate(layers):  # neurons per channel; bias and θ constant per channel?
            shape = tuple(layer.output_shape)
            hw.append(int(np.prod(shape[1:])) if len(shape) == 3 and not self.cl[k] else 1)
            blocks = [a.reshape(-1, hw[-1]) for a in (bias[k], theta[k])]
            uniform.append(bool(hw[-1] > 1 and all(np.all(x == x[:, :1]) for x in blocks)))
        if config.coding == "current":
            uniform[0] = False  # layer 1's bias is per image and neuron
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
