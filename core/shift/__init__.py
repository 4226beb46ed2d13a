"""Distribution shift between a reference batch and a current batch of reviews: what to compute.

`compare` runs every test and returns one `ShiftReport`; each test gives a `TestResult` of the same shape,
and the named statistics, each with its default thresholds, are listed in `STATISTICS`. `core.report`
renders the report. The modules: `results` (the shapes), `registry` (the statistics), `permutation`
(p-value machinery), `features` (per-feature tests), `embedding` (MMD and the classifier test), `novelty`
(per-review novelty and its test), `clusters` (topic clusters), `compare` (the comparison).
"""

from __future__ import annotations

from core.shift.clusters import ClusterSummary, cluster_shift
from core.shift.compare import compare, explain
from core.shift.embedding import classifier_test, mmd_test
from core.shift.features import (
    DISCRETE_NUMERIC,
    PREDICTABILITY,
    feature_tests,
    predictability,
    psi,
    shift_inputs,
)
from core.shift.novelty import NOVELTY_LEVELS, ReviewShiftScorer, novelty_test
from core.shift.permutation import adjust_p_values, combine_p_values
from core.shift.registry import DEFAULT_DRIVERS, EMBEDDING_STATISTICS, STATISTICS
from core.shift.results import FeatureDistribution, ShiftReport, Statistic, TestResult

__all__ = [
    "DEFAULT_DRIVERS",
    "DISCRETE_NUMERIC",
    "EMBEDDING_STATISTICS",
    "NOVELTY_LEVELS",
    "PREDICTABILITY",
    "STATISTICS",
    "ClusterSummary",
    "FeatureDistribution",
    "ReviewShiftScorer",
    "ShiftReport",
    "Statistic",
    "TestResult",
    "adjust_p_values",
    "classifier_test",
    "cluster_shift",
    "combine_p_values",
    "compare",
    "explain",
    "feature_tests",
    "mmd_test",
    "novelty_test",
    "predictability",
    "psi",
    "shift_inputs",
]
