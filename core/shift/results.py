"""The shapes of a shift analysis: one `TestResult` per test, the `ShiftReport` of a comparison, and
`Statistic`, the description of a named statistic (with its default thresholds) that the registry lists.

Every test returns the same shape, a frozen `TestResult` (statistic, p-value, effect size, threshold,
verdict), so that `core.report` can render any of them without knowing which test made it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from core.shift.clusters import ClusterSummary

Kind = Literal["numeric", "categorical", "embedding"]

#: Columns of `ShiftReport.scores`, one row per current review, in this order.
SCORE_COLUMNS: tuple[str, ...] = ("review_id", "shift_p_value", "novelty", "classifier_probability", "cluster")


@dataclass(frozen=True)
class TestResult:
    """One shift test: the same shape for every statistic.

    Parameters
    ----------
    name
        Registry name of the statistic (``ks``, ``wasserstein``, ``chi_square``, ``mmd``, ...).
    feature
        The column tested, or ``embedding`` for tests on the text embeddings.
    statistic
        The test statistic in its own units.
    p_value
        The test's own p-value (not corrected for multiple testing; see ``detail['p_value_adjusted']``).
    effect_size
        A size of the difference that does not grow with the sample size (PSI, Jensen-Shannon, AUC, ...).
    effect_name
        What `effect_size` is.
    threshold
        The p-value threshold the verdict used (alpha).
    drift
        The verdict: the (adjusted, for per-feature tests) p-value is below `threshold`.
    detail
        Sample sizes, adjusted p-value, effect threshold and other test-specific numbers.
    """

    __test__ = False  # not a pytest test class

    name: str
    feature: str
    statistic: float
    p_value: float
    effect_size: float
    effect_name: str
    threshold: float
    drift: bool
    detail: Mapping[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class EmbeddingSample:
    """What an embedding-level test sees in `compare`: both batches' embeddings, whole and subsampled.

    Attributes
    ----------
    reference, current
        Every review's embedding, ``(n, dim)``.
    reference_sample, current_sample
        At most `compare`'s ``max_samples`` reviews per batch, for the permutation tests.
    n_permutations
        Label permutations of each permutation test.
    alpha
        Significance level of the verdict.
    """

    reference: np.ndarray
    current: np.ndarray
    reference_sample: np.ndarray
    current_sample: np.ndarray
    n_permutations: int
    alpha: float


@dataclass(frozen=True, eq=False)
class EmbeddingOutcome:
    """What an embedding-level test gives `compare`: its result, per-review columns and sample sizes.

    Attributes
    ----------
    result
        The test's result.
    scores
        Columns of `ShiftReport.scores` the test computed, one value per current review.
    sample_sizes
        Entries of `ShiftReport.sample_sizes` the test adds.
    """

    result: TestResult
    scores: Mapping[str, np.ndarray] = field(default_factory=dict)
    sample_sizes: Mapping[str, int] = field(default_factory=dict)


#: How `compare` runs an embedding-level statistic: the batches and the statistic's own seed in, the outcome out.
EmbeddingRunner = Callable[[EmbeddingSample, np.random.SeedSequence], EmbeddingOutcome]


@dataclass(frozen=True)
class Statistic:
    """A named shift statistic with its default thresholds (a registry entry).

    Attributes
    ----------
    name
        Registry name, the `TestResult.name` of its results.
    title
        Name shown to people.
    kind
        What it tests: ``numeric`` or ``categorical`` columns, or the ``embedding`` of the texts.
    effect_name
        What the effect size of its results is.
    effect_threshold
        Effect size from which the difference is reported as large, or None.
    p_threshold
        Default significance level.
    description
        One line on what it computes.
    run
        How `compare` runs an embedding-level statistic; None for per-feature statistics, which
        `core.shift.features.feature_tests` runs together on shared permutations.
    """

    name: str
    title: str
    kind: Kind
    effect_name: str
    effect_threshold: float | None
    p_threshold: float = 0.05
    description: str = ""
    run: EmbeddingRunner | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class FeatureDistribution:
    """Binned values of one feature in both batches, for plots (counts, not raw values)."""

    feature: str
    kind: Literal["numeric", "categorical"]
    bins: list[str]
    reference: list[int]
    current: list[int]


@dataclass(frozen=True, eq=False)
class ShiftReport:
    """Everything `compare` found; `core.report` renders it.

    Attributes
    ----------
    drift
        The verdict: the embedding-level p-value is below `alpha`.
    p_value
        Bonferroni-combined p-value of the driving embedding tests (`drivers`).
    tests
        Every test, embedding-level first, then per feature.
    clusters
        Topic clusters with their share in each batch, grown and new first.
    scores
        One row per current review: review_id, shift_p_value, novelty, classifier_probability, cluster.
    sample_sizes
        Rows each part of the analysis used (embedding tests subsample large batches).
    """

    drift: bool
    p_value: float
    alpha: float
    drivers: tuple[str, ...]
    tests: list[TestResult]
    clusters: list[ClusterSummary]
    n_reference: int
    n_current: int
    sample_sizes: dict[str, int]
    scores: pd.DataFrame
    distributions: list[FeatureDistribution]
    drifted_features: list[str]
    share_drifted_features: float
    skipped_features: dict[str, str]
    n_permutations: int
    correction: str
    explanation: str
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    embedded_fields: tuple[str, ...] = ("title", "text")  # what the embedding tests compared

    def test(self, name: str, feature: str = "embedding") -> TestResult:
        """The result of test `name` on `feature`."""
        for result in self.tests:
            if result.name == name and result.feature == feature:
                return result
        raise KeyError(f"no test {name!r} on {feature!r} in this report")
