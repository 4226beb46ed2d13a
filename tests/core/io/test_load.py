"""Loading and validation: both Amazon schemas, explicit mappings, quarantine with reasons, unreadable files."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from core.errors import InputFileError
from core.io.load import load_bytes, load_path


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


@pytest.mark.parametrize("fmt", ["csv", "tsv", "json", "jsonl", "parquet", "csv.gz", "jsonl.gz", "xlsx"])
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
    elif base == "xlsx":
        frame.to_excel(buffer, index=False, engine="openpyxl")
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
        ("text\ncafé crème\nnaïve\n".encode() + b"bad \xff byte\n", "damaged.csv", "not valid UTF-8"),
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


def test_windows_1252_file_is_read_with_a_note() -> None:
    # Excel on Windows saves CSV as cp1252: accented letters and curly quotes are single bytes.
    data = "text\nTrès bien \u2013 \u201csuper\u201d\n".encode("cp1252")
    result = load_bytes(data, name="excel.csv")
    assert result.frame["text"].iloc[0] == "Très bien \u2013 \u201csuper\u201d"
    assert any("Windows-1252" in note for note in result.report.notes)


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


# Layouts other than Amazon's: what other review sources and spreadsheet exports look like.


def test_amazon_us_tsv_keeps_unbalanced_quotes_and_every_record() -> None:
    header = "review_id\tstar_rating\treview_headline\treview_body\tverified_purchase\treview_date\n"
    rows = [
        'R1\t5\t"Best" reader ever\tThe 7" screen is fine\tY\t2015-08-31\n',
        'R2\t4\tGood\t"Great product, 5 stars though the 6 inch one is better\tN\t2015-08-30\n',
        "R3\t1\tBad\tBroke in a week.\tY\t2015-08-29\n",
    ]
    result = load_bytes((header + "".join(rows)).encode(), name="amazon_reviews_us.tsv")
    frame = result.frame
    assert list(frame["review_id"]) == ["R1", "R2", "R3"]
    assert frame["title"].iloc[0] == '"Best" reader ever'
    assert frame["text"].iloc[1].startswith('"Great product')
    assert list(frame["verified_purchase"]) == [True, False, True]


def test_quoted_tsv_from_pandas_is_still_unquoted() -> None:
    frame = pd.DataFrame({"text": ['He said "wow"', "two\nlines", "plain"], "rating": [5, 4, 3]})
    result = load_bytes(frame.to_csv(index=False, sep="\t").encode(), name="export.tsv")
    assert list(result.frame["text"]) == ['He said "wow"', "two\nlines", "plain"]


def test_semicolons_decimal_commas_and_excel_separator_line() -> None:
    data = "\ufeffreview;rating;date\nTrès bon, rapide;4,5;01.03.2021\nNicht gut;2;13.03.2021\n".encode()
    result = load_bytes(data, name="export.csv")
    assert list(result.frame["text"]) == ["Très bon, rapide", "Nicht gut"]
    assert list(result.frame["rating"]) == [4.5, 2.0]
    assert list(result.frame["timestamp"].dt.day) == [1, 13]
    assert "fields separated by semicolons" in result.report.notes
    hinted = load_bytes(b"sep=;\ntext;rating\ngood;4\nbad;1\n", name="excel.csv")
    assert list(hinted.frame["rating"]) == [4.0, 1.0]
    assert list(hinted.frame["source_line"]) == [3, 4]


def test_column_names_match_ignoring_case_spaces_and_separators() -> None:
    data = b"Clothing ID,Title,Review Text,Rating,Positive Feedback Count\n7,Nice,Soft and warm,5,2\n"
    result = load_bytes(data, name="womens_clothing.csv")
    assert result.report.columns["text"] == "Review Text"
    assert result.report.columns["helpful_vote"] == "Positive Feedback Count"
    play = load_bytes(b"reviewId,userName,content,score,thumbsUpCount,at\ng1,Ann,Crashes,1,3,2023-01-02 10:00:00\n",
                      name="play.csv")
    assert {k: play.report.columns[k] for k in ("text", "rating", "helpful_vote", "timestamp", "user_id")} == {
        "text": "content", "rating": "score", "helpful_vote": "thumbsUpCount", "timestamp": "at",
        "user_id": "userName"}


def test_exports_from_german_french_and_spanish_shops_need_no_mapping() -> None:
    german = ("Rezension;Überschrift;Sterne;Datum;Hilfreich\n"
              "Hält warm;Gut;4,0 von 5 Sternen;13.03.2021;2\nZu klein;Schade;1,0 von 5 Sternen;01.04.2021;0\n")
    result = load_bytes(german.encode(), name="bewertungen.csv")
    assert result.report.columns == {"text": "Rezension", "title": "Überschrift", "rating": "Sterne",
                                     "helpful_vote": "Hilfreich", "timestamp": "Datum"}
    assert list(result.frame["rating"]) == [4.0, 1.0]
    assert list(result.frame["timestamp"].dt.month) == [3, 4]
    french = "Avis,Titre,Étoiles\nTrès doux,Parfait,\"5,0 sur 5 étoiles\"\n".encode()
    assert load_bytes(french, name="avis.csv").frame[["text", "title", "rating"]].iloc[0].tolist() == [
        "Très doux", "Parfait", 5.0]
    spanish = "Reseña,Título,Puntuación,Fecha\nMuy bueno,Bien,4 de 5 estrellas,2022-05-01\n".encode()
    assert load_bytes(spanish, name="resenas.csv").frame["rating"].tolist() == [4.0]
    # "Bewertung" means the rating in some exports and the review in others: its values decide
    numeric = load_bytes("Kommentar;Bewertung\nSchön;5\nGeht so;3,5\nMies;NA\n".encode(), name="sterne.csv")
    assert numeric.report.columns["rating"] == "Bewertung"
    assert numeric.frame["rating"].tolist()[:2] == [5.0, 3.5]
    assert any(note.startswith("rating <- Bewertung") for note in numeric.report.notes)
    words = load_bytes("Kommentar,Bewertung\nSchön,sehr gut\nNaja,geht so\n".encode(), name="worte.csv")
    assert "rating" not in words.report.columns
    assert "Bewertung" in words.report.unused_columns_line()
    left_out = load_bytes("Kommentar;Bewertung\nSchön;5\n".encode(), name="ohne.csv", mapping={"rating": ""})
    assert "rating" not in left_out.report.columns


def test_ratings_written_as_text_and_ten_point_scales() -> None:
    texts = ["5 stars", "1 star", "4.0 out of 5 stars", "4/5", "\u2605\u2605\u2605", "8/10"]
    data = "text,rating\n" + "".join(f"r{i},{t}\n" for i, t in enumerate(texts))
    result = load_bytes(data.encode(), name="stars.csv")
    assert list(result.frame["rating"]) == pytest.approx([5, 1, 4, 4, 3, 1 + 4 * 7 / 9])
    ten = load_bytes(b"text,rating\na,10\nb,8\nc,1\nd,7\ne,5\n", name="ten.csv")
    assert list(ten.frame["rating"]) == pytest.approx([5, 1 + 4 * 7 / 9, 1, 1 + 4 * 6 / 9, 1 + 4 * 4 / 9])
    assert any("1-10 scale" in note for note in ten.report.notes)
    # one typo in a 1-5 column is quarantined, not taken for a ten-point scale
    typo = load_bytes(b"text,rating\na,5\nb,4\nc,9\nd,3\n", name="typo.csv")
    assert typo.report.quarantine_reasons == {"rating outside 1-5": 1}
    assert not typo.report.notes


def test_numeric_dates_use_one_day_month_order_per_column() -> None:
    data = b"text,date\na,01/03/2021\nb,25/12/2020\nc,03/04/2021\n"
    result = load_bytes(data, name="uk.csv")
    assert [(t.day, t.month) for t in result.frame["timestamp"]] == [(1, 3), (25, 12), (3, 4)]
    us = load_bytes(b"text,date\na,01/03/2021\nb,12/25/2020\nc,2021-07-09\n", name="us.csv")
    assert [(t.day, t.month) for t in us.frame["timestamp"]] == [(3, 1), (25, 12), (9, 7)]
    assert any("month first" in note for note in us.report.notes)
    mixed = load_bytes(b"text,date\na,25/12/2020\nb,26/12/2020\nc,12/27/2020\n", name="mixed.csv")
    assert list(mixed.frame["text"]) == ["a", "b"]
    assert mixed.report.quarantined[0].line == 4
    assert mixed.report.quarantined[0].reason.startswith("timestamp has day and month the other way round")


def test_missing_value_words_are_missing_not_bad_values() -> None:
    data = b"text,rating,helpful_vote,verified_purchase,timestamp\na,NA,N/A,null,None\nb,4,nan,,NULL\n"
    result = load_bytes(data, name="nulls.csv")
    assert result.report.rows_kept == 2
    assert result.frame["rating"].isna().tolist() == [True, False]


def test_integer_ids_keep_every_digit_and_repeats_are_reported() -> None:
    lines = [{"review_id": 1234567890123456789, "text": "a"}, {"text": "b"},
             {"review_id": 1234567890123456790, "text": "c"}]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    frame = load_bytes(data, name="ids.jsonl").frame
    assert frame["review_id"].iloc[0] == "1234567890123456789"
    assert frame["review_id"].iloc[2] == "1234567890123456790"
    repeated = load_bytes(b"review_id,text\nR1,a\nR1,b\nR2,c\n", name="rep.csv")
    assert repeated.report.rows_kept == 3
    assert any("'R1' x2" in note for note in repeated.report.notes)


def test_wrapped_json_utf16_and_spreadsheet_mistakes() -> None:
    wrapped = json.dumps({"meta": {"page": 1}, "reviews": [{"text": "a", "stars": 4}, {"text": "b", "stars": 2}]},
                         indent=2)
    result = load_bytes(wrapped.encode(), name="export.json")
    assert list(result.frame["rating"]) == [4.0, 2.0]
    utf16 = load_bytes("text\trating\nsch\u00f6n\t5\n".encode("utf-16"), name="unicode.txt")
    assert utf16.frame["text"].iloc[0] == "sch\u00f6n"
    with pytest.raises(InputFileError, match="zip archive"):
        load_bytes(b"PK\x03\x04" + b"\x00" * 40, name="reviews.csv.zip")
    with pytest.raises(InputFileError, match="save it as .xlsx or CSV"):
        load_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 40, name="old.xls")


def test_report_names_the_columns_it_did_not_use_and_how_to_map_them() -> None:
    result = load_bytes(b"comment,stars_given,posted\nnice,5,2021-01-02\n", name="shop.csv")
    lines = result.report.summary_lines()
    hint = next(line for line in lines if line.startswith("columns not used"))
    assert "stars_given" in hint and "posted" in hint and "FIELD=COLUMN" in hint


def test_a_file_with_no_usable_row_is_refused_and_a_field_can_be_left_out() -> None:
    data = b"text,rating\nloved it,positive\nhated it,negative\n"
    with pytest.raises(InputFileError, match=r"none of the 2 rows could be used \(wrong type: rating is not a number "
                                             r"\(2\); first at line 2\); nothing stored.*--map rating="):
        load_bytes(data, name="sentiment.csv")
    result = load_bytes(data, name="sentiment.csv", mapping={"rating": ""})
    assert "rating" not in result.report.columns and result.frame["rating"].isna().all()
    assert list(result.frame["rating_raw"]) == ["positive", "negative"]  # kept, under its own name
    assert result.report.rows_kept == 2
