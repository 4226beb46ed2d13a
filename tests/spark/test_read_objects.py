"""``s3://`` datasets on Spark without Hadoop's s3a jars: the driver lists the objects of a real S3-protocol server
(moto's server mode) with the minio client and the executors fetch them, through the same loader as local files."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pandas as pd
import pytest

from tests.servers import s3_server


def _settings(home: Path, endpoint: str):
    from core.settings import Settings

    return Settings(home=home, tracking_uri=None, storage_backend="minio", minio_endpoint=endpoint,
                    minio_access_key="testing", minio_secret_key="testing", minio_bucket="workbench")


def _put(client, bucket: str, key: str, data: bytes) -> None:
    client.put_object(bucket, key, io.BytesIO(data), length=len(data))


@pytest.mark.slow
def test_an_s3_folder_reads_like_the_same_folder_on_disk(spark, gift_cards_head: Path, tmp_path: Path) -> None:
    """Parts in nested folders, gzip, a malformed line and Spark's marker files: the same reviews and the same
    quarantined line as reading the files from a local folder."""
    from core.spark.read import ObjectStore, read_dataset

    lines = gift_cards_head.read_text(encoding="utf-8").splitlines(keepends=True)
    parts = {
        "day=1/part-00000.jsonl": "".join(lines[:80]).encode(),
        "day=2/part-00001.jsonl.gz": gzip.compress("".join(lines[80:160]).encode()),
        "part-00002.jsonl": ("".join(lines[160:200]) + '{"overall": 5.0, "reviewText": "cut off\n').encode(),
        "_SUCCESS": b"",
        ".part-00000.jsonl.crc": b"\x00",
    }
    local = tmp_path / "local"
    for key, data in parts.items():
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_bytes(data)
    with s3_server() as endpoint:
        settings = _settings(tmp_path / "home", endpoint)
        client = ObjectStore.from_settings(settings).client()
        client.make_bucket("reviews")
        for key, data in parts.items():
            _put(client, "reviews", f"incoming/{key}", data)
        _put(client, "reviews", "incoming2/other.jsonl", lines[0].encode())  # shares the prefix, not the folder
        remote = read_dataset(spark, "s3://reviews/incoming", settings=settings)
        try:
            got = remote.reviews.toPandas()
            aside = remote.quarantine.toPandas()
        finally:
            remote.release()
    on_disk = read_dataset(spark, str(local))
    try:
        expected = on_disk.reviews.toPandas()
        expected_aside = on_disk.quarantine.toPandas()
    finally:
        on_disk.release()
    assert len(got) == len(expected) > 190
    assert sorted(got["review_id"]) == sorted(expected["review_id"])
    assert got["source_file"].str.startswith("s3://reviews/incoming/").all()
    assert not got["source_file"].str.contains("incoming2").any()

    def where(frame: pd.DataFrame, root: str) -> list[tuple[str, int, str]]:
        return sorted((f.split(root, 1)[1].lstrip("/"), int(line), reason) for f, line, reason in
                      zip(frame["source_file"], frame["source_line"], frame["reason"], strict=True))

    assert where(aside, "s3://reviews/incoming") == where(expected_aside, str(local))
    assert ("part-00002.jsonl", 41) in {(f, line) for f, line, _ in where(aside, "s3://reviews/incoming")}


@pytest.mark.slow
def test_a_stored_batch_of_a_minio_workspace_is_read_on_spark(spark, subscription_path: Path, tmp_path: Path) -> None:
    """The full stack's case: batches live in the bucket, and `dataset_location` points Spark at the object."""
    from core.pipeline import Workspace
    from core.spark.read import dataset_location, read_dataset

    pd.read_csv(subscription_path).head(120).to_csv(tmp_path / "week.csv", index=False)
    with s3_server() as endpoint:
        settings = _settings(tmp_path / "home", endpoint)
        ws = Workspace.open(settings)
        ws.ingest_path(tmp_path / "week.csv", name="week")
        location = dataset_location("week", settings)
        assert location.startswith("s3://workbench/batches/week/") and location.endswith("/reviews.parquet")
        data = read_dataset(spark, location, settings=settings)
        try:
            got = data.reviews.toPandas()
            assert data.quarantine.count() == 0
        finally:
            data.release()
        stored = ws.batches.frame("week")
    assert sorted(got["review_id"]) == sorted(stored["review_id"].astype(str))
    assert list(got.sort_values("review_id")["text"]) == list(stored.sort_values("review_id")["text"])


def test_an_unreachable_server_or_an_empty_prefix_is_one_line(spark, tmp_path: Path) -> None:
    from core.errors import InputFileError
    from core.spark.read import read_dataset
    from tests.servers import free_port

    dead = _settings(tmp_path / "home", f"127.0.0.1:{free_port()}")
    with pytest.raises(InputFileError) as err:
        read_dataset(spark, "s3://reviews/incoming/", settings=dead)
    assert "cannot be listed at 127.0.0.1:" in str(err.value) and "WORKBENCH_MINIO_ENDPOINT" in str(err.value)
    assert "\n" not in str(err.value)
    with s3_server() as endpoint:
        settings = _settings(tmp_path / "home", endpoint)
        from core.spark.read import ObjectStore

        ObjectStore.from_settings(settings).client().make_bucket("reviews")
        with pytest.raises(InputFileError, match="holds no review file"):
            read_dataset(spark, "s3://reviews/nothing-here/", settings=settings)
