r"""Synapse lists (i, j, w) of IR layers as vectorized numpy arrays (no Brian2 import).

Every spiking layer ``L`` maps the flat activity :math:`a` of its input (torch flatten
order (C, H, W), row-major) to the flat pre-activation of its outputs by a sparse matrix

.. math::
    z_j = \sum_{k:\, j_k = j} w_k\, a_{i_k} \quad (+\, b_j),

stored as coordinate lists: synapse ``k`` goes from presynaptic flat index ``i[k]`` to
postsynaptic flat index ``j[k]`` with weight ``w[k]``. Biases are not synapses (engines
inject them as constant currents, Rueckauer et al. 2017 §2.2.1).

* :class:`~bioconv.ir.Conv2d` — one synapse per (c_out, c_in, k_y, k_x, y, x) whose input
  pixel :math:`(s_y y + k_y - p_y, s_x x + k_x - p_x)` lies inside the image (zero padding
  has no synapses); grouped convs connect each output channel to its group's inputs only,
  dilated taps read :math:`(s_y y + d_y k_y - p_y, \dots)`, and reflect / replicate / circular
  padding map an outside pixel to the image pixel torch reads there (several synapses may
  then join one pair; their weights add).
* :class:`~bioconv.ir.AvgPool2d` — one synapse per window member, weight
  :math:`s/(k_y k_x)`.
* :class:`~bioconv.ir.Dense` — all-to-all, ``w = weight.ravel()``.
* :class:`~bioconv.ir.MaxPool2d` — the gated spiking max-pool of Rueckauer et al. 2017 §2.2.6, see
  :class:`GatedMaxPool` (window membership plus gating rule; it has no ``w``, so an
  engine that cannot gate fails instead of silently sum-pooling).

The synapse order depends only on the layer's shapes, never on weight values (zero weights
are kept), so an engine can reuse a compiled structure and just reload ``w`` from
:func:`layer_weights`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping, Union

import numpy as np

from bioconv import ir

log = logging.getLogger(__name__)

INDEX = np.int32


@dataclass(frozen=True, eq=False)
class Connectivity:
    r"""Coordinate-list synapses: ``i`` (pre), ``j`` (post) int32, ``w`` float64.

    :math:`z = A a` with :math:`A_{j_k i_k} \mathrel{+}= w_k`, :math:`A \in
    \mathbb{R}^{n_\mathrm{post} \times n_\mathrm{pre}}`.
    """

    i: np.ndarray
    j: np.ndarray
    w: np.ndarray
    n_pre: int
    n_post: int

    def __post_init__(self) -> None:
        if not (self.i.shape == self.j.shape == self.w.shape) or self.i.ndim != 1:
            raise ValueError(
                f"i, j, w must be 1-D arrays of one length, got {self.i.shape}, {self.j.shape}, {self.w.shape}"
            )
        if len(self.i) and (self.i.min() < 0 or self.i.max() >= self.n_pre):
            raise ValueError(f"presynaptic indices must lie in [0, {self.n_pre})")
        if len(self.j) and (self.j.min() < 0 or self.j.max() >= self.n_post):
            raise ValueError(f"postsynaptic indices must lie in [0, {self.n_post})")

    def __len__(self) -> int:
        return int(self.i.shape[0])

    @property
    def n_synapses(self) -> int:
        return len(self)

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """:math:`A x` for ``x`` of shape (n_pre,) or a batch (N, n_pre); returns float64."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.n_pre or x.ndim not in (1, 2):
            raise ValueError(f"matvec needs shape (n_pre,) or (N, n_pre) with n_pre={self.n_pre}, got {x.shape}")
        if x.ndim == 1:
            return np.bincount(self.j, weights=self.w * x[self.i], minlength=self.n_post)
        return np.asarray(self.to_scipy() @ x.T).T

    def to_scipy(self):
        """The (n_post, n_pre) matrix as ``scipy.sparse.csr_matrix`` (duplicates summed)."""
        from scipy import sparse

        return sparse.csr_matrix((self.w, (self.j, self.i)), shape=(self.n_post, self.n_pre))


@dataclass(frozen=True, eq=False)
class GatedMaxPool:
    r"""Gated spiking max-pool (Rueckauer et al. 2017 §2.2.6): each pool unit passes only the spikes of
    the window member with the highest running firing-rate estimate.

    The rate estimate is the online average, i.e. the spike count :math:`c_i(t)` since the
    image started (reset with every other state between images). Per pool unit ``j`` the
    engine keeps :math:`c_\max` (the window's maximal count) and the current ``winner``.
    Within a time step the spikes reaching ``j`` are handled in ascending presynaptic
    index (Brian2's spike-queue order); for each spike of member ``i``:

    .. math::
        c_i \mathrel{+}= 1;\quad \text{if } c_i > c_\max:\ c_\max \leftarrow c_i,\
        \text{winner} \leftarrow i;\quad \text{if winner} = i:\ v_j \mathrel{+}= 1.

    Exactly one spike passes per increment of :math:`c_\max`, so by any time the pool
    unit has received :math:`\max_{i \in \text{window}} c_i` spikes: the spiking max of
    the counts. In Brian2 (``c`` a synaptic variable, ``cmax``/``winner`` post variables,
    all reset between images, ``winner`` to −1) the gate is :attr:`on_pre_gate`, which
    ends by defining the temporary ``w`` (1 if the spike passes, else 0); the pool unit is a
    relay (see :class:`bioconv.ir.MaxPool2d`) that the passed spike sets::

        Synapses(pre, pool, "c : 1", on_pre=gate.on_pre_gate + "\nv_post += w")
        # pool: v : 1, cmax : 1, winner : 1; threshold v > 0.5; reset v = 0

    :meth:`run` is the numpy reference of this rule. The relay fires one step after each
    passed spike, so the pool unit fires at :math:`\max_i r_i`, the ANN ``max``.

    ``i``/``j`` are grouped by output and ascending in ``i`` within a window, so
    ``windows = i.reshape(n_post, window)``. There is deliberately no ``w``.
    """

    i: np.ndarray
    j: np.ndarray
    n_pre: int
    n_post: int
    window: int
    gate: Literal["count"] = "count"

    #: Brian2 ``on_pre`` code of the gate (``i`` is the presynaptic index); defines ``w``.
    on_pre_gate = (
        "c += 1\n"
        "is_new = int(c > cmax_post)\n"
        "cmax_post += is_new\n"
        "winner_post += is_new * (i - winner_post)\n"
        "w = int(winner_post == i)"
    )
    #: state the gate keeps: per synapse, per pool neuron (reset values between images)
    synapse_state = MappingProxyType({"c": 0.0})
    post_state = MappingProxyType({"cmax": 0.0, "winner": -1.0})

    def __post_init__(self) -> None:
        if self.i.shape != self.j.shape or self.i.shape[0] != self.n_post * self.window:
            raise ValueError("a gated max-pool needs exactly `window` synapses per pool unit")
        if self.gate != "count":
            raise ValueError(f"GatedMaxPool.gate must be 'count', got {self.gate!r}")

    def __len__(self) -> int:
        return int(self.i.shape[0])

    @property
    def n_synapses(self) -> int:
        return len(self)

    @property
    def windows(self) -> np.ndarray:
        """(n_post, window) presynaptic flat indices of each pool unit, ascending."""
        return self.i.reshape(self.n_post, self.window)

    def pool(self, x: np.ndarray) -> np.ndarray:
        """The ANN max over each window for ``x`` of shape (..., n_pre)."""
        return np.asarray(x)[..., self.windows].max(axis=-1)

    def run(self, spikes: np.ndarray) -> np.ndarray:
        """Reference gating: which spikes pass, int8 of shape (T, n_post) or (N, T, n_post).

        ``spikes`` is (T, n_pre) or (N, T, n_pre) of 0/1.
        """
        s = np.asarray(spikes)
        single = s.ndim == 2
        if single:
            s = s[None]
        if s.ndim != 3 or s.shape[-1] != self.n_pre:
            raise ValueError(
                f"spikes must have shape (T, {self.n_pre}) or (N, T, {self.n_pre}), got {np.shape(spikes)}"
            )
        if np.any(s < 0):
            raise ValueError("the gated max-pool takes non-negative spikes (outputs of a spiking layer)")
        n, steps = s.shape[:2]
        win = self.windows
        counts = np.zeros((n, self.n_pre), dtype=np.int64)
        cmax = np.zeros((n, self.n_post), dtype=np.int64)
        out = np.zeros((n, steps, self.n_post), dtype=np.int8)
        for t in range(steps):
            st = s[:, t] > 0
            # a spiking member whose count equals the window max before this step takes the lead
            passed = np.any(st[:, win] & (counts[:, win] == cmax[..., None]), axis=-1)
            out[:, t] = passed
            cmax += passed
            counts += st
        return out[0] if single else out


# ----------------------------------------------------------------------------- conv


def _valid_range(n_out: int, n_in: int, stride: int, offset: int) -> tuple[int, int]:
    """Output positions ``o`` in [lo, hi) with ``0 <= stride*o + offset < n_in``."""
    lo = -(offset // stride)  # ceil(-offset / stride)
    hi = min(n_out, (n_in - 1 - offset) // stride + 1)
    lo = max(lo, 0)
    return lo, max(lo, hi)


def _conv_windows(layer: ir.Conv2d) -> list[tuple[int, int, tuple[int, int], tuple[int, int]]]:
    c_in, h, w = layer.input_shape
    _, ho, wo = layer.output_shape
    kh, kw = layer.weight.shape[2:]
    (sy, sx), (py, px) = layer.stride, layer.padding
    out = []
    for ky in range(kh):
        ry = _valid_range(ho, h, sy, ky - py)
        if ry[1] <= ry[0]:
            continue
        for kx in range(kw):
            rx = _valid_range(wo, w, sx, kx - px)
            if rx[1] > rx[0]:
                out.append((ky, kx, ry, rx))
    return out


def _is_plain(layer: ir.Conv2d) -> bool:
    return layer.groups == 1 and tuple(layer.dilation) == (1, 1) and layer.padding_mode == "zeros"


def _pad_index(pos: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Image coordinate read by padded coordinate ``pos`` (torch's padding modes); -1 for zero padding."""
    if mode == "zeros":
        return np.where((pos >= 0) & (pos < size), pos, -1)
    if mode == "replicate":
        return np.clip(pos, 0, size - 1)
    if mode == "circular":
        return np.mod(pos, size)
    period = 2 * (size - 1)  # reflect (no edge repeat)
    q = np.mod(pos, period) if period else np.zeros_like(pos)
    return np.where(q < size, q, period - q)


def _conv_arrays_general(layer: ir.Conv2d) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""(i, j, w) of a grouped / dilated / non-zero-padded conv; order (k_y, k_x, c_out, c_in/g, y, x).

    Output channel :math:`c_o` reads input channel :math:`\gamma(c_o) C_i/g + c`, tap
    :math:`(k_y, k_x)` reads pixel :math:`(s_y y + d_y k_y - p_y, s_x x + d_x k_x - p_x)`
    mapped by the padding mode (zero padding: no synapse).
    """
    c_out, c_g, kh, kw = layer.weight.shape
    c_in, h, w_in = layer.input_shape
    _, ho, wo = layer.output_shape
    (sy, sx), (py, px), (dy, dx) = layer.stride, layer.padding, layer.dilation
    ky = np.arange(kh)[:, None, None, None, None, None]
    kx = np.arange(kw)[None, :, None, None, None, None]
    co = np.arange(c_out)[None, None, :, None, None, None]
    ci = (co // (c_out // layer.groups)) * c_g + np.arange(c_g)[None, None, None, :, None, None]
    oy = np.arange(ho)[None, None, None, None, :, None]
    ox = np.arange(wo)[None, None, None, None, None, :]
    iy = _pad_index(sy * oy + dy * ky - py, h, layer.padding_mode)
    ix = _pad_index(sx * ox + dx * kx - px, w_in, layer.padding_mode)
    shape = (kh, kw, c_out, c_g, ho, wo)
    valid = np.broadcast_to((iy >= 0) & (ix >= 0), shape)
    i = np.broadcast_to(ci * (h * w_in) + iy * w_in + ix, shape)[valid].astype(INDEX)
    j = np.broadcast_to(co * (ho * wo) + oy * wo + ox, shape)[valid].astype(INDEX)
    wt = np.asarray(layer.weight, dtype=np.float64).transpose(2, 3, 0, 1)[..., None, None]
    return i, j, np.broadcast_to(wt, shape)[valid].astype(np.float64)


def _conv_arrays(layer: ir.Conv2d, with_indices: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, w) of a Conv2d; with ``with_indices=False`` only ``w`` is filled (i, j empty)."""
    if not _is_plain(layer):
        return _conv_arrays_general(layer)
    c_out, c_in, kh, kw = layer.weight.shape
    _, h, w_in = layer.input_shape
    _, ho, wo = layer.output_shape
    (sy, sx), (py, px) = layer.stride, layer.padding
    weight = np.asarray(layer.weight, dtype=np.float64)
    co = np.arange(c_out, dtype=INDEX)[:, None, None, None]
    ci = np.arange(c_in, dtype=INDEX)[None, :, None, None]
    windows = _conv_windows(layer)
    total = sum(c_out * c_in * (y1 - y0) * (x1 - x0) for _, _, (y0, y1), (x0, x1) in windows)
    n_idx = total if with_indices else 0
    i, j = np.empty(n_idx, dtype=INDEX), np.empty(n_idx, dtype=INDEX)
    w = np.empty(total, dtype=np.float64)
    start = 0
    for ky, kx, (y0, y1), (x0, x1) in windows:
        shape = (c_out, c_in, y1 - y0, x1 - x0)
        stop = start + int(np.prod(shape))
        # write each broadcast straight into its slice (no full-size temporaries)
        w[start:stop].reshape(shape)[...] = weight[:, :, ky, kx, None, None]
        if with_indices:
            oy = np.arange(y0, y1, dtype=INDEX)[None, None, :, None]
            ox = np.arange(x0, x1, dtype=INDEX)[None, None, None, :]
            i[start:stop].reshape(shape)[...] = ci * (h * w_in) + (sy * oy + (ky - py)) * w_in + (sx * ox + (kx - px))
            j[start:stop].reshape(shape)[...] = co * (ho * wo) + oy * wo + ox
        start = stop
    return i, j, w


def _conv_count(layer: ir.Conv2d) -> int:
    if not _is_plain(layer):
        return len(_conv_arrays_general(layer)[0])
    c_out, c_in = layer.weight.shape[:2]
    return int(sum(c_out * c_in * (y1 - y0) * (x1 - x0) for _, _, (y0, y1), (x0, x1) in _conv_windows(layer)))


# ----------------------------------------------------------------------------- pool / dense


def _pool_indices(layer: Union[ir.AvgPool2d, ir.MaxPool2d]) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) of every window member; order (c, y, x, k_y, k_x), i.e. grouped by output."""
    c, h, w = layer.input_shape
    _, ho, wo = layer.output_shape
    kh, kw = layer.kernel_size
    sy, sx = layer.stride
    cc = np.arange(c, dtype=INDEX)[:, None, None, None, None]
    oy = np.arange(ho, dtype=INDEX)[None, :, None, None, None]
    ox = np.arange(wo, dtype=INDEX)[None, None, :, None, None]
    ky = np.arange(kh, dtype=INDEX)[None, None, None, :, None]
    kx = np.arange(kw, dtype=INDEX)[None, None, None, None, :]
    shape = (c, ho, wo, kh, kw)
    i = np.broadcast_to(cc * (h * w) + (sy * oy + ky) * w + (sx * ox + kx), shape).ravel()
    j = np.broadcast_to(cc * (ho * wo) + oy * wo + ox, shape).ravel()
    return np.ascontiguousarray(i), np.ascontiguousarray(j)


def _dense_indices(layer: ir.Dense) -> tuple[np.ndarray, np.ndarray]:
    n_out, n_in = layer.weight.shape
    i = np.tile(np.arange(n_in, dtype=INDEX), n_out)
    j = np.repeat(np.arange(n_out, dtype=INDEX), n_in)
    return i, j


def _sizes(layer: ir.Layer) -> tuple[int, int]:
    return int(np.prod(layer.input_shape)), int(np.prod(layer.output_shape))


def layer_synapses(layer: ir.Layer) -> Union[Connectivity, GatedMaxPool]:
    """The synapses feeding ``layer`` from its input, in torch flatten order.

    Returns a :class:`Connectivity` for Conv2d, AvgPool2d and Dense, and a
    :class:`GatedMaxPool` (window membership + gating rule, no ``w``) for
    MaxPool2d. Raises ``ValueError`` for Flatten, which has no synapses (the next Dense
    layer reads its flat input directly).
    """
    if isinstance(layer, ir.VIEWS):
        raise ValueError(
            f"layer {layer.name!r} is a {type(layer).__name__}: it has no neurons and no synapses; wire the next "
            "layer to the flat output of the layers before it (bioconv.projections)"
        )
    if isinstance(layer, ir.Add):
        raise ValueError(f"Add {layer.name!r} has no synapses of its own: its branches {layer.inputs} carry them "
                         "(bioconv.projections.incoming)")
    if not isinstance(layer, ir.SPIKING_LAYERS):
        raise ValueError(f"no connectivity for layer type {type(layer).__name__}; expected an IR layer")
    n_pre, n_post = _sizes(layer)
    if isinstance(layer, ir.Conv2d):
        return Connectivity(*_conv_arrays(layer), n_pre, n_post)
    if isinstance(layer, ir.AvgPool2d):
        i, j = _pool_indices(layer)
        value = float(layer.scale) / (layer.kernel_size[0] * layer.kernel_size[1])
        return Connectivity(i, j, np.full(i.shape, value), n_pre, n_post)
    if isinstance(layer, ir.Dense):
        i, j = _dense_indices(layer)
        return Connectivity(i, j, np.asarray(layer.weight, dtype=np.float64).ravel().copy(), n_pre, n_post)
    i, j = _pool_indices(layer)  # MaxPool2d
    return GatedMaxPool(i, j, n_pre, n_post, window=layer.kernel_size[0] * layer.kernel_size[1])


def layer_weights(layer: ir.Layer) -> np.ndarray:
    """Only the weights ``w`` of :func:`layer_synapses`, in the same synapse order.

    No index arrays are built. The structure depends only on shapes, so an engine may
    keep its i, j and just load these weights (no recompile).
    """
    if isinstance(layer, ir.Dense):
        return np.asarray(layer.weight, dtype=np.float64).ravel().copy()
    if isinstance(layer, ir.Conv2d):
        return _conv_arrays(layer, with_indices=False)[2]
    conn = layer_synapses(layer)
    if isinstance(conn, GatedMaxPool):
        raise ValueError(f"layer {layer.name!r}: a gated max-pool has no weights (each passed spike carries 1)")
    return conn.w


def layer_synapse_count(layer: ir.Layer) -> int:
    """Number of synapses :func:`layer_synapses` would build, without building them."""
    if isinstance(layer, ir.Conv2d):
        return _conv_count(layer)
    if isinstance(layer, (ir.AvgPool2d, ir.MaxPool2d)):
        return int(np.prod(layer.output_shape)) * layer.kernel_size[0] * layer.kernel_size[1]
    if isinstance(layer, ir.Dense):
        return int(layer.weight.size)
    if isinstance(layer, (ir.Flatten, ir.Concat)):
        return 0
    if isinstance(layer, ir.Add):
        return 0
    raise ValueError(f"no connectivity for layer type {type(layer).__name__}")


def count_synapses(graph: ir.Graph) -> Mapping[str, int]:
    """Synapses per spiking layer (name → count, graph order), computed from shapes only.

    For memory preflight (bytes ≈ count × bytes per synapse) and operation counting
    (fan-in per layer = count / n_neurons).
    """
    from bioconv.projections import incoming

    return {layer.name: sum(layer_synapse_count(w) for w, _ in incoming(graph, layer.name))
            for layer in graph.spiking_layers}


def fan_in(layer: ir.Layer) -> np.ndarray:
    """Number of incoming synapses per output neuron (flat, torch order), int64."""
    if isinstance(layer, ir.Dense):
        return np.full(layer.weight.shape[0], layer.weight.shape[1], dtype=np.int64)
    if isinstance(layer, (ir.AvgPool2d, ir.MaxPool2d)):
        return np.full(int(np.prod(layer.output_shape)), layer.kernel_size[0] * layer.kernel_size[1], dtype=np.int64)
    if isinstance(layer, ir.Conv2d) and not _is_plain(layer):
        return np.bincount(_conv_arrays_general(layer)[1], minlength=int(np.prod(layer.output_shape))).astype(np.int64)
    if isinstance(layer, ir.Conv2d):
        c_out, c_in = layer.weight.shape[:2]
        _, ho, wo = layer.output_shape
        per_pos = np.zeros((ho, wo), dtype=np.int64)
        for _, _, (y0, y1), (x0, x1) in _conv_windows(layer):
            per_pos[y0:y1, x0:x1] += c_in
        return np.broadcast_to(per_pos, (c_out, ho, wo)).ravel().copy()
    raise ValueError(f"no connectivity for layer type {type(layer).__name__}")
