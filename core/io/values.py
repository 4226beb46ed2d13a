"""Cell values of a review table read as typed values: ratings, helpful votes, booleans, timestamps, strings.

Each parser takes one source column and returns the typed column with masks of the rows whose value cannot be
used, so the loader can quarantine them with a reason; none of them drops or guesses a row silently.
"""

from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pandas as pd

#: Cell values that mean "no value" in delimited files (compared after stripping, ignoring case).
_MISSING_WORDS = frozenset({"na", "n/a", "null", "none", "nan", "#n/a", "nil"})
_TRUE = {"true", "t", "1", "yes", "y", "1.0"}
_FALSE = {"false", "f", "0", "no", "n", "0.0"}


def missing_cells(values: pd.Series) -> np.ndarray:
    """Which string cells mean "no value": empty, or a missing-value word such as NA or null."""
    empty = (values == "").to_numpy()
    short = values.str.len() <= 4  # every missing-value word is short; most cells are not
    if not short.any():
        return empty
    return empty | (short & values.str.strip().str.lower().isin(_MISSING_WORDS)).to_numpy()


def as_string(values: pd.Series) -> pd.Series:
    if values.map(lambda v: v is None or isinstance(v, str)).all():  # CSV / JSON text: the fast path
        return values.astype("string").str.strip()

    def convert(v: object) -> object:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return pd.NA
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v).strip() if not isinstance(v, list | dict) else json.dumps(v)

    return values.map(convert).astype("string")


#: "4 stars", "4.0 out of 5 stars" and the forms of Amazon's other shops: "4,0 von 5 Sternen", "4,0 sur 5
#: étoiles", "4,0 de 5 estrellas", "4,0 su 5 stelle", "4,0 van 5 sterren".
_RATING_TEXT = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*(?:(?:/|out\s+of|of|von|sur|de|su|van)\s*(\d+(?:[.,]\d+)?))?\s*"
    r"(?:stars?|points?|★|sternen?|étoiles?|estrellas?|stelle|sterren)?", re.IGNORECASE)
#: A column is on a ten-point scale when every rating lies in [0, 10] and at least this share, and at least
#: three ratings, lie above 5: ten-point ratings lean high, so most do; a 1-5 column with a stray typo stays a
#: 1-5 column, and the typo is quarantined.
TEN_POINT_SHARE = 0.25


def rating_value(value: object) -> object:
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


def parse_rating(values: pd.Series, notes: list[str] | None = None) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Ratings on the 1-5 scale, with the rows whose value is not a number and those outside 1-5.

    With `notes` (a whole file), a column on a ten-point scale (0-10 or 1-10) is mapped onto 1-5 and noted.
    """
    numbers = pd.to_numeric(values.map(rating_value), errors="coerce").astype("float64")
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


def parse_votes(values: pd.Series) -> tuple[pd.Series, np.ndarray, np.ndarray]:
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


def parse_bool(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
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


def parse_timestamp(values: pd.Series, notes: list[str] | None = None) -> tuple[pd.Series, np.ndarray, np.ndarray]:
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


def jsonable(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


def jsonable_cell(value: object) -> object:
    # Nested values (Amazon's "style", "image") become JSON text so every batch stores as Parquet.
    if isinstance(value, list | dict | tuple | np.ndarray):
        return json.dumps(jsonable(value))
    return value
