"""The Spark engine against the single-machine path on real reviews (local[2], the real embedding model)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_spark_scores_equal_the_single_machine_scores_and_keep_the_quarantine(
    spark, trained_workspace, gift_cards_head: Path, tmp_path: Path
) -> None:
    from core.io.load import load_path
    from core.spark import score_dataset

    out = tmp_path / "scored"
    summary = score_dataset(str(gift_cards_head), str(out), spark=spark, settings=trained_workspace.settings,
                            partitions=8)
    single, version = trained_workspace.score(gift_cards_head)
    expected = single.frame.set_index("review_id")

    got = pd.read_parquet(out).set_index("review_id").loc[expected.index]
    assert summary.partitions == 8 and summary.batch_signal_blocks == 1
    assert summary.model_version == version.version
    assert summary.rows_scored == len(expected) == 696
    assert list(got.columns[2:]) == list(expected.columns)  # source_file, source_line, then `workbench score`'s
    print("spark timings (s):", summary.timings_s)
    assert (got["is_outlier"] == expected["is_outlier"]).all()
    numeric = [c for c in expected.columns if expected[c].dtype.kind == "f"]
    diffs = (got[numeric] - expected[numeric]).abs().max()
    print("largest differences:", diffs.sort_values().tail(4).to_dict())
    # Both sides embed with ONNX fp32, one review per pass: the same vectors to the bit. What is left is float32
    # rounding in the neighbour search, whose matrix shapes follow the partitions (kNN ~5e-9 measured), so every
    # number agrees within the 1e-6 and every reason (its printed numbers, the copy it names) is the same.
    assert (diffs <= 1e-6).all(), diffs[diffs > 1e-6].to_dict()
    assert (got["reason"] == expected["reason"]).all()
    assert summary.group_evidence == pytest.approx(single.result.group_evidence, rel=1e-9)
    assert summary.flagged == int(expected["is_outlier"].sum())

    quarantine = pd.read_parquet(out / "_quarantine").sort_values("source_line")
    reference = load_path(gift_cards_head).quarantined
    assert quarantine["source_line"].tolist() == reference["line"].tolist() == [216, 351, 456, 666]
    assert quarantine["reason"].tolist() == reference["reason"].tolist()
    assert quarantine["source_file"].str.endswith("gift_cards_head.jsonl").all()
    written = json.loads((out / "_SUMMARY.json").read_text())
    assert written["rows_quarantined"] == 4 and written["rows_read"] == 700


def test_cli_scores_a_folder_of_parts_on_spark_and_sets_malformed_rows_aside(
    spark, trained_workspace, gift_cards_head: Path, vgames_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from core.settings import get_settings

    parts = tmp_path / "parts"
    (parts / "day=1").mkdir(parents=True)
    lines = gift_cards_head.read_text(encoding="utf-8").splitlines(keepends=True)[:120]  # no empty text
    lines.insert(40, '{"overall": 5.0, "reviewText": "cut off here\n')  # line 41: not JSON
    (parts / "day=1" / "part-00000.jsonl").write_text("".join(lines), encoding="utf-8")
    pd.read_csv(vgames_path).head(80).to_csv(parts / "part-00001.csv.gz", index=False)
    (parts / "_SUCCESS").write_text("")
    out = tmp_path / "scored"
    home = trained_workspace.settings.home
    monkeypatch.setenv("WORKBENCH_HOME", str(home))
    monkeypatch.setenv("WORKBENCH_TRACKING_URI", str(trained_workspace.settings.tracking_uri))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["score", str(parts), "--engine", "spark", "--out", str(out), "--json",
                                          "--partitions", "3"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["files"] == 2 and summary["rows_scored"] == 200 and summary["rows_quarantined"] == 1
    scores = pd.read_parquet(out)
    assert len(scores) == 200 and scores["score"].between(0, 1).all()
    assert sorted(scores["source_file"].str.rsplit("/", n=1).str[-1].unique()) == ["part-00000.jsonl",
                                                                                 "part-00001.csv.gz"]
    (bad,) = pd.read_parquet(out / "_quarantine").itertuples()
    assert bad.source_file.endswith("day=1/part-00000.jsonl") and bad.source_line == 41
    assert "JSON" in bad.reason or "json" in bad.reason
    assert json.loads((out / "_SUMMARY.json").read_text())["rows_scored"] == 200


def test_a_stored_batch_is_scored_on_spark_by_its_name(spark, trained_workspace, tmp_path: Path) -> None:
    """`workbench score NAME --engine spark` reads the stored batch's Parquet object: the same reviews and flags as
    one machine's score of that batch."""
    from core.spark import score_dataset

    ws = trained_workspace
    out = tmp_path / "scored"
    summary = score_dataset("current", str(out), spark=spark, settings=ws.settings)
    assert summary.rows_scored == 150 and summary.rows_quarantined == 0 and summary.source == "current"
    got = pd.read_parquet(out).set_index("review_id")
    single, _ = ws.score(ws.batches.frame("current"), alias="champion")
    want = single.frame.set_index("review_id")
    assert sorted(got.index) == sorted(want.index)
    assert (got.loc[want.index, "is_outlier"] == want["is_outlier"]).all()
    assert got["source_file"].str.endswith("/reviews.parquet").all()


def test_every_copy_of_a_text_lands_in_one_partition_so_it_is_embedded_once(spark) -> None:
    from pyspark.sql import functions as F

    from core.spark.frames import by_embedded_text

    texts = [(f"title {i % 7}" if i % 3 else None, f"review {i % 40}") for i in range(2_000)]
    rows = spark.createDataFrame(texts, "title string, text string").repartition(8)  # copies spread round-robin
    spread = by_embedded_text(rows, ("title", "text"), 8).withColumn("part", F.spark_partition_id())

    per_text = spread.groupBy("title", "text").agg(F.countDistinct("part").alias("parts")).collect()
    assert len(per_text) == len(set(texts))
    assert max(r["parts"] for r in per_text) == 1
    assert spread.select("part").distinct().count() > 4  # still spread over the partitions
    assert spread.rdd.getNumPartitions() == 8


def test_a_model_trained_on_int8_vectors_is_scored_with_int8_whatever_the_configured_backend(
    spark, trained_workspace, gift_cards_head: Path, subscription_path: Path, tmp_path: Path
) -> None:
    """The executors embed with the model's own vectors (the workspace is left at the default backend), and the
    scores equal one machine's with the embedder the model was trained with."""
    from core.bundle import ModelBundle
    from core.io.load import load_path
    from core.spark import score_dataset
    from core.text.embed import SentenceEmbedder

    settings = trained_workspace.settings
    int8 = SentenceEmbedder(backend="onnx-int8", onnx_dir=settings.onnx_dir, cache=None)
    bundle = ModelBundle.fit(load_path(subscription_path).frame.head(120), int8, detectors=("knn",), project=False)
    folder = bundle.save(tmp_path / "int8-model")

    out = tmp_path / "scored"
    summary = score_dataset(str(gift_cards_head), str(out), model=str(folder), spark=spark, settings=settings,
                            partitions=4)
    assert summary.embedding_backend == "onnx-int8"
    want = bundle.score(load_path(gift_cards_head).frame, int8).frame.set_index("review_id")
    got = pd.read_parquet(out).set_index("review_id").loc[want.index]
    assert (got["score"] - want["score"]).abs().max() <= 1e-6
    assert (got["is_outlier"] == want["is_outlier"]).all()
