"""A SparkSession on local[2], shared by the Spark tests, over the session's trained workspace."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def spark(trained_workspace):
    """Spark on two local cores; its Python workers load the workspace's registered champion."""
    pytest.importorskip("pyspark")
    from core.spark import spark_session

    session = spark_session("local[2]", settings=trained_workspace.settings, app_name="workbench-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def gift_cards_head(tmp_path_factory: pytest.TempPathFactory, giftcards_path: Path) -> Path:
    """Lines 1,001-1,700 of the real Gift Cards file: 696 reviews and 4 with empty text (set aside), small enough
    for the suite (bench/spark.py checks the same equality on 20,000 reviews)."""
    target = tmp_path_factory.mktemp("spark-data") / "gift_cards_head.jsonl"
    with gzip.open(giftcards_path, "rt", encoding="utf-8") as src:
        lines = [next(src) for _ in range(1700)][1000:]
    target.write_text("".join(lines), encoding="utf-8")
    return target
