"""The named signals beyond "unusual embedding", one module each, and the registry that makes them by name.

rating/text mismatch, duplicates, text quality, predictable and unusual wording, reviews that stand apart
from the reference together with the rest of their batch, and reviewer/product/timing evidence of campaigns. What a signal is and gives: `base.Signal`.
"""

from __future__ import annotations

from core.detect.signals.base import (
    GROUP_COLUMN,
    Signal,
    SignalInputs,
    SignalScores,
    independent_requests,
    normalise_text,
    review_ids,
    text_digest,
)
from core.detect.signals.batch_contrast import BatchContrastSignal
from core.detect.signals.campaign import CampaignSignal
from core.detect.signals.duplicate import DuplicateSignal
from core.detect.signals.predictable_text import PredictableTextSignal
from core.detect.signals.rating_mismatch import RatingMismatchSignal
from core.detect.signals.text_quality import (
    DESCRIPTOR_SIDES,
    STYLE_DESCRIPTORS,
    TextQualitySignal,
    all_descriptors,
    style_descriptors,
)
from core.detect.signals.unusual_wording import UnusualWordingSignal
from core.errors import ParameterError

SIGNALS: tuple[str, ...] = (
    "rating_mismatch",
    "duplicate",
    "text_quality",
    "predictable_text",
    "unusual_wording",
    "batch_contrast",
    "campaign",
)

_REGISTRY: dict[str, type[Signal]] = {
    "rating_mismatch": RatingMismatchSignal,
    "duplicate": DuplicateSignal,
    "text_quality": TextQualitySignal,
    "predictable_text": PredictableTextSignal,
    "unusual_wording": UnusualWordingSignal,
    "batch_contrast": BatchContrastSignal,
    "campaign": CampaignSignal,
}


def make_signal(name: str, **params: object) -> Signal:
    """A signal by name (one of `SIGNALS`)."""
    if name not in _REGISTRY:
        raise ParameterError(f"unknown signal {name!r}; expected one of {', '.join(SIGNALS)}")
    try:
        return _REGISTRY[name](**params)
    except TypeError as err:
        raise ParameterError(f"bad parameters for signal {name!r}: {err}") from None


__all__ = [
    "DESCRIPTOR_SIDES",
    "GROUP_COLUMN",
    "SIGNALS",
    "STYLE_DESCRIPTORS",
    "BatchContrastSignal",
    "CampaignSignal",
    "DuplicateSignal",
    "PredictableTextSignal",
    "RatingMismatchSignal",
    "Signal",
    "SignalInputs",
    "SignalScores",
    "TextQualitySignal",
    "UnusualWordingSignal",
    "all_descriptors",
    "independent_requests",
    "make_signal",
    "normalise_text",
    "review_ids",
    "style_descriptors",
    "text_digest",
]
