"""Loading and validation: both Amazon schemas, explicit mappings, quarantine with reasons, unreadable files."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from core.errors import InputFileError
from core.load import load_bytes, load_path


def test_amazon_2018_names_are_recognised(giftcards_path: Path) -> None:
    result = load_path(giftcards_path)
    report = result.report
    assert report.columns["text"] == "reviewText"
    assert report.columns["rating"] == "overall"
    assert report.columns["title"] == "summary"
    assert report.columns["timestamp"] == "unixReviewTime"
    assert report.rows_read == 2972
    assert report.rows_kept + report.rows_quarantined == report.rows_read
    frame = result.frame
    assert frame["timestamp"].dt.year.between(2012, 2018).all()
    assert frame["rating"].between(1, 5).all()
    assert frame["review_id"].is_unique


def test_amazon_2023_join_names_are_recognised(vgames_path: Path) -> None:
    result = load_path(vgames_path)
    cols = result.report.columns
    assert cols["title"] == "title_x" and cols["product_title"] == "title_y"
    assert cols["category"] == "main_category"
    assert result.frame["verified_purchase"].dtype == "boolean"
    assert str(result.frame["timestamp"].dt.tz) == "UTC"
    assert "store" in result.frame.columns  # extras are kept untouched


def test_text_only_file_loads_and_rest_is_missing(fake_reviews_path: Path) -> None:
    result = load_path(fake_reviews_path)
    assert result.report.rows_kept == 4000
    assert "rating" in result.report.missing_columns
    assert set(result.frame["label"]) == {"original", "computer_generated"}


def test_exact_duplicates_are_flagged_not_removed(data_dir: Path) -> None:
    result = load_path(data_dir / "amazon2018_5core" / "Appliances_5.json.gz")
    assert result.report.rows_kept == 2277
    assert result.report.duplicates > 2000
    assert result.frame["is_duplicate"].sum() == result.report.duplicates
    assert result.frame["review_id"].is_unique


CSV_WITH_PROBLEMS = (
    "review_text,stars,posted,verified\n"
    "Great blender,5,2021-03-04,yes\n"
    ",4,2021-03-05,no\n"
    "Broke after a week,9,2021-03-06,no\n"
    "Fine,three,2021-03-07,no\n"
    "Okay I guess,3,not a date,no\n"
    '"Multi\nline review",4,2021-03-08,maybe\n'
    "too,many,fields,here,x\n"
    "Works,4,2021-03-09,true\n"
)


def test_malformed_rows_are_quarantined_with_line_and_reason() -> None:
    result = load_bytes(
        CSV_WITH_PROBLEMS.encode(), name="upload.csv",
        mapping={"text": "review_text", "rating": "stars", "timestamp": "posted", "verified_purchase": "verified"},
    )
    report = result.report
    assert report.rows_read == 8
    assert report.rows_kept == 2
    by_line = {q.line: q.reason for q in report.quarantined}
    assert by_line[3] == "empty text"
    assert by_line[4].startswith("rating outside 1-5")
    assert by_line[5].startswith("wrong type: rating is not a number")
    assert by_line[6].startswith("unparsable timestamp")
    assert by_line[7].startswith("wrong type: verified_purchase")  # the quoted record starts on line 7
    assert by_line[9].startswith("wrong number of fields")
    # nothing is lost: the quarantined rows are exportable with their raw values
    assert len(result.quarantined) == 6
    assert json.loads(result.quarantined.set_index("line").loc[4, "raw"])["stars"] == "9"
    assert list(result.frame["text"]) == ["Great blender", "Works"]


def test_jsonl_bad_lines_are_quarantined() -> None:
    lines = [json.dumps({"reviewText": "good", "overall": 5}), "{not json", json.dumps([1, 2]),
             json.dumps({"reviewText": "bad", "overall": 0})]
    result = load_bytes("\n".join(lines).encode(), name="x.jsonl")
    reasons = {q.line: q.reason for q in result.report.quarantined}
    assert reasons[2].startswith("invalid JSON")
    assert reasons[3].startswith("wrong type")
    assert reasons[4].startswith("rating outside 1-5")
    assert result.report.rows_kept == 1


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet", "csv.gz", "jsonl.gz"])
def test_every_format_round_trips(fmt: str, tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["a fine kettle", "loud fan"], "rating": [5, 2], "helpful_vote": [0, 3]})
    path = tmp_path / f"reviews.{fmt}"
    base = fmt.removesuffix(".gz")
    buffer = io.BytesIO()
    if base == "csv":
        buffer.write(frame.to_csv(index=False).encode())
    elif base == "tsv":
        buffer.write(frame.to_csv(index=False, sep="\t").encode())
    elif base == "json":
        buffer.write(frame.to_json(orient="records").encode())
    elif base == "jsonl":
        buffer.write(frame.to_json(orient="records", lines=True).encode())
    else:
        frame.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    result = load_path(path)
    assert list(result.frame["text"]) == ["a fine kettle", "loud fan"]
    assert list(result.frame["rating"]) == [5.0, 2.0]


def test_review_ids_given_are_kept_and_content_ids_are_stable() -> None:
    given = load_bytes(b"id,text\nR-1,hello\nR-2,world\n", name="a.csv")
    assert list(given.frame["review_id"]) == ["R-1", "R-2"]
    first = load_bytes(b"text\nhello\nworld\nhello\n", name="a.csv")
    second = load_bytes(b"text\nhello\nworld\nhello\n", name="a.csv")
    assert list(first.frame["review_id"]) == list(second.frame["review_id"])
    assert first.frame["review_id"].is_unique
    assert list(first.frame["is_duplicate"]) == [False, False, True]


@pytest.mark.parametrize(
    ("data", "name", "problem"),
    [
        (b"", "empty.csv", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "photo.csv", "binary"),
        ("text\ncaf\xe9 cr\xe8me\n".encode("latin-1"), "latin.csv", "not valid UTF-8"),
        (gzip.compress(b"text\n" + b"a review\n" * 2000)[:-30], "cut.csv.gz", "truncated"),
        (b"name,price\nkettle,20\n", "products.csv", "no review text column"),
        (b"text\n", "header-only.csv", "no rows"),
        (b"PAR1garbage", "broken.parquet", "Parquet"),
    ],
)
def test_unreadable_input_names_file_and_problem(data: bytes, name: str, problem: str) -> None:
    with pytest.raises(InputFileError) as info:
        load_bytes(data, name=name)
    assert name in str(info.value)
    assert problem in str(info.value)


def test_explicit_encoding_reads_latin1() -> None:
    result = load_bytes("text\ncaf\xe9 cr\xe8me\n".encode("latin-1"), name="latin.csv", encoding="latin-1")
    assert result.frame["text"].iloc[0] == "caf\xe9 cr\xe8me"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="file not found"):
        load_path(tmp_path / "nope.csv")


def test_dates_outside_the_nanosecond_range_are_quarantined_not_a_crash() -> None:
    result = load_bytes(b"text,timestamp\na,2263-01-01\nb,1600-01-01\nc,2021-05-05\n", name="dates.csv")
    assert result.frame["text"].tolist() == ["c"]
    assert result.report.quarantine_reasons == {"unparsable timestamp": 2}
    assert [q.line for q in result.report.quarantined] == [2, 3]
