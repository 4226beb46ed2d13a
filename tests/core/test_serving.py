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
