"""Demo data: found locally, or downloaded (here from a loopback server), with a clear message offline."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pandas as pd
import pytest

from core.demo import DEMO_FILES, download_demo, find_demo_data
from core.errors import WorkbenchError
from core.io.load import load_path
from tests.servers import free_port


def test_local_demo_data_is_found(data_dir: Path) -> None:
    assert find_demo_data(data_dir) == data_dir


def test_wrong_folder_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="does not hold the demo files"):
        find_demo_data(tmp_path)


def test_offline_download_gives_clear_message(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/Subscription_Boxes.jsonl"  # nothing listens
    with pytest.raises(WorkbenchError, match="may be offline"):
        download_demo(tmp_path, url=url, timeout=2)


def test_download_splits_real_reviews_by_year(tmp_path: Path, vgames_path: Path) -> None:
    frame = pd.read_csv(vgames_path).rename(columns={"title_x": "title"})
    frame["timestamp"] = (pd.to_datetime(frame["timestamp"]) - pd.Timestamp("1970-01-01")) // pd.Timedelta("1ms")
    frame.loc[frame.index[:100], "timestamp"] += 3 * 365 * 24 * 3600 * 1000  # some reviews after 2019
    served = tmp_path / "serve"
    served.mkdir()
    frame.to_json(served / "Subscription_Boxes.jsonl", orient="records", lines=True)

    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        folder = download_demo(tmp_path / "demo", url=f"http://127.0.0.1:{server.server_port}/Subscription_Boxes.jsonl")
    finally:
        server.shutdown()
    reference = load_path(folder / DEMO_FILES[0][1])
    current = load_path(folder / DEMO_FILES[1][1])
    assert reference.report.rows_read + current.report.rows_read == len(frame)
    assert current.frame["timestamp"].dt.year.min() > 2019 >= reference.frame["timestamp"].dt.year.max()
