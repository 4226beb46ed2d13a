"""The label queue: which review of a scored batch an analyst labels next, in one of two orders.

``most unusual first`` follows the model's headline score and finds outliers fastest; ``random sample`` is a
fixed pseudo-random order (a hash of the review id), which measures the model without bias and is what lets a
label-aware model take over from the ensemble on retraining (`core.detect.supervised.LabelAwareScorer`). The
most-unusual order can follow one kind of anomaly instead of the headline (`core.detect.kinds`): the analyst
clearing out duplicates sees the likeliest duplicates first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.detect.kinds import kind_column
from core.errors import ParameterError, SchemaError
from core.labels import QUEUE_ORDERS, random_order

MOST_UNUSUAL_FIRST, RANDOM_SAMPLE = QUEUE_ORDERS


@dataclass(frozen=True)
class LabelQueue:
    """The reviews of a batch still waiting for a label, in labelling order, and the batch's progress.

    Attributes
    ----------
    reviews
        Rows of the scored batch with no label and not skipped, the next one first.
    total
        Reviews in the batch.
    labelled
        Reviews of the batch that have a label.
    flagged
        Reviews the model flags (``is_outlier``).
    flagged_labelled
        Flagged reviews that have a label.
    """

    reviews: pd.DataFrame
    total: int
    labelled: int
    flagged: int
    flagged_labelled: int

    @property
    def flagged_done(self) -> float:
        """Share of the flagged reviews labelled, in [0, 1] (0 when the model flags none)."""
        return self.flagged_labelled / self.flagged if self.flagged else 0.0


def build_label_queue(
    scored: pd.DataFrame,
    labelled: Iterable[str] = (),
    skipped: Iterable[str] = (),
    order: str = MOST_UNUSUAL_FIRST,
    kind: str | None = None,
) -> LabelQueue:
    """Order a scored batch for labelling.

    Parameters
    ----------
    scored
        One row per review with ``review_id``, ``score`` and ``is_outlier`` (`ScoreResult.frame`, or the
        workbench's map frame with display columns).
    labelled
        Review ids that already have a label; they leave the queue.
    skipped
        Review ids the analyst skipped in this session; they leave the queue but are not labelled.
    order
        One of `core.labels.QUEUE_ORDERS`: ``most unusual first`` (highest score first; ties keep batch
        order) or ``random sample`` (a fixed order per review id, so labelling one review never reshuffles
        the rest and a rerun shows the same sample).
    kind
        With ``most unusual first``, rank by this kind's calibrated score (``kind_<name>`` column, see
        `core.detect.kinds.KIND_LABELS`) instead of the headline; None = the headline.
    """
    if order not in QUEUE_ORDERS:
        raise ParameterError(f"order must be one of {list(QUEUE_ORDERS)}, got {order!r}")
    missing = [c for c in ("review_id", "score", "is_outlier") if c not in scored.columns]
    if missing:
        raise SchemaError(f"a scored batch needs columns review_id, score and is_outlier; missing {missing}")
    ids = scored["review_id"].astype(str)
    has_label = ids.isin({str(i) for i in labelled}).to_numpy()
    is_skipped = ids.isin({str(i) for i in skipped}).to_numpy()
    flags = scored["is_outlier"].fillna(False).astype(bool).to_numpy()
    waiting = scored[~has_label & ~is_skipped]
    if order == MOST_UNUSUAL_FIRST:
        column = "score" if kind is None else kind_column(kind)
        if column not in scored.columns:
            raise SchemaError(f"this scored batch has no {kind} score (column {column}): score it again with the "
                              "current model, or rank by the headline")
        waiting = waiting.sort_values(column, ascending=False, kind="stable", na_position="last")
    else:
        waiting = waiting.iloc[np.argsort(random_order(waiting["review_id"]), kind="stable")]
    return LabelQueue(
        reviews=waiting,
        total=len(scored),
        labelled=int(has_label.sum()),
        flagged=int(flags.sum()),
        flagged_labelled=int((has_label & flags).sum()),
    )
