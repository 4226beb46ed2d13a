"""Hostile sizes: a gzip bomb, an oversized file, too many rows, a million-character review."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import InputFileError
from core.io.load import load_bytes, load_path, load_records
from core.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[3]
MB = 2**20


@pytest.fixture()
def limits(monkeypatch: pytest.MonkeyPatch):
    """Set WORKBENCH_MAX_* limits for one test."""

    def set_limits(**values: int) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"WORKBENCH_{key.upper()}", str(value))
        get_settings.cache_clear()

    yield set_limits
    get_settings.cache_clear()


def _gzip_bomb(path: Path, inflated: int) -> Path:
    """A valid gzip file of `inflated` bytes of 'a': 64 MB members, each about 65 KB compressed."""
    member = gzip.compress(b"a" * (64 * MB), compresslevel=9, mtime=0)
    with path.open("wb") as out:
        for _ in range(inflated // (64 * MB)):
            out.write(member)
    return path


def test_a_gzip_bomb_is_refused_at_the_limit_with_memory_bounded(tmp_path: Path) -> None:
    bomb = _gzip_bomb(tmp_path / "reviews.csv.gz", 2048 * MB)  # 2 GB once inflated
    assert bomb.stat().st_size < 3 * MB
    # A fresh process, so that its peak RSS is this load's and nothing else's.
    script = (
        "import json, sys, time\n"
        "from core.errors import InputFileError\n"
        "from core.io.load import load_path\n"
        "def status(key):\n"
        "    line = next(l for l in open('/proc/self/status') if l.startswith(key + ':'))\n"
        "    return int(line.split()[1]) * 1024\n"
        "open('/proc/self/clear_refs', 'w').write('5')  # the peak (VmHWM) starts again from here\n"
        "before, start = status('VmRSS'), time.perf_counter()\n"
        "try:\n"
        "    load_path(sys.argv[1])\n"
        "    message = None\n"
        "except InputFileError as err:\n"
        "    message = str(err)\n"
        "print(json.dumps({'message': message, 'growth': status('VmHWM') - before,\n"
        "                  'seconds': time.perf_counter() - start}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WORKBENCH_MAX_DECOMPRESSED_BYTES": str(64 * MB)}
    result = subprocess.run([sys.executable, "-c", script, str(bomb)], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["message"] == (f"{bomb}: inflates to more than 64 MB, the limit for decompressed files "
                                  "(WORKBENCH_MAX_DECOMPRESSED_BYTES); refused")
    assert outcome["growth"] < 200 * MB, outcome  # the limit plus a few steps, not the 2 GB it would inflate to
    assert outcome["seconds"] < 20, outcome


def test_a_gzip_file_within_the_limit_still_loads_whole(limits, tmp_path: Path) -> None:
    rows = "".join(f"review number {i} about the box,{1 + i % 5}\n" for i in range(20_000))
    data = gzip.compress(("text,rating\n" + rows).encode())
    limits(max_decompressed_bytes=len(rows) + 100)
    assert load_bytes(data, name="ok.csv.gz").report.rows_kept == 20_000
    limits(max_decompressed_bytes=len(rows) - 100)
    with pytest.raises(InputFileError, match="inflates to more than"):
        load_bytes(data, name="ok.csv.gz")


def test_the_upload_limit_is_the_workbench_one_and_the_message_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    workbench_mb = config["server"]["maxUploadSize"]  # Streamlit counts 1024 * 1024 bytes per MB
    monkeypatch.delenv("WORKBENCH_MAX_UPLOAD_BYTES", raising=False)
    get_settings.cache_clear()
    try:
        assert Settings(_env_file=None).max_upload_bytes == workbench_mb * MB
        big = tmp_path / "big.csv"
        with big.open("wb") as handle:  # sparse: takes no disk space and is never read
            handle.truncate(workbench_mb * MB + 1)
        started = time.perf_counter()
        with pytest.raises(InputFileError) as info:
            load_path(big)
        assert time.perf_counter() - started < 1
        assert f"over the {workbench_mb} MB limit" in str(info.value)
        assert "WORKBENCH_MAX_UPLOAD_BYTES" in str(info.value) and len(str(info.value).splitlines()) == 1
    finally:
        get_settings.cache_clear()


def test_too_many_rows_are_refused_with_the_count(limits) -> None:
    limits(max_rows=5)
    five = "text\n" + "".join(f"review {i}\n" for i in range(5))
    assert load_bytes(five.encode(), name="five.csv").report.rows_kept == 5
    with pytest.raises(InputFileError, match=r"six.csv: has 6 rows, over the limit of 5 \(WORKBENCH_MAX_ROWS\)"):
        load_bytes((five + "one more\n").encode(), name="six.csv")


def _with_long_review(chars: int) -> bytes:
    rng = np.random.default_rng(0)
    words = np.array(["the", "box", "arrived", "late", "and", "the", "games", "inside", "were", "scratched"])
    long = " ".join(rng.choice(words, size=chars // 3))[:chars]
    frame = pd.DataFrame({"review_id": ["long", "a", "b"], "text": [long, "Fine box.", "My kid loved it."],
                          "rating": [1, 5, 4]})
    return frame.to_csv(index=False).encode()


def test_a_million_character_review_is_cut_and_the_report_says_so(limits) -> None:
    data = _with_long_review(1_000_000)
    started = time.perf_counter()
    result = load_bytes(data, name="long.csv")
    assert time.perf_counter() - started < 10
    text = result.frame.set_index("review_id")["text"]
    limit = Settings(_env_file=None).max_review_chars
    assert len(text["long"]) == limit and text["a"] == "Fine box."
    assert any("1 review(s) longer than" in n and "cut to their first" in n for n in result.report.notes)
    assert any("embedded from their first tokens" in n for n in result.report.notes)
    assert any("embedded from their first tokens" in line for line in result.report.summary_lines())
    # the API's fast path gives the same frame
    records = [{"review_id": "long", "text": pd.read_csv(pd.io.common.BytesIO(data))["text"][0]}]
    assert len(load_records(records)["text"][0]) == limit


@pytest.mark.slow
def test_a_long_review_is_embedded_from_its_first_tokens(embedder, limits) -> None:
    long = load_bytes(_with_long_review(1_000_000), name="long.csv").frame["text"][0]
    started = time.perf_counter()
    vectors = embedder.encode([long, long[:5_000]])
    assert time.perf_counter() - started < 30  # not minutes
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)  # only the beginning counts
    assert np.isfinite(vectors).all()
