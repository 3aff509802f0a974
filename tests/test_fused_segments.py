"""The fused kernel's row-segment delivery tables against ``torch.nn.functional.conv2d``.

A spike of presynaptic neuron (c, y, x) adds, per kernel row that reaches an output row, one
contiguous run of the channel-last target state. Replaying every input element through the
tables of :func:`conv_segments` and :func:`segment_kernel` must give the convolution, and each
(input, output, kernel offset) triple must be the one of :func:`conv_targets` (the explicit
tables the kernel used before, in Brian2's synapse order).
"""

from __future__ import annotations

import numpy as np
import pytest

from bioconv.engines.fused_network import conv_segments, conv_targets, segment_kernel

torch = pytest.importorskip("torch")

GEOMETRIES = [  # (h, w, kernel, stride, padding)
    (28, 28, (6, 6), (2, 2), (2, 2)),  # cnn7's conv2 with the 2x2 pool folded in
    (8, 9, (3, 3), (1, 1), (1, 1)),
    (9, 7, (5, 3), (3, 2), (0, 1)),
    (6, 6, (2, 4), (2, 3), (1, 0)),
    (5, 5, (1, 1), (1, 1), (0, 0)),
]


def _replay(x: np.ndarray, w: np.ndarray, stride, padding, h_o: int, w_o: int) -> np.ndarray:
    """Deliver every input element of x (C_in, H, W) through the segment tables; (C_out, h_o, w_o)."""
    c_in, h, wi = x.shape
    c_out, _, kh, kw = w.shape
    seg = conv_segments(h, wi, h_o, w_o, kh, kw, stride, padding, c_out)
    kernel = segment_kernel(w, stride)
    block = kernel[0].size
    rows = seg.shape[0] // (h * wi)
    flat = kernel.ravel()
    out = np.zeros(h_o * w_o * c_out)  # channel-last
    for c in range(c_in):
        for pos in range(h * wi):
            for tb, wb, m in seg[pos * rows:(pos + 1) * rows]:
                if tb < 0:
                    break
                out[tb:tb + m] += x[c].ravel()[pos] * flat[c * block + wb:c * block + wb + m]
    return out.reshape(h_o, w_o, c_out).transpose(2, 0, 1)


@pytest.mark.parametrize("h,w,kernel,stride,padding", GEOMETRIES)
def test_segments_replay_the_convolution(h, w, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, h, w))
    wt = rng.normal(size=(4, 3, *kernel))
    ref = torch.nn.functional.conv2d(torch.as_tensor(x[None]), torch.as_tensor(wt), stride=stride,
                                     padding=padding)[0].numpy()
    got = _replay(x, wt, stride, padding, ref.shape[1], ref.shape[2])
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h,w,kernel,stride,padding", GEOMETRIES)
def test_segments_reach_the_targets_of_conv_targets(h, w, kernel, stride, padding):
    """Same (input position, output position, kernel offset) triples as the explicit tables,
    each output reached once per spike."""
    kh, kw = kernel
    h_o = (h + 2 * padding[0] - kh) // stride[0] + 1
    w_o = (w + 2 * padding[1] - kw) // stride[1] + 1
    c_out = 2
    tpos, tk = conv_targets(h, w, h_o, w_o, kh, kw, stride, padding)
    seg = conv_segments(h, w, h_o, w_o, kh, kw, stride, padding, c_out)
    # a kernel whose entry for offset k and output channel o is k * c_out + o identifies the offset
    ident = np.arange(kh * kw * c_out, dtype=float).reshape(kh, kw, c_out).transpose(2, 0, 1)[:, None]
    flat = segment_kernel(ident, stride).ravel()
    rows = seg.shape[0] // (h * w)
    for pos in range(h * w):
        want = {(int(p), int(k)) for p, k in zip(tpos[pos * kh * kw:(pos + 1) * kh * kw],
                                                   tk[pos * kh * kw:(pos + 1) * kh * kw]) if p >= 0}
        got = []
        for tb, wb, m in seg[pos * rows:(pos + 1) * rows]:
            if tb < 0:
                break
            for j in range(0, m, c_out):
                got.append((int((tb + j) // c_out), int(flat[wb + j]) // c_out))
                assert flat[wb + j + 1] == flat[wb + j] + 1  # output channels contiguous
        assert len(got) == len(set(got)) == len(want)
        assert set(got) == want


def test_segment_table_is_compact_int32():
    seg = conv_segments(28, 28, 14, 14, 6, 6, (2, 2), (2, 2), 32)
    assert seg.dtype == np.int32
    assert seg.shape == (28 * 28 * 3, 3)  # ceil(6 / 2) kernel rows reach an output row per input row
