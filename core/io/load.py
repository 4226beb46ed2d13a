"""Read review files (CSV, TSV, JSON, JSONL, their .gz, Parquet) into the canonical frame, with a validation report.

Rows that cannot be used are never dropped silently: they are returned as quarantined rows with the line they
came from and the reason, and can be exported. Files that cannot be read at all raise one `InputFileError`
naming the file and the problem.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import math
import re
import sys
import warnings
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.errors import InputFileError, SchemaError
from core.schema import CANONICAL_COLUMNS, QuarantinedRow, ValidationReport, column_key, resolve_columns

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "xlsx")
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"  # .xlsx is a zip archive
#: Cell values that mean "no value" in delimited files (compared after stripping, ignoring case).
_MISSING_WORDS = frozenset({"na", "n/a", "null", "none", "nan", "#n/a", "nil"})
_DELIMITERS = (",", ";", "\t", "|")
_TRUE = {"true", "t", "1", "yes", "y", "1.0"}
_FALSE = {"false", "f", "0", "no", "n", "0.0"}
#: Quarantined rows kept inside the report; the full set is always in `LoadResult.quarantined`.
REPORT_QUARANTINE_LIMIT = 200

csv.field_size_limit(sys.maxsize)


@dataclass(frozen=True)
class LoadResult:
    """A loaded batch: the kept rows in canonical form, the quarantined rows and the report."""

    frame: pd.DataFrame
    quarantined: pd.DataFrame
    report: ValidationReport


def load_path(
    path: str | Path,
    mapping: Mapping[str, str] | None = None,
    encoding: str | None = None,
    fmt: str | None = None,
) -> LoadResult:
    """Load a review file from disk.

    Parameters
    ----------
    path
        File to read; the format comes from the extension (``.csv``, ``.tsv``, ``.json``, ``.jsonl``,
        ``.parquet``, each optionally ``.gz``) or, failing that, from the content.
    mapping
        Explicit ``canonical -> source column`` choices for layouts that are not recognised.
    encoding
        Text encoding; UTF-8 by default.
    fmt
        Force a format instead of guessing.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(str(path), "file not found")
    if path.is_dir():
        raise InputFileError(str(path), "is a folder, expected a review file")
    _check_size(path.stat().st_size, str(path))  # before reading it into memory
    return load_bytes(path.read_bytes(), name=str(path), mapping=mapping, encoding=encoding, fmt=fmt)


def load_bytes(
    data: bytes,
    name: str,
    mapping: Mapping[str, str] | None = None,
    encoding: str | None = None,
    fmt: str | None = None,
) -> LoadResult:
    """Load a review file given as bytes (an upload or an object from storage); `name` gives its extension."""
    if fmt is not None and fmt not in FORMATS:
        raise InputFileError(name, f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    _check_size(len(data), name)
    data = _decompress(data, name)
    if not data.strip():
        raise InputFileError(name, "the file is empty")
    notes: list[str] = []
    if data.startswith(_ZIP_MAGIC) and fmt is None:
        if not _strip_gz(name).endswith((".xlsx", ".xlsm")):
            raise InputFileError(name, "is a zip archive; unzip it, or save a spreadsheet as .xlsx or CSV")
        fmt = "xlsx"
    fmt = fmt or _guess_format(name, data)
    if fmt == "parquet":
        raw, lines, bad = _read_parquet(data, name)
    elif fmt == "xlsx":
        raw, lines, bad = _read_excel(data, name, notes)
    else:
        if encoding is None and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            encoding = "utf-16"  # Excel's "Unicode Text" export
        wide = encoding is not None and encoding.lower().replace("-", "").replace("_", "").startswith(
            ("utf16", "utf32"))
        if b"\x00" in data[:8192] and not wide:
            raise InputFileError(name, "looks like a binary file, not CSV, TSV, JSON lines, Parquet or Excel")
        text = _decode(data, name, encoding, notes)
        if fmt in ("json", "jsonl"):
            raw, lines, bad = _read_json(text, name, notes)
        else:
            raw, lines, bad = _read_delimited(text, name, "\t" if fmt == "tsv" else None, notes)
    if raw.empty and not bad:
        raise InputFileError(name, "the file has a header but no rows")
    max_rows = _limits().max_rows
    if len(raw) + len(bad) > max_rows:
        raise InputFileError(name, f"has {len(raw) + len(bad):,} rows, over the limit of {max_rows:,} "
                                   "(WORKBENCH_MAX_ROWS); split it into smaller batches")
    try:
        columns = resolve_columns([str(c) for c in raw.columns], mapping)
    except SchemaError as err:
        if raw.empty:
            raise InputFileError(name, f"no row could be read ({bad[0].reason} at line {bad[0].line})") from err
        raise InputFileError(name, str(err)) from err
    if "rating" not in columns and "rating" not in (mapping or {}):
        columns = _rating_by_content(raw, columns, notes)
    frame, quarantined_rows = _canonicalise(raw, lines, columns, notes, whole_file=True)
    quarantined_rows = sorted(bad + quarantined_rows, key=lambda q: q.line)
    if frame.empty:
        # Storing an empty batch would replace an earlier one of the same name with nothing.
        raise InputFileError(name, _nothing_usable(quarantined_rows, columns))
    return _result(name, fmt, raw, frame, quarantined_rows, columns, rows_read=len(raw) + len(bad), notes=notes)


#: Column names that mean the star rating in some shops' exports and the review itself in others (German
#: "Bewertung", French "note", ...): taken as the rating only when their values read as ratings.
_RATING_OR_REVIEW_NAMES = frozenset({"bewertung", "note", "valutazione", "beoordeling", "avaliacao", "evaluation"})


def _rating_by_content(raw: pd.DataFrame, columns: dict[str, str], notes: list[str]) -> dict[str, str]:
    """`columns` with ``rating`` taken from an unused column whose name may mean it and whose values are
    ratings (at least 95 % of the given values read as numbers in 0-10); unchanged otherwise."""
    used = set(columns.values())
    for name in map(str, raw.columns):
        if name in used or column_key(name) not in _RATING_OR_REVIEW_NAMES:
            continue
        values = raw[name].dropna()
        if values.dtype == object:
            values = values.astype(str).str.strip()
            values = values[~_missing_cells(values)]
        if values.empty:
            continue
        numbers = pd.to_numeric(values.map(_rating_value), errors="coerce")
        if numbers.between(0, 10).mean() >= 0.95:
            notes.append(f"rating <- {name}: its values read as ratings (the name can also mean the review itself)")
            chosen = {**columns, "rating": name}
            return {field: chosen[field] for field in CANONICAL_COLUMNS if field in chosen}
    return columns


def _nothing_usable(quarantined: list[QuarantinedRow], columns: dict[str, str]) -> str:
    """Why no row of a file could be used, and the way out when one column is to blame."""
    kinds = Counter(part for q in quarantined for part in _reason_kind(q.reason).split("; "))
    listed = "; ".join(f"{kind} ({count})" for kind, count in kinds.most_common(3))
    message = f"none of the {len(quarantined)} rows could be used ({listed}; first at line {quarantined[0].line}); nothing stored"
    blamed = [field for field in ("rating", "helpful_vote", "verified_purchase", "timestamp")
              if field in columns and any(field in kind for kind in kinds)]
    if blamed:
        field = blamed[0]
        message += (f". If column {columns[field]!r} is not a {field}, leave it out with --map {field}= "
                    f"(or map {field} to the right column)")
    return message


def _result(
    name: str,
    fmt: str,
    raw: pd.DataFrame,
    frame: pd.DataFrame,
    quarantined: list[QuarantinedRow],
    columns: dict[str, str],
    rows_read: int,
    notes: list[str] | None = None,
) -> LoadResult:
    """The kept rows, the quarantined rows as a frame, and the validation report over both."""
    report = ValidationReport(
        source=name,
        format=fmt,
        rows_read=rows_read,
        rows_kept=len(frame),
        rows_quarantined=len(quarantined),
        duplicates=int(frame["is_duplicate"].sum()),
        columns=columns,
        missing_columns=[c for c in CANONICAL_COLUMNS if c not in columns and c != "review_id"],
        extra_columns=[c for c in raw.columns if c not in columns.values()],
        quarantine_reasons=dict(Counter(_reason_kind(q.reason) for q in quarantined)),
        quarantined=quarantined[:REPORT_QUARANTINE_LIMIT],
        notes=notes or [],
    )
    return LoadResult(frame=frame, quarantined=_quarantine_frame(quarantined), report=report)


def load_frame(
    raw: pd.DataFrame, name: str = "frame", mapping: Mapping[str, str] | None = None, strict: bool = False
) -> LoadResult:
    """Canonicalise an in-memory table (an API request, a pyfunc input) like a file.

    With `strict`, any row that would be quarantined raises `InputFileError` naming the rows and reasons,
    because a caller scoring rows expects one answer per row.
    """
    raw = raw.reset_index(drop=True)
    raw.columns = [str(c) for c in raw.columns]
    try:
        columns = resolve_columns(list(raw.columns), mapping)
    except SchemaError as err:
        raise InputFileError(name, str(err)) from err
    notes: list[str] = []
    frame, bad = _canonicalise(raw, np.arange(1, len(raw) + 1), columns, notes)
    if strict and bad:
        listed = "; ".join(f"row {q.line}: {q.reason}" for q in bad[:5])
        raise InputFileError(name, f"{len(bad)} row(s) cannot be scored: {listed}")
    return _result(name, "frame", raw, frame, bad, columns, rows_read=len(raw), notes=notes)


_STRING_FIELDS = ("title", "product_title", "category", "user_id", "product_id", "review_id")


def load_records(
    records: Sequence[Mapping[str, Any]], name: str = "request", groups: Sequence[int] | None = None
) -> pd.DataFrame:
    """The canonical frame of rows that already use canonical names and plain Python values (API requests).

    Equal to ``load_frame(pd.DataFrame(records), name, strict=True).frame`` (a property test holds the two
    together), built column by column in plain Python: ~1 ms for one review instead of ~8 ms, which is a third
    of the API's latency budget. Rows the fast path does not cover (other names or types, a row that would be
    quarantined) go through `load_frame`, so its checks and messages stay the only ones.

    `groups` (one key per row) canonicalises several requests at once as if each were loaded on its own:
    duplicates are flagged, and repeated content numbered ``-2``, ``-3``..., within a group only.
    """
    rows = list(records)
    n = len(rows)
    present = {key for row in rows for key in row}
    if not n or not present <= set(CANONICAL_COLUMNS) or not _plain(rows):
        if groups is None:
            return load_frame(pd.DataFrame(rows), name=name, strict=True).frame
        order = list(dict.fromkeys(groups))
        return pd.concat(
            [load_records([r for r, g in zip(rows, groups, strict=True) if g == key], name=name) for key in order],
            ignore_index=True,
        )
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} keys for {n} records")
    group_of = list(groups) if groups is not None else [0] * n
    texts = [row["text"].strip() for row in rows]
    ratings = [row.get("rating") for row in rows]
    votes = [row.get("helpful_vote") for row in rows]
    if (
        not all(texts)
        or max(map(len, texts)) > _limits().max_review_chars  # the loader cuts it and says so
        or any(r is not None and not 1 <= r <= 5 for r in ratings)
        or any(v is not None and v < 0 for v in votes)
    ):
        return load_frame(pd.DataFrame(rows), name=name, strict=True).frame  # the loader words the error

    strings = {
        field: [None if row.get(field) is None else row[field].strip() for row in rows] if field in present else None
        for field in _STRING_FIELDS
    }
    rating = [np.nan if r is None else float(r) for r in ratings] if "rating" in present else [np.nan] * n
    stamps = pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    if "timestamp" in present:
        stamps, bad, _ = _parse_timestamp(pd.Series([row.get("timestamp") for row in rows], dtype=object))
        if bad.any():
            return load_frame(pd.DataFrame(rows), name=name, strict=True).frame

    def column(field: str) -> list[Any]:
        return strings[field] or [None] * n

    # is_duplicate and the content ids as the loader derives them, on plain values (NaN and None count as equal).
    seen: set[tuple[Any, ...]] = set()
    duplicate = []
    for key in zip(group_of, texts, column("title"), [None if r != r else r for r in rating], column("user_id"),
                   column("product_id"), strict=True):
        duplicate.append(key in seen)
        seen.add(key)
    # pandas formats a datetime column with one precision for all rows, so the text comes from pandas too.
    stamp_text = stamps.astype("string").fillna("").tolist() if "timestamp" in present else [""] * n
    content_ids = _ids_from_keys([
        "\x1f".join(["" if v is None else v for v in (text, title)] + ["" if r != r else str(r)]
                    + ["" if v is None else v for v in (user, product)] + [stamp])
        for text, title, r, user, product, stamp in zip(texts, column("title"), rating, column("user_id"),
                                                         column("product_id"), stamp_text, strict=True)
    ], group_of)
    given_ids = strings["review_id"]
    columns: dict[str, Any] = {}
    if given_ids is not None and any(v is not None for v in given_ids):
        columns["review_id"] = pd.array([c if v is None else v for v, c in zip(given_ids, content_ids, strict=True)],
                                        dtype="string")
    columns["text"] = pd.array(texts, dtype="string")
    columns["title"] = pd.array(column("title"), dtype="string")
    columns["rating"] = np.asarray(rating, dtype=np.float64)
    columns["helpful_vote"] = (
        np.array([0.0 if v is None else float(v) for v in votes]) if "helpful_vote" in present else np.full(n, np.nan)
    )
    columns["verified_purchase"] = pd.array([row.get("verified_purchase") for row in rows], dtype="boolean")
    for field in ("product_title", "category"):
        columns[field] = pd.array(column(field), dtype="string")
    columns["timestamp"] = stamps.array
    for field in ("user_id", "product_id"):
        columns[field] = pd.array(column(field), dtype="string")
    columns["is_duplicate"] = np.asarray(duplicate, dtype=bool)
    columns["source_line"] = np.arange(1, n + 1)
    frame = pd.DataFrame(columns)
    if "review_id" not in columns:
        frame.insert(0, "review_id", content_ids)
    return frame


def _plain(rows: list[Mapping[str, Any]]) -> bool:
    """Every value of the type the fast path handles exactly as the loader does."""
    for row in rows:
        if not isinstance(row.get("text"), str):
            return False
        for field in _STRING_FIELDS:
            if not isinstance(row.get(field), str | None):
                return False
        for field in ("rating", "helpful_vote"):
            value = row.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or not math.isfinite(value)):
                return False
        if not isinstance(row.get("verified_purchase"), bool | None):
            return False
        if not isinstance(row.get("timestamp"), str | None):
            return False
    return True


# --------------------------------------------------------------------------------------------------
# Bytes -> raw table
# --------------------------------------------------------------------------------------------------


def _limits() -> Any:  # core.settings.Settings
    from core.settings import get_settings

    return get_settings()


def _megabytes(n: int) -> str:
    return f"{n // 2**20:,} MB" if n % 2**20 == 0 else f"{n:,} bytes"


def _check_size(size: int, name: str) -> None:
    limit = _limits().max_upload_bytes
    if size > limit:
        # The same number as the workbench's upload limit (server.maxUploadSize in .streamlit/config.toml).
        raise InputFileError(name, f"the file is {size / 2**20:,.1f} MB, over the {_megabytes(limit)} limit for "
                                   "review files (WORKBENCH_MAX_UPLOAD_BYTES); split it into smaller batches")


#: Bytes inflated per step: memory stays at the limit plus one step, however far a gzip bomb would inflate.
_INFLATE_STEP = 4 * 2**20


def _decompress(data: bytes, name: str) -> bytes:
    if not data.startswith(_GZIP_MAGIC):
        if name.endswith(".gz") and data:
            raise InputFileError(name, "named .gz but is not gzip-compressed")
        return data
    limit = _limits().max_decompressed_bytes
    chunks: list[bytes] = []
    size = 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:  # reads every member, like gzip.decompress
            while chunk := stream.read(min(_INFLATE_STEP, limit - size + 1)):
                size += len(chunk)
                if size > limit:
                    raise InputFileError(name, f"inflates to more than {_megabytes(limit)}, the limit for "
                                               "decompressed files (WORKBENCH_MAX_DECOMPRESSED_BYTES); refused")
                chunks.append(chunk)
        return b"".join(chunks)
    except EOFError as err:
        raise InputFileError(name, "gzip data is truncated (the file was cut off); re-download or re-export it") from err
    except (OSError, zlib.error) as err:
        raise InputFileError(name, f"gzip data is corrupt ({err})") from err


def _strip_gz(name: str) -> str:
    lowered = name.lower()
    return lowered[:-3] if lowered.endswith(".gz") else lowered


def _guess_format(name: str, data: bytes) -> str:
    if data.startswith(_PARQUET_MAGIC):
        return "parquet"
    stem = _strip_gz(name)
    if stem.endswith(".xls"):
        raise InputFileError(name, "is an old-style Excel .xls file; save it as .xlsx or CSV")
    for ext, fmt in ((".csv", "csv"), (".tsv", "tsv"), (".tab", "tsv"), (".jsonl", "jsonl"),
                     (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet"), (".pq", "parquet"),
                     (".xlsx", "xlsx"), (".xlsm", "xlsx")):
        if stem.endswith(ext):
            return fmt
    head = data[:4096].lstrip()
    if head[:1] in (b"{", b"["):
        return "jsonl"
    first_line = head.split(b"\n", 1)[0]
    return "tsv" if first_line.count(b"\t") > first_line.count(b",") else "csv"


def _decode(data: bytes, name: str, encoding: str | None, notes: list[str]) -> str:
    try:
        return data.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as err:
        if encoding is None:
            text = _windows_text(data)
            if text is not None:
                notes.append("not UTF-8: read as Windows-1252 (Western European); pass the encoding if that is wrong")
                return text
        line = data[: err.start].count(b"\n") + 1
        raise InputFileError(
            name,
            f"not valid {encoding or 'UTF-8'} text (byte 0x{data[err.start]:02x} on line {line}); "
            "save it as UTF-8 or pass the encoding (for example --encoding cp1252 for Windows files)",
        ) from err
    except LookupError as err:
        raise InputFileError(name, f"unknown encoding {encoding!r}") from err


def _windows_text(data: bytes) -> str | None:
    """The file as Windows-1252 when it reads as a legacy single-byte file rather than damaged UTF-8.

    A file saved from Excel on Windows has accented letters as single bytes, none of which forms a UTF-8
    sequence; UTF-8 with a damaged byte has mostly valid sequences. Only the first reads as Windows-1252.
    """
    lenient = data.decode("utf-8", errors="replace")
    invalid = lenient.count("\ufffd")
    valid_non_ascii = sum(1 for ch in lenient if ord(ch) > 127) - invalid
    if valid_non_ascii >= invalid:
        return None
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return None


def _read_parquet(data: bytes, name: str) -> tuple[pd.DataFrame, np.ndarray, list[QuarantinedRow]]:
    try:
        raw = pd.read_parquet(io.BytesIO(data))
    except Exception as err:  # pyarrow raises several unrelated types for damaged files
        raise InputFileError(name, f"not a readable Parquet file ({type(err).__name__}: {err})") from err
    raw.columns = [str(c) for c in raw.columns]
    return raw.reset_index(drop=True), np.arange(1, len(raw) + 1), []


def _read_excel(data: bytes, name: str, notes: list[str]) -> tuple[pd.DataFrame, np.ndarray, list[QuarantinedRow]]:
    """The first sheet of a workbook; line numbers are the sheet's row numbers (the header is row 1)."""
    try:
        sheets = pd.read_excel(io.BytesIO(data), sheet_name=None, dtype=object, engine="openpyxl")
    except Exception as err:  # openpyxl raises several unrelated types for damaged files
        raise InputFileError(name, f"not a readable Excel workbook ({type(err).__name__}: {err})") from err
    if not sheets:
        raise InputFileError(name, "the workbook has no sheets")
    sheet, raw = next(iter(sheets.items()))
    if len(sheets) > 1:
        notes.append(f"read the first sheet ({sheet!r}) of {len(sheets)}")
    raw = raw.dropna(how="all")  # formatting often leaves empty rows that Excel shows as blank
    lines = raw.index.to_numpy(dtype=np.int64) + 2
    raw = raw.reset_index(drop=True)
    raw.columns = _unique_names([str(c).strip() if not str(c).startswith("Unnamed: ") else "" for c in raw.columns])
    raw = raw.astype(object).where(raw.notna(), None)
    return raw, lines, []


def _read_json(text: str, name: str, notes: list[str]) -> tuple[pd.DataFrame, np.ndarray, list[QuarantinedRow]]:
    stripped = text.lstrip()
    records: list[dict] = []
    lines: list[int] = []
    bad: list[QuarantinedRow] = []
    items: list | None = None
    if stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputFileError(name, f"invalid JSON at line {err.lineno}: {err.msg}") from err
    elif stripped.startswith("{"):
        items = _wrapped_records(text, notes)
    if items is not None:
        for index, item in enumerate(items, start=1):
            if isinstance(item, dict):
                records.append(item)
                lines.append(index)
            else:
                bad.append(QuarantinedRow(line=index, reason="wrong type: record is not a JSON object",
                                          raw={"value": _jsonable(item)}))
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                bad.append(QuarantinedRow(line=number, reason=f"invalid JSON: {err.msg}", raw={"line": line[:2000]}))
                continue
            if isinstance(item, dict):
                records.append(item)
                lines.append(number)
            else:
                bad.append(QuarantinedRow(line=number, reason="wrong type: record is not a JSON object",
                                          raw={"line": line[:2000]}))
        if not records and bad:
            raise InputFileError(name, f"not JSON lines: line {bad[0].line}: {bad[0].reason}")
    return _records_frame(records), np.asarray(lines, dtype=np.int64), bad


def _wrapped_records(text: str, notes: list[str]) -> list | None:
    """The records of a file that is one JSON object (``{"reviews": [...]}``, or one pretty-printed review);
    None when the text is JSON lines (several values) or not JSON at all, which the line reader then reports."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    lists = [key for key, item in value.items() if isinstance(item, list) and item and isinstance(item[0], dict)]
    if len(lists) == 1:
        notes.append(f"records read from the list under the key {lists[0]!r}")
        return value[lists[0]]
    return [value]


def _records_frame(records: list[dict]) -> pd.DataFrame:
    raw = pd.DataFrame.from_records(records)
    for col in raw.columns[raw.dtypes == "float64"]:
        # Integers with a gap become float64, which rounds ids above 2**53 (1234567890123456789 -> ...768):
        # such a column keeps the values as given.
        values = [record.get(col) for record in records]
        if all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values):
            raw[col] = pd.Series(values, dtype=object)
    return raw


def _read_delimited(
    text: str, name: str, delimiter: str | None, notes: list[str]
) -> tuple[pd.DataFrame, np.ndarray, list[QuarantinedRow]]:
    """Rows of a CSV or TSV file. `delimiter` None: found from the header (comma, semicolon, tab or bar).

    A tab-separated file is read without quote handling when that reads every row whole: Amazon's TSV exports
    leave quotes in texts unescaped, and one unmatched quote would otherwise swallow the records after it.
    """
    offset = 0
    first, _, rest = text.partition("\n")
    if first.strip().lower().startswith("sep=") and len(first.strip()) == 5:  # Excel's delimiter hint line
        delimiter, text, offset = first.strip()[4], rest, 1
    if delimiter is None:
        delimiter = sniff_delimiter(first)
        if delimiter != ",":
            notes.append(f"fields separated by {_DELIMITER_NAMES[delimiter]}")
    if delimiter == "\t" and '"' in text:
        plain = _parse_delimited(text, name, delimiter, csv.QUOTE_NONE, offset)
        if not plain[3] and not _quote_wrapped(plain[1]):
            return _delimited_frame(*plain)
        quoted = _parse_delimited(text, name, delimiter, csv.QUOTE_MINIMAL, offset)
        if not plain[3] and len(plain[1]) != len(quoted[1]):
            return _delimited_frame(*plain)
        return _delimited_frame(*(quoted if len(quoted[3]) <= len(plain[3]) else plain))
    return _delimited_frame(*_parse_delimited(text, name, delimiter, csv.QUOTE_MINIMAL, offset))


_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs", "|": "bars (|)"}


def sniff_delimiter(header: str) -> str:
    """The delimiter that splits the header line into the most fields, outside quotes; comma on ties."""
    outside = re.sub(r'"[^"]*"', "", header)
    counts = {d: outside.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _quote_wrapped(rows: list[list[str]]) -> bool:
    return any(len(f) >= 2 and f[0] == '"' and f[-1] == '"' for row in rows for f in row)


def _parse_delimited(
    text: str, name: str, delimiter: str, quoting: Literal[0, 1, 2, 3], offset: int
) -> tuple[list[str], list[list[str]], list[int], list[QuarantinedRow]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    try:
        header = next(reader)
    except StopIteration as err:
        raise InputFileError(name, "the file is empty") from err
    except csv.Error as err:
        raise InputFileError(name, f"unreadable header: {err}") from err
    header = _unique_names([h.strip() for h in header])
    width = len(header)
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[QuarantinedRow] = []
    previous_end = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise InputFileError(name, f"unreadable at line {reader.line_num + offset}: {err}") from err
        start = previous_end + 1 + offset
        previous_end = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            bad.append(QuarantinedRow(
                line=start,
                reason=f"wrong number of fields: expected {width}, found {len(row)}",
                raw={"fields": row[:50]},
            ))
            continue
        rows.append(row)
        lines.append(start)
    return header, rows, lines, bad


def _delimited_frame(
    header: list[str], rows: list[list[str]], lines: list[int], bad: list[QuarantinedRow]
) -> tuple[pd.DataFrame, np.ndarray, list[QuarantinedRow]]:
    raw = pd.DataFrame(rows, columns=header, dtype=object)
    for col in raw.columns:
        raw.loc[_missing_cells(raw[col]), col] = None
    return raw, np.asarray(lines, dtype=np.int64), bad


def _missing_cells(values: pd.Series) -> np.ndarray:
    """Which string cells mean "no value": empty, or a missing-value word such as NA or null."""
    empty = (values == "").to_numpy()
    short = values.str.len() <= 4  # every missing-value word is short; most cells are not
    if not short.any():
        return empty
    return empty | (short & values.str.strip().str.lower().isin(_MISSING_WORDS)).to_numpy()


def _unique_names(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for index, col in enumerate(names):
        col = col or f"column_{index + 1}"
        seen[col] += 1
        out.append(col if seen[col] == 1 else f"{col}.{seen[col] - 1}")
    return out


# --------------------------------------------------------------------------------------------------
# Raw table -> canonical frame
# --------------------------------------------------------------------------------------------------


def _canonicalise(
    raw: pd.DataFrame, lines: np.ndarray, columns: dict[str, str], notes: list[str], whole_file: bool = False
) -> tuple[pd.DataFrame, list[QuarantinedRow]]:
    """Canonical columns, rows that cannot be used with their reasons, and `notes` on how values were read.

    `whole_file`: the rows are a whole file, so a column's rating scale can be read from its values (a request
    of a few rows cannot tell a 1-10 scale from a typo).
    """
    raw = raw.reset_index(drop=True)
    n = len(raw)
    problems: list[tuple[np.ndarray, _ReasonWithValue | str]] = []  # (mask, reason per row or constant)
    out: dict[str, pd.Series] = {}

    text = raw[columns["text"]]
    not_string = text.notna() & ~text.map(lambda v: isinstance(v, str))
    problems.append((not_string.to_numpy(), "wrong type: text is not a string"))
    text_str = text.where(~not_string).astype("string").str.strip()
    empty = text_str.isna() | (text_str == "")
    problems.append(((empty & ~not_string).to_numpy(), "empty text"))
    out["text"] = _cut_long_texts(text_str, notes)

    for name in ("title", "product_title", "category", "user_id", "product_id", "review_id"):
        if name in columns:
            out[name] = _as_string(raw[columns[name]])

    if "rating" in columns:
        rating, bad_type, outside = _parse_rating(raw[columns["rating"]], notes if whole_file else None)
        problems.append((bad_type, _reason_with_value("wrong type: rating is not a number", raw[columns["rating"]])))
        problems.append((outside, _reason_with_value("rating outside 1-5", raw[columns["rating"]])))
        out["rating"] = rating

    if "helpful_vote" in columns:
        votes, bad_type, negative = _parse_votes(raw[columns["helpful_vote"]])
        source = raw[columns["helpful_vote"]]
        problems.append((bad_type, _reason_with_value("wrong type: helpful_vote is not a number", source)))
        problems.append((negative, _reason_with_value("helpful_vote is negative", source)))
        out["helpful_vote"] = votes

    if "verified_purchase" in columns:
        verified, bad = _parse_bool(raw[columns["verified_purchase"]])
        problems.append((bad, _reason_with_value("wrong type: verified_purchase is not true/false",
                                                 raw[columns["verified_purchase"]])))
        out["verified_purchase"] = verified

    if "timestamp" in columns:
        stamps, bad, against_order = _parse_timestamp(raw[columns["timestamp"]], notes)
        problems.append((bad & ~against_order, _reason_with_value("unparsable timestamp", raw[columns["timestamp"]])))
        problems.append((against_order, _reason_with_value(
            "timestamp has day and month the other way round from the rest of the column", raw[columns["timestamp"]])))
        out["timestamp"] = stamps

    reasons = np.full(n, "", dtype=object)
    for mask, reason in problems:
        if not mask.any():
            continue
        idx = np.flatnonzero(mask)
        values = reason.at(idx) if isinstance(reason, _ReasonWithValue) else np.full(len(idx), reason, dtype=object)
        reasons[idx] = np.where(reasons[idx] == "", values, reasons[idx] + "; " + values)
    bad_rows = reasons != ""

    quarantined = [
        QuarantinedRow(line=int(lines[i]), reason=str(reasons[i]),
                       raw={str(k): _jsonable(v) for k, v in raw.iloc[i].items()})
        for i in np.flatnonzero(bad_rows)
    ]

    frame = pd.DataFrame(out)
    keep = ~bad_rows
    used = set(columns.values())
    extras = [c for c in raw.columns if c not in used and c not in frame.columns]
    nested = [c for c in extras if raw[c].map(lambda v: isinstance(v, list | dict | tuple | np.ndarray)).any()]
    extra_frame = raw[extras].copy()
    for col in nested:
        extra_frame[col] = extra_frame[col].map(_jsonable_cell)
    # A column left out of a canonical field it is named after (--map rating=) is kept under another name, so
    # the canonical column stays typed.
    extra_frame = extra_frame.rename(columns={c: f"{c}_raw" for c in extras if c in CANONICAL_COLUMNS})
    frame = pd.concat([frame, extra_frame], axis=1)
    frame = frame.loc[keep].reset_index(drop=True)
    frame["source_line"] = lines[keep]
    for name in CANONICAL_COLUMNS:
        if name not in frame.columns and name != "review_id":
            frame[name] = _missing_column(name, len(frame))
    frame["is_duplicate"] = frame.duplicated(
        subset=["text", "title", "rating", "user_id", "product_id"], keep="first"
    ).to_numpy()
    if "review_id" not in frame.columns or frame["review_id"].isna().all():
        frame["review_id"] = _content_ids(frame)
    else:
        frame["review_id"] = frame["review_id"].fillna(pd.Series(_content_ids(frame), index=frame.index))
    if "review_id" in columns:
        repeated = frame["review_id"].astype("string").value_counts()
        repeated = repeated[repeated > 1]
        if len(repeated):
            shown = ", ".join(f"{key!r} x{count}" for key, count in repeated.head(3).items())
            notes.append(f"{len(repeated)} review_id(s) repeat ({shown}); a label given to one applies to all")
    ordered = [c for c in CANONICAL_COLUMNS if c in frame.columns] + ["is_duplicate", "source_line"]
    ordered += [c for c in frame.columns if c not in ordered]
    return frame[ordered], quarantined


#: About how many characters of English the default embedding model reads (all-MiniLM-L6-v2: 256 word pieces).
EMBEDDING_WINDOW_CHARS = 1_000


def _cut_long_texts(text: pd.Series, notes: list[str]) -> pd.Series:
    """`text` with reviews over ``max_review_chars`` cut to it; `notes` say so, and how many reviews the
    embedding model reads only the beginning of."""
    lengths = text.str.len()
    beyond_window = int((lengths > EMBEDDING_WINDOW_CHARS).sum())
    if beyond_window:
        notes.append(f"{beyond_window} review(s) longer than the ~256 tokens (about {EMBEDDING_WINDOW_CHARS:,} "
                     "characters) the embedding model reads: they are embedded from their first tokens; the "
                     "other signals read the whole text")
    limit = _limits().max_review_chars
    too_long = (lengths > limit).fillna(False)
    if not too_long.any():
        return text
    notes.append(f"{int(too_long.sum())} review(s) longer than {limit:,} characters (the longest "
                 f"{int(lengths.max()):,}) cut to their first {limit:,} (WORKBENCH_MAX_REVIEW_CHARS)")
    return text.where(~too_long, text.str.slice(0, limit))


def _missing_column(name: str, n: int) -> pd.Series:
    if name in ("rating", "helpful_vote"):
        return pd.Series(np.full(n, np.nan), dtype="float64")
    if name == "verified_purchase":
        return pd.Series(pd.array([pd.NA] * n, dtype="boolean"))
    if name == "timestamp":
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns, UTC]")
    return pd.Series(pd.array([pd.NA] * n, dtype="string"))


def _as_string(values: pd.Series) -> pd.Series:
    if values.map(lambda v: v is None or isinstance(v, str)).all():  # CSV / JSON text: the fast path
        return values.astype("string").str.strip()

    def convert(v: object) -> object:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return pd.NA
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v).strip() if not isinstance(v, list | dict) else json.dumps(v)

    return values.map(convert).astype("string")


class _ReasonWithValue:
    """A reason that quotes the offending value; built only for the rows that need it (cheap on big files)."""

    def __init__(self, reason: str, source: pd.Series) -> None:
        self.reason, self.source = reason, source

    def at(self, idx: np.ndarray) -> np.ndarray:
        values = self.source.to_numpy(dtype=object)[idx]
        return np.asarray([f"{self.reason} ({repr(v)[:60]})" for v in values], dtype=object)


def _reason_with_value(reason: str, source: pd.Series) -> _ReasonWithValue:
    return _ReasonWithValue(reason, source)


#: "4 stars", "4.0 out of 5 stars" and the forms of Amazon's other shops: "4,0 von 5 Sternen", "4,0 sur 5
#: étoiles", "4,0 de 5 estrellas", "4,0 su 5 stelle", "4,0 van 5 sterren".
_RATING_TEXT = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*(?:(?:/|out\s+of|of|von|sur|de|su|van)\s*(\d+(?:[.,]\d+)?))?\s*"
    r"(?:stars?|points?|★|sternen?|étoiles?|estrellas?|stelle|sterren)?", re.IGNORECASE)
#: A column is on a ten-point scale when every rating lies in [0, 10] and at least this share, and at least
#: three ratings, lie above 5: ten-point ratings lean high, so most do; a 1-5 column with a stray typo stays a
#: 1-5 column, and the typo is quarantined.
TEN_POINT_SHARE = 0.25


def _rating_value(value: object) -> object:
    """A rating as a number on its own scale: 4, "4", "4,5", "4 stars", "4.0 out of 5 stars", "4,0 von 5 Sternen",
    "8/10", "★★★★"."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text and set(text) <= {"★", "☆"}:
        return float(text.count("★"))
    match = _RATING_TEXT.fullmatch(text)
    if match is None:
        return text  # left for to_numeric to reject
    number = float(match.group(1).replace(",", "."))
    if match.group(2):
        top = float(match.group(2).replace(",", "."))
        if top <= 1:
            return text
        number = 1 + 4 * (number - 1) / (top - 1)  # "8/10" onto 1-5, as a ten-point column is
    return number


def _parse_rating(values: pd.Series, notes: list[str] | None = None) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Ratings on the 1-5 scale, with the rows whose value is not a number and those outside 1-5.

    With `notes` (a whole file), a column on a ten-point scale (0-10 or 1-10) is mapped onto 1-5 and noted.
    """
    numbers = pd.to_numeric(values.map(_rating_value), errors="coerce").astype("float64")
    bad_type = (values.notna() & numbers.isna()).to_numpy()
    given = numbers.dropna()
    if notes is not None and len(given) and given.min() >= 0 and given.max() <= 10 and (given > 5).sum() >= 3 and (
            (given > 5).mean() >= TEN_POINT_SHARE):
        low = 0.0 if given.min() < 1 else 1.0
        numbers = 1 + 4 * (numbers - low) / (10 - low)
        notes.append(f"rating: read as a {low:g}-10 scale ({(given > 5).mean():.0%} of ratings above 5) and "
                     "mapped onto 1-5")
    outside = (numbers.notna() & ((numbers < 1) | (numbers > 5))).to_numpy()
    return numbers, bad_type, outside


def _parse_votes(values: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    def first(v: object) -> object:
        # Amazon 2014 "helpful" is [helpful, total]; 2018 "vote" is a string such as "1,234".
        if isinstance(v, list | tuple | np.ndarray):
            return v[0] if len(v) else None
        if isinstance(v, str):
            return v.replace(",", "").strip()
        return v

    cleaned = values.map(first)
    numbers = pd.to_numeric(cleaned, errors="coerce").astype("float64")
    bad_type = (cleaned.notna() & numbers.isna()).to_numpy()
    negative = (numbers < 0).to_numpy()
    # A null vote means nobody voted (Amazon 2018 convention).
    return numbers.fillna(0.0), bad_type, negative


def _parse_bool(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    def convert(v: object) -> object:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        if isinstance(v, bool | np.bool_):
            return bool(v)
        key = str(v).strip().lower()
        if key in _TRUE:
            return True
        if key in _FALSE:
            return False
        return "bad"

    converted = values.map(convert)
    bad = (converted == "bad").to_numpy()
    result = pd.array([None if x == "bad" else x for x in converted], dtype="boolean")
    return pd.Series(result, index=values.index), bad


_EARLIEST = pd.Timestamp.min.tz_localize("UTC")
_LATEST = pd.Timestamp.max.tz_localize("UTC")


_NUMERIC_DATE = re.compile(r"(\d{1,2})([./-])(\d{1,2})\2(\d{2,4})\b")


def _parse_timestamp(values: pd.Series, notes: list[str] | None = None) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Timestamps in UTC, the rows that could not be read, and those read against the column's day/month order.

    Numeric dates such as 01/03/2021 are read with one day/month order for the whole column: day first when
    some date has a first number above 12 (or the separator is a dot), month first otherwise; dates that only
    the other order can read are set aside rather than swapped one by one.
    """
    stripped = values.map(lambda v: v.strip() if isinstance(v, str) else v)
    numeric = pd.to_numeric(stripped, errors="coerce")
    result = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    against_order = np.zeros(len(values), dtype=bool)
    is_num = numeric.notna()
    if is_num.any():
        nums = numeric[is_num].astype("float64")
        # Epoch numbers come in seconds (2018), milliseconds (2023) or finer; the magnitude says which.
        for low, high, unit in ((0, 1e11, "s"), (1e11, 1e14, "ms"), (1e14, 1e17, "us"), (1e17, np.inf, "ns")):
            part = nums[(nums.abs() >= low) & (nums.abs() < high)]
            if len(part):
                result[part.index] = pd.to_datetime(part, unit=unit, utc=True, errors="coerce")
    is_text = stripped.notna() & ~is_num
    if is_text.any():
        texts = stripped[is_text].astype(str)
        parts = texts.str.match(_NUMERIC_DATE)  # 01/03/2021-style dates: read below, with the column's order
        with warnings.catch_warnings():  # "could not infer format": the mixed retry below is the answer
            warnings.simplefilter("ignore", UserWarning)
            pieces = []
            other = texts[~parts]
            if len(other):
                parsed_other = pd.to_datetime(other, utc=True, errors="coerce")
                retry = parsed_other.isna()
                if retry.any():
                    parsed_other[retry] = pd.to_datetime(other[retry], utc=True, errors="coerce", format="mixed")
                pieces.append(parsed_other)
            if parts.any():
                dated = texts[parts].str.extract(_NUMERIC_DATE)
                first, second = dated[0].astype(int), dated[2].astype(int)
                day_first_votes, month_first_votes = int((first > 12).sum()), int((second > 12).sum())
                day_first = day_first_votes > month_first_votes or (
                    day_first_votes == month_first_votes == 0 and (dated[1] == ".").mean() > 0.5)
                parsed_dates = pd.to_datetime(texts[parts], utc=True, errors="coerce", format="mixed",
                                              dayfirst=day_first)
                wrong = (second > 12) if day_first else (first > 12)
                parsed_dates[wrong[wrong].index] = pd.NaT
                pieces.append(parsed_dates)
                against_order[np.flatnonzero(is_text.to_numpy())[np.flatnonzero(parts.to_numpy())]] = wrong.to_numpy()
                if notes is not None and ((first <= 12) & (second <= 12) & (first != second)).any():
                    evidence = max(day_first_votes, month_first_votes)
                    why = (f"{evidence} date(s) can only be read that way" if evidence
                           else "the dates use dots, as day-first dates do" if day_first
                           else "no date says otherwise")
                    notes.append(f"timestamp: dates such as {texts[parts].iloc[0]!r} read "
                                 f"{'day' if day_first else 'month'} first ({why})")
        parsed = pd.concat(pieces).reindex(texts.index)
        # Dates past 2262 (or before 1677) parse at a coarser unit but do not fit the nanosecond column:
        # they are unusable timestamps (quarantined with the others), not a crash.
        in_range = (parsed >= _EARLIEST) & (parsed <= _LATEST)
        result[is_text] = parsed.where(in_range).astype("datetime64[ns, UTC]")
    bad = (stripped.notna() & result.isna()).to_numpy()
    return result, bad, against_order


def _content_ids(frame: pd.DataFrame) -> np.ndarray:
    """Stable ids from the row content; repeats of the same content get a ``-2``, ``-3``... suffix."""
    parts = ["text", "title", "rating", "user_id", "product_id", "timestamp"]
    columns = [frame[p].astype("string").fillna("").to_numpy(dtype=object) for p in parts]
    return _ids_from_keys(["\x1f".join(values) for values in zip(*columns, strict=True)])


def _ids_from_keys(keys: list[str], groups: Sequence[Any] | None = None) -> np.ndarray:
    digests = [hashlib.sha1(k.encode("utf-8")).hexdigest()[:16] for k in keys]
    seen: Counter[tuple[Any, str]] = Counter()
    out = []
    for group, digest in zip(groups if groups is not None else [0] * len(digests), digests, strict=True):
        seen[group, digest] += 1
        count = seen[group, digest]
        out.append(digest if count == 1 else f"{digest}-{count}")
    return np.asarray(out, dtype=object)


def _reason_kind(reason: str) -> str:
    """Group reasons for the summary: drop the quoted value of each part."""
    return "; ".join(part.split(" (")[0] for part in reason.split("; "))


def _jsonable(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _jsonable_cell(value: object) -> object:
    # Nested values (Amazon's "style", "image") become JSON text so every batch stores as Parquet.
    if isinstance(value, list | dict | tuple | np.ndarray):
        return json.dumps(_jsonable(value))
    return value


def _quarantine_frame(rows: list[QuarantinedRow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "line": [q.line for q in rows],
            "reason": [q.reason for q in rows],
            "raw": [json.dumps(q.raw, ensure_ascii=False) for q in rows],
        },
        columns=["line", "reason", "raw"],
    )
