"""`workbench shift --engine`: the choices a user can get wrong are refused with one line before any work starts
(the Spark run itself is tested in tests/spark/test_shift.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WORKBENCH_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)


@pytest.mark.parametrize(("options", "message"), [
    (["--engine", "dask", "--out", "r.html"], "--engine must be local or spark, got 'dask'"),
    (["--engine", "spark", "--out", "r.csv"], "with --engine spark the report is .html or .json"),
    (["--master", "local[2]", "--out", "r.html"], "--master needs --engine spark"),
])
def test_shift_refuses_an_engine_choice_it_cannot_honour(options: list[str], message: str, tmp_path: Path) -> None:
    reference, current = tmp_path / "a.csv", tmp_path / "b.csv"
    for path in (reference, current):
        path.write_text("text,rating\nfine,5\n", encoding="utf-8")
    result = run_cli("shift", "--reference", str(reference), "--current", str(current), *options, home=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.csv").exists()
    assert "Traceback" not in result.stderr


def test_shift_help_says_what_the_spark_engine_covers(tmp_path: Path) -> None:
    result = run_cli("shift", "--help", home=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--engine" in text and "--master" in text
    assert "every row" in text and "seeded sample" in text
