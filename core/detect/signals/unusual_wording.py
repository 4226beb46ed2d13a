"""The unusual-wording signal: wording the reference rarely uses, as off-topic reviews read."""

from __future__ import annotations

import numpy as np

from core.detect.signals.base import SignalInputs
from core.detect.signals.predictable_text import PredictableTextSignal


class UnusualWordingSignal(PredictableTextSignal):
    """Wording the reference rarely uses: the other side of `PredictableTextSignal`, for off-topic reviews.

    The same word-bigram model of the reference; the raw score is ``median - mean``, the mean log-probability
    per word below the reference median (no sqrt(tokens) weighting: an off-topic review is short as often as
    long, and "my favorite gift card" among magazine reviews is unusual in its few words). It sees the words,
    not the embedding's summary of them, so it joins the novelty group: on bench/detect.py (category
    injection, 10 seeds) novelty-group AUROC 0.851 -> 0.872 with it, 0.895 with `batch_contrast` too.
    """

    name = "unusual_wording"

    def fit(self, reference: SignalInputs) -> UnusualWordingSignal:
        super().fit(reference)
        finite = self.reference_scores_[np.isfinite(self.reference_scores_)]
        # Worth a reason from the reference's top tenth on (the detail is shown only for strong groups anyway).
        self.detail_level_ = float(np.quantile(finite, 0.9)) if finite.size else float("inf")
        return self

    def _raw(self, means: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return self.reference_median_ - means

    def _details(self, means: np.ndarray, raw: np.ndarray) -> list[str]:
        median = self.reference_median_
        return [
            f"wording unlike the reference's (mean log-probability per word {x:.2f}, reference median {median:.2f})"
            if np.isfinite(r) and r >= self.detail_level_
            else ""
            for x, r in zip(means, raw, strict=True)
        ]
