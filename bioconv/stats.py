r"""Statistics for accuracies: Wilson intervals, bootstrap over images and seeds, McNemar, tie-aware readout.

Conventions used by every study and figure:

- **Readout at a fixed T.** Accuracy is read at the end of the simulated time T chosen in
  advance; a best-over-time value is always labelled as such (it is chosen on the test set
  and is optimistic).
- **Ties count as wrong.** With the spike-count readout an image is classified only when
  one output neuron has strictly more spikes than every other (:func:`count_predictions`
  returns ``-1`` for ties and for silent outputs). This is conservative; the fraction of
  tied images is reported beside the accuracy.
- **Intervals.** One seed: Wilson score interval for k correct out of n,

  .. math:: \frac{\hat p + \frac{z^2}{2n} \pm z\sqrt{\frac{\hat p(1-\hat p)}{n} + \frac{z^2}{4n^2}}}{1 + z^2/n}

  Several input-spike seeds on the same images: a two-stage percentile bootstrap that
  resamples images and, independently, seeds (:func:`bootstrap_accuracy`).
- **Paired comparisons.** Two methods on the same images: McNemar's test on the
  discordant pairs b (only A right) and c (only B right), exact two-sided binomial
  :math:`p = \min(1, 2\,P(X \le \min(b, c)))`, :math:`X \sim \mathrm{Bin}(b+c, 1/2)`, and the
  mid-p variant :math:`p_\mathrm{mid} = p - P(X = \min(b, c))` (Fagerland et al. 2013).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

Z95 = 1.959963984540054


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if abs(confidence - 0.95) < 1e-12:
        return Z95
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_accuracy(correct: np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """(mean accuracy, low, high) of a bool array (n_seeds, n_images), bootstrapping images and seeds.

    Each replicate draws n_images images and n_seeds seeds with replacement, independently,
    and takes the mean over the drawn block; the interval is the percentile interval.
    """
    c = np.atleast_2d(np.asarray(correct, dtype=float))
    if c.size == 0:
        raise ValueError("no outcomes to bootstrap")
    _z(confidence)
    rng = np.random.default_rng(seed)
    n_seeds, n_images = c.shape
    reps = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, n_seeds, n_seeds)
        cols = rng.integers(0, n_images, n_images)
        reps[i] = c[np.ix_(rows, cols)].mean()
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return float(c.mean()), float(lo), float(hi)


@dataclass(frozen=True)
class McNemar:
    """Paired comparison of two classifiers on the same images.

    ``b``: A right and B wrong; ``c``: A wrong and B right; ``p_exact`` and ``p_mid`` two-sided.
    """

    b: int
    c: int
    p_exact: float
    p_mid: float


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """McNemar's exact and mid-p test of per-image correctness (same images, same order)."""
    a, b_ = np.asarray(a_correct, bool).ravel(), np.asarray(b_correct, bool).ravel()
    if a.shape != b_.shape:
        raise ValueError(f"paired outcomes need the same images: {a.shape} vs {b_.shape}")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    n, k = b + c, min(b, c)
    if n == 0:
        return McNemar(b, c, 1.0, 1.0)
    pmf = [math.comb(n, i) * 0.5 ** n for i in range(k + 1)]
    p_exact = min(1.0, 2 * sum(pmf))
    p_mid = min(1.0, 2 * (sum(pmf) - 0.5 * pmf[k]))
    return McNemar(b, c, p_exact, p_mid)


def count_predictions(output_counts: np.ndarray) -> np.ndarray:
    """Class per image (and bin) from output spike counts (..., n_classes); ``-1`` if tied or silent."""
    counts = np.asarray(output_counts)
    top = counts.max(axis=-1, keepdims=True)
    n_top = (counts == top).sum(axis=-1)
    pred = np.argmax(counts, axis=-1)
    return np.where((n_top == 1) & (top[..., 0] > 0), pred, -1)


def count_voltage_predictions(output_counts: np.ndarray, output_v: np.ndarray) -> np.ndarray:
    """Class per image (and bin): most output spikes, ties broken by the highest potential.

    The spiking output layer's decision with its sub-threshold state as the tie-break: among
    the classes with the top count, the one whose readout variable (membrane potential) is
    highest at the end of the bin wins. A silent output layer is an all-class tie, decided by
    the potentials. ``-1`` (wrong) only if count and potential are both tied.
    """
    counts, v = np.asarray(output_counts), np.asarray(output_v, dtype=float)
    if counts.shape != v.shape:
        raise ValueError(f"output counts {counts.shape} and potentials {v.shape} differ in shape")
    top = counts == counts.max(axis=-1, keepdims=True)
    v_top = np.where(top, v, -np.inf)
    best = v_top.max(axis=-1, keepdims=True)
    n_best = (v_top == best).sum(axis=-1)
    return np.where(n_best == 1, np.argmax(v_top, axis=-1), -1)


def tie_fraction(output_counts: np.ndarray) -> np.ndarray:
    """Fraction of images whose top output count is shared by two or more classes (silent outputs excluded)."""
    counts = np.asarray(output_counts)
    top = counts.max(axis=-1, keepdims=True)
    tied = ((counts == top).sum(axis=-1) > 1) & (top[..., 0] > 0)
    return tied.mean(axis=0)


def accuracy_row(correct: np.ndarray, confidence: float = 0.95, n_boot: int = 2000,
                 seed: int = 0, prefix: str = "") -> dict[str, float]:
    """Tidy columns for an accuracy: n_images, n_seeds, accuracy, ci_low, ci_high, ci_method.

    ``correct`` is (n_images,) or (n_seeds, n_images); one seed gets Wilson, several the bootstrap.
    """
    c = np.atleast_2d(np.asarray(correct, bool))
    n_seeds, n_images = c.shape
    if n_seeds == 1:
        lo, hi = wilson_interval(int(c.sum()), n_images, confidence)
        acc, method = float(c.mean()), "wilson"
    else:
        acc, lo, hi = bootstrap_accuracy(c, n_boot, confidence, seed)
        method = "bootstrap images x seeds"
    return {f"{prefix}n_images": n_images, f"{prefix}n_seeds": n_seeds, f"{prefix}accuracy": acc,
            f"{prefix}ci_low": lo, f"{prefix}ci_high": hi, f"{prefix}ci_method": method}


def format_accuracy(acc: float, lo: float, hi: float, n: Optional[int] = None, seeds: Optional[int] = None) -> str:
    """``"98.70 % [97.8, 99.3]"`` (+ n and seeds) for tables and figure labels."""
    text = f"{100 * acc:.2f} % [{100 * lo:.1f}, {100 * hi:.1f}]"
    if n is not None:
        text += f", n = {n}" + (f" x {seeds} seeds" if seeds and seeds > 1 else "")
    return text
