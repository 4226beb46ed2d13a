"""load_records (the API's fast path) builds exactly the frame load_frame builds from the same rows."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import InputFileError
from core.io.load import load_frame, load_records

_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=0, max_size=30)
_optional_text = st.none() | _text
_row = st.fixed_dictionaries(
    {"text": _text},
    optional={
        "title": _optional_text,
        "rating": st.none() | st.integers(0, 6) | st.floats(0.5, 5.5, allow_nan=False),
        "helpful_vote": st.none() | st.integers(-2, 10**6),
        "verified_purchase": st.none() | st.booleans(),
        "product_title": _optional_text,
        "category": _optional_text,
        "timestamp": st.none() | st.sampled_from(
            ["2023-01-02T03:04:05+00:00", "2021-06-30T12:00:00", "2020-02-29T23:59:59.123456+02:00", "not a date",
             "2263-01-01T00:00:00"]
        ),
        "review_id": _optional_text,
        "user_id": _optional_text,
        "product_id": _optional_text,
    },
)


def _expected(rows: list[dict]) -> pd.DataFrame | type[InputFileError]:
    try:
        return load_frame(pd.DataFrame(rows), name="request", strict=True).frame
    except InputFileError:
        return InputFileError


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_row, min_size=1, max_size=5))
def test_fast_path_equals_the_loader(rows: list[dict]) -> None:
    expected = _expected(rows)
    if expected is InputFileError:
        with pytest.raises(InputFileError):
            load_records(rows)
    else:
        pd.testing.assert_frame_equal(load_records(rows), expected)


def test_seed_request_and_duplicates() -> None:
    rows = [{"text": " Sample review text ", "rating": 5, "verified_purchase": True}] * 2
    frame = load_records(rows)
    pd.testing.assert_frame_equal(frame, load_frame(pd.DataFrame(rows), strict=True).frame)
    assert frame["text"].tolist() == ["Sample review text"] * 2
    assert frame["is_duplicate"].tolist() == [False, True]
    assert frame["review_id"].iloc[1] == frame["review_id"].iloc[0] + "-2"


def test_bad_row_is_reported_by_the_loader_with_its_row_number() -> None:
    with pytest.raises(InputFileError, match="row 2: rating outside 1-5"):
        load_records([{"text": "fine", "rating": 4}, {"text": "odd", "rating": 9}])


def test_other_names_and_types_take_the_loader_path() -> None:
    rows = [{"text": "ok", "stars": "5", "extra": [1, 2]}]
    pd.testing.assert_frame_equal(load_records(rows), load_frame(pd.DataFrame(rows), strict=True).frame)
