"""The API's canonicalisation fast path (`load_records`) on hostile input: the same frame, or the same error, as
the pandas loader (`load_frame(..., strict=True)`) for every row a client can send."""

from __future__ import annotations

import pandas as pd
import pytest

from core.io.load import load_frame, load_records

HOSTILE: dict[str, list[dict]] = {
    "ascii separators as whitespace": [{"text": "\x1cgood\x1f"}],
    "unicode spaces and line separators": [{"text": "\u00a0good\u2028", "title": "\u3000t\u200b"}],
    "zero-width space is text": [{"text": "\u200b"}],
    "next-line control": [{"text": "\x85ok\x85"}],
    "NUL inside": [{"text": "a\x00b"}],
    "right-to-left override": [{"text": "\u202egnp.exe review", "user_id": "\u202eu"}],
    "field separator inside the content": [{"text": "a\x1fb"}, {"text": "a", "title": "b"}],
    "rating just under 5": [{"text": "a", "rating": 4.9999999}],
    "huge helpful vote": [{"text": "a", "helpful_vote": 10**30}],
    "helpful vote past 2**53": [{"text": "a", "helpful_vote": 2**53 + 1}],
    "fractional helpful vote": [{"text": "a", "helpful_vote": 2.5}],
    "NaN rating": [{"text": "a", "rating": float("nan")}],
    "boolean rating": [{"text": "a", "rating": True}],
    "rating as a string": [{"text": "a", "rating": "5"}],
    "verified as a string": [{"text": "a", "verified_purchase": "true"}],
    "verified as 1": [{"text": "a", "verified_purchase": 1}],
    "blank title and review id": [{"text": "a", "title": "  ", "review_id": " "}],
    "timestamp with Z": [{"text": "a", "timestamp": "2023-01-02T03:04:05Z"}],
    "epoch seconds as text": [{"text": "a", "timestamp": "1700000000"}],
    "mixed time zones": [{"text": "a", "timestamp": "2023-01-02T03:04:05+05:00"},
                         {"text": "b", "timestamp": "2023-01-02T03:04:05"}],
    "day-first dates": [{"text": "a", "timestamp": "13/01/2023"}, {"text": "b", "timestamp": "01/02/2023"}],
    "repeated content, int and float rating": [{"text": "a", "rating": 5}, {"text": "a", "rating": 5.0}],
    "missing rating equals None": [{"text": "a", "rating": None}, {"text": "a"}],
    "repeated review id": [{"text": "a", "review_id": "x"}, {"text": "b", "review_id": "x"}],
    "some ids given": [{"text": "a", "review_id": "x"}, {"text": "b"}],
    "longer than the limit": [{"text": "x" * 200_000}],
    "padded category": [{"text": "a", "category": " Games ", "product_title": ""}],
}

MALFORMED: dict[str, list[dict]] = {
    "only separators": [{"text": "\x1c\x1d"}],
    "text is None": [{"text": None}],
    "no text": [{"rating": 5}],
    "text is a number": [{"text": 5}],
    "rating is tiny": [{"text": "a", "rating": 1e-300}],
    "rating is -0.0": [{"text": "a", "rating": -0.0}],
    "rating just over 5": [{"text": "a", "rating": 5.0000001}],
    "rating is a huge int": [{"text": "a", "rating": 10**30}],
    "empty timestamp": [{"text": "a", "timestamp": ""}],
    "blank timestamp": [{"text": "a", "timestamp": "  "}],
    "good row then bad row": [{"text": "fine", "rating": 4}, {"text": "odd", "helpful_vote": -1}],
    "lone surrogate": [{"text": "a\ud800b"}],
}


def _loader(rows: list[dict]) -> pd.DataFrame:
    return load_frame(pd.DataFrame(rows), name="request", strict=True).frame


@pytest.mark.parametrize("rows", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_rows_give_the_loaders_frame(rows: list[dict]) -> None:
    pd.testing.assert_frame_equal(load_records(rows), _loader(rows))


@pytest.mark.parametrize("rows", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_rows_give_the_loaders_error(rows: list[dict]) -> None:
    with pytest.raises(Exception) as expected:
        _loader(rows)
    with pytest.raises(type(expected.value)) as got:
        load_records(rows)
    assert str(got.value) == str(expected.value)


def test_grouped_requests_equal_each_request_loaded_alone() -> None:
    """The micro-batch canonicalises several requests at once: ids and duplicates stay per request."""
    requests = [rows for rows in HOSTILE.values() if len(rows) > 1]
    combined = load_records([r for rows in requests for r in rows],
                            groups=[k for k, rows in enumerate(requests) for _ in rows])
    alone = pd.concat([_loader(rows) for rows in requests], ignore_index=True)
    # source_line counts rows of the whole micro-batch here (per request on the loader's path); nothing that
    # scores or answers a request reads it.
    pd.testing.assert_frame_equal(combined.drop(columns="source_line"), alone.drop(columns="source_line"))
