"""Calibration: conformal p-values, calibrated scores, thresholds and combining groups."""

from __future__ import annotations

import numpy as np
import pytest

from core.detect.calibration import (
    Exceedances,
    LengthConditioner,
    ScoreCalibrator,
    combine,
    exceedances,
    min_exceedance_p,
    threshold_from_contamination,
)
from core.errors import NotFittedError, ParameterError


def test_conformal_p_value_follows_the_formula() -> None:
    cal = ScoreCalibrator().fit(np.arange(100, dtype=float))
    # (1 + #{cal >= s}) / (n + 1)
    assert cal.p_value(np.array([99.5]))[0] == pytest.approx(1 / 101)
    assert cal.p_value(np.array([50.0]))[0] == pytest.approx(51 / 101)
    assert cal.p_value(np.array([-1.0]))[0] == pytest.approx(1.0)
    assert cal.p_value(np.array([np.nan]))[0] == 1.0


def test_same_distribution_is_flagged_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(0)
    cal = ScoreCalibrator().fit(rng.normal(size=3000))
    p = cal.p_value(rng.normal(size=20000))
    assert abs((p <= 0.05).mean() - 0.05) < 0.01
    scores = cal.transform(rng.normal(size=20000))
    assert abs(np.median(scores) - 0.5) < 0.03


def test_scores_beyond_the_reference_stay_ordered_and_in_unit_interval() -> None:
    rng = np.random.default_rng(1)
    cal = ScoreCalibrator().fit(rng.normal(size=500))
    far = cal.transform(np.array([3.0, 5.0, 8.0, 20.0]))
    assert np.all(np.diff(far) > 0), "the most unusual reviews must not tie at 1.0"
    assert np.all((far >= 0) & (far <= 1))
    smooth = cal.smooth_p_value(np.array([5.0, 8.0]))
    assert np.all(smooth <= cal.p_value(np.array([5.0, 8.0])))


def test_too_small_calibration_set_is_a_clear_error() -> None:
    with pytest.raises(ParameterError, match="at least 20 held-out reference scores, got 5"):
        ScoreCalibrator().fit(np.arange(5.0))
    with pytest.raises(NotFittedError):
        ScoreCalibrator().p_value(np.zeros(3))


def test_threshold_from_contamination_and_its_validation() -> None:
    scores = np.arange(1000, dtype=float)
    assert threshold_from_contamination(scores, 0.05) == pytest.approx(np.quantile(scores, 0.95))
    with pytest.raises(ParameterError, match=r"contamination must be a number in \(0, 0.5\], got 0.7"):
        threshold_from_contamination(scores, 0.7)


def test_max_keeps_a_single_strong_group_that_mean_dilutes() -> None:
    # Row 0 trips only the duplicate group; row 1 is mildly unusual everywhere.
    surprises = {
        "knn": np.array([0.1, 2.5]),
        "lof": np.array([0.1, 2.5]),
        "duplicate": np.array([6.0, 2.5]),
        "text_quality": np.array([0.0, 2.5]),
    }
    groups = {"novelty": ("knn", "lof"), "duplicate": ("duplicate",), "text_quality": ("text_quality",)}
    maxed = combine(surprises, groups, "max")
    mean = combine(surprises, groups, "mean")
    assert maxed[0] > maxed[1]
    assert mean[0] < mean[1]
    with pytest.raises(ParameterError, match="combination must be one of max, mean, fisher"):
        combine(surprises, groups, "median")


def test_mostly_zero_scores_fire_at_the_nominal_rate() -> None:
    # Duplicate and text-quality signals are 0 for most reviews; a non-zero score is not by itself rare.
    rng = np.random.default_rng(2)

    def draw(n: int) -> np.ndarray:
        return np.where(rng.uniform(size=n) < 0.12, rng.uniform(0.95, 1.05, size=n), 0.0)

    cal = ScoreCalibrator().fit(draw(20_000))  # large, so the rate's spread is the batch's alone
    smooth = cal.smooth_p_value(draw(50_000))
    assert abs((smooth <= 0.05).mean() - 0.05) < 0.006
    assert (smooth[smooth < 1] >= 0.0).all() and cal.smooth_p_value(np.array([0.0]))[0] == 1.0


def test_smooth_p_value_is_monotone_and_at_most_one_step_below_conformal() -> None:
    rng = np.random.default_rng(3)
    cal = ScoreCalibrator().fit(np.round(rng.normal(size=400), 1))  # ties, as real scores have
    s = np.sort(rng.normal(size=5000) * 2)
    smooth, conformal = cal.smooth_p_value(s), cal.p_value(s)
    assert np.all(np.diff(smooth) <= 1e-15)
    assert np.all(smooth <= conformal + 1e-15) and np.all(smooth >= conformal - 1 / 401 - 1e-12)


def test_exceedance_count_is_tested_against_the_shared_calibration_set() -> None:
    # Every batch row is compared with one calibration set, so counts vary more than Binomial(n, level):
    # the BetaBinomial null keeps the false-alarm rate at or below the level where the binomial one does not.
    rng = np.random.default_rng(0)
    trials, level = 1500, 0.01
    beta_binomial_hits = binomial_hits = 0
    from scipy.stats import binom

    for _ in range(trials):
        calibrator = ScoreCalibrator().fit(rng.random(800))
        beyond = exceedances(calibrator.p_value(rng.random(1000)), calibrator.n_calibration_, 0.02)
        beta_binomial_hits += beyond.p_value() < level
        binomial_hits += binom.sf(beyond.count - 1, beyond.n, 0.02) < level
    assert beta_binomial_hits / trials <= level + 0.005
    assert binomial_hits / trials > 3 * level


def test_exceedances_count_rows_beyond_a_calibration_rank() -> None:
    p = np.array([1 / 11, 2 / 11, 0.5, 1.0, 3 / 11])
    beyond = exceedances(p, n_calibration=10, level=0.2)  # k = floor(0.2 * 11) = 2, cut 2 / 11
    assert (beyond.count, beyond.a, beyond.b) == (2, 2, 9)
    assert beyond.cut == pytest.approx(2 / 11)
    assert beyond.expected == pytest.approx(5 * 2 / 11)
    assert 0 < beyond.p_value() <= 1
    assert beyond.p_value(u=0.0) < beyond.p_value(u=1.0)
    assert exceedances(np.array([]), 10, 0.2).p_value() == 1.0


LEVELS = (0.01, 0.02, 0.05, 0.1)


def test_exceedance_p_values_follow_the_beta_binomial_law_into_the_far_tail() -> None:
    from scipy import stats

    for count, u in ((20, 1.0), (20, 0.0), (20, 0.3), (120, 1.0)):
        law = stats.betabinom(1000 if count > 20 else 150, 50 if count > 20 else 15, 751 if count > 20 else 136)
        got = Exceedances(count=count, n=int(law.args[0]), cut=0.0, a=int(law.args[1]), b=int(law.args[2]))
        assert got.p_value(u) == pytest.approx(law.sf(count) + u * law.pmf(count), rel=1e-6)
    # Far beyond the expected 62 of 1,000, scipy's survival function is 0 for every count; these stay
    # positive and keep their order, so the levels of one batch can still be told apart.
    far = [Exceedances(count=c, n=1000, cut=0.0, a=50, b=751).p_value() for c in (300, 400, 500)]
    assert 0.0 < far[2] < far[1] < far[0] < 1e-30
    assert Exceedances(count=1000, n=1000, cut=0.0, a=50, b=751).p_value(u=0.0) == 0.0


def test_several_levels_give_one_exact_p_value_under_no_change() -> None:
    rng = np.random.default_rng(3)
    combined, bonferroni = [], []
    for _ in range(1500):
        p = ScoreCalibrator().fit(rng.random(150)).p_value(rng.random(150))
        counts = [exceedances(p, 150, level) for level in LEVELS]
        u = rng.random()
        combined.append(min_exceedance_p(counts, u=u))
        bonferroni.append(min(1.0, len(LEVELS) * min(c.p_value(u) for c in counts)))
    combined, bonferroni = np.array(combined), np.array(bonferroni)
    # The levels share one calibration set and one batch: their counts move together, so Bonferroni's
    # factor is mostly wasted (here it flags about 3.5 % at 5 %); the simulated joint law keeps the rate.
    assert abs(np.mean(combined <= 0.05) - 0.05) < 0.018
    assert abs(np.mean(combined <= 0.2) - 0.2) < 0.035
    assert np.mean(bonferroni <= 0.05) < np.mean(combined <= 0.05)


def test_several_levels_lie_between_the_smallest_tail_and_bonferroni() -> None:
    p = np.r_[np.full(6, 1 / 151), np.linspace(0.05, 1.0, 144)]  # six reviews beyond the whole reference
    counts = [exceedances(p, 150, level) for level in LEVELS]
    smallest = min(c.p_value() for c in counts)
    combined = min_exceedance_p(counts)
    assert smallest <= combined <= len(LEVELS) * smallest
    one = exceedances(p, 150, 0.05)
    assert min_exceedance_p([one]) == pytest.approx(one.p_value(), abs=0.01)
    assert min_exceedance_p(counts) == combined  # seeded simulation: same inputs, same p
    assert min_exceedance_p([exceedances(np.array([]), 150, 0.05)]) == 1.0
    with pytest.raises(ParameterError, match="one batch"):
        min_exceedance_p([one, exceedances(p[:100], 150, 0.05)])


def test_exceedances_of_a_mostly_zero_score_use_the_ranks_above_the_ties() -> None:
    # 150 reference scores, 149 of them 0: the 2 % quantile is the 3rd largest score, a 0, and only one
    # reference score lies beyond it, so the count's null is BetaBinomial(n, 2, 149), not (n, 3, 148);
    # with every reference score 0, any positive batch score is beyond the reference maximum: (n, 1, 150).
    calibrator = ScoreCalibrator().fit(np.r_[np.zeros(149), [3.0]])
    beyond = calibrator.exceedances(np.r_[np.zeros(150), np.full(10, 0.1), [np.nan]], 0.02)
    assert (beyond.count, beyond.n, beyond.a, beyond.b) == (10, 161, 2, 149)
    all_zero = ScoreCalibrator().fit(np.zeros(150)).exceedances(np.r_[np.zeros(150), np.full(10, 0.1)], 0.02)
    assert (all_zero.count, all_zero.a, all_zero.b) == (10, 1, 150)
    assert all_zero.p_value() < 0.002  # ten copies among 160 reviews: clear excess
    # Without ties it is the count of conformal p-values at most the level.
    scores = np.random.default_rng(1).random(300)
    cal = ScoreCalibrator().fit(np.random.default_rng(2).random(400))
    assert cal.exceedances(scores, 0.05) == exceedances(cal.p_value(scores), 400, 0.05)


def test_length_conditioning_compares_reviews_with_references_of_their_length() -> None:
    # Short texts score high by nature (their embeddings are noisy). Within length bins a short review is
    # compared with short ones, so it is flagged at the nominal rate, and a long review unusual for its
    # length is found although short ordinary ones outscore it.
    rng = np.random.default_rng(0)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        lengths = rng.integers(1, 80, n).astype(float)
        return 5.0 / np.sqrt(lengths) + rng.normal(size=n), lengths

    ref_scores, ref_lengths = sample(2000)
    conditioner = LengthConditioner(n_bins=5).fit(ref_scores, ref_lengths)
    assert conditioner.edges_.size == 4
    new_scores, new_lengths = sample(4000)
    conditioned = conditioner.transform(new_scores, new_lengths)
    short = new_lengths < conditioner.edges_[0]
    # Flag at 5 %: nominal for short and long reviews alike (unconditioned, short ones take most flags).
    assert 0.035 <= np.mean(conditioned[short] >= -np.log(0.05)) <= 0.065
    assert 0.035 <= np.mean(conditioned[~short] >= -np.log(0.05)) <= 0.065
    plain = ScoreCalibrator().fit(ref_scores).p_value(new_scores)
    assert np.mean(plain[short] <= 0.05) > 2 * np.mean(plain[~short] <= 0.05)
    odd = conditioner.transform(np.array([3.5]), np.array([70.0]))[0]
    assert odd > -np.log(0.01)
    # Beyond a bin's largest reference score the ranking goes on (an exponential tail), not one tied value.
    far = conditioner.transform(np.array([8.0, 9.0, 12.0]), np.full(3, 70.0))
    assert far[0] < far[1] < far[2]
    # The bin maximum's held-out value is computed without itself: beyond the runner-up, in the tail.
    top = int(np.argmax(np.where(ref_lengths >= conditioner.edges_[-1], ref_scores, -np.inf)))
    assert conditioner.held_out_[top] > -np.log(1 / 400)
    # Held-out values of the reference: within-bin leave-one-out, on the scale of new ones.
    assert abs(np.mean(conditioner.held_out_ >= -np.log(0.05)) - 0.05) < 0.01


def test_length_conditioning_keeps_bins_large_enough() -> None:
    # Half the reviews have one word: quantile edges collapse, no bin is left nearly empty.
    lengths = np.r_[np.ones(500), np.arange(500) % 60 + 2.0]
    conditioner = LengthConditioner(n_bins=5, min_per_bin=100).fit(np.arange(1000.0), lengths)
    counts = np.bincount(np.searchsorted(conditioner.edges_, lengths, side="right"))
    assert counts.min() >= 50
    assert LengthConditioner(n_bins=5).fit(np.arange(150.0), np.arange(150.0)).edges_.size == 0  # 1 bin
    with pytest.raises(NotFittedError):
        LengthConditioner().transform(np.zeros(2), np.ones(2))
    with pytest.raises(ParameterError, match="differ in shape"):
        LengthConditioner().fit(np.zeros(3), np.ones(2))
