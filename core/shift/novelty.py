"""Per-review novelty against the reference and the test of whether a batch holds more novel reviews than
chance allows.

`ReviewShiftScorer` gives every review a conformal p-value: how its distance to its nearest reference reviews
compares with the reference reviews' own. `novelty_test` counts current reviews whose p-value is at most a
level (1, 2, 5 and 10 %); under no shift each count follows a beta-binomial law exactly (the calibration set
is shared, so the reviews' p-values are dependent and a plain binomial would be wrong), and the most
surprising level is paid for by simulating the counts' joint law, not by Bonferroni.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

from core.detect.calibration import Exceedances, exceedances, min_exceedance_p, validate_share
from core.errors import NotFittedError, ParameterError
from core.shift.permutation import generator
from core.shift.results import EmbeddingOutcome, EmbeddingSample, Statistic, TestResult
from core.text.embed import unit_rows


class ReviewShiftScorer:
    """Per-review shift score: how novel a review is relative to the reference, as a conformal p-value.

    The novelty of a review is its mean cosine distance to its `n_neighbors` nearest reference reviews.
    By default (jackknife) every reference review is a neighbour and its novelty against the others is the
    yardstick: ``p = (1 + #{calibration novelty >= novelty}) / (m + 1)`` with m = the reference size. A
    reference review is scored against one review fewer than a new one, which only makes p a little larger
    (conservative). Under no shift ``p <= 0.05`` happens for 5 % of reviews; small p = more novel than the
    reference allows. docs/shift.md says why the jackknife is the default rather than a held-out split.

    Parameters
    ----------
    n_neighbors
        Neighbours averaged in the novelty.
    calibration_fraction
        None (default): jackknife over the whole reference. A share in (0, 1): hold that share out for
        calibration and use the rest as neighbours (split conformal, exact but with fewer of both).
    max_reference
        At most this many reference reviews are kept as neighbours (random subsample), to bound memory.
    random_state
        Seed of the subsample and of the split.
    """

    def __init__(
        self,
        n_neighbors: int = 5,
        calibration_fraction: float | None = None,
        max_reference: int = 20_000,
        random_state: int = 0,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.calibration_fraction = calibration_fraction
        self.max_reference = max_reference
        self.random_state = random_state

    def fit(self, reference_embeddings: np.ndarray) -> ReviewShiftScorer:
        """Keep the reference as neighbours and calibrate on reference novelty (held out or leave-one-out)."""
        x = unit_rows(np.asarray(reference_embeddings, dtype=np.float32))
        n = x.shape[0] if x.ndim == 2 else 0
        rng = np.random.default_rng(self.random_state)
        if self.calibration_fraction is None:  # jackknife: every reference review, scored without itself
            if n < self.n_neighbors + 2:
                raise ParameterError(
                    f"the reference needs at least {self.n_neighbors + 2} reviews for {self.n_neighbors} "
                    f"neighbours, got {n}"
                )
            keep = np.sort(rng.permutation(n)[: self.max_reference])
            self.neighbours_ = x[keep]
            self.calibration_index_ = keep
            self.calibration_novelty_ = np.sort(self._novelty(self.neighbours_, leave_self_out=True))
            return self
        if not 0 < self.calibration_fraction < 1:
            raise ParameterError(f"calibration_fraction must be in (0, 1), got {self.calibration_fraction}")
        n_cal = int(round(n * self.calibration_fraction))
        if n - n_cal < self.n_neighbors + 1 or n_cal < 1:
            raise ParameterError(
                f"the reference needs at least {int(math.ceil((self.n_neighbors + 2) / (1 - self.calibration_fraction)))}"
                f" reviews for {self.n_neighbors} neighbours and a calibration set, got {n}"
            )
        order = rng.permutation(n)
        train = order[n_cal:][: self.max_reference]
        self.neighbours_ = x[train]
        self.calibration_index_ = np.sort(order[:n_cal])
        self.calibration_novelty_ = np.sort(self.novelty(x[order[:n_cal]]))
        return self

    def novelty(self, embeddings: np.ndarray) -> np.ndarray:
        """Mean cosine distance to the nearest reference reviews (higher = more novel)."""
        if not hasattr(self, "neighbours_"):
            self._check_fitted()
        return self._novelty(unit_rows(np.asarray(embeddings, dtype=np.float32)))

    def _novelty(self, x: np.ndarray, leave_self_out: bool = False) -> np.ndarray:
        # leave_self_out: x are the neighbours themselves; row i is compared with every neighbour but i.
        k = min(self.n_neighbors, self.neighbours_.shape[0] - int(leave_self_out))
        out = np.empty(x.shape[0], dtype=np.float64)
        for start in range(0, x.shape[0], 2048):
            sims = x[start : start + 2048] @ self.neighbours_.T
            if leave_self_out:
                rows = np.arange(sims.shape[0])
                sims[rows, rows + start] = -np.inf
            top = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
            out[start : start + 2048] = 1.0 - top.mean(axis=1)
        return out

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Conformal p-values: small = more novel than the reference allows."""
        novelty = self.novelty(embeddings)
        cal = self.calibration_novelty_
        at_least = cal.size - np.searchsorted(cal, novelty - 1e-12, side="left")
        return (1.0 + at_least) / (cal.size + 1.0)

    @property
    def n_calibration(self) -> int:
        self._check_fitted()
        return int(self.calibration_novelty_.size)

    def _check_fitted(self) -> None:
        if not hasattr(self, "calibration_novelty_"):
            raise NotFittedError("this ReviewShiftScorer is not fitted yet; call fit(reference_embeddings) first")


#: Per-review p-value levels the novelty test counts at. A few strongly novel reviews show at the lowest
#: levels, a larger moderately novel minority at the higher ones; the test takes whichever is most surprising
#: and pays for the choice exactly (`core.detect.calibration.min_exceedance_p`); docs/shift.md has the
#: power this gains over a single 5 % level.
NOVELTY_LEVELS: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)


def novelty_test(
    *,
    p_values: np.ndarray,
    n_calibration: int,
    alpha: float = 0.05,
    levels: Sequence[float] = NOVELTY_LEVELS,
    random_state: int | np.random.Generator | None = 0,
) -> TestResult:
    """Do more current reviews have a small conformal p-value than chance allows?

    At each of `levels`, counts the current reviews with ``p <= level``. With ``m`` calibration reviews and
    ``k = max(1, floor(level (m + 1)))``, ``p <= k / (m + 1)`` means the review is more novel than the k-th
    most novel calibration review; the reference mass beyond that review is Beta(k, m + 1 - k), so under
    no shift the count is exactly BetaBinomial(n, k, m + 1 - k) even though all reviews share one calibration
    set. The smallest of the levels' tail probabilities is the statistic; its null law (the levels' counts
    are dependent) is simulated exactly (`min_exceedance_p`). One-sided. The detail reports the level that
    decided, its count and the count expected there without shift.

    Parameters
    ----------
    p_values
        Conformal p-values of the current reviews (from `ReviewShiftScorer.score`).
    n_calibration
        Size of the scorer's calibration set.
    alpha
        Threshold on this test's p-value.
    levels
        Per-review p-value levels counted as novel.
    random_state
        Seed or generator for splitting the probability of the observed statistic (it is discrete; the
        split makes the p-value exactly uniform under no shift instead of conservative).
    """
    if not levels:
        raise ParameterError("levels needs at least one per-review p-value level, e.g. (0.01, 0.05)")
    for level in levels:
        validate_share("each of levels", level, upper=0.5)
    counts = [exceedances(p_values, n_calibration, level) for level in levels]
    return novelty_test_from_counts(counts=counts, n_calibration=n_calibration, alpha=alpha,
                                    random_state=random_state)


def novelty_test_from_counts(
    *,
    counts: Sequence[Exceedances],
    n_calibration: int,
    alpha: float = 0.05,
    random_state: int | np.random.Generator | None = 0,
) -> TestResult:
    """`novelty_test` from the counts at each level, for engines that count on many machines and add up.

    Parameters
    ----------
    counts
        One `core.detect.calibration.Exceedances` per level: the current reviews with a conformal p-value at most
        the level's cut, out of all current reviews.
    n_calibration
        Size of the scorer's calibration set.
    alpha
        Threshold on this test's p-value.
    random_state
        Seed or generator for splitting the probability of the observed statistic, as in `novelty_test`.
    """
    if not counts:
        raise ParameterError("counts needs at least one level's count")
    beyond = min(counts, key=lambda c: c.p_value())  # the deciding level: its own tail is the smallest
    n, count, a, b = beyond.n, beyond.count, beyond.a, beyond.b
    p = min_exceedance_p(counts, u=generator(random_state).uniform())
    expected = beyond.expected
    return TestResult(
        name="novelty", feature="embedding", statistic=float(count), p_value=p,
        effect_size=float((count - expected) / n) if n else 0.0, effect_name="excess_share", threshold=alpha,
        drift=bool(p < alpha),
        detail={"n_current": n, "n_calibration": int(n_calibration), "level": beyond.cut, "count": count,
                "expected": float(expected), "share_novel": count / n if n else 0.0,
                "null_q95": int(stats.betabinom.ppf(0.95, n, a, b)) if n else 0,
                "levels": {f"{c.cut:.4g}": c.count for c in counts},
                "effect_threshold": NOVELTY.effect_threshold},
    )


def _run_novelty(sample: EmbeddingSample, seed: np.random.SeedSequence) -> EmbeddingOutcome:
    # The scorer covers every review of both batches, not only the permutation tests' sample.
    scorer = ReviewShiftScorer(random_state=int(np.random.default_rng(seed).integers(2**31))).fit(sample.reference)
    shift_p = scorer.score(sample.current)
    result = novelty_test(p_values=shift_p, n_calibration=scorer.n_calibration, alpha=sample.alpha,
                          random_state=np.random.default_rng(seed))
    return EmbeddingOutcome(
        result,
        scores={"shift_p_value": shift_p, "novelty": scorer.novelty(sample.current)},
        sample_sizes={"scorer_neighbours": int(scorer.neighbours_.shape[0]),
                      "scorer_calibration": scorer.n_calibration},
    )


NOVELTY = Statistic("novelty", "Per-review novelty excess", "embedding", "excess_share", 0.05,
                    description="current reviews with conformal shift p-value <= 1-10 % vs beta-binomial null, "
                                "best level",
                    run=_run_novelty)
