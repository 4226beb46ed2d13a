"""What every signal shares: its inputs, its scores, the `Signal` base class, and helpers on review texts.

A signal is fitted on the reference, gives a raw score per review (higher = more abnormal, NaN where its
inputs are missing), held-out raw scores of the reference for calibration, and a short human-readable
detail per review for the reasons. A signal whose inputs the reference lacks is not fitted
(``available_`` is False) and the model leaves it out.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from core.errors import NotFittedError


@dataclass(frozen=True)
class SignalInputs:
    """What a signal may look at for one batch: the canonical frame and its (unit) text embeddings.

    `shared` lets signals that need the same work share it within one fit or score call (the predictable-
    and unusual-wording signals use one word model and one pass over the texts).
    """

    frame: pd.DataFrame
    embeddings: np.ndarray
    shared: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class SignalScores:
    """Raw scores of one signal on one batch (NaN = not applicable) and a detail line per review.

    `calibration`, when set, holds raw scores of the reference reviews computed the way this batch's were
    (for a signal whose scores depend on the batch they came in); they replace the fitted calibration.
    """

    raw: np.ndarray
    details: list[str] = field(default_factory=list)
    calibration: np.ndarray | None = None


class Signal(ABC):
    """Base class of the named signals."""

    name: ClassVar[str] = "signal"
    available_: bool  # set by fit: False when the reference cannot support the signal

    @abstractmethod
    def fit(self, reference: SignalInputs) -> Signal: ...

    @abstractmethod
    def score(self, batch: SignalInputs) -> SignalScores: ...

    @abstractmethod
    def held_out_scores(self, reference: SignalInputs) -> np.ndarray:
        """Raw scores of the reference rows by a signal that did not see them (for calibration)."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "available_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(reference) first")


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


#: Optional column of a batch: reviews with different values were sent separately (e.g. API requests scored
#: in one micro-batch) and are never compared with each other as duplicates.
GROUP_COLUMN = "request_group"


def independent_requests(frame: pd.DataFrame) -> bool:
    """Rows from separate requests scored together (the API's micro-batches): no batch to judge them by."""
    return GROUP_COLUMN in frame.columns and frame[GROUP_COLUMN].nunique() > 1


def normalise_text(text: str) -> str:
    """Lower case, accents folded, punctuation and runs of spaces removed: what counts as "the same text"."""
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    return _NON_WORD.sub(" ", folded.lower()).strip()


def review_ids(frame: pd.DataFrame) -> list[str]:
    """The review ids of `frame` as strings (row positions when it has none)."""
    # str() per value, not .astype(str): on an Arrow string column that costs ~0.2 ms per API request.
    if "review_id" not in frame:
        return [str(i) for i in range(len(frame))]
    return [str(x) for x in frame["review_id"].tolist()]


def plain_texts(texts: pd.Series) -> list[str]:
    """`texts` as Python strings, ``""`` where missing (as ``.fillna("").astype(str)``, without two pandas passes
    on every API request)."""
    return [v if isinstance(v, str) else "" if pd.isna(v) else str(v) for v in texts.tolist()]


def text_digest(text: object) -> str:
    """A short hash of a text: tells whether a review id still holds the text a signal was fitted on."""
    return hashlib.blake2b(str(text).encode("utf-8"), digest_size=8).hexdigest()
