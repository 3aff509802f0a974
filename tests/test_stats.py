"""bioconv.stats against scipy and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from bioconv.stats import (accuracy_row, bootstrap_accuracy, count_predictions, count_voltage_predictions, mcnemar,
                           tie_fraction, wilson_interval)


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (987, 1000), (1000, 1000), (50, 300)])
def test_wilson_matches_scipy(k, n):
    ref = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)
    ref90 = sps.binomtest(k, n).proportion_ci(confidence_level=0.9, method="wilson")
    assert wilson_interval(k, n, 0.9) == pytest.approx((ref90.low, ref90.high), abs=1e-9)


def test_wilson_closed_form_for_zero_successes():
    z2 = 1.959963984540054 ** 2
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    with pytest.raises(ValueError, match="k <= n"):
        wilson_interval(11, 10)


@pytest.mark.parametrize("b,c", [(0, 0), (3, 0), (7, 2), (12, 25), (40, 41)])
def test_mcnemar_exact_and_mid_p_match_the_binomial(b, c):
    a = np.r_[np.ones(b, bool), np.zeros(c, bool), np.ones(5, bool), np.zeros(4, bool)]
    bb = np.r_[np.zeros(b, bool), np.ones(c, bool), np.ones(5, bool), np.zeros(4, bool)]
    res = mcnemar(a, bb)
    assert (res.b, res.c) == (b, c)
    n, k = b + c, min(b, c)
    exact = 1.0 if n == 0 else sps.binomtest(b, n, 0.5).pvalue
    mid = 1.0 if n == 0 else min(1.0, 2 * (sps.binom.cdf(k, n, 0.5) - 0.5 * sps.binom.pmf(k, n, 0.5)))
    assert res.p_exact == pytest.approx(exact, rel=1e-12)
    assert res.p_mid == pytest.approx(mid, rel=1e-12)
    assert res.p_mid <= res.p_exact


def test_mcnemar_known_value():
    # b = 1, c = 9: two-sided exact p = 2 * (1 + 10) / 2**10 = 0.021484375
    a = np.r_[np.ones(1, bool), np.zeros(9, bool)]
    assert mcnemar(a, ~a).p_exact == pytest.approx(0.021484375)


def test_ties_and_silence_count_as_wrong():
    counts = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0], [0, 5, 5], [0, 0, 1]])
    assert count_predictions(counts).tolist() == [0, -1, -1, -1, 2]
    assert tie_fraction(counts) == pytest.approx(2 / 5)
    # per time bin: (images, bins, classes)
    assert count_predictions(counts[:, None, :].repeat(2, axis=1)).shape == (5, 2)


def test_count_voltage_breaks_count_ties_by_the_potential():
    counts = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0], [0, 5, 5], [1, 1, 0], [4, 3, 3]])
    v = np.array([[0.1, 0.9, 0.9], [0.2, 0.7, 0.99], [0.1, -0.2, 0.3], [0.9, 0.4, 0.6], [0.3, 0.3, 0.9],
                  [0.0, 0.9, 0.9]])
    # a higher count wins whatever the potential; a potential decides only among the tied top counts
    # (class 2's 0.99 in row 1 and class 0's 0.9 in row 3 are not among them); a silent layer is
    # decided by all potentials; a tie in count and potential stays -1 (wrong)
    assert count_voltage_predictions(counts, v).tolist() == [0, 1, 2, 2, -1, 0]
    assert count_voltage_predictions(counts[:, None, :], v[:, None, :]).shape == (6, 1)
    with pytest.raises(ValueError, match="differ in shape"):
        count_voltage_predictions(counts, v[:, :2])


def test_bootstrap_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.random((3, 100)) < 0.9
    large = rng.random((3, 2000)) < 0.9
    m, lo, hi = bootstrap_accuracy(small, n_boot=500)
    assert lo <= m <= hi and m == pytest.approx(small.mean())
    _, lo2, hi2 = bootstrap_accuracy(large, n_boot=500)
    assert hi2 - lo2 < hi - lo
    # one seed: the bootstrap interval is close to Wilson's
    one = large[:1]
    _, blo, bhi = bootstrap_accuracy(one, n_boot=2000)
    wlo, whi = wilson_interval(int(one.sum()), one.shape[1])
    assert blo == pytest.approx(wlo, abs=0.006) and bhi == pytest.approx(whi, abs=0.006)


def test_accuracy_row_columns():
    row = accuracy_row(np.array([True] * 9 + [False]))
    assert row["n_images"] == 10 and row["n_seeds"] == 1 and row["ci_method"] == "wilson"
    row = accuracy_row(np.ones((3, 20), bool), n_boot=50)
    assert row["n_seeds"] == 3 and row["accuracy"] == 1.0 and row["ci_low"] == 1.0
