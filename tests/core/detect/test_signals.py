"""Signals: rating/text mismatch, duplicates, text quality, predictable wording; each used only when its inputs exist."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.detect.signals import (
    DuplicateSignal,
    RatingMismatchSignal,
    SignalInputs,
    TextQualitySignal,
    make_signal,
    normalise_text,
)
from core.errors import ParameterError
from core.io.load import load_path


@pytest.fixture(scope="module")
def beauty(data_dir) -> pd.DataFrame:
    frame = load_path(data_dir / "amazon2018_5core" / "All_Beauty_5.json.gz").frame
    frame = frame[~frame["text"].map(normalise_text).duplicated()].reset_index(drop=True)
    return frame


def _inputs(frame: pd.DataFrame, embedder) -> SignalInputs:
    from core.text.embed import embedding_text

    return SignalInputs(frame=frame.reset_index(drop=True), embeddings=embedder.encode(embedding_text(frame)))


def test_normalise_text_ignores_case_accents_and_punctuation() -> None:
    assert normalise_text("  Great   PRODUCT!!! Café ") == normalise_text("great product cafe")


def test_exact_copies_in_batch_and_of_reference_are_found(hashing_embedder) -> None:
    ref = pd.DataFrame(
        {
            "review_id": [f"r{i}" for i in range(40)],
            "text": [f"review number {i} about shampoo and soap and brush {i * 7}" for i in range(40)],
        }
    )
    batch = pd.DataFrame(
        {
            "review_id": ["b0", "b1", "b2", "b3"],
            "text": [
                "REVIEW number 5 about shampoo and soap and brush 35!!",  # copy of r5 after normalising
                "totally fresh words nobody wrote elsewhere here",
                "a copied spam text that repeats itself in this batch",
                "A copied spam text, that repeats itself in this batch.",
            ],
        }
    )
    signal = DuplicateSignal().fit(SignalInputs(ref, hashing_embedder.encode(ref["text"].tolist())))
    result = signal.score(SignalInputs(batch, hashing_embedder.encode(batch["text"].tolist())))
    assert result.raw[0] >= 1 and "reference review r5" in result.details[0]
    assert result.raw[2] >= 1 and result.raw[3] >= 1 and "other review(s) in this batch" in result.details[2]
    assert result.raw[1] < 1 and result.details[1] == ""


def test_garbage_text_scores_high_on_text_quality(beauty, hashing_embedder) -> None:
    ref = beauty.iloc[:300]
    signal = TextQualitySignal().fit(SignalInputs(ref, np.zeros((len(ref), 2))))
    batch = pd.DataFrame(
        {
            "text": [
                "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
                "aaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbb",
                *beauty["text"].iloc[300:340],
            ]
        }
    )
    result = signal.score(SignalInputs(batch, np.zeros((len(batch), 2))))
    normal = result.raw[2:]
    assert result.raw[0] > np.quantile(normal, 0.95) and result.raw[1] > np.quantile(normal, 0.95)
    assert result.details[0] and result.details[0] != result.details[2]
    held = signal.held_out_scores(SignalInputs(ref, np.zeros((len(ref), 2))))
    assert (held == 0).mean() > 0.5, "ordinary reviews should get no text-quality evidence"


def test_rating_signal_is_left_out_without_ratings(hashing_embedder) -> None:
    frame = pd.DataFrame({"text": [f"text {i}" for i in range(60)]})
    signal = RatingMismatchSignal().fit(SignalInputs(frame, hashing_embedder.encode(frame["text"].tolist())))
    assert signal.available_ is False
    assert np.isnan(
        signal.score(SignalInputs(frame, hashing_embedder.encode(frame["text"].tolist()))).raw
    ).all()


def test_rating_model_reads_text_without_the_references_rating_skew() -> None:
    # Nine in ten reference reviews have five stars, as in many real categories; the text feature says
    # the rating only noisily. Fitted as it comes, the model reads even low-rated texts as about 4.5 stars,
    # so every honest low rating looks like a contradiction; balanced, low-rated texts read lower.
    rng = np.random.default_rng(0)
    rating = np.where(rng.random(600) < 0.9, 5.0, rng.choice([1.0, 2.0, 3.0, 4.0], 600))
    embeddings = np.c_[(rating - 3) / 2 + rng.normal(0, 1.0, 600), rng.normal(0, 1, (600, 7))]
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(600)], "rating": rating})
    ref, batch = slice(0, 400), slice(400, 600)
    plain = RatingMismatchSignal(balanced=False).fit(SignalInputs(frame.iloc[ref], embeddings[ref]))
    balanced = RatingMismatchSignal().fit(SignalInputs(frame.iloc[ref], embeddings[ref]))
    low = rating[batch] <= 2
    assert low.sum() >= 5
    read_plain, read_balanced = plain.predicted_rating(embeddings[batch]), balanced.predicted_rating(embeddings[batch])
    assert read_balanced[low].mean() < read_plain[low].mean() - 0.5
    # and an honest low rating counts as less of a contradiction
    honest = frame.iloc[batch][low]
    assert (balanced.score(SignalInputs(honest, embeddings[batch][low])).raw.mean()
            < plain.score(SignalInputs(honest, embeddings[batch][low])).raw.mean())


def test_signal_parameters_are_validated() -> None:
    with pytest.raises(ParameterError, match="unknown signal 'sentiment'"):
        make_signal("sentiment")
    with pytest.raises(ParameterError, match="near_threshold must be in"):
        DuplicateSignal(near_threshold=1.5).fit(SignalInputs(pd.DataFrame({"text": ["a"]}), np.zeros((1, 2))))


@pytest.mark.slow
def test_flipped_ratings_rank_high(beauty, embedder) -> None:
    rating = pd.to_numeric(beauty["rating"])
    ref = beauty.iloc[:400]
    rest = beauty.iloc[400:]
    negatives = rest[rating.loc[rest.index] <= 2].iloc[:10].copy()
    negatives["rating"] = 5.0
    normal = rest[rating.loc[rest.index] >= 4].iloc[:80]
    batch = pd.concat([normal, negatives], ignore_index=True)
    signal = RatingMismatchSignal().fit(_inputs(ref, embedder))
    result = signal.score(_inputs(batch, embedder))
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(normal)), np.ones(len(negatives))]
    assert roc_auc_score(y, result.raw) > 0.75  # chance is 0.5; 8-10 planted of ~90 is a small sample
    top = int(np.argmax(result.raw))
    assert "rated 5 stars, the text reads like" in result.details[top]
    one_star = batch.assign(rating=1.0)
    assert signal.score(_inputs(one_star, embedder)).details[0].startswith("rated 1 star, the text reads like")


def test_duplicate_calibration_pools_the_reference_with_the_batch(hashing_embedder) -> None:
    ref = pd.DataFrame({"review_id": [f"r{i}" for i in range(40)],
                        "text": [f"review number {i} about shampoo and soap and brush {i * 7}" for i in range(40)]})
    batch = pd.DataFrame({"review_id": ["b0", "r7", "b2"],
                          "text": ["REVIEW number 5 about shampoo and soap and brush 35!!",  # a copy of r5
                                   ref["text"][7],  # r7 itself, scored again: not its own copy
                                   "totally fresh words nobody wrote elsewhere here"]})
    signal = DuplicateSignal().fit(SignalInputs(ref, hashing_embedder.encode(ref["text"].tolist())))
    pooled = signal.score(SignalInputs(batch, hashing_embedder.encode(batch["text"].tolist()))).calibration
    held = signal.held_out_scores(SignalInputs(ref, hashing_embedder.encode(ref["text"].tolist())))
    assert pooled is not None and pooled.shape == (40,)
    assert pooled[5] >= 1 and held[5] < 1  # r5 now has a copy in the pool
    assert pooled[7] == held[7]
    assert np.array_equal(np.delete(pooled, 5), np.delete(held, 5))


def test_duplicate_signal_fires_at_the_nominal_rate_on_a_large_ordinary_batch() -> None:
    # Many short generic reviews are near copies of each other by chance, and a batch review is compared with
    # more reviews (reference + batch) than a reference review was (reference only). Calibrating against
    # reference reviews pooled with the batch keeps the firing rate at its nominal level.
    from core.detect.calibration import ScoreCalibrator

    rng = np.random.default_rng(4)
    centres = rng.normal(size=(30, 64))

    def draw(n: int, prefix: str) -> SignalInputs:
        generic = rng.uniform(size=n) < 0.3
        X = np.where(generic[:, None], centres[rng.integers(30, size=n)] + 0.2 * rng.normal(size=(n, 64)),
                     rng.normal(size=(n, 64)))
        frame = pd.DataFrame({"review_id": [f"{prefix}{i}" for i in range(n)],
                              "text": [f"{prefix} words {i}" for i in range(n)]})
        return SignalInputs(frame, (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32))

    reference = draw(300, "r")
    signal = DuplicateSignal().fit(reference)
    fitted = ScoreCalibrator().fit(signal.held_out_scores(reference))
    pooled_rates, fitted_rates = [], []
    for _ in range(5):
        result = signal.score(draw(1500, "b"))
        pooled_rates.append((ScoreCalibrator().fit(result.calibration).p_value(result.raw) <= 0.05).mean())
        fitted_rates.append((fitted.p_value(result.raw) <= 0.05).mean())
    assert abs(np.mean(pooled_rates) - 0.05) < 0.02
    assert np.mean(fitted_rates) > 0.08  # what the reference-only calibration did


def test_machine_generated_reviews_read_as_predictable(fake_reviews_path, hashing_embedder) -> None:
    # Real GPT-2 reviews (fake_reviews_salminen_dev) against genuine ones of the same file: the generated
    # text is more predictable under a bigram model of genuine reviews than other genuine reviews are.
    frame = load_path(fake_reviews_path).frame
    genuine = frame[frame["label"] == "original"].sample(900, random_state=0).reset_index(drop=True)
    generated = frame[frame["label"] == "computer_generated"].sample(100, random_state=0)
    reference, held_out = genuine.iloc[:600], genuine.iloc[600:]
    signal = make_signal("predictable_text").fit(_inputs(reference, hashing_embedder))
    batch = pd.concat([held_out, generated], ignore_index=True)
    y = np.r_[np.zeros(len(held_out)), np.ones(len(generated))]
    result = signal.score(_inputs(batch, hashing_embedder))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, result.raw) > 0.8
    top = int(np.nanargmax(result.raw))
    assert "more predictable than usual" in result.details[top]
    # Held-out reference scores are calibrated like new reviews: about as many beyond the 95th percentile.
    cal = signal.held_out_scores(_inputs(reference, hashing_embedder))
    assert 0.02 <= np.mean(result.raw[y == 0] > np.nanquantile(cal, 0.95)) <= 0.09


def test_reference_reviews_scored_again_get_their_leave_one_out_predictability(hashing_embedder) -> None:
    rng = np.random.default_rng(4)
    words = [f"w{i}" for i in range(200)]
    ref = pd.DataFrame({"review_id": [f"r{i}" for i in range(80)],
                        "text": [" ".join(rng.choice(words, 10)) for _ in range(80)]})
    signal = make_signal("predictable_text").fit(_inputs(ref, hashing_embedder))
    held_out = signal.held_out_scores(_inputs(ref, hashing_embedder))
    again = signal.score(_inputs(ref, hashing_embedder)).raw
    np.testing.assert_allclose(again, held_out)
    # The same text under another id is a new review: the model has seen its words, so it is predictable.
    renamed = ref.assign(review_id=[f"x{i}" for i in range(80)])
    assert (signal.score(_inputs(renamed, hashing_embedder)).raw > held_out).all()
    empty = signal.score(_inputs(pd.DataFrame({"review_id": ["e"], "text": [""]}), hashing_embedder)).raw
    assert np.isnan(empty).all()


def test_reviews_of_another_category_read_as_unusual_wording(beauty, vgames_path, hashing_embedder) -> None:
    # Real reviews: video-game reviews among beauty reviews use words a model of beauty reviews rarely sees.
    reference, held_out = beauty.iloc[:600], beauty.iloc[600:900]
    games = load_path(vgames_path).frame.sample(60, random_state=0)
    signal = make_signal("unusual_wording").fit(_inputs(reference, hashing_embedder))
    batch = pd.concat([held_out, games], ignore_index=True)
    y = np.r_[np.zeros(len(held_out)), np.ones(len(games))]
    result = signal.score(_inputs(batch, hashing_embedder))
    from sklearn.metrics import roc_auc_score

    raw = np.nan_to_num(result.raw, nan=-np.inf)
    assert roc_auc_score(y, raw) > 0.75
    assert "wording unlike the reference's" in result.details[int(np.argmax(raw))]
    # Reference reviews are scored leave-one-out, also when scored again (the Explore map): not by a model
    # that has seen their words.
    held_out_ref = signal.held_out_scores(_inputs(reference, hashing_embedder))
    np.testing.assert_allclose(signal.score(_inputs(reference, hashing_embedder)).raw, held_out_ref)
    assert np.nanmedian(held_out_ref) == pytest.approx(0.0, abs=1e-9)


def _contrast_inputs(X: np.ndarray, prefix: str) -> SignalInputs:
    frame = pd.DataFrame({"review_id": [f"{prefix}{i}" for i in range(len(X))], "text": [f"t{prefix}{i}" for i in range(len(X))]})
    return SignalInputs(frame=frame, embeddings=X)


def test_batch_contrast_finds_a_group_that_arrives_together_and_is_calibrated_without_one() -> None:
    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    ref = centre + rng.normal(size=(600, 32))
    signal = make_signal("batch_contrast", random_state=0).fit(_contrast_inputs(ref, "r"))
    # A batch with 8 % reviews from a shifted cluster: they score highest.
    shifted = centre + 4.0 * np.eye(32)[0] + rng.normal(size=(40, 32))
    batch = np.vstack([centre + rng.normal(size=(460, 32)), shifted])
    y = np.r_[np.zeros(460), np.ones(40)]
    result = signal.score(_contrast_inputs(batch, "b"))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, result.raw) > 0.9
    assert result.calibration is not None and len(result.calibration) == 600
    assert "resembles other reviews of this batch" in result.details[int(np.argmax(result.raw))]
    # With no change, batch reviews beyond the reference's 95th percentile: about 5 %, over repeated batches.
    rates = []
    for seed in range(8):
        null = centre + np.random.default_rng(100 + seed).normal(size=(500, 32))
        scored = signal.score(_contrast_inputs(null, f"n{seed}-"))
        rates.append(np.mean(scored.raw > np.quantile(scored.calibration, 0.95)))
    assert 0.03 <= np.mean(rates) <= 0.07
    # Fit-time held-out scores, one per reference row, come from a null split of the reference.
    held = signal.held_out_scores(_contrast_inputs(ref, "r"))
    assert held.shape == (600,) and np.isfinite(held).all()


def test_batch_contrast_needs_a_batch_and_leaves_reference_reviews_as_they_were() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(300, 16))
    signal = make_signal("batch_contrast", min_batch=50).fit(_contrast_inputs(ref, "r"))
    small = signal.score(_contrast_inputs(rng.normal(size=(49, 16)), "s"))
    assert np.isnan(small.raw).all()
    grouped = _contrast_inputs(rng.normal(size=(200, 16)), "g")
    grouped.frame["request_group"] = np.arange(200) % 4
    assert np.isnan(signal.score(grouped).raw).all()  # independent requests: no batch to contrast with
    # Reference reviews scored together with new ones are not batch reviews: they get their reference score.
    new = _contrast_inputs(rng.normal(size=(100, 16)), "n")
    both = SignalInputs(
        frame=pd.concat([_contrast_inputs(ref, "r").frame, new.frame], ignore_index=True),
        embeddings=np.vstack([ref, new.embeddings]),
    )
    scored = signal.score(both)
    np.testing.assert_allclose(scored.raw[:300], scored.calibration)
    with pytest.raises(ParameterError, match="C must be > 0"):
        make_signal("batch_contrast", C=0).fit(_contrast_inputs(ref, "r"))


def test_batch_contrast_scores_a_review_alike_whatever_the_row_order() -> None:
    """The same batch, rows shuffled: every review keeps its score (the folds follow content, not position)."""
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(300, 16))
    signal = make_signal("batch_contrast", min_batch=50).fit(_contrast_inputs(ref, "r"))
    batch = _contrast_inputs(rng.normal(size=(200, 16)) + 0.3, "b")
    order = rng.permutation(200)
    shuffled = SignalInputs(frame=batch.frame.iloc[order].reset_index(drop=True), embeddings=batch.embeddings[order])
    first, again = signal.score(batch), signal.score(shuffled)
    np.testing.assert_allclose(again.raw, first.raw[order], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.sort(again.calibration), np.sort(first.calibration), rtol=1e-9, atol=1e-9)
    assert [again.details[i] for i in np.argsort(order)] == first.details


def test_templated_copies_are_found_by_their_words(hashing_embedder) -> None:
    # A review with two words swapped may move its embedding more than its words: the word overlap finds it.
    rng = np.random.default_rng(6)
    vocab = [f"w{i}" for i in range(400)]
    ref = pd.DataFrame({
        "review_id": [f"r{i}" for i in range(200)],
        "text": [" ".join(rng.choice(vocab, 12, replace=False)) for _ in range(200)],
    })
    signal = DuplicateSignal().fit(_inputs(ref, hashing_embedder))
    source = ref["text"].iloc[0].split()
    templated = " ".join([*source[:10], "swapped", "words"])  # 10 of 12 words shared: Jaccard 10/14
    short = " ".join(ref["text"].iloc[1].split()[:5])  # five words of another review: too short to compare
    batch = pd.DataFrame({
        "review_id": ["t", "s", *[f"n{i}" for i in range(60)]],
        "text": [templated, short, *[" ".join(rng.choice(vocab, 12, replace=False)) for _ in range(60)]],
    })
    inputs = _inputs(batch, hashing_embedder)
    cosine = float(inputs.embeddings[0] @ _inputs(ref.iloc[[0]], hashing_embedder).embeddings[0])
    assert cosine < signal.near_threshold  # the embedding alone would not call it a copy
    result = signal.score(inputs)
    assert result.raw[0] > 0 and result.raw[0] == result.raw.max()
    assert "71% of its words shared" in result.details[0] and "reference review r0" in result.details[0]
    assert result.raw[1] == 0.0
    with pytest.raises(ParameterError, match="word_overlap must be in"):
        DuplicateSignal(word_overlap=0).fit(_inputs(ref, hashing_embedder))
