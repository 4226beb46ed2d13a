"""The registry of named shift statistics, each with its default thresholds: what a comparison computes.

Each statistic is declared next to the code that computes it; this module lists them. `compare` runs the
embedding-level ones from here, in this order, and combines the `DEFAULT_DRIVERS` into its verdict;
`core.shift.features.feature_tests` runs the per-feature ones; `core.report` and the Shift page look up
their titles here.
"""

from __future__ import annotations

from core.shift.embedding import CLASSIFIER, MMD
from core.shift.features import CHI_SQUARE, KS, WASSERSTEIN
from core.shift.novelty import NOVELTY
from core.shift.results import Statistic

STATISTICS: dict[str, Statistic] = {
    s.name: s for s in (KS, WASSERSTEIN, CHI_SQUARE, MMD, CLASSIFIER, NOVELTY)
}

#: The embedding-level statistics, in the order `compare` runs and reports them.
EMBEDDING_STATISTICS: tuple[Statistic, ...] = tuple(s for s in STATISTICS.values() if s.kind == "embedding")

#: The embedding-level tests whose Bonferroni-combined p-value decides `ShiftReport.drift`.
#: MMD catches broad moves of the whole batch, the novelty test a minority of reviews unlike any reference;
#: the classifier test is reported beside them (in the benchmark it added little power and cost some).
DEFAULT_DRIVERS: tuple[str, ...] = ("mmd", "novelty")
