"""Shift tests: honest p-values under no shift, shifts flagged, one result shape, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

from core.errors import NotFittedError, ParameterError
from core.shift import (
    PREDICTABILITY,
    STATISTICS,
    ReviewShiftScorer,
    ShiftReport,
    TestResult,
    adjust_p_values,
    classifier_test,
    compare,
    feature_tests,
    mmd_test,
    novelty_test,
)


def unit_gaussian(rng: np.random.Generator, n: int, dim: int = 32, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[:, 0] += shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def review_frame(rng: np.random.Generator, n: int, ratings: tuple[float, ...] = (0.05, 0.05, 0.1, 0.2, 0.6),
                 words: tuple[str, ...] = ("soap", "skin", "hair", "smell", "great", "bad")) -> pd.DataFrame:
    return pd.DataFrame({
        "review_id": [f"r{i}" for i in range(n)],
        "text": [" ".join(rng.choice(words, 8)) for _ in range(n)],
        "rating": rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], size=n, p=ratings),
        "helpful_vote": rng.poisson(0.5, n),
        "verified_purchase": rng.random(n) < 0.8,
    })


def test_registry_names_every_statistic_with_thresholds() -> None:
    assert {"ks", "wasserstein", "chi_square", "mmd", "classifier", "novelty"} <= set(STATISTICS)
    for spec in STATISTICS.values():
        assert 0 < spec.p_threshold < 1
        assert spec.effect_name


def test_holm_and_bh_adjustments_match_hand_computed_values() -> None:
    p = [0.01, 0.04, 0.03, 0.5]
    np.testing.assert_allclose(adjust_p_values(p, "holm"), [0.04, 0.09, 0.09, 0.5])
    np.testing.assert_allclose(adjust_p_values(p, "bh"), [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    with pytest.raises(ParameterError, match="correction"):
        adjust_p_values(p, "sidak")


def test_discrete_rating_tests_hold_their_false_alarm_rate() -> None:
    # Ratings 1-5 are heavily tied: a textbook KS would be conservative. Permutation p-values are not.
    rng = np.random.default_rng(1)
    hits = {"ks": 0, "wasserstein": 0, "chi_square": 0}
    reps = 300
    for _ in range(reps):
        ref = pd.DataFrame({"rating": rng.choice([1, 2, 3, 4, 5], 50, p=[0.05, 0.05, 0.1, 0.2, 0.6]).astype(float)})
        cur = pd.DataFrame({"rating": rng.choice([1, 2, 3, 4, 5], 50, p=[0.05, 0.05, 0.1, 0.2, 0.6]).astype(float)})
        results, _, _ = feature_tests(reference=ref, current=cur, numeric=["rating"], categorical=[],
                                      n_permutations=199, random_state=rng)
        for r in results:
            hits[r.name] += r.p_value < 0.05
    # 300 repetitions: the rate's standard error is 0.013, the bounds are about 2.5 of them.
    for name, count in hits.items():
        assert 0.02 <= count / reps <= 0.085, (name, count / reps)


def test_rating_mix_shift_is_flagged_with_effect_sizes() -> None:
    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"rating": rng.choice([1, 2, 3, 4, 5], 400, p=[0.1, 0.1, 0.1, 0.2, 0.5]).astype(float),
                        "verified_purchase": pd.Series(rng.random(400) < 0.8).astype("string")})
    cur = pd.DataFrame({"rating": rng.choice([4, 5], 400).astype(float),
                        "verified_purchase": pd.Series(rng.random(400) < 0.8).astype("string")})
    results, distributions, skipped = feature_tests(reference=ref, current=cur, numeric=["rating", "n_words"],
                                                    categorical=["verified_purchase", "category"], n_permutations=199)
    by = {(r.name, r.feature): r for r in results}
    assert by[("chi_square", "rating")].drift and by[("ks", "rating")].drift
    assert by[("ks", "rating")].effect_name == "psi" and by[("ks", "rating")].effect_size > 0.1
    assert not by[("chi_square", "verified_purchase")].drift
    assert skipped == {"n_words": "not in both batches", "category": "not in both batches"}
    assert {d.feature for d in distributions} == {"rating", "verified_purchase"}
    for r in results:
        assert isinstance(r, TestResult) and r.threshold == 0.05 and "p_value_adjusted" in r.detail


def test_mmd_and_classifier_flag_a_shift_and_not_a_null_split() -> None:
    rng = np.random.default_rng(3)
    ref, same, moved = unit_gaussian(rng, 150), unit_gaussian(rng, 150), unit_gaussian(rng, 150, shift=1.0)
    for test in (mmd_test, classifier_test):
        shifted = test(reference=ref, current=moved, n_permutations=199, random_state=0)
        assert shifted.drift and shifted.p_value <= 0.01
        assert shifted.feature == "embedding" and shifted.detail["n_current"] == 150
        null = test(reference=ref, current=same, n_permutations=199, random_state=0)
        assert not null.drift
    assert classifier_test(reference=ref, current=moved, n_permutations=99).effect_size > 0.7  # AUC


def test_embedding_tests_are_calibrated_under_no_shift() -> None:
    rng = np.random.default_rng(4)
    reps = 120
    hits = {"mmd": 0, "classifier": 0}
    for _ in range(reps):
        a, b = unit_gaussian(rng, 40, 16), unit_gaussian(rng, 40, 16)
        hits["mmd"] += mmd_test(reference=a, current=b, n_permutations=99, random_state=rng).p_value < 0.05
        hits["classifier"] += classifier_test(reference=a, current=b, n_permutations=99,
                                              random_state=rng).p_value < 0.05
    for name, count in hits.items():
        assert count / reps <= 0.11, (name, count / reps)


@pytest.mark.parametrize("fraction", [None, 0.3], ids=["jackknife", "split"])
def test_per_review_p_values_are_uniform_on_held_out_reference_reviews(fraction: float | None) -> None:
    rng = np.random.default_rng(5)
    scorer = ReviewShiftScorer(calibration_fraction=fraction, random_state=0).fit(unit_gaussian(rng, 2000))
    assert scorer.n_calibration == (2000 if fraction is None else 600)
    p = scorer.score(unit_gaussian(rng, 4000))
    assert abs(np.mean(p <= 0.05) - 0.05) < 0.015
    assert abs(np.mean(p <= 0.01) - 0.01) < 0.008
    assert p.min() > 0 and p.max() <= 1


def test_novelty_test_is_exact_under_no_shift_and_catches_a_novel_minority() -> None:
    rng = np.random.default_rng(6)
    reps, hits = 300, 0
    for i in range(reps):
        scorer = ReviewShiftScorer(random_state=i).fit(unit_gaussian(rng, 300, 16))
        p = scorer.score(unit_gaussian(rng, 100, 16))
        hits += novelty_test(p_values=p, n_calibration=scorer.n_calibration, random_state=i).p_value < 0.05
    # Reviews share one calibration set, so their p-values are dependent; a binomial test would over-flag.
    assert 0.02 <= hits / reps <= 0.085
    # Reference reviews sit around one direction; the ten novel ones around another (a new topic).
    scorer = ReviewShiftScorer(random_state=0).fit(unit_gaussian(rng, 300, 16, shift=3.0))
    novel = rng.normal(size=(10, 16)).astype(np.float32)
    novel[:, 1] += 3.0
    current = np.vstack([unit_gaussian(rng, 90, 16, shift=3.0), novel / np.linalg.norm(novel, axis=1, keepdims=True)])
    result = novelty_test(p_values=scorer.score(current), n_calibration=scorer.n_calibration)
    assert result.drift and result.detail["count"] >= 10
    assert list(result.detail["levels"].values()) == sorted(result.detail["levels"].values())  # nested counts
    with pytest.raises(ParameterError, match="levels"):
        novelty_test(p_values=scorer.score(current), n_calibration=scorer.n_calibration, levels=())


def test_scorer_is_picklable_and_refuses_to_score_before_fit() -> None:
    rng = np.random.default_rng(7)
    with pytest.raises(NotFittedError):
        ReviewShiftScorer().score(unit_gaussian(rng, 3))
    with pytest.raises(ParameterError, match="at least"):
        ReviewShiftScorer().fit(unit_gaussian(rng, 5))
    scorer = ReviewShiftScorer().fit(unit_gaussian(rng, 200))
    batch = unit_gaussian(rng, 20)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(scorer)).score(batch), scorer.score(batch))


@pytest.fixture(scope="module")
def reports() -> dict[str, ShiftReport]:
    rng = np.random.default_rng(8)
    ref = review_frame(rng, 300)
    same = review_frame(rng, 300)
    moved = review_frame(rng, 300, ratings=(0.0, 0.0, 0.0, 0.5, 0.5), words=("gift", "card", "code", "easy"))
    e_ref, e_same, e_moved = unit_gaussian(rng, 300), unit_gaussian(rng, 300), unit_gaussian(rng, 300, shift=1.0)
    kwargs = {"n_permutations": 199, "random_state": 0}
    return {
        "same": compare(reference=ref, current=same, reference_embeddings=e_ref, current_embeddings=e_same, **kwargs),
        "moved": compare(reference=ref, current=moved, reference_embeddings=e_ref, current_embeddings=e_moved,
                         **kwargs),
    }


def test_compare_flags_a_shifted_batch_and_explains_it(reports: dict[str, ShiftReport]) -> None:
    moved = reports["moved"]
    assert moved.drift and moved.p_value < 0.05
    assert "rating" in moved.drifted_features and 0 < moved.share_drifted_features <= 1
    assert "differs from" in moved.explanation
    assert moved.test("mmd").drift
    assert len(moved.scores) == 300
    assert list(moved.scores.columns) == ["review_id", "shift_p_value", "novelty", "classifier_probability", "cluster"]
    assert moved.scores["classifier_probability"].between(0, 1).all()
    assert moved.sample_sizes["embedding_current"] == 300


def test_compare_does_not_flag_a_same_distribution_batch(reports: dict[str, ShiftReport]) -> None:
    same = reports["same"]
    assert not same.drift and same.p_value > 0.05
    assert same.drifted_features == []
    assert "no significant difference" in same.explanation


def test_compare_is_reproducible_and_subsamples_large_batches() -> None:
    rng = np.random.default_rng(9)
    ref, cur = review_frame(rng, 120), review_frame(rng, 120)
    e_ref, e_cur = unit_gaussian(rng, 120), unit_gaussian(rng, 120)
    kw = {"reference": ref, "current": cur, "reference_embeddings": e_ref, "current_embeddings": e_cur,
          "n_permutations": 99, "max_samples": 50, "random_state": 3}
    calls: list[tuple[int, int]] = []
    a = compare(**kw, progress=lambda done, total: calls.append((done, total)))
    b = compare(**kw)
    assert a.p_value == b.p_value and [t.p_value for t in a.tests] == [t.p_value for t in b.tests]
    assert a.sample_sizes["embedding_reference"] == 50 and a.test("mmd").detail["n_reference"] == 50
    assert len(a.scores) == 120  # every current review is scored
    assert calls[-1] == (5, 5)


def test_compare_rejects_misaligned_or_mismatched_inputs() -> None:
    rng = np.random.default_rng(10)
    ref, cur = review_frame(rng, 40), review_frame(rng, 40)
    with pytest.raises(ParameterError, match="one row per reference review"):
        compare(reference=ref, current=cur, reference_embeddings=unit_gaussian(rng, 39),
                current_embeddings=unit_gaussian(rng, 40))
    with pytest.raises(ParameterError, match="differ in width"):
        compare(reference=ref, current=cur, reference_embeddings=unit_gaussian(rng, 40, 16),
                current_embeddings=unit_gaussian(rng, 40, 32))
    with pytest.raises(ParameterError, match="alpha"):
        compare(reference=ref, current=cur, reference_embeddings=unit_gaussian(rng, 40),
                current_embeddings=unit_gaussian(rng, 40), alpha=1.5)


@pytest.mark.slow
def test_real_reviews_of_another_category_are_flagged(embedder, data_dir) -> None:  # noqa: ANN001
    from core.io.load import load_path
    from core.text.embed import embedding_text, shared_embed_fields

    magazines = load_path(data_dir / "amazon2018_5core" / "Magazine_Subscriptions_5.json.gz").frame
    gift_cards = load_path(data_dir / "amazon2018_5core" / "Gift_Cards_5.json.gz").frame
    magazines = magazines.drop_duplicates("text").sample(120, random_state=0).reset_index(drop=True)
    gift_cards = gift_cards.drop_duplicates("text").sample(60, random_state=0).reset_index(drop=True)
    ref, same = magazines.iloc[:60].reset_index(drop=True), magazines.iloc[60:].reset_index(drop=True)
    e_ref, e_same, e_gift = (embedder.encode(embedding_text(f)) for f in (ref, same, gift_cards))
    moved = compare(reference=ref, current=gift_cards, reference_embeddings=e_ref, current_embeddings=e_gift,
                    n_permutations=199)
    assert moved.drift  # combined p is floored at 2 / 200 by 199 permutations and Bonferroni over two tests
    assert moved.test("mmd").p_value <= 0.01 and moved.test("classifier").p_value <= 0.01
    grown = [c for c in moved.clusters if c.status in ("new", "grown")]
    assert grown and grown[0].share_current > grown[0].share_reference
    null = compare(reference=ref, current=same, reference_embeddings=e_ref, current_embeddings=e_same,
                   n_permutations=199)
    assert not null.drift
    # The same reviews exported without their titles: both sides are compared on the text alone.
    untitled = same.assign(title=pd.NA)
    fields = shared_embed_fields(ref, untitled)
    assert fields == ("text",) and shared_embed_fields(ref, same) == ("title", "text")
    text_only = compare(reference=ref, current=untitled, reference_embeddings=embedder.encode(embedding_text(ref, fields)),
                        current_embeddings=embedder.encode(embedding_text(untitled, fields)), n_permutations=199,
                        embedded_fields=fields)
    assert not text_only.drift and text_only.embedded_fields == ("text",)
    assert "titles were left out" in text_only.explanation


def test_a_batch_of_machine_generated_reviews_shifts_word_predictability(fake_reviews_path) -> None:  # noqa: ANN001
    # GPT-2 reviews read more predictably than genuine ones under a word model of the reference: the
    # per-feature test sees the batch even where the embedding tests do not (bench/shift.py, scenario (v)).
    from core.io.load import load_path

    frame = load_path(fake_reviews_path).frame
    genuine = frame[frame["label"] == "original"].sample(500, random_state=1).reset_index(drop=True)
    generated = frame[frame["label"] == "computer_generated"].sample(100, random_state=1)
    ref = genuine.iloc[:300].reset_index(drop=True)
    current = pd.concat([genuine.iloc[300:], generated], ignore_index=True)
    rng = np.random.default_rng(0)
    report = compare(reference=ref, current=current, reference_embeddings=unit_gaussian(rng, len(ref)),
                     current_embeddings=unit_gaussian(rng, len(current)), n_permutations=199)
    test = report.test("ks", PREDICTABILITY)
    assert test.drift and test.p_value < 0.01
    assert PREDICTABILITY in report.drifted_features
    assert any(d.feature == PREDICTABILITY for d in report.distributions)
