"""Canonical review rows between Spark and pandas: the Spark schema of a canonical row, the pandas frame
the model scores rebuilt from a partition exactly as `core.io.load` builds it for one file, and the partitioning
that embeds each distinct text once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    FloatType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from core.io.schema import CANONICAL_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

#: Canonical columns by kind (`core.io.load` gives strings as pandas "string", numbers as float64).
_DOUBLES = ("rating", "helpful_vote")
_BOOLEANS = ("verified_purchase",)
_TIMESTAMPS = ("timestamp",)
#: Where a row came from: the file (as Spark names it) and the 1-based line (record number for Parquet).
SOURCE_FILE, SOURCE_LINE = "source_file", "source_line"
#: The canonical columns the row's file had (comma-separated): a file without ratings has no rating column,
#: which is not the same as a rating column with every value missing only when a caller looks at columns.
PRESENT = "_columns"
EMBEDDING = "_embedding"


def _type(column: str) -> object:
    if column in _DOUBLES:
        return DoubleType()
    if column in _BOOLEANS:
        return BooleanType()
    if column in _TIMESTAMPS:
        return TimestampType()
    return StringType()


def canonical_fields() -> list[StructField]:
    """Spark fields of a canonical row: every canonical column, the duplicate flag, source file and line."""
    fields = [StructField(c, _type(c), True) for c in CANONICAL_COLUMNS]  # type: ignore[arg-type]
    return [*fields, StructField("is_duplicate", BooleanType(), True), StructField(SOURCE_FILE, StringType(), False),
            StructField(SOURCE_LINE, LongType(), False), StructField(PRESENT, StringType(), False)]


def canonical_schema() -> StructType:
    return StructType(canonical_fields())


def embedding_field() -> StructField:
    return StructField(EMBEDDING, ArrayType(FloatType(), False), False)


def to_rows(frame: pd.DataFrame, source_file: str) -> pd.DataFrame:
    """A frame from `core.io.load` as rows of `canonical_schema` (extra input columns are not carried)."""
    present = [c for c in CANONICAL_COLUMNS if c in frame.columns]
    out = pd.DataFrame(index=range(len(frame)))
    for column in CANONICAL_COLUMNS:
        values = frame[column].reset_index(drop=True) if column in frame.columns else None
        if column in _DOUBLES:
            out[column] = np.nan if values is None else pd.to_numeric(values, errors="coerce").astype("float64")
        elif column in _BOOLEANS:
            out[column] = pd.array([None] * len(frame), dtype="boolean") if values is None else values.astype("boolean")
        elif column in _TIMESTAMPS:
            # Spark keeps microseconds; Arrow refuses to drop a nanosecond part silently (no signal reads the time).
            out[column] = (pd.Series(pd.NaT, index=out.index, dtype="datetime64[us, UTC]") if values is None
                           else pd.to_datetime(values, utc=True).dt.floor("us").astype("datetime64[us, UTC]"))
        else:
            out[column] = None if values is None else values.astype(object).where(values.notna(), None)
    out["is_duplicate"] = frame["is_duplicate"].to_numpy(dtype=bool) if "is_duplicate" in frame else False
    out[SOURCE_FILE] = source_file
    out[SOURCE_LINE] = frame["source_line"].to_numpy(dtype=np.int64)
    out[PRESENT] = ",".join(present)
    return out


def to_canonical(rows: pd.DataFrame) -> pd.DataFrame:
    """The canonical frame of a partition's rows, with the dtypes and columns `core.io.load` gives a file.

    Columns none of the rows' files had are left out (as a file without them would have none), so the model
    sees the same frame as `workbench score` of the file.
    """
    present: list[str] = []
    for listed in pd.unique(rows[PRESENT]):
        present += [c for c in str(listed).split(",") if c and c not in present]
    out = pd.DataFrame(index=range(len(rows)))
    for column in CANONICAL_COLUMNS:
        if column not in present:
            continue
        values = rows[column].reset_index(drop=True)
        if column in _DOUBLES:
            out[column] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif column in _BOOLEANS:
            out[column] = values.astype("boolean")
        elif column in _TIMESTAMPS:
            out[column] = pd.to_datetime(values, utc=True)
        elif column == "review_id":
            out[column] = values.astype(str)
        else:
            out[column] = values.astype("string")
    out["is_duplicate"] = rows["is_duplicate"].fillna(False).to_numpy(dtype=bool)
    out["source_line"] = rows[SOURCE_LINE].to_numpy(dtype=np.int64)
    return out


def embeddings_of(rows: pd.DataFrame, dim: int) -> np.ndarray:
    """The ``(n, dim)`` float32 embeddings stored in a partition's rows."""
    if not len(rows):
        return np.zeros((0, dim), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in rows[EMBEDDING]]).reshape(len(rows), dim)


def member_columns(name: str) -> tuple[str, str, str]:
    """Columns holding a member's calibrated score, surprise and detail line between the two passes."""
    return f"_m_{name}_cal", f"_m_{name}_sur", f"_m_{name}_det"


def member_fields(names: Sequence[str]) -> list[StructField]:
    fields = []
    for name in names:
        cal, sur, det = member_columns(name)
        fields += [StructField(cal, DoubleType(), True), StructField(sur, DoubleType(), True),
                   StructField(det, StringType(), True)]
    return fields


def by_embedded_text(reviews: DataFrame, fields: Sequence[str], partitions: int) -> DataFrame:
    """`reviews` in `partitions` partitions, every copy of a text in the same one.

    A partition embeds each of its distinct texts once (`SentenceEmbedder.encode`), so hashing on the embedded
    fields embeds each distinct text once over the whole dataset, as one machine does; round-robin partitions
    embed a text once per partition that holds a copy (20,000 resampled Amazon reviews with 5,931 distinct texts:
    ~3 times the embedding work on 8 partitions). The price is balance: a partition holds every copy of its
    texts, so one text posted 100,000 times puts 100,000 rows in one partition (embedded once, scored row by row
    there, ~150 MB of vectors).
    """
    columns = [c for c in fields if c in reviews.columns]
    return reviews.repartition(partitions, *columns)
