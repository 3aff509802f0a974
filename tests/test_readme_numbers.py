"""Every number figures/README.md quotes inside a number marker is recomputed from its CSV."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from studies.quoting import MARKER, _blank_code, check_quotes, parse_quotes

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def test_quoted_numbers_match_their_csvs():
    problems = check_quotes(FIGURES / "README.md")
    assert not problems, "\n".join(problems)
    assert len(parse_quotes((FIGURES / "README.md").read_text())) >= 100


def test_numbers_quoted_in_the_top_level_readme_match_their_csvs():
    readme = FIGURES.parent / "README.md"
    problems = check_quotes(readme)
    assert not problems, "\n".join(problems)
    assert len(parse_quotes(readme.read_text())) >= 5


def _copy(tmp_path: Path) -> Path:
    for f in FIGURES.rglob("*.csv"):  # figures/ and its per-network folders (e.g. figures/bn-cnn/)
        dest = tmp_path / f.relative_to(FIGURES)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    shutil.copy(FIGURES / "README.md", tmp_path / "README.md")
    return tmp_path / "README.md"


def test_an_edited_number_fails(tmp_path):
    readme = _copy(tmp_path)
    text = readme.read_text()
    blanked = "".join(_blank_code(text))  # same offsets, documentation code blanked
    m = next(MARKER.finditer(blanked))
    digits = re.sub(r"\d", lambda d: str((int(d.group()) + 1) % 10), text[m.start("text"):m.end("text")], count=1)
    readme.write_text(text[:m.start("text")] + digits + text[m.end("text"):])
    problems = check_quotes(readme)
    assert len(problems) == 1 and "text says" in problems[0]


def test_a_changed_csv_fails(tmp_path):
    readme = _copy(tmp_path)
    q = parse_quotes(readme.read_text())[0]
    table = pd.read_csv(tmp_path / q.csv)
    numeric = table.select_dtypes("number").columns
    table[numeric] = table[numeric] * 1.5 + 1
    table.to_csv(tmp_path / q.csv, index=False)
    assert any(q.csv in p for p in check_quotes(readme))


def test_malformed_and_ambiguous_markers_are_errors(tmp_path):
    import pandas as pd

    pd.DataFrame({"rate_hz": [50.0, 100.0], "loss_pct": [1.23, 0.4], "snn_accuracy": [0.987, 0.985]}).to_csv(
        tmp_path / "fig4_rate_range.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text("<!--num fig4_rate_range.csv | rate_hz > 0-->1<!--/num-->")
    with pytest.raises(ValueError, match="4 fields"):
        check_quotes(readme)
    readme.write_text("<!--num fig4_rate_range.csv | rate_hz > 0 | loss_pct | .1f-->1.3<!--/num-->")
    assert "not one" in check_quotes(readme)[0]
    readme.write_text("<!--num fig4_rate_range.csv | rate_hz == 50 | 100*snn_accuracy | .1f-->98.7<!--/num-->")
    assert check_quotes(readme) == []
    readme.write_text("example: `<!--num x.csv | * | y | .1f-->1<!--/num-->`\n```\n<!--num a | b-->2<!--/num-->\n```\n")
    assert parse_quotes(readme.read_text()) == []  # markers inside code are documentation
