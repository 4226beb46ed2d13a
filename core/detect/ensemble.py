"""The ensemble: detectors and signals in groups, each group's evidence of an excess in a batch, a head start
for the groups in excess, and the headline score calibrated on the reference's held-out surprises.

Members of a group are averaged in surprise units (``-log p``); groups are combined (`combine`) into the
headline statistic, which is calibrated like any raw score. Why it is built this way: ``docs/model.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from core.detect.calibration import ScoreCalibrator, combine

NOVELTY = "novelty"
#: Signals that share a group of the ensemble (averaged in surprise units, like the novelty detectors): text
#: quality and predictable wording both describe how a review is written, not what it says. One group fewer
#: adds fewer false alarms to the maximum, and generated reviews trip both signals, so their mean clears the
#: group test more often (measured in docs/model.md).
TEXT_FORM = "text_form"
#: Unusual wording and the batch contrast join the novelty detectors: they see off-topic reviews too, through
#: the words and through the batch, where the detectors see the embedding of one review at a time.
SIGNAL_GROUPS: dict[str, str] = {
    "text_quality": TEXT_FORM,
    "predictable_text": TEXT_FORM,
    "unusual_wording": NOVELTY,
    "batch_contrast": NOVELTY,
}


class GroupEnsemble:
    """Groups of detectors and signals combined into a calibrated headline score.

    The base of `core.detect.model.OutlierModel`, which sets the parameters and fitted state below.
    """

    contamination: float
    combination: str
    false_alarm_rate: float | None
    adaptive: bool
    adaptive_levels: tuple[float, ...]
    adaptive_level: float
    adaptive_min_batch: int
    groups_: dict[str, tuple[str, ...]]
    group_calibrators_: dict[str, ScoreCalibrator]
    reference_surprises_: pd.DataFrame
    ensemble_calibrator_: ScoreCalibrator
    threshold_: float

    @staticmethod
    def _group_statistic(surprise: dict[str, np.ndarray], members: Sequence[str]) -> np.ndarray:
        return np.mean(np.vstack([np.asarray(surprise[m], dtype=np.float64) for m in members]), axis=0)

    def present_groups(self, calibrated: dict[str, np.ndarray]) -> dict[str, tuple[str, ...]]:
        """The groups with the members this batch has scores for (no ratings: no rating group; a single
        request: no batch contrast). A member with no score at all would only pull its group's mean down."""
        return self.present_groups_from({m: bool(np.isfinite(v).any()) for m, v in calibrated.items()})

    def present_groups_from(self, scored: Mapping[str, bool]) -> dict[str, tuple[str, ...]]:
        """`present_groups` from whether each member scored any review of the batch (`scored`, member -> bool),
        which a distributed engine aggregates over all partitions; members not named count as scored."""
        present: dict[str, tuple[str, ...]] = {}
        for g, members in self.groups_.items():
            kept = tuple(m for m in members if scored.get(m, True))
            if kept:
                present[g] = kept
        return present or dict(self.groups_)

    def _group_calibrator(self, group: str, members: tuple[str, ...]) -> ScoreCalibrator:
        if members == self.groups_.get(group):
            return self.group_calibrators_[group]
        # A group short of a member (no ratings in this batch, ...) is recalibrated once per member set.
        cache = self.__dict__.setdefault("_group_calibration_cache", {})
        if members not in cache:
            reference = {m: self.reference_surprises_[m].to_numpy() for m in members}
            cache[members] = ScoreCalibrator().fit(self._group_statistic(reference, members))
        return cache[members]

    def group_evidence(
        self,
        surprise: dict[str, np.ndarray],
        groups: dict[str, tuple[str, ...]] | None = None,
        independent: bool = False,
    ) -> dict[str, float]:
        """Per group, the p-value of its excess in this batch: the smallest exceedance p-value over
        `adaptive_levels`, times their number (Bonferroni), at most 1.

        1.0 for every group when the batch is smaller than `adaptive_min_batch`, when `adaptive` is off, and
        with `independent` (rows from separate requests scored together): one request's score never depends
        on what another request contained. `groups` defaults to every fitted group (see `present_groups`).
        Counting (`exceedance_counts`) and testing the counts (`evidence_from_counts`) are separate steps so
        that a distributed engine can add up the counts of its partitions and test them once.
        """
        groups = dict(self.groups_) if groups is None else groups
        n = len(next(iter(surprise.values()))) if surprise else 0
        if not self.tests_excess(n, independent):
            return {g: 1.0 for g in groups}
        return self.evidence_from_counts(groups, self.exceedance_counts(surprise, groups), n)

    def tests_excess(self, n: int, independent: bool = False) -> bool:
        """Whether a batch of `n` reviews gets the excess test (else every group's evidence is 1.0)."""
        return bool(self.adaptive and not independent and n >= self.adaptive_min_batch)

    def exceedance_counts(
        self, surprise: dict[str, np.ndarray], groups: dict[str, tuple[str, ...]]
    ) -> dict[str, tuple[int, ...]]:
        """Per group, how many reviews' group statistic lies beyond the reference's upper quantile at each of
        `adaptive_levels`. Counts of disjoint parts of a batch add up to the counts of the whole batch."""
        counts = {}
        for g, members in groups.items():
            calibrator, statistic = self._group_calibrator(g, members), self._group_statistic(surprise, members)
            counts[g] = tuple(calibrator.exceedances(statistic, level).count for level in self.adaptive_levels)
        return counts

    def evidence_from_counts(
        self, groups: dict[str, tuple[str, ...]], counts: Mapping[str, Sequence[int]], n: int
    ) -> dict[str, float]:
        """`group_evidence` from the exceedance counts of a batch of `n` reviews (`exceedance_counts`, summed
        over the parts of the batch when it was counted in parts)."""
        if not self.tests_excess(n):
            return {g: 1.0 for g in groups}
        evidence = {}
        for g, members in groups.items():
            calibrator = self._group_calibrator(g, members)
            # The law of each count comes from the calibrator; only the count and the batch size are the batch's.
            nulls = [calibrator.exceedances(np.zeros(0), level) for level in self.adaptive_levels]
            p = min(replace(null, count=int(c), n=int(n)).p_value() for null, c in zip(nulls, counts[g], strict=True))
            evidence[g] = float(min(1.0, len(self.adaptive_levels) * p))
        return evidence

    def _in_excess(
        self, groups: dict[str, tuple[str, ...]], evidence: dict[str, float]
    ) -> dict[str, tuple[str, ...]]:
        """The groups in excess in this batch (evidence below `adaptive_level`); all groups when none is."""
        return {g: m for g, m in groups.items() if evidence.get(g, 1.0) < self.adaptive_level} or groups

    def _ensemble(
        self,
        surprise: dict[str, np.ndarray],
        groups: dict[str, tuple[str, ...]],
        evidence: dict[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Headline score, conformal p-value and threshold over `groups`, calibrated on the reference.

        Each group's mean surprise gets ``-log`` of its `evidence` added (a group in excess in this batch
        leads the maximum); the reference's statistic, which calibrates the headline, gets the same offsets.
        """
        offsets = {g: -float(np.log(max(p, 1e-300))) for g, p in (evidence or {}).items() if g in groups and p < 1.0}
        statistic = combine(surprise, groups, self.combination, offsets)
        if offsets:
            calibrator, threshold = self._calibrate_ensemble(groups, offsets)
        else:
            calibrator, threshold = self._ensemble_calibration(tuple(groups.items()))
        return calibrator.transform(statistic), calibrator.p_value(statistic), threshold

    def _calibrate_ensemble(
        self,
        groups: dict[str, tuple[str, ...]],
        offsets: dict[str, float] | None = None,
        reference: dict[str, np.ndarray] | None = None,
    ) -> tuple[ScoreCalibrator, float]:
        """Calibrator and threshold of the headline over `groups` from the reference's held-out surprises
        (`reference`: fit passes its float64 ones; later calls use the float32 copy kept on the model)."""
        if reference is None:
            reference = {c: self.reference_surprises_[c].to_numpy() for c in self.reference_surprises_}
        ref_stat = combine(reference, groups, self.combination, offsets)
        calibrator = ScoreCalibrator().fit(ref_stat)
        if self.false_alarm_rate is not None:
            return calibrator, 1.0 - float(self.false_alarm_rate)
        raw = float(np.quantile(ref_stat, 1.0 - self.contamination))
        return calibrator, float(calibrator.transform(np.array([raw]))[0])

    def _ensemble_calibration(self, groups: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[ScoreCalibrator, float]:
        if dict(groups) == self.groups_:
            return self.ensemble_calibrator_, self.threshold_
        # Recalibrating costs a sort of the reference per call; the API asks for the same few sets every request.
        cache = self.__dict__.setdefault("_calibration_cache", {})
        if groups not in cache:
            cache[groups] = self._calibrate_ensemble(dict(groups))
        return cache[groups]

    @staticmethod
    def _groups(detectors: Sequence[str], signals: Sequence[str]) -> dict[str, tuple[str, ...]]:
        groups: dict[str, tuple[str, ...]] = {}
        if detectors:
            groups[NOVELTY] = tuple(detectors)
        for name in signals:
            group = SIGNAL_GROUPS.get(name, name)
            groups[group] = (*groups.get(group, ()), name)
        return groups

    @staticmethod
    def _group_score(
        surprise: dict[str, np.ndarray], members: Sequence[str], calibrated: dict[str, np.ndarray]
    ) -> np.ndarray:
        if len(members) == 1:
            return calibrated[members[0]]
        # Mean surprise of the members back on the 0-1 scale: 1 - geometric mean of their p-values.
        return 1.0 - np.exp(-np.mean(np.vstack([surprise[m] for m in members]), axis=0))
