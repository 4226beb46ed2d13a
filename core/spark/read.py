"""Reading a dataset on the executors: every file through `core.io.load`, so validation and quarantine follow the
rules of `workbench ingest` exactly.

A dataset is one file, a folder of part files (searched recursively; Spark's ``_SUCCESS``, checksum and hidden
files are skipped) or the same on an object store (``s3a://bucket/prefix``, through Spark's Hadoop file
system and its ``spark.hadoop.fs.s3a.*`` settings). Spark's ``binaryFile`` source hands each file's bytes to a
Python worker, which runs `core.io.load.load_bytes` on them: the same format sniffing, column matching, value
parsing, duplicate flags and content-derived review ids as one machine, and every quarantined row with its file,
line and reason. A file is the unit of reading (a gzip file cannot be split anyway), so a large dataset is
best stored as many parts; the rows are spread over partitions for scoring afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from core.errors import InputFileError, WorkbenchError
from core.spark.frames import PRESENT, SOURCE_FILE, SOURCE_LINE, canonical_fields, to_rows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

KIND, REASON, RAW = "_kind", "reason", "raw"
#: File names read as review files (each optionally .gz), as `core.io.readers` recognises them.
_REVIEW_FILES = r"(?i)\.(csv|tsv|json|jsonl|ndjson|parquet|txt)(\.gz)?$"
_SKIPPED = r"(^|/)(_|\.)[^/]*$|\.crc$"


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


def _load_files(mapping: Mapping[str, str] | None) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def load(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from core.io.load import load_bytes

        columns = [f.name for f in _schema().fields]
        for batch in batches:
            for path, content in zip(batch["path"], batch["content"], strict=True):
                try:
                    result = load_bytes(bytes(content), name=str(path), mapping=mapping)
                except (InputFileError, WorkbenchError, ValueError) as err:
                    # A file with no usable row (or unreadable) is one quarantined entry, line 0: nothing is lost
                    # silently and the rest of the dataset is still scored.
                    yield _quarantined(str(path), pd.DataFrame({"line": [0], "reason": [str(err)], "raw": ["{}"]}),
                                       columns)
                    continue
                rows = to_rows(result.frame, str(path))
                rows[KIND], rows[REASON], rows[RAW] = "review", None, None
                yield rows[columns]
                if len(result.quarantined):
                    yield _quarantined(str(path), result.quarantined, columns)

    return load


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


def read_dataset(spark: SparkSession, source: str, mapping: Mapping[str, str] | None = None) -> Dataset:
    """Read `source` (file, folder of parts, ``s3a://`` URL) into canonical and quarantined rows, lazily.

    Raises
    ------
    InputFileError
        No review file at `source`.
    """
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
    reviews = loaded.where(F.col(KIND) == "review").drop(KIND, REASON, RAW)
    quarantine = loaded.where(F.col(KIND) == "quarantine").select(*quarantine_columns())
    return Dataset(rows=loaded, reviews=reviews, quarantine=quarantine)
