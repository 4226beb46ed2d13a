"""Reading a dataset on the executors: every file through `core.io.load`, so validation and quarantine follow the
rules of `workbench ingest` exactly.

A dataset is one file, a folder of part files (searched recursively; Spark's ``_SUCCESS``, checksum and hidden
files are skipped) or the same on an object store. ``s3://bucket/prefix`` is read with the workspace's MinIO / S3
settings (``WORKBENCH_MINIO_*``): the driver lists the objects with the minio client and each executor fetches
the ones it loads, so no Hadoop jar is needed. ``s3a://`` goes through Spark's Hadoop file system and its
``spark.hadoop.fs.s3a.*`` settings, for clusters that have the ``hadoop-aws`` jars. Each file's bytes reach a
Python worker, which runs `core.io.load.load_bytes` on them: the same format sniffing, column matching, value
parsing, duplicate flags and content-derived review ids as one machine, and every quarantined row with its file,
line and reason. A file is the unit of reading (a gzip file cannot be split anyway), so a large dataset is
best stored as many parts; the rows are spread over partitions for scoring afterwards.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from core.errors import InputFileError, NotFoundError, WorkbenchError
from core.spark.frames import PRESENT, SOURCE_FILE, SOURCE_LINE, canonical_fields, to_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from core.settings import Settings

KIND, REASON, RAW = "_kind", "reason", "raw"
#: File names read as review files (each optionally .gz), as `core.io.readers` recognises them.
_REVIEW_FILES = r"(?i)\.(csv|tsv|json|jsonl|ndjson|parquet|txt)(\.gz)?$"
_SKIPPED = r"(^|/)(_|\.)[^/]*$|\.crc$"
#: Datasets read through the minio client on the executors (``s3a://`` is Hadoop's).
OBJECT_STORE = "s3://"


@dataclass(frozen=True)
class Dataset:
    """A dataset read by Spark: canonical review rows and quarantined rows, both views of `rows` (persisted on
    the executors: every file is read once; `release` frees it)."""

    rows: DataFrame
    reviews: DataFrame
    quarantine: DataFrame

    def release(self) -> None:
        self.rows.unpersist()


def _schema() -> StructType:
    return StructType([*canonical_fields(), StructField(KIND, StringType(), False),
                       StructField(REASON, StringType(), True), StructField(RAW, StringType(), True)])


def quarantine_columns() -> list[str]:
    """Columns of the quarantine output, in order."""
    return [SOURCE_FILE, SOURCE_LINE, REASON, RAW]


@dataclass(frozen=True)
class ObjectStore:
    """How the executors reach an S3-protocol server (MinIO, S3) for ``s3://`` datasets: the workspace's own
    connection settings, shipped with the task (like the rest of a task's closure, not logged)."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    secure: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        return cls(endpoint=settings.minio_endpoint, access_key=settings.minio_access_key,
                   secret_key=settings.minio_secret_key.get_secret_value(), secure=settings.minio_secure)

    def client(self) -> Any:
        from minio import Minio
        from urllib3 import PoolManager, Retry, Timeout

        # A few retries with backoff: one busy moment of the server should not set a whole file aside.
        http = PoolManager(timeout=Timeout(connect=5, read=120), retries=Retry(total=3, backoff_factor=0.5))
        return Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=self.secure,
                     http_client=http)


def _loaded(path: str, content: bytes, mapping: Mapping[str, str] | None, columns: list[str]) -> Iterator[pd.DataFrame]:
    """One file's canonical rows and quarantined rows."""
    from core.io.load import load_bytes

    try:
        result = load_bytes(content, name=path, mapping=mapping)
    except (InputFileError, WorkbenchError, ValueError) as err:
        yield _unusable(path, str(err), columns)
        return
    rows = to_rows(result.frame, path)
    rows[KIND], rows[REASON], rows[RAW] = "review", None, None
    yield rows[columns]
    if len(result.quarantined):
        yield _quarantined(path, result.quarantined, columns)


def _load_files(mapping: Mapping[str, str] | None) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def load(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        columns = [f.name for f in _schema().fields]
        for batch in batches:
            for path, content in zip(batch["path"], batch["content"], strict=True):
                yield from _loaded(str(path), bytes(content), mapping, columns)

    return load


def _fetch_objects(store: ObjectStore, bucket: str,
                   mapping: Mapping[str, str] | None) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def load(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        columns = [f.name for f in _schema().fields]
        client = store.client()
        for batch in batches:
            for path, key in zip(batch["path"], batch["key"], strict=True):
                try:
                    response = client.get_object(bucket, key)
                    try:
                        content = response.read()
                    finally:
                        response.close()
                        response.release_conn()
                except Exception as err:  # minio's S3Error, urllib3's errors: the file is set aside, said why
                    yield _unusable(str(path), f"cannot be fetched from {store.endpoint} ({type(err).__name__}: {err})",
                                    columns)
                    continue
                yield from _loaded(str(path), content, mapping, columns)

    return load


def _unusable(path: str, reason: str, columns: list[str]) -> pd.DataFrame:
    # A file with no usable row (unreadable, or not fetched) is one quarantined entry, line 0: nothing is lost
    # silently and the rest of the dataset is still scored.
    return _quarantined(path, pd.DataFrame({"line": [0], "reason": [reason], "raw": ["{}"]}), columns)


def _quarantined(path: str, quarantined: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series([None] * len(quarantined), dtype=object) for c in columns})
    out[SOURCE_FILE] = path
    out[SOURCE_LINE] = quarantined["line"].to_numpy(dtype="int64")
    out[PRESENT] = ""
    out["is_duplicate"] = False
    out[KIND] = "quarantine"
    out[REASON] = quarantined["reason"].astype(str).to_numpy()
    out[RAW] = quarantined["raw"].astype(str).to_numpy()
    return out[columns]


def read_dataset(spark: SparkSession, source: str, mapping: Mapping[str, str] | None = None,
                 settings: Settings | None = None) -> Dataset:
    """Read `source` (file, folder of parts, ``s3://`` or ``s3a://`` URL, or a stored batch's name) into canonical
    and quarantined rows, lazily; `settings` (default the environment's) say where stored batches live and how to
    reach the server of an ``s3://`` URL. `mapping` applies to files; a stored batch was mapped at ingest.

    Raises
    ------
    InputFileError
        No review file at `source`, or its objects cannot be listed.
    NotFoundError
        `source` is neither a path, a URL nor a stored batch.
    """
    from core.settings import get_settings

    s = settings or get_settings()
    location = dataset_location(source, s)
    if location != source:  # a stored batch
        source, mapping = location, None
    if source.startswith(OBJECT_STORE):
        return _read_objects(spark, source, mapping, ObjectStore.from_settings(s))
    try:
        files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(source)
                 .where(F.col("path").rlike(_REVIEW_FILES) & ~F.col("path").rlike(_SKIPPED)))
    except Exception as err:  # pyspark's AnalysisException: path does not exist
        raise InputFileError(source, f"cannot be read by Spark ({str(err).splitlines()[0]})") from None
    if files.select("path").limit(1).count() == 0:
        raise InputFileError(source, "holds no review file (.csv, .tsv, .json, .jsonl, .parquet, each optionally .gz)")
    from pyspark import StorageLevel

    loaded = (files.select("path", "content").mapInPandas(_load_files(mapping), schema=_schema())
              .persist(StorageLevel.MEMORY_AND_DISK))
    return _dataset(loaded)


def _dataset(loaded: DataFrame) -> Dataset:
    reviews = loaded.where(F.col(KIND) == "review").drop(KIND, REASON, RAW)
    quarantine = loaded.where(F.col(KIND) == "quarantine").select(*quarantine_columns())
    return Dataset(rows=loaded, reviews=reviews, quarantine=quarantine)


def object_keys(store: ObjectStore, bucket: str, prefix: str) -> list[str]:
    """The review files at ``s3://bucket/prefix``: the object itself when `prefix` names one, else every review
    file under the folder `prefix` (recursively, skipping ``_SUCCESS``, hidden and checksum files)."""
    client = store.client()
    folder = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    names = [o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True) if not o.is_dir]
    if prefix in names and not prefix.endswith("/"):
        return [prefix]
    return sorted(n for n in names if n.startswith(folder) and re.search(_REVIEW_FILES, n) and not re.search(_SKIPPED, n))


def _read_objects(spark: SparkSession, source: str, mapping: Mapping[str, str] | None, store: ObjectStore) -> Dataset:
    from pyspark import StorageLevel

    bucket, _, prefix = source[len(OBJECT_STORE):].partition("/")
    if not bucket:
        raise InputFileError(source, "names no bucket (expected s3://BUCKET/PREFIX)")
    try:
        keys = object_keys(store, bucket, prefix)
    except Exception as err:  # minio's S3Error, urllib3's connection errors
        raise InputFileError(source, f"cannot be listed at {store.endpoint} ({type(err).__name__}: {err}); check "
                                     "WORKBENCH_MINIO_ENDPOINT and the access keys") from None
    if not keys:
        raise InputFileError(source, "holds no review file (.csv, .tsv, .json, .jsonl, .parquet, each optionally .gz)")
    files = spark.createDataFrame([(f"{OBJECT_STORE}{bucket}/{k}", k) for k in keys], "path string, key string")
    loaded = (files.repartition(min(len(keys), 4 * spark.sparkContext.defaultParallelism))
              .mapInPandas(_fetch_objects(store, bucket, mapping), schema=_schema())
              .persist(StorageLevel.MEMORY_AND_DISK))
    return _dataset(loaded)


def dataset_location(source: str, settings: Settings) -> str:
    """Where Spark reads `source`: a file, a folder or a URL as given, or the Parquet object of a stored batch.

    Raises
    ------
    NotFoundError
        `source` is neither a path, a URL nor a stored batch.
    """
    if "://" in source or Path(source).exists():
        return source
    from core.io.batches import BatchStore
    from core.storage import make_storage

    storage = make_storage(settings)
    store = BatchStore(storage)
    if not store.exists(source):
        known = ", ".join(i.name for i in store.list()) or "none"
        raise NotFoundError(f"{source!r} is neither a file, a folder, a URL nor a stored batch (stored batches: {known})")
    return storage.location(f"batches/{source}/{store.info(source).version}/reviews.parquet")


def stage_frame(frame: pd.DataFrame, key: str, settings: Settings) -> str:
    """Write a canonical review frame (a model's reference, say) as Parquet under `key` of the workspace storage;
    returns where Spark reads it, as `dataset_location` does for a stored batch."""
    import io

    from core.storage import make_storage

    storage = make_storage(settings)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    storage.put_bytes(key, buffer.getvalue())
    return storage.location(key)

