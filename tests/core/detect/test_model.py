"""OutlierModel end to end: fit on a reference, score a batch, reasons, labels, save/load, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core.detect.model import OutlierModel
from core.detect.signals import normalise_text
from core.detect.supervised import picked_from_top
from core.errors import ModelUnavailableError, NotFittedError, ParameterError, SchemaError
from core.io.load import load_path


def _unique(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[~frame["text"].map(normalise_text).duplicated()].reset_index(drop=True)


@pytest.fixture(scope="module")
def planted(data_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Gift-card reference; a batch of unseen gift-card reviews with 6 beauty reviews planted in it."""
    gifts = _unique(load_path(data_dir / "amazon2018_5core" / "Gift_Cards_5.json.gz").frame)
    beauty = _unique(load_path(data_dir / "amazon2018_5core" / "All_Beauty_5.json.gz").frame)
    rng = np.random.default_rng(0)
    gifts = gifts.iloc[rng.permutation(len(gifts))].reset_index(drop=True)
    reference, normal = gifts.iloc[:300], gifts.iloc[300:380]
    odd = beauty[beauty["text"].str.split().str.len().between(15, 80)].iloc[:6]
    batch = pd.concat([normal, odd], ignore_index=True)
    y = np.r_[np.zeros(len(normal)), np.ones(len(odd))]
    return reference, batch, y


@pytest.fixture(scope="module")
def fitted(planted, embedder) -> OutlierModel:
    stages: list[tuple[str, float]] = []
    model = OutlierModel(random_state=0).fit(
        planted[0], embedder, progress=lambda s, f: stages.append((s, f))
    )
    model._test_stages = stages  # type: ignore[attr-defined]
    return model


@pytest.mark.slow
def test_planted_off_topic_reviews_rank_high_with_reasons(fitted, planted, embedder) -> None:
    _, batch, y = planted
    result = fitted.score(batch, embedder)
    scores = result.scores
    assert list(scores["review_id"]) == list(batch["review_id"])
    for col in (
        "knn",
        "lof",
        "iforest",
        "autoencoder",
        "rating_mismatch",
        "duplicate",
        "text_quality",
        "predictable_text",
        "score",
        "p_value",
        "is_outlier",
        "reason",
    ):
        assert col in scores.columns
    assert scores["score"].between(0, 1).all() and scores["p_value"].between(0, 1).all()
    assert roc_auc_score(y, scores["score"]) > 0.85
    assert roc_auc_score(y, scores["knn"]) > 0.85
    top = int(scores["score"].to_numpy().argmax())
    assert y[top] == 1 and scores["is_outlier"].iloc[top]
    reasons = result.reasons(top)
    assert reasons.top_signals[0].name == "novelty"
    assert len(reasons.neighbours) == 3 and all(n.text and n.rating is not None for n in reasons.neighbours)
    assert set(reasons.detector_scores) == {"knn", "lof", "mahalanobis", "iforest", "autoencoder"}
    assert "unusual text for this reference" in scores["reason"].iloc[top]
    # The threshold flags roughly the contamination share of reference-like reviews, not everything.
    assert scores["is_outlier"][y == 0].mean() < 0.2


@pytest.mark.slow
def test_progress_reports_every_stage(fitted) -> None:
    stages = dict(fitted._test_stages)  # type: ignore[attr-defined]
    for stage in ("embedding", "fitting knn", "fitting lof", "fitting mahalanobis", "fitting iforest", "fitting autoencoder"):
        assert stages.get(stage) == 1.0


@pytest.mark.slow
def test_text_only_batch_is_scored_and_missing_columns_reported(fitted, planted, embedder) -> None:
    batch = planted[1][["text"]].iloc[:30]
    result = fitted.score(batch, embedder)
    assert "rating" in result.missing
    assert result.scores["rating_mismatch"].isna().all()
    assert result.scores["score"].notna().all()
    assert result.scores["review_id"].str.startswith("row-").all()


@pytest.mark.slow
def test_save_and_load_give_the_same_scores(fitted, planted, embedder, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["detector_names"] == ["knn", "lof", "mahalanobis", "iforest", "autoencoder"] and meta["n_reference"] == 300
    loaded = OutlierModel.load(tmp_path / "m")
    a = fitted.score(planted[1], embedder).scores
    b = loaded.score(planted[1], embedder).scores
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ModelUnavailableError, match="no saved outlier model"):
        OutlierModel.load(tmp_path / "nothing")
    # A model written by an older version (other signals, no length bins) is refused with what to do.
    meta["format_version"] = 3
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelUnavailableError, match=r"holds model format 3; this version reads \d+: retrain"):
        OutlierModel.load(tmp_path / "m")


@pytest.mark.slow
def test_a_batch_in_another_row_order_gets_the_same_scores(fitted, planted, data_dir: Path, embedder) -> None:
    """Every member, the batch-scoped signals included (the batch is large enough for batch contrast), and the
    headline: a review's numbers do not depend on where it sits in the batch."""
    gifts = _unique(load_path(data_dir / "amazon2018_5core" / "Gift_Cards_5.json.gz").frame)
    batch = pd.concat([planted[1], gifts.iloc[-150:]], ignore_index=True).drop_duplicates("review_id")
    first = fitted.score(batch, embedder).scores.set_index("review_id")
    shuffled = batch.iloc[np.random.default_rng(4).permutation(len(batch))].reset_index(drop=True)
    again = fitted.score(shuffled, embedder).scores.set_index("review_id").loc[first.index]
    assert first["batch_contrast"].notna().all()
    numeric = [c for c in first.columns if first[c].dtype.kind == "f"]
    for column in numeric:  # float32 similarities summed in another order: ~1e-7 apart, nothing more
        np.testing.assert_allclose(again[column], first[column], rtol=0, atol=1e-6, err_msg=column)
    assert (again["is_outlier"] == first["is_outlier"]).all()


@pytest.mark.slow
def test_labels_are_measured_and_the_scorer_only_wins_on_evidence(fitted, planted, embedder) -> None:
    _, batch, y = planted
    labels = pd.Series(np.where(y == 1, "outlier", "normal"), index=batch["review_id"])
    few = fitted.fit_labels(batch.iloc[:40], labels, embedder)  # no outliers among the first 40 labelled
    assert few.uses_label_scorer is False and "at least 2 outlier and 2 normal" in few.note
    three = np.r_[np.arange(40), np.flatnonzero(y == 1)[:3]]
    thin = fitted.fit_labels(batch.iloc[three], labels, embedder)
    assert thin.uses_label_scorer is False and "3 outlier labels, at least 5" in thin.note
    assert fitted.label_scorer_ is None
    # Labels from the queue (the top of the ranking): the held-out comparison among them cannot decide.
    top = np.argsort(-fitted.score(batch, embedder).scores["score"].to_numpy(), kind="stable")[:20]
    queued = fitted.fit_labels(batch.iloc[top], labels, embedder)
    assert y[top].sum() >= 5 and not queued.uses_label_scorer and "label queue" in queued.note
    metrics = fitted.fit_labels(batch, labels, embedder, force=True)
    assert (
        metrics.n_outlier == 6 and metrics.unsupervised.auroc is not None and metrics.label_aware is not None
    )
    # What the labels changed, in the words `workbench train` prints: both held-out figures and the blend.
    assert f"held-out on 6 outlier and {len(batch) - 6} normal labels: average precision" in metrics.note
    assert "for the label-aware scorer on" in metrics.note and "for the ensemble; AUROC" in metrics.note
    forced = fitted.score(batch, embedder).scores
    assert "unsupervised_score" in forced.columns and forced["score"].between(0, 1).all()
    fitted.label_scorer_ = None
    with pytest.raises(ParameterError, match="none of the 3 labels matches"):
        fitted.fit_labels(batch, pd.Series(["outlier"] * 3, index=["x", "y", "z"]), embedder)


def test_labelled_normals_from_the_top_of_the_ranking_are_recognised() -> None:
    rng = np.random.default_rng(0)
    sampled = [picked_from_top(rng.random(40)) for _ in range(1000)]
    assert np.mean(sampled) < 0.02  # a random sample of normals: flagged at about the 1 % level
    assert picked_from_top(rng.random(10) * 0.1)  # ten normals, all within the top tenth of the reference
    assert not picked_from_top(np.array([]))


def test_bad_input_gives_clear_errors(hashing_embedder) -> None:
    tiny = pd.DataFrame({"text": [f"review {i} words" for i in range(30)]})
    with pytest.raises(ParameterError, match="the reference has 30 reviews; at least 50 are needed"):
        OutlierModel().fit(tiny, hashing_embedder)
    with pytest.raises(SchemaError, match="no 'text' column"):
        OutlierModel().fit(pd.DataFrame({"body": ["x"] * 60}), hashing_embedder)
    with pytest.raises(ParameterError, match=r"contamination must be a number in \(0, 0.5\], got 0.9"):
        OutlierModel(contamination=0.9).fit(tiny, hashing_embedder)
    with pytest.raises(ParameterError, match="unknown detector"):
        OutlierModel(detectors=("knn", "svm")).fit(tiny, hashing_embedder)
    with pytest.raises(ParameterError, match="length_bins must be an integer >= 1"):
        OutlierModel(length_bins=0).fit(tiny, hashing_embedder)
    with pytest.raises(NotFittedError):
        OutlierModel().score(tiny, hashing_embedder)


def test_small_reference_without_ratings_fits_what_it_can(hashing_embedder) -> None:
    rng = np.random.default_rng(0)
    words = ["card", "gift", "great", "easy", "fast", "love", "perfect", "nice", "birthday", "present"]
    ref = pd.DataFrame({"text": [" ".join(rng.choice(words, 6)) for _ in range(60)]})
    model = OutlierModel(detectors=("knn", "lof"), random_state=0).fit(ref, hashing_embedder)
    # No ratings: no mismatch signal.
    assert model.signal_names_ == (
        "duplicate", "text_quality", "predictable_text", "unusual_wording", "batch_contrast"
    )
    with pytest.raises(
        ParameterError, match="false_alarm_rate=0.01 needs at least 99 reference reviews, got 60"
    ):
        OutlierModel(detectors=("knn",), false_alarm_rate=0.01).fit(ref, hashing_embedder)
    other = OutlierModel(detectors=("knn",), false_alarm_rate=0.05).fit(ref, hashing_embedder)
    fresh = [" ".join(rng.choice(words, 6)) for _ in range(5)]
    batch = pd.DataFrame({"text": ["zebra quantum violin orchestra", *fresh]})
    result = other.score(batch, hashing_embedder)
    assert result.scores["is_outlier"].iloc[0]
    assert result.scores["score"].iloc[0] == result.scores["score"].max()
    # A copy of a reference review (another review with the same text) is a duplicate, whatever its novelty.
    copied = other.score(pd.DataFrame({"review_id": ["copy-1"], "text": [ref["text"].iloc[0]]}), hashing_embedder)
    assert (
        copied.scores["duplicate"].iloc[0] > 0.9
        and "same text as reference review" in copied.scores["reason"].iloc[0]
    )
    with pytest.raises(ParameterError, match="fitted on hashing-test"):
        other.score(
            batch, type("E", (), {"model_key": "other|x", "encode": lambda s, t, progress=None: None})()
        )


def test_batch_with_planted_copies_makes_the_duplicate_group_active(hashing_embedder) -> None:
    rng = np.random.default_rng(1)
    vocab = [f"w{i}" for i in range(300)]

    def texts(n: int) -> list[str]:
        return [" ".join(rng.choice(vocab, 8)) for _ in range(n)]

    ref = pd.DataFrame({"text": texts(150)})
    model = OutlierModel(detectors=("knn", "lof"), random_state=0).fit(ref, hashing_embedder)
    copies = ref["text"].iloc[:10].tolist()
    batch = pd.DataFrame({"text": [*texts(150), *copies]})
    result = model.score(batch, hashing_embedder)
    assert "duplicate" in result.active_groups and "novelty" not in result.active_groups
    top = set(result.scores["score"].nlargest(10).index)
    assert top == set(range(150, 160)), "the planted copies should be the 10 highest scores"
    # The duplicate group leads by its evidence; the others stay in the maximum without a head start.
    assert result.group_evidence["duplicate"] < 0.02 <= result.group_evidence["novelty"]
    single = model.score(batch.iloc[[150]], hashing_embedder)
    assert set(single.active_groups) == set(model.groups_), "a single review is scored against all groups"
    assert set(single.group_evidence.values()) == {1.0}  # not tested: no head start for any group


def test_group_evidence_gives_a_head_start_in_the_maximum_calibrated_on_the_reference(hashing_embedder) -> None:
    rng = np.random.default_rng(2)
    vocab = [f"w{i}" for i in range(300)]
    ref = pd.DataFrame({"text": [" ".join(rng.choice(vocab, 8)) for _ in range(300)]})
    model = OutlierModel(detectors=("knn",), random_state=0).fit(ref, hashing_embedder)
    batch = pd.DataFrame({"text": [" ".join(rng.choice(vocab, 8)) for _ in range(200)]})
    result = model.score(batch, hashing_embedder)
    surprise = {c: result.surprises[c].to_numpy() for c in result.surprises.columns}
    groups = model.present_groups({c: result.scores[c].to_numpy() for c in (*model.detector_names_, *model.signal_names_)})
    plain, _, _ = model._ensemble(surprise, groups)
    led, p_led, _ = model._ensemble(surprise, groups, {"novelty": 1e-6})
    stat = {g: model._group_statistic(surprise, m) for g, m in groups.items()}
    # With a head start of -log(1e-6) the novelty group decides the ranking wherever it is not far behind.
    novelty_leads = stat["novelty"] + np.log(1e6) >= np.max(np.vstack(list(stat.values())), axis=0)
    order = np.argsort(-led)
    assert novelty_leads.all() and np.all(np.diff(stat["novelty"][order]) <= 1e-12)
    # Calibrated with the same head start on the reference: p-values of ordinary reviews stay nominal-ish.
    assert 0.02 <= np.mean(p_led <= 0.1) <= 0.25 and not np.allclose(plain, led)


def test_reference_reviews_scored_again_are_not_copies_of_themselves(hashing_embedder) -> None:
    rng = np.random.default_rng(3)
    words = [f"word{i}" for i in range(300)]
    ref = pd.DataFrame({"review_id": [f"r{i}" for i in range(120)],
                        "text": [" ".join(rng.choice(words, 12)) for _ in range(120)]})
    model = OutlierModel(detectors=("knn",), random_state=0).fit(ref, hashing_embedder)
    again = model.score(ref, hashing_embedder).scores
    # The Explore map scores the reference too: its own rows must not light up as duplicates of themselves.
    assert (again["duplicate"] < 0.5).mean() > 0.95
    assert again["is_outlier"].mean() < 0.2


def test_text_quality_and_predictable_wording_share_one_group(hashing_embedder) -> None:
    rng = np.random.default_rng(5)
    words = [f"word{i}" for i in range(300)]
    ref = pd.DataFrame({"text": [" ".join(rng.choice(words, 12)) + "." for _ in range(150)]})
    model = OutlierModel(detectors=("knn",), random_state=0).fit(ref, hashing_embedder)
    assert model.groups_["text_form"] == ("text_quality", "predictable_text")
    assert "text_quality" not in model.groups_ and "predictable_text" not in model.groups_
    result = model.score(pd.DataFrame({"text": ["$$$$ !!!! 1111 ???? $$$$ !!!!", " ".join(rng.choice(words, 12))]}),
                         hashing_embedder)
    text_form = next(c for c in result.reasons(0).contributions if c.name == "text_form")
    assert text_form.score > 0.9 and text_form.label == "unusual text form or machine-like wording"
    assert "mostly non-letters" in text_form.detail  # the members' details, joined


def test_members_without_scores_in_a_batch_are_left_out_of_its_groups(hashing_embedder) -> None:
    # Small batches have no batch contrast and a batch without ratings no rating mismatch: their groups are
    # formed and calibrated from the members that scored, so ordinary reviews keep nominal p-values.
    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(300)]

    def reviews(n: int, prefix: str) -> pd.DataFrame:
        return pd.DataFrame({
            "review_id": [f"{prefix}{i}" for i in range(n)],
            "text": [" ".join(rng.choice(words, int(rng.integers(5, 30)))) for _ in range(n)],
            "rating": rng.integers(1, 6, n).astype(float),
        })

    model = OutlierModel(detectors=("knn", "mahalanobis"), random_state=0).fit(reviews(600, "r"), hashing_embedder)
    assert "batch_contrast" in model.groups_["novelty"] and "unusual_wording" in model.groups_["novelty"]
    small = model.score(reviews(60, "s").drop(columns="rating"), hashing_embedder)
    assert small.scores["batch_contrast"].isna().all() and small.scores["rating_mismatch"].isna().all()
    calibrated = {c: small.scores[c].to_numpy() for c in (*model.detector_names_, *model.signal_names_)}
    present = model.present_groups(calibrated)
    assert "rating_mismatch" not in present and "batch_contrast" not in present["novelty"]
    assert set(small.active_groups) == set(present)
    p_values = np.concatenate(
        [model.score(reviews(50, f"n{k}-"), hashing_embedder).scores["p_value"].to_numpy() for k in range(12)]
    )
    assert 0.05 <= np.mean(p_values <= 0.1) <= 0.15
    # A batch large enough gets the contrast; its scores are finite.
    large = model.score(reviews(200, "l"), hashing_embedder)
    assert large.scores["batch_contrast"].notna().all()


def test_each_kind_has_its_own_calibrated_score_that_ranks_its_anomalies(fitted, planted, embedder) -> None:
    from core.detect.kinds import KIND_LABELS, kind_column, kinds_in

    _, batch, y = planted
    scores = fitted.score(batch, embedder).scores
    kinds = kinds_in(scores.columns)
    assert kinds == [k for k in KIND_LABELS if kind_column(k) in scores.columns]
    assert {"novelty", "rating_mismatch", "duplicate", "machine_written", "text_form"} <= set(kinds)
    for kind in kinds:
        values = scores[kind_column(kind)].to_numpy()
        assert np.all((values >= 0) & (values <= 1)), kind
    # Off-category reviews are a novelty: that kind alone ranks them, like the headline does.
    assert roc_auc_score(y, scores[kind_column("novelty")]) > 0.9
    with pytest.raises(ParameterError, match="unknown kind 'spam'; expected one of novelty"):
        kind_column("spam")


def test_a_kind_score_is_calibrated_on_the_reference_held_out_surprises() -> None:
    from core.detect.kinds import kind_scores

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"a": rng.exponential(size=4000), "b": rng.exponential(size=4000)})
    fresh = {"a": rng.exponential(size=4000), "b": rng.exponential(size=4000)}
    out = kind_scores(fresh, {}, {"novelty": ("a", "b"), "not_a_kind": ("a",)}, reference)
    assert set(out) == {"kind_novelty"}
    # Exchangeable with the reference: about 1 % of fresh reviews beyond its 99 % point.
    assert abs(float(np.mean(out["kind_novelty"] >= 0.99)) - 0.01) < 0.006
    # Members missing from a batch are left out of the mean and out of the reference statistic alike.
    only_a = kind_scores({"a": fresh["a"]}, {}, {"novelty": ("a", "b")}, reference)["kind_novelty"]
    assert abs(float(np.mean(only_a >= 0.95)) - 0.05) < 0.015


@pytest.mark.slow
def test_labelled_reviews_are_scored_within_their_batch(fitted, planted, embedder, monkeypatch) -> None:
    """The label-aware scorer learns from the features it meets when the batch is scored: batch-scoped
    signals (batch contrast, duplicates) of a labelled review depend on the unlabelled rest of its batch."""
    _, batch, y = planted
    rng = np.random.default_rng(1)
    labelled = np.sort(np.r_[np.flatnonzero(y == 1), rng.choice(np.flatnonzero(y == 0), 30, replace=False)])
    labels = pd.Series(np.where(y[labelled] == 1, "outlier", "normal"), index=batch["review_id"].iloc[labelled])
    features: list[np.ndarray] = []
    original = OutlierModel._label_features

    def recording(self, frame, embeddings, surprise):  # type: ignore[no-untyped-def]
        out = original(self, frame, embeddings, surprise)
        features.append(out)
        return out

    monkeypatch.setattr(OutlierModel, "_label_features", recording)
    # Copies of three labelled reviews in the second half: the duplicate signal sees them only in context.
    copies = batch.iloc[labelled[labelled >= 40][:3]].assign(review_id=lambda f: f["review_id"] + "-copy")
    halves = [batch.iloc[:40], pd.concat([batch.iloc[40:], copies], ignore_index=True)]
    metrics = fitted.fit_labels(halves, labels, embedder, force=True)
    assert metrics.n_labelled == len(labelled) and metrics.n_outlier == int(y.sum())
    trained_on = np.vstack(features)
    features.clear()
    for half in halves:
        fitted.score(half, embedder)
    scored = np.vstack(features)
    fitted.label_scorer_ = None
    # Equal up to the encoder's float32 noise (a text embedded in another batch can move by about 1e-7).
    np.testing.assert_allclose(trained_on, scored[labelled], rtol=0, atol=1e-5)
    # Scored without its batch, a labelled review looks different to the batch-scoped signals.
    alone = fitted.fit_labels(batch.iloc[labelled], labels, embedder)
    assert alone.n_labelled == len(labelled)
    assert np.abs(features[-1] - trained_on).max() > 1e-1
