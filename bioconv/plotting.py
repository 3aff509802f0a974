"""Figure helpers shared by every study: one style, vector PDF + PNG, and the plotted data as CSV.

Figure scripts only read result tables. :func:`save_figure` writes ``NAME.pdf``,
``NAME.png`` and ``NAME.csv`` (the exact data drawn) into the figure folder, each
atomically, so a figure and its numbers never disagree.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

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
