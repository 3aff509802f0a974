"""The fused kernel's spike-list scan (``collect``: 64-bit words, ``tzcnt``) against ``np.flatnonzero``.

Layers start and end anywhere inside a word, so the scan's head, whole words and tail are all
exercised, at sparse and dense firing, with the neighbouring layers' flags set as well.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from bioconv.engines import fused_codegen  # noqa: E402


@pytest.fixture(scope="module")
def kernel():
    return fused_codegen.kernel([])  # the static part only (no neuron model needed)


@pytest.mark.parametrize("p", [0.0, 0.03, 0.5, 1.0])
def test_collect_lists_exactly_the_fired_neurons_in_order(kernel, p):
    rng = np.random.default_rng(int(p * 100))
    n_total = 203
    fired = np.zeros(n_total + 16 - n_total % 8, dtype=np.uint8)
    fired[:n_total] = rng.random(n_total) < p
    words = fired.view(np.uint64)
    for lo, hi in [(0, 203), (0, 8), (3, 6), (3, 12), (5, 77), (8, 64), (64, 203), (17, 18), (40, 40), (1, 200)]:
        spk = np.full(n_total, -1, dtype=np.int32)
        n = kernel.collect(fired, words, lo, hi, spk)
        expected = lo + np.flatnonzero(fired[lo:hi])
        assert n == len(expected), (lo, hi)
        np.testing.assert_array_equal(spk[lo:lo + n], expected)
        assert np.all(spk[:lo] == -1) and np.all(spk[hi:] == -1), "wrote outside the layer's slice"


def test_trailing_zeros_counts_bits():
    from numba import njit

    from bioconv.engines.fused_intrinsics import trailing_zeros

    @njit
    def tz(w):
        return trailing_zeros(w)

    for bit in (0, 1, 7, 8, 31, 63):
        assert tz(np.uint64(1) << np.uint64(bit)) == bit
    assert tz(np.uint64(0b101000)) == 3
