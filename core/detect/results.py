"""What scoring a batch returns: `ScoreResult`, the per-review scores with what explains them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.detect.explain import Reasons, contributions, neighbours_table, values_at
from core.errors import ParameterError


@dataclass(frozen=True)
class MemberScores:
    """Per detector and signal: calibrated 0-1 scores (NaN = not applicable), surprises (``-log p``, 0 = not
    applicable) and a detail line per review, in the order of the scored reviews."""

    calibrated: dict[str, np.ndarray]
    surprise: dict[str, np.ndarray]
    details: dict[str, list[str]]


@dataclass(frozen=True)
class ScoreResult:
    """Scores of one batch.

    Attributes
    ----------
    scores
        One row per input review, in input order: ``review_id``, one calibrated 0-1 column per detector and
        signal (NaN where a signal does not apply), ``score`` (headline, 0-1), ``p_value`` (conformal, of
        the unsupervised ensemble), ``is_outlier``, ``reason``; ``unsupervised_score`` too when the
        label-aware scorer is the headline.
    missing
        Columns the reference had and this batch lacks; the signals that need them were left out.
    threshold
        Headline score from which a review is flagged.
    active_groups
        The ensemble groups in excess in this batch, which lead the headline (all groups when none is; see
        adaptive groups in docs/model.md).
    group_evidence
        Per group, the p-value of its excess in this batch (1.0 where not tested: small batches, requests).
    group_scores, surprises
        Calibrated 0-1 score per ensemble group, and ``-log p`` per detector and signal (0 = not applicable).
    embeddings
        The batch's text embeddings, so callers (the per-review shift score, the 2-D map) need not embed again.
    """

    scores: pd.DataFrame
    missing: list[str]
    threshold: float
    active_groups: tuple[str, ...]
    detector_names: tuple[str, ...]
    signal_names: tuple[str, ...]
    group_scores: pd.DataFrame = field(repr=False)
    surprises: pd.DataFrame = field(repr=False)
    details: dict[str, list[str]] = field(repr=False)
    neighbour_index: np.ndarray = field(repr=False)
    neighbour_similarity: np.ndarray = field(repr=False)
    reference_frame: pd.DataFrame = field(repr=False)
    embeddings: np.ndarray = field(repr=False)
    group_evidence: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)

    def reasons(self, i: int) -> Reasons:
        """Structured reasons of the review at position `i`: contributions, 3 nearest reference reviews,
        every detector's and signal's calibrated score."""
        return self.reasons_of([i])[0]

    def reasons_of(self, rows: Sequence[int]) -> list[Reasons]:
        """`reasons` of each position in `rows`, reading every column once (the API answers a micro-batch of
        requests with this: a row-wise ``.iloc`` per review cost more than scoring it)."""
        n = len(self.scores)
        positions = [int(i) for i in rows]
        for i in positions:
            if not -n <= i < n:
                raise ParameterError(f"row {i} is out of range: the result has {n} rows")
        if not positions:
            return []
        take = np.asarray(positions, dtype=np.int64)
        row = values_at(self.scores, take)
        ids, score, p_value, flagged, summary = (row[c] for c in ("review_id", "score", "p_value", "is_outlier", "reason"))
        groups = values_at(self.group_scores, take)
        details = {g: [d[i] for i in positions] for g, d in self.details.items()}
        neighbours = neighbours_table(self.reference_frame, self.neighbour_index[take], self.neighbour_similarity[take])
        return [
            Reasons(
                review_id=str(ids[k]),
                score=float(score[k]),
                p_value=float(p_value[k]),
                is_outlier=bool(flagged[k]),
                summary=str(summary[k]),
                contributions=contributions({g: v[k] for g, v in groups.items()},
                                            {g: d[k] for g, d in details.items()}),
                neighbours=neighbours[k],
                detector_scores={d: float(row[d][k]) for d in self.detector_names},
                signal_scores={s: float(row[s][k]) for s in self.signal_names},
            )
            for k in range(len(positions))
        ]

    def flagged(self) -> pd.DataFrame:
        """The flagged reviews, most unusual first."""
        return self.scores[self.scores["is_outlier"]].sort_values("score", ascending=False)
