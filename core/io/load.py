"""A raw table to the canonical review frame, the quarantined rows and the validation report.

The entry points: `load_path` and `load_bytes` (a review file, read by `core.io.readers`), `load_frame` (an
in-memory table) and `load_records` (API requests, on a fast path). Columns are matched to the canonical names
(`core.io.schema`), cell values parsed (`core.io.values`), duplicates flagged and review ids derived from the
content. Rows that cannot be used are never dropped silently: they are returned as quarantined rows with the
line they came from and the reason, and can be exported.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InputFileError, SchemaError
from core.io.readers import check_size, limits, read_table
from core.io.schema import CANONICAL_COLUMNS, QuarantinedRow, ValidationReport, column_key, resolve_columns
from core.io.values import (
    as_string,
    jsonable,
    jsonable_cell,
    missing_cells,
    parse_bool,
    parse_rating,
    parse_timestamp,
    parse_votes,
    rating_value,
)

#: Quarantined rows kept inside the report; the full set is always in `LoadResult.quarantined`.
REPORT_QUARANTINE_LIMIT = 200


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
    check_size(path.stat().st_size, str(path))  # before reading it into memory
    return load_bytes(path.read_bytes(), name=str(path), mapping=mapping, encoding=encoding, fmt=fmt)


def load_bytes(
    data: bytes,
    name: str,
    mapping: Mapping[str, str] | None = None,
    encoding: str | None = None,
    fmt: str | None = None,
) -> LoadResult:
    """Load a review file given as bytes (an upload or an object from storage); `name` gives its extension."""
    notes: list[str] = []
    table = read_table(data, name, encoding=encoding, fmt=fmt, notes=notes)
    raw, lines, bad = table.raw, table.lines, table.bad
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
    return _result(name, table.fmt, raw, frame, quarantined_rows, columns, rows_read=len(raw) + len(bad),
                   notes=notes)


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
            values = values[~missing_cells(values)]
        if values.empty:
            continue
        numbers = pd.to_numeric(values.map(rating_value), errors="coerce")
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
        or max(map(len, texts)) > limits().max_review_chars  # the loader cuts it and says so
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
        stamps, bad, _ = parse_timestamp(pd.Series([row.get("timestamp") for row in rows], dtype=object))
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
    # review_id first, as the loader orders it: inserting a column afterwards costs more than the whole dict.
    columns: dict[str, Any] = {"review_id": content_ids}
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
    return pd.DataFrame(columns)


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
            out[name] = as_string(raw[columns[name]])

    if "rating" in columns:
        rating, bad_type, outside = parse_rating(raw[columns["rating"]], notes if whole_file else None)
        problems.append((bad_type, _reason_with_value("wrong type: rating is not a number", raw[columns["rating"]])))
        problems.append((outside, _reason_with_value("rating outside 1-5", raw[columns["rating"]])))
        out["rating"] = rating

    if "helpful_vote" in columns:
        votes, bad_type, negative = parse_votes(raw[columns["helpful_vote"]])
        source = raw[columns["helpful_vote"]]
        problems.append((bad_type, _reason_with_value("wrong type: helpful_vote is not a number", source)))
        problems.append((negative, _reason_with_value("helpful_vote is negative", source)))
        out["helpful_vote"] = votes

    if "verified_purchase" in columns:
        verified, bad = parse_bool(raw[columns["verified_purchase"]])
        problems.append((bad, _reason_with_value("wrong type: verified_purchase is not true/false",
                                                 raw[columns["verified_purchase"]])))
        out["verified_purchase"] = verified

    if "timestamp" in columns:
        stamps, bad, against_order = parse_timestamp(raw[columns["timestamp"]], notes)
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
                       raw={str(k): jsonable(v) for k, v in raw.iloc[i].items()})
        for i in np.flatnonzero(bad_rows)
    ]

    frame = pd.DataFrame(out)
    keep = ~bad_rows
    used = set(columns.values())
    extras = [c for c in raw.columns if c not in used and c not in frame.columns]
    nested = [c for c in extras if raw[c].map(lambda v: isinstance(v, list | dict | tuple | np.ndarray)).any()]
    extra_frame = raw[extras].copy()
    for col in nested:
        extra_frame[col] = extra_frame[col].map(jsonable_cell)
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
    limit = limits().max_review_chars
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


class _ReasonWithValue:
    """A reason that quotes the offending value; built only for the rows that need it (cheap on big files)."""

    def __init__(self, reason: str, source: pd.Series) -> None:
        self.reason, self.source = reason, source

    def at(self, idx: np.ndarray) -> np.ndarray:
        values = self.source.to_numpy(dtype=object)[idx]
        return np.asarray([f"{self.reason} ({repr(v)[:60]})" for v in values], dtype=object)


def _reason_with_value(reason: str, source: pd.Series) -> _ReasonWithValue:
    return _ReasonWithValue(reason, source)


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


def _quarantine_frame(rows: list[QuarantinedRow]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "line": [q.line for q in rows],
            "reason": [q.reason for q in rows],
            "raw": [json.dumps(q.raw, ensure_ascii=False) for q in rows],
        },
        columns=["line", "reason", "raw"],
    )
