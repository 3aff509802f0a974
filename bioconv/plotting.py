"""Figure helpers shared by every study: one style, vector PDF + PNG, and the plotted data as CSV.

Figure scripts only read result tables. :func:`save_figure` writes ``NAME.pdf``,
``NAME.png`` and ``NAME.csv`` (the exact data drawn) into the figure folder, each
atomically, so a figure and its numbers never disagree.

Rules every figure follows (helpers below):

- one colour and one order per normalization method and per neuron model across all
  figures (:data:`METHOD_COLORS`, :data:`METHOD_ORDER`, :data:`NEURON_COLORS`);
- ordered variables (dt, rates, durations) get an ordered palette (:func:`ordered_colors`);
- bar charts start at zero; accuracies that need a zoomed axis are drawn as points with
  their 95 % intervals (:func:`zoom_percent`), never as bars;
- no dual axes; legends outside the data (:func:`legend_outside`);
- every figure states network, neuron, normalization, number of images and seeds
  (:func:`caption`).
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import Iterable, Optional, Sequence

import matplotlib
import numpy as np

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bioconv.atomic import atomic_path  # noqa: E402
from bioconv.simulation import write_table_atomic  # noqa: E402

STYLE = Path(__file__).with_name("bioconv.mplstyle")
#: the MCR-Norm paper (sec. 8): best accuracy/latency balance between 200 and 400 Hz; biological ceiling ~200 Hz
PLAUSIBLE_BAND_HZ = (200.0, 400.0)
BIOLOGICAL_CEILING_HZ = 200.0


def use_style() -> None:
    """Activate the bioconv matplotlib style (idempotent)."""
    plt.style.use(str(STYLE))


def figure(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None, **kw):
    """``plt.subplots`` in the bioconv style; the default size is one journal column per panel row."""
    use_style()
    w = width if width is not None else 3.4 if ncols == 1 else min(7.0, 2.4 * ncols)
    h = height if height is not None else 2.4 * nrows
    kw.setdefault("layout", "constrained")
    return plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False, **kw)


def _savefig_atomic(fig, path: Path) -> None:
    # no creation date in the PDF, so an unchanged figure gives an unchanged file
    meta = {"CreationDate": None} if path.suffix == ".pdf" else {}
    with atomic_path(path, suffix=".tmp" + path.suffix) as tmp:
        fig.savefig(tmp, format=path.suffix[1:], metadata=meta)


def save_figure(fig, data: pd.DataFrame, outdir: str | os.PathLike, name: str) -> list[Path]:
    """Write ``name.pdf``, ``name.png`` and ``name.csv`` (the plotted data); close the figure."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("pdf", "png"):
        path = outdir / f"{name}.{ext}"
        _savefig_atomic(fig, path)
        paths.append(path)
    plt.close(fig)
    paths.append(write_table_atomic(data.reset_index(drop=True), outdir / f"{name}.csv"))
    return paths


def mark_rate_band(ax, axis: str = "x") -> None:
    """Shade the 200-400 Hz band and draw the ~200 Hz biological ceiling on a rate axis."""
    span = ax.axvspan if axis == "x" else ax.axhspan
    line = ax.axvline if axis == "x" else ax.axhline
    span(*PLAUSIBLE_BAND_HZ, color="0.9", zorder=0, lw=0, label="200–400 Hz band")
    line(BIOLOGICAL_CEILING_HZ, color="0.4", ls=":", lw=0.8, zorder=0, label="biological ceiling")


#: one colour per normalization method (Okabe-Ito), in this order in every figure
METHOD_ORDER: tuple[str, ...] = ("max", "robust", "spike", "mcr", "mcr-slope", "mcr-tf", "mcr-tf-slope", "mcr-tf-channel",
                                 "mcr-tf-slope-cv", "mcr-tf-channel-cv")
METHOD_COLORS: dict[str, str] = {"max": "#E69F00", "robust": "#56B4E9", "spike": "#009E73", "mcr": "#0072B2",
                                 "mcr-slope": "#CC79A7", "mcr-tf": "#D55E00", "mcr-tf-slope": "#000000",
                                 "mcr-tf-channel": "#7F7F7F", "mcr-tf-slope-cv": "#332288",
                                 "mcr-tf-channel-cv": "#88CCEE"}
METHOD_LABELS: dict[str, str] = {"max": "max-norm", "robust": "robust norm", "spike": "Spike-Norm",
                                 "mcr": "MCR-Norm", "mcr-slope": "MCR-Norm (ρ measured)", "mcr-tf": "MCR-TF",
                                 "mcr-tf-slope": "MCR-TF (ρ measured, β ≥ 0)",
                                 "mcr-tf-channel": "MCR-TF (β ≥ 0 per channel)",
                                 "mcr-tf-slope-cv": "MCR-TF (β ≥ 0), ties by potential",
                                 "mcr-tf-channel-cv": "MCR-TF (β ≥ 0 per channel), ties by potential"}
#: one colour per neuron model label of the studies
NEURON_ORDER: tuple[str, ...] = ("IF-zero", "IF-sub", "LIF", "LIF-ref2", "SRM", "SRM-5")
NEURON_COLORS: dict[str, str] = {"IF-zero": "#0072B2", "IF-sub": "#D55E00", "LIF": "#009E73",
                                 "LIF-ref2": "#117733", "SRM": "#CC79A7", "SRM-5": "#882255"}


def method_color(method: str) -> str:
    """The colour of a normalization method; unknown names raise ValueError naming the known ones."""
    if method not in METHOD_COLORS:
        raise ValueError(f"no colour for method {method!r}; known: {', '.join(METHOD_ORDER)}")
    return METHOD_COLORS[method]


def ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    """``values`` sorted by their position in ``order`` (unknown ones last, alphabetically)."""
    rank = {v: i for i, v in enumerate(order)}
    return sorted(set(values), key=lambda v: (rank.get(v, len(rank)), str(v)))


def ordered_colors(values: Sequence[float], cmap: str = "viridis", log: bool = False) -> dict[float, tuple]:
    """An ordered palette for an ordered variable: value → colour (low = dark, high = light)."""
    vals = sorted(set(float(v) for v in values))
    keys = np.log(vals) if log else np.asarray(vals)
    span = float(keys.max() - keys.min()) or 1.0
    cm = matplotlib.colormaps[cmap]
    return {v: cm(0.05 + 0.8 * (k - keys.min()) / span) for v, k in zip(vals, keys)}


def zoom_percent(ax, values: Iterable[float], margin: float = 1.0, axis: str = "y") -> None:
    """Zoom a 0-100 % axis to where the data (in %) lie, with a margin, clipped to [0, 100]."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    lo, hi = (0.0, 100.0) if v.size == 0 else (max(0.0, v.min() - margin), min(100.0, v.max() + margin))
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)


def legend_outside(ax, loc: str = "right", **kw) -> None:
    """A legend outside the axes (right of it, or below it), so it never covers data."""
    if loc == "below":
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, kw.pop("offset", -0.32)), ncol=kw.pop("ncol", 3), **kw)
    else:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), **kw)


def caption(fig, network: str, neuron: str, norm: str, n_images: Optional[int], seeds: Optional[int],
            extra: str = "") -> str:
    """State network, neuron, normalization, images and seeds on the figure (bottom line); returns the text."""
    parts = [network, neuron, norm]
    if n_images is not None:
        parts.append(f"{n_images} test images" + (f" x {seeds} input seeds" if seeds else ""))
    if extra:
        parts.append(extra)
    text = "; ".join(p for p in parts if p)
    fig.text(0.5, -0.01, text, ha="center", va="top", fontsize=5.5, color="0.3", wrap=True)
    return text


def errorbars(ax, x, y, lo, hi, **kw):
    """Points with asymmetric error bars from interval bounds (same units as y)."""
    y, lo, hi = (np.asarray(a, dtype=float) for a in (y, lo, hi))
    # an interval bound equal to the estimate may differ from it in the last bit
    return ax.errorbar(x, y, yerr=[np.maximum(y - lo, 0.0), np.maximum(hi - y, 0.0)], fmt=kw.pop("fmt", "o"), capsize=kw.pop("capsize", 1.5), **kw)


def rate_ticks(ax, rates: Iterable[float], axis: str = "x") -> None:
    """Label a log rate axis at the given rates with plain numbers (no 2x10^1 clutter)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    rates = sorted(set(float(r) for r in rates))
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
    (ax.set_xticks if axis == "x" else ax.set_yticks)(rates, [f"{r:g}" for r in rates])
