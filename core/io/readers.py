"""Bytes to a raw table: the format (CSV, TSV, JSON, JSON lines, Parquet, Excel), gzip, the text encoding and
the delimiter, within the size limits of the settings.

`read_table` returns the rows as read, all values still as given, with the line each came from; rows that
cannot be split into fields (a wrong number of fields, a JSON line that does not parse) come back as
quarantined rows. A file that cannot be read at all raises one `InputFileError` naming the file and the problem.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.errors import InputFileError
from core.io.schema import QuarantinedRow
from core.io.values import jsonable, missing_cells

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet", "xlsx")
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_ZIP_MAGIC = b"PK\x03\x04"  # .xlsx is a zip archive
_DELIMITERS = (",", ";", "\t", "|")

csv.field_size_limit(sys.maxsize)


@dataclass(frozen=True)
class RawTable:
    """A file's rows as read: values as given, the line each row came from, and the rows that could not be split."""

    fmt: str
    raw: pd.DataFrame
    lines: np.ndarray
    bad: list[QuarantinedRow]


def read_table(
    data: bytes, name: str, encoding: str | None = None, fmt: str | None = None, notes: list[str] | None = None
) -> RawTable:
    """The rows of a review file given as bytes; `name` gives its extension, `notes` collect how it was read.

    Checks the upload and decompressed size limits and the row limit (``WORKBENCH_MAX_*``); `fmt` forces a
    format instead of guessing it from the name or the content, `encoding` the text encoding (UTF-8 by
    default, Windows-1252 when the bytes read as such).
    """
    notes = notes if notes is not None else []
    if fmt is not None and fmt not in FORMATS:
        raise InputFileError(name, f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    check_size(len(data), name)
    data = _decompress(data, name)
    if not data.strip():
        raise InputFileError(name, "the file is empty")
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
    max_rows = limits().max_rows
    if len(raw) + len(bad) > max_rows:
        raise InputFileError(name, f"has {len(raw) + len(bad):,} rows, over the limit of {max_rows:,} "
                                   "(WORKBENCH_MAX_ROWS); split it into smaller batches")
    return RawTable(fmt=fmt, raw=raw, lines=lines, bad=bad)


def limits() -> Any:  # core.settings.Settings
    """The settings that hold the size limits, read at each call (tests and deployments change them)."""
    from core.settings import get_settings

    return get_settings()


def _megabytes(n: int) -> str:
    return f"{n // 2**20:,} MB" if n % 2**20 == 0 else f"{n:,} bytes"


def check_size(size: int, name: str) -> None:
    limit = limits().max_upload_bytes
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
    limit = limits().max_decompressed_bytes
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
                                          raw={"value": jsonable(item)}))
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
        raw.loc[missing_cells(raw[col]), col] = None
    return raw, np.asarray(lines, dtype=np.int64), bad


def _unique_names(names: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    out = []
    for index, col in enumerate(names):
        col = col or f"column_{index + 1}"
        seen[col] += 1
        out.append(col if seen[col] == 1 else f"{col}.{seen[col] - 1}")
    return out
