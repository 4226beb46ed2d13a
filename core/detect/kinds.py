"""Kinds of anomaly an analyst hunts one at a time, each with its own calibrated score.

The headline ranks every kind together; an analyst cleaning out duplicates or checking machine-written text
wants that kind alone, most certain first. Each kind's score is calibrated like the headline: the share of
reference reviews (held out when their scorers were fitted) less unusual in that respect, so 0.99 means "more
unusual than 99 % of the reference" whatever the kind. A group kind (novelty, rating mismatch, duplicates,
text form, campaign) is its members' mean surprise ``-log p`` (the statistic the ensemble uses) calibrated against the same
mean over the reference's held-out surprises of the members this batch has; machine-written is the predictable
wording signal alone, already calibrated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from core.detect.calibration import ScoreCalibrator
from core.errors import ParameterError

#: The machine-written kind: reviews whose wording a language model finds unusually predictable.
MACHINE_WRITTEN = "machine_written"
_MACHINE_SIGNAL = "predictable_text"
#: Kinds in the order the faces list them, with the words they show.
KIND_LABELS: dict[str, str] = {
    "novelty": "unlike the reference (novelty)",
    "rating_mismatch": "rating contradicts the text",
    "duplicate": "duplicates and templates",
    MACHINE_WRITTEN: "machine-written wording",
    "text_form": "text form (quality, wording)",
    "campaign": "campaign (reviewer, product, timing)",
}
PREFIX = "kind_"


def kind_column(kind: str) -> str:
    """The score column of `kind` (``kind_<name>``); `ParameterError` naming the kinds for an unknown one."""
    if kind not in KIND_LABELS:
        raise ParameterError(f"unknown kind {kind!r}; expected one of {', '.join(KIND_LABELS)}")
    return PREFIX + kind


def kinds_in(columns: Sequence[str]) -> list[str]:
    """The kinds that have a score column among `columns`, in `KIND_LABELS` order."""
    present = set(columns)
    return [k for k in KIND_LABELS if PREFIX + k in present]


def kind_scores(
    surprise: Mapping[str, np.ndarray],
    calibrated: Mapping[str, np.ndarray],
    present: Mapping[str, Sequence[str]],
    reference_surprises: pd.DataFrame,
    cache: dict[tuple[str, ...], ScoreCalibrator] | None = None,
) -> dict[str, np.ndarray]:
    """Calibrated 0-1 score per kind for each review (``kind_<name>`` columns).

    Parameters
    ----------
    surprise, calibrated
        Per detector and signal, ``-log p`` and the calibrated 0-1 score of the batch's reviews.
    present
        The ensemble's groups with the members this batch has scores for (`GroupEnsemble.present_groups`).
    reference_surprises
        Held-out surprises of the reference reviews, one column per member (``OutlierModel.reference_surprises_``).
    cache
        Calibrators of earlier calls, keyed by the members averaged (fitting one sorts the reference once).
    """
    cache = {} if cache is None else cache
    out: dict[str, np.ndarray] = {}
    held_out = set(reference_surprises.columns)
    for group, members in present.items():
        if group not in KIND_LABELS:
            continue
        members = tuple(m for m in members if m in surprise and m in held_out)
        if not members:
            continue
        if members not in cache:
            held = reference_surprises[list(members)].to_numpy(dtype=np.float64).mean(axis=1)
            cache[members] = ScoreCalibrator().fit(held)
        statistic = np.mean(np.vstack([np.asarray(surprise[m], dtype=np.float64) for m in members]), axis=0)
        out[PREFIX + group] = cache[members].transform(statistic)
    if _MACHINE_SIGNAL in calibrated:
        out[PREFIX + MACHINE_WRITTEN] = np.asarray(calibrated[_MACHINE_SIGNAL], dtype=np.float64)
    return out
