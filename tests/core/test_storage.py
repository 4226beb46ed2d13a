"""Local storage and stored batches: atomic writes, a failed upload leaves earlier data intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InputFileError, NotFoundError, ParameterError, StorageError
from core.io.batches import BatchStore
from core.io.load import load_bytes
from core.storage import LocalStorage


def test_local_storage_round_trip_and_atomic_write(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("a/b.txt", b"one")
    storage.put_bytes("a/b.txt", b"two")
    assert storage.get_bytes("a/b.txt") == b"two"
    assert storage.list("a/") == ["a/b.txt"]
    assert not list((tmp_path / "a").glob(".*tmp"))  # no temporary files left behind
    with pytest.raises(NotFoundError):
        storage.get_bytes("a/missing.txt")
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.put_bytes("../escape", b"x")


def test_failed_upload_leaves_the_earlier_batch_intact(tmp_path: Path) -> None:
    store = BatchStore(LocalStorage(tmp_path))
    store.save("week1", load_bytes(b"text,rating\ngood,5\nbad,1\n", name="w1.csv"))
    with pytest.raises(InputFileError):
        store.ingest_bytes("week1", b"\x00\x01binary", "w1.csv")
    assert list(store.frame("week1")["text"]) == ["good", "bad"]


def test_batch_without_manifest_does_not_read_as_valid(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes("batches/half/v1/reviews.parquet", b"partial")
    store = BatchStore(storage)
    assert [b.name for b in store.list()] == []
    with pytest.raises(NotFoundError, match="no stored batch named 'half'"):
        store.frame("half")


def test_batch_keeps_quarantine_and_report(tmp_path: Path) -> None:
    store = BatchStore(LocalStorage(tmp_path))
    info = store.save("mixed", load_bytes(b"text,rating\ngood,5\n,3\nodd,11\n", name="m.csv"))
    assert (info.rows, info.quarantined) == (1, 2)
    assert list(store.quarantined("mixed")["line"]) == [3, 4]
    assert store.report("mixed").batch == "mixed"


def test_bad_batch_name_is_rejected(tmp_path: Path) -> None:
    store = BatchStore(LocalStorage(tmp_path))
    with pytest.raises(ParameterError, match="batch name"):
        store.save("../x", load_bytes(b"text\nhi\n", name="a.csv"))


def test_a_file_path_is_not_a_stored_batch(tmp_path: Path) -> None:
    # `workbench train --reference /abs/path/ref.csv` asks whether the path names a batch before loading it.
    store = BatchStore(LocalStorage(tmp_path))
    assert not store.exists("/tmp/reviews/ref.csv") and not store.exists("../x")
    store.save("ref.csv", load_bytes(b"text\nhi\n", name="a.csv"))
    assert store.exists("ref.csv")
