"""The serving path gives what the general path gives: requests micro-batched, canonicalised on the fast path
and answered column by column score exactly as their canonical frames scored by `ModelBundle.score` and read row
by row."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from api.schemas import ModelRef
from api.serving import Loaded, score_jobs
from core.bundle import ModelBundle
from core.defaults import DEFAULT_DETECTORS
from core.detect.calibration import ScoreCalibrator
from core.detect.explain import contributions
from core.detect.kinds import kind_column, kinds_in
from core.detect.signals import GROUP_COLUMN, RatingMismatchSignal, SignalInputs, normalise_text
from core.detect.signals.base import plain_texts
from core.errors import InputFileError
from core.io.load import load_frame, load_path
from core.text.embed import has_title

REF = ModelRef(name="review-outlier", version="1")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as API clients send them: text always, title and rating when the review has them."""
    out = []
    for row in frame.itertuples(index=False):
        record: dict[str, Any] = {"text": row.text}
        if isinstance(row.title, str):
            record["title"] = row.title
        if row.rating == row.rating:
            record["rating"] = int(row.rating)
        out.append(record)
    return out


@pytest.fixture(scope="module")
def served(data_dir: Path, embedder) -> tuple[Loaded, list[dict[str, Any]]]:
    """A beauty-review model with every default detector and signal, and 110 unseen beauty and gift-card reviews."""
    beauty = load_path(data_dir / "amazon2018_5core" / "All_Beauty_5.json.gz").frame
    beauty = beauty[~beauty["text"].map(normalise_text).duplicated()].reset_index(drop=True)
    gifts = load_path(data_dir / "amazon2018_5core" / "Gift_Cards_5.json.gz").frame
    order = np.random.default_rng(3).permutation(len(beauty))
    reference = beauty.iloc[order[:150]].reset_index(drop=True)
    unseen = pd.concat([beauty.iloc[order[150:240]], gifts.iloc[:20]], ignore_index=True).sample(
        frac=1.0, random_state=3).reset_index(drop=True)
    bundle = ModelBundle.fit(reference, embedder, detectors=DEFAULT_DETECTORS, project=False)
    return Loaded(bundle=bundle, version=None, ref=REF, embedder=embedder), _records(unseen)


def _general(loaded: Loaded, requests: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]] | None]:
    """Each request loaded by the general loader, the valid ones scored as one batch (a group per request, as
    the server batches them), and every answer read row by row from the frames; None for a refused request."""
    bundle, frames = loaded.bundle, []
    for k, records in enumerate(requests):
        try:
            frame = load_frame(pd.DataFrame(records), name="request", strict=True).frame
        except InputFileError:
            continue
        frames.append((k, frame.assign(**{GROUP_COLUMN: k})))
    batch = pd.concat([f for _, f in frames], ignore_index=True)
    scores = bundle.score(batch, loaded.embedder)
    table, result = scores.frame, scores.result
    reference = result.reference_frame
    answers: list[list[dict[str, Any]] | None] = [None] * len(requests)
    start = 0
    for k, frame in frames:
        lacked = bundle.outlier.feature_pipeline_.missing_columns(frame.drop(columns=GROUP_COLUMN))
        rows = []
        for i in range(start, start + len(frame)):
            row = table.iloc[i]
            groups = result.group_scores.iloc[i].to_dict()
            rows.append({
                "review_id": row["review_id"], "score": row["score"], "p_value": row["p_value"],
                "is_outlier": bool(row["is_outlier"]), "shift_p_value": row["shift_p_value"], "reason": row["reason"],
                "detector_scores": {d: row[d] for d in result.detector_names},
                "signal_scores": {s: row[s] for s in result.signal_names},
                "kind_scores": {kind: row[kind_column(kind)] for kind in kinds_in(table.columns)},
                "contributions": [
                    {"name": c.name, "label": c.label, "score": c.score, "detail": c.detail}
                    for c in contributions(groups, {g: d[i] for g, d in result.details.items()})
                ],
                "neighbours": [
                    _neighbour(reference.iloc[int(j)], sim)
                    for j, sim in zip(result.neighbour_index[i], result.neighbour_similarity[i], strict=True)
                ],
                "missing": lacked,
            })
        answers[k] = rows
        start += len(frame)
    return answers


def _neighbour(row: pd.Series, similarity: float) -> dict[str, Any]:
    text = str(row["text"])
    return {"review_id": str(row["review_id"]), "text": text if len(text) <= 300 else text[:299] + "…",
            "rating": None if pd.isna(row["rating"]) else float(row["rating"]), "similarity": float(similarity)}


def _assert_same(got: Any, want: Any, where: str = "") -> float:
    """Equal structures; numbers within 1e-9 (NaN matching None, as responses carry it). The largest gap."""
    if isinstance(want, dict):
        assert set(got) == set(want), where
        return max([_assert_same(got[k], want[k], f"{where}.{k}") for k in want], default=0.0)
    if isinstance(want, list):
        assert len(got) == len(want), where
        return max([_assert_same(g, w, f"{where}[{i}]") for i, (g, w) in enumerate(zip(got, want, strict=True))],
                   default=0.0)
    if isinstance(want, float | np.floating) and not isinstance(want, bool):
        if math.isnan(want):
            assert got is None, where
            return 0.0
        assert got is not None and abs(got - want) <= 1e-9, (where, got, want)
        return abs(got - want)
    assert got == want, (where, got, want)
    return 0.0


@pytest.mark.slow
def test_micro_batched_requests_answer_as_their_frames_score(served) -> None:
    loaded, records = served
    duplicated = [records[0], records[1], records[0]]  # an exact copy inside one request
    batches = [[[r] for r in records[s : s + 16]] for s in range(0, 64, 16)]  # 16 clients at a time
    batches.append([[r] for r in records[64:84]] + [duplicated, [{"text": "  "}]])  # a refused request too
    batches.append([[records[84]]])  # a lone request
    batches.append([records[85:104]])  # one request of 19 reviews: its own duplicates, ids and reasons
    gaps, flagged = [], 0
    for requests in batches:
        fast = score_jobs(loaded, loaded.embedder, requests)
        general = _general(loaded, requests)
        for answer, expected in zip(fast, general, strict=True):
            if expected is None:
                assert isinstance(answer, InputFileError)
                continue
            assert isinstance(answer, list) and len(answer) == len(expected)
            for prediction, want in zip(answer, expected, strict=True):
                got = prediction.model_dump(exclude={"model"})
                gaps.append(_assert_same(got, want))
                flagged += got["is_outlier"]
    assert len(gaps) == 104 + len(duplicated)
    assert max(gaps) <= 1e-9
    assert 0 < flagged < len(gaps)  # the comparison covers flagged reviews and reasons that name a group


def test_calibrate_gives_transform_and_surprise_in_one_pass() -> None:
    rng = np.random.default_rng(0)
    calibrator = ScoreCalibrator().fit(rng.normal(size=300))
    scores = np.r_[rng.normal(size=200), -50.0, 50.0, np.nan, np.inf, -np.inf, calibrator.calibration_scores_[:5]]
    calibrated, surprise = calibrator.calibrate(scores)
    np.testing.assert_array_equal(calibrated, calibrator.transform(scores))
    np.testing.assert_array_equal(surprise, calibrator.surprise(scores))


def test_plain_texts_reads_missing_texts_as_empty_like_pandas() -> None:
    texts = pd.Series(["Fine.", None, np.nan, pd.NA, 5, " spaced "], dtype=object)
    assert plain_texts(texts) == texts.fillna("").astype(str).tolist()
    strings = pd.Series(["Fine.", None, "ok"], dtype="string")
    assert plain_texts(strings) == strings.fillna("").astype(str).tolist() == ["Fine.", "", "ok"]


def test_has_title_reads_titles_as_pandas_string_methods_would() -> None:
    titles = pd.Series(["Great", None, np.nan, pd.NA, "   ", 5, " spaced ", ""], dtype=object)
    want = (titles.astype("string").str.strip().fillna("") != "").to_numpy()
    got = has_title(pd.DataFrame({"title": titles}))
    assert got is not None and got.dtype == bool and got.tolist() == want.tolist()
    assert has_title(pd.DataFrame({"text": ["no title column"]})) is None


def test_the_predicted_rating_is_ridges_prediction(hashing_embedder) -> None:
    texts = [f"review number {i} {'great' if i % 2 else 'awful'} product" for i in range(60)]
    frame = pd.DataFrame({"text": texts, "rating": [5.0 if i % 2 else 1.0 for i in range(60)]})
    embeddings = hashing_embedder.encode(texts)
    signal = RatingMismatchSignal().fit(SignalInputs(frame=frame, embeddings=embeddings))
    # Ridge's arithmetic in float64, whatever the embeddings' dtype: float32 sums moved with the batch's size.
    want = np.clip(signal.model_.predict(embeddings.astype(np.float64)), *signal.rating_range_)
    np.testing.assert_allclose(signal.predicted_rating(embeddings), want, rtol=1e-12, atol=0)
    np.testing.assert_allclose(signal.predicted_rating(embeddings[:7]), signal.predicted_rating(embeddings)[:7],
                               rtol=1e-12, atol=0)
