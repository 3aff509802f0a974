r"""Numbers quoted in Markdown that are recomputed from the CSV beside their figure.

A quoted number is wrapped in two HTML comments (invisible when rendered)::

    <!--num conversion_acceptance_summary.csv | variant == "mcr" | 100*best_accuracy | .1f-->98.7<!--/num-->

The four fields of the opening marker are

1. the CSV file, relative to the Markdown file's folder;
2. a :meth:`pandas.DataFrame.query` selecting rows (``*`` for all rows);
3. an expression over the selected columns (each a numpy array named after its column;
   columns whose names are not identifiers are reached as ``col("SNN error T=100 ms (%)")``)
   with the reducers ``max``, ``min``, ``mean``, ``median``, ``sum``, ``first`` and ``count``
   and ``abs``, ``round``; it must give one number (a one-row selection may be used directly);
4. a Python format spec (e.g. ``.1f``); a ``,`` in it groups thousands, written with a space
   as in the text (``67 887``).

:func:`check_quotes` recomputes every marked number and returns the mismatches; the test
``tests/test_readme_numbers.py`` fails on any, so an edited number or a changed CSV cannot
drift apart silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MARKER = re.compile(r"<!--num\s+(?P<spec>.*?)-->(?P<text>.*?)<!--/num-->", re.S)


@dataclass(frozen=True)
class Quote:
    """One marked number: where it is, how to recompute it, what the text says."""

    line: int
    csv: str
    query: str
    expr: str
    fmt: str
    text: str


CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def parse_quotes(markdown: str) -> list[Quote]:
    """Every marked number of a Markdown text (not inside code spans or blocks); ValueError for a malformed marker."""
    quotes = []
    # markers are located with code blanked out (same offsets), their fields read from the original text
    # (pandas queries quote column names with backticks, which look like code spans)
    blanked = "".join(_blank_code(markdown))
    for m in MARKER.finditer(blanked):
        spec = markdown[m.start("spec"):m.end("spec")]
        parts = [p.strip() for p in spec.split("|")]
        line = markdown.count("\n", 0, m.start()) + 1
        if len(parts) != 4:
            raise ValueError(f"line {line}: a number marker needs 4 fields 'csv | query | expr | format', "
                             f"got {spec!r}")
        quotes.append(Quote(line, *parts, text=markdown[m.start("text"):m.end("text")].strip()))
    return quotes


def _blank_code(markdown: str):
    """The text with code blocks and code spans outside number markers replaced by spaces."""
    pos = 0
    for m in CODE.finditer(markdown):
        inside = markdown.rfind("<!--num", 0, m.start()) > markdown.rfind("-->", 0, m.start())
        yield markdown[pos:m.start()]
        yield m.group() if inside else re.sub(r"[^\n]", " ", m.group())
        pos = m.end()
    yield markdown[pos:]


def _scalar(value: Any) -> float:
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"expression gives {arr.size} values, not one; reduce it (max, min, mean, first, ...)")
    return float(arr.reshape(-1)[0])


def evaluate(quote: Quote, folder: Path) -> float:
    """Recompute a quoted number from its CSV."""
    table = pd.read_csv(folder / quote.csv)
    rows = table if quote.query == "*" else table.query(quote.query)
    if rows.empty:
        raise ValueError(f"line {quote.line}: query {quote.query!r} selects no rows of {quote.csv}")
    names: dict[str, Any] = {c: rows[c].to_numpy() for c in rows.columns if str(c).isidentifier()}
    names.update(col=lambda c: rows[c].to_numpy(), max=np.max, min=np.min, mean=np.mean, median=np.median,
                 sum=np.sum, first=lambda a: np.asarray(a)[0], count=len, abs=np.abs, round=np.round, np=np)
    return _scalar(eval(quote.expr, {"__builtins__": {}}, names))  # noqa: S307 (expressions from our own docs)


def format_number(value: float, fmt: str) -> str:
    """Format like the text: Python format spec, thousands grouped with spaces."""
    return format(value, fmt).replace(",", " ")


def check_quotes(markdown_path: str | Path) -> list[str]:
    """Mismatches ("line N: text says X, CSV gives Y") of every marked number in a Markdown file."""
    path = Path(markdown_path)
    problems = []
    for q in parse_quotes(path.read_text()):
        try:
            expected = format_number(evaluate(q, path.parent), q.fmt)
        except Exception as exc:  # noqa: BLE001 - every failure is reported with its line
            problems.append(f"line {q.line}: {q.csv} | {q.query} | {q.expr}: {type(exc).__name__}: {exc}")
            continue
        if expected != q.text:
            problems.append(f"line {q.line}: text says {q.text!r}, {q.csv} gives {expected!r} ({q.expr})")
    return problems
