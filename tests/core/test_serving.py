"""Many requests scored as one batch: the same scores as alone, ids per request, a bad request isolated."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.bundle import ModelBundle
from core.errors import InputFileError
from core.io.load import load_path
from core.serving import RequestScores, score_requests


@pytest.fixture
def bundle(subscription_path: Path, hashing_embedder) -> ModelBundle:
    reference = load_path(subscription_path).frame.head(300)
    return ModelBundle.fit(reference, hashing_embedder, detectors=("knn", "lof"), project=False)


GOOD = {"text": "The box came with three kinds of tea and a tiny cookbook.", "rating": 4}
OTHER = {"text": "Shipping took a month and half the snacks were crushed.", "rating": 1, "title": "Late"}


def test_requests_in_one_batch_score_as_they_would_alone(bundle, hashing_embedder) -> None:
    (alone,) = score_requests(bundle, hashing_embedder, [[GOOD]])
    together = score_requests(bundle, hashing_embedder, [[GOOD], [OTHER], [GOOD, GOOD]])
    assert all(isinstance(r, RequestScores) for r in [alone, *together])
    first, other, pair = together
    assert [len(r.rows) for r in together] == [1, 1, 2]

    def row(r: RequestScores, i: int = 0):
        return r.scores.frame.iloc[r.rows[i]]

    # Another client's identical review is not a duplicate of this one: ids and duplicates are per request.
    assert row(first)["review_id"] == row(alone)["review_id"] == row(pair)["review_id"]
    assert row(pair, 1)["review_id"] == row(pair)["review_id"] + "-2"
    assert row(first)["score"] == pytest.approx(row(alone)["score"])
    # What a request lacks is its own: only OTHER sent a title.
    assert "title" in first.missing and "title" not in other.missing


def test_a_bad_request_fails_alone(bundle, hashing_embedder) -> None:
    results = score_requests(bundle, hashing_embedder, [[GOOD], [{"text": "   "}], [OTHER]])
    assert isinstance(results[1], InputFileError) and "row 1: empty text" in str(results[1])
    assert isinstance(results[0], RequestScores) and isinstance(results[2], RequestScores)
    only_bad = score_requests(bundle, hashing_embedder, [[{"text": ""}]])
    assert len(only_bad) == 1 and isinstance(only_bad[0], InputFileError)


LONG = {"text": " ".join(["The subscription box arrived with a long letter about every snack inside it."] * 30),
        "rating": 5}


def test_a_mixed_micro_batch_keeps_request_order_and_isolates_the_bad_one(bundle, hashing_embedder) -> None:
    """A long review, short ones and a bad request in one batch: each answer lands with its own request."""
    requests = [[GOOD], [LONG], [{"text": "fine", "rating": 9}], [OTHER, GOOD], [{"text": " \t "}]]
    results = score_requests(bundle, hashing_embedder, requests)
    assert len(results) == len(requests)
    assert isinstance(results[2], InputFileError) and "rating outside 1-5" in str(results[2])
    assert isinstance(results[4], InputFileError) and "empty text" in str(results[4])
    for k in (0, 1, 3):
        together = results[k]
        assert isinstance(together, RequestScores)
        (alone,) = score_requests(bundle, hashing_embedder, [requests[k]])
        assert isinstance(alone, RequestScores) and len(together.rows) == len(requests[k])
        got = together.scores.frame.iloc[list(together.rows)]
        want = alone.scores.frame.iloc[list(alone.rows)]
        assert got["review_id"].tolist() == want["review_id"].tolist()
        assert got["score"].to_numpy() == pytest.approx(want["score"].to_numpy())
        assert together.missing == alone.missing


def test_a_lone_request_reports_what_it_lacked(bundle, hashing_embedder) -> None:
    from core.io.load import load_records

    (alone,) = score_requests(bundle, hashing_embedder, [[GOOD]])
    assert isinstance(alone, RequestScores)
    # Taken from the batch's own answer (no second pass over the columns): the same as asking for its slice.
    expected = bundle.outlier.feature_pipeline_.missing_in_slices(load_records([GOOD]), [slice(0, 1)])[0]
    assert alone.missing == expected and "title" in alone.missing
