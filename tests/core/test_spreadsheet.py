"""Spreadsheet-safe CSV: a cell that would run as a formula is quoted, numbers stay numbers, re-import restores."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core.spreadsheet import neutralise_cell, read_safe_csv, restore_cell, to_safe_csv

REPO = Path(__file__).resolve().parents[2]
FORMULAS = ['=HYPERLINK("http://127.0.0.1:9/x","click")', "+1+2", "-2+3", "@SUM(A1:A2)", "\tcmd", "\r=1"]
TRICKY = [*FORMULAS, "'=already quoted", "''=twice", "'plain quote", "plain", "", "a=b", "1-2"]


@pytest.mark.parametrize("value", TRICKY)
def test_every_string_reads_back_exactly(value: str) -> None:
    assert restore_cell(neutralise_cell(value)) == value


@pytest.mark.parametrize("value", FORMULAS)
def test_formula_cells_start_with_a_quote(value: str) -> None:
    assert neutralise_cell(value) == "'" + value


def test_plain_text_and_non_strings_are_left_alone() -> None:
    for value in ("plain", "a=b", "", "'plain quote", -0.5, -3, None, True, float("nan")):
        out = neutralise_cell(value)
        assert out is value or out == value


def test_csv_quotes_text_keeps_numbers_and_reads_back() -> None:
    frame = pd.DataFrame({
        "review_id": ["=cmd|' /C calc'!A0", "r2", "-r3"],
        "score": [-0.5, 0.25, -1e-9],
        "rating": [-1, 2, 3],
        "is_outlier": [True, False, True],
        "category": pd.Categorical(["@home", "books", "books"]),
        "note": ["+note", None, "fine"],
    })
    text = to_safe_csv(frame)
    assert text is not None
    rows = text.splitlines()
    assert rows[0] == "review_id,score,rating,is_outlier,category,note"
    assert rows[1] == "'=cmd|' /C calc'!A0,-0.5,-1,True,'@home,'+note"
    assert rows[3].startswith("'-r3,-1e-09,3,")
    # Nothing a spreadsheet would evaluate is left at the start of a cell.
    cells = [cell for row in rows[1:] for cell in row.split(",")]
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")]
    back = read_safe_csv(io.StringIO(text))
    assert list(back["review_id"]) == list(frame["review_id"])
    assert list(back["category"]) == ["@home", "books", "books"]
    assert back["note"][0] == "+note" and pd.isna(back["note"][1])
    assert pd.api.types.is_float_dtype(back["score"]) and back["score"][0] == -0.5
    assert pd.api.types.is_integer_dtype(back["rating"]) and back["rating"][0] == -1


def test_writes_to_a_path_without_the_index(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["=1+1"], "n": [-2]}, index=[7])
    assert to_safe_csv(frame, tmp_path / "out.csv") is None
    assert (tmp_path / "out.csv").read_text() == "text,n\n'=1+1,-2\n"


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKBENCH_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


def test_cli_label_export_is_quoted_and_import_reads_it_back(tmp_path: Path) -> None:
    """A label of a review whose id and note start with '=' leaves the CLI as '=... and comes back as =..."""
    from core.labels import LabelStore

    review_id = '=HYPERLINK("http://127.0.0.1:9/x","open")'
    source = LabelStore(f"sqlite:///{tmp_path / 'one' / 'labels.db'}")
    source.add(review_id, "outlier", note="-1 star, @everyone +spam")
    source.add("r2", "normal", note="=2+2")
    exported = run_cli("label", "export", str(tmp_path / "labels.csv"), home=tmp_path / "one")
    assert exported.returncode == 0, exported.stderr
    text = (tmp_path / "labels.csv").read_text()
    assert '"\'=HYPERLINK(""http://127.0.0.1:9/x"",""open"")",outlier,"\'-1 star, @everyone +spam"' in text
    assert "r2,normal,'=2+2," in text

    imported = run_cli("label", "import", str(tmp_path / "labels.csv"), home=tmp_path / "two")
    assert imported.returncode == 0, imported.stderr
    back = LabelStore(f"sqlite:///{tmp_path / 'two' / 'labels.db'}").latest().set_index("review_id")
    assert set(back.index) == {review_id, "r2"}
    assert back.loc[review_id, "note"] == "-1 star, @everyone +spam"
    assert back.loc["r2", "note"] == "=2+2"


def test_cli_error_quoting_markup_prints_it_as_text(tmp_path: Path) -> None:
    """A bad cell quoted in the one-line error is shown as typed, not read as rich markup."""
    (tmp_path / "in.csv").write_text("review_id,label\nr1,[link=http://127.0.0.1:9/]click[/link]\n")
    result = run_cli("label", "import", str(tmp_path / "in.csv"), home=tmp_path)
    assert result.returncode == 2
    assert "[link=http://127.0.0.1:9/]click[/link]" in result.stderr
