"""The rating-mismatch signal: a star rating far from the rating the review's text reads like."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_val_predict

from core.detect.signals.base import Signal, SignalInputs, SignalScores
from core.errors import ParameterError


class RatingMismatchSignal(Signal):
    """How far the star rating is from the rating the text reads like.

    A ridge regression on the reference embeddings predicts the rating from the text; the raw score is
    ``max(0, |rating - predicted| - tolerance)``: a rating within `tolerance` stars of what the text reads
    like is no mismatch at all (score 0, p-value 1), so this signal stays silent on ordinary reviews instead
    of adding noise to the ensemble's maximum. Held-out scores come from K-fold out-of-fold predictions.
    Used only when the reference has ratings (at least `min_rated` rows with two distinct values); rows
    without a rating get NaN.

    Parameters
    ----------
    alpha
        Ridge penalty.
    tolerance
        Stars of disagreement that count as none.
    min_rated
        Fewest rated reference rows to fit on.
    balanced
        Weight the reference so that every star level counts the same (`_balance_weights`).
    """

    name = "rating_mismatch"

    def __init__(
        self,
        alpha: float = 3.0,
        tolerance: float = 0.5,
        min_rated: int = 30,
        n_splits: int = 5,
        random_state: int = 0,
        balanced: bool = True,
    ) -> None:
        self.alpha = alpha
        self.balanced = balanced
        self.tolerance = tolerance
        self.min_rated = min_rated
        self.n_splits = n_splits
        self.random_state = random_state

    @staticmethod
    def _ratings(frame: pd.DataFrame) -> np.ndarray:
        if "rating" not in frame:
            return np.full(len(frame), np.nan)
        rating = frame["rating"]
        if rating.dtype == np.float64:  # canonical frames: no parsing needed (pd.to_numeric costs ~0.1 ms a call)
            return rating.to_numpy()
        return pd.to_numeric(rating, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    def fit(self, reference: SignalInputs) -> RatingMismatchSignal:
        if not self.alpha > 0:
            raise ParameterError(f"alpha must be > 0, got {self.alpha!r}")
        rating = self._ratings(reference.frame)
        mask = np.isfinite(rating)
        self.available_ = bool(mask.sum() >= self.min_rated and np.unique(rating[mask]).size >= 2)
        if not self.available_:
            return self
        X, y = reference.embeddings[mask], rating[mask]
        weight = self._balance_weights(y) if self.balanced else np.ones(len(y))
        self.model_ = Ridge(alpha=self.alpha).fit(X, y, sample_weight=weight)
        folds = KFold(
            n_splits=min(self.n_splits, int(mask.sum())), shuffle=True, random_state=self.random_state
        )
        oof = np.full(len(rating), np.nan)
        oof[mask] = cross_val_predict(Ridge(alpha=self.alpha), X, y, cv=folds, params={"sample_weight": weight})
        self._held_out = self._raw(rating, oof)
        self.rating_range_ = (float(y.min()), float(y.max()))
        return self

    @staticmethod
    def _balance_weights(y: np.ndarray) -> np.ndarray:
        """Weights that give every star level the same total weight (mean weight 1).

        Review ratings are skewed (often 80-95 % five stars); fitted as they come, the text model learns the
        skew and reads even a plainly negative text as about 4.5 stars, so every honest low rating looks like a
        contradiction. Balanced, it estimates what the text says under equal odds for each star level.
        """
        levels, inverse, counts = np.unique(np.round(y), return_inverse=True, return_counts=True)
        weight = len(y) / (len(levels) * counts[inverse])
        return weight / weight.mean()

    def _raw(self, rating: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        return np.maximum(0.0, np.abs(rating - predicted) - self.tolerance)

    def predicted_rating(self, embeddings: np.ndarray) -> np.ndarray:
        """The rating the text reads like, clipped to the reference's range."""
        self._check_fitted()
        if not self.available_:
            return np.full(len(embeddings), np.nan)
        # Ridge.predict's own arithmetic without its input checks, which cost more than the product on a request;
        # in float64: float32 products summed in an order that follows the batch's size moved ratings by ~1e-6.
        coef = np.asarray(self.model_.coef_, dtype=np.float64)
        predicted = np.asarray(embeddings, dtype=np.float64) @ coef.T + self.model_.intercept_
        return np.clip(predicted, *self.rating_range_)

    def score(self, batch: SignalInputs) -> SignalScores:
        self._check_fitted()
        rating = self._ratings(batch.frame)
        if not self.available_ or len(rating) == 0:
            return SignalScores(np.full(len(rating), np.nan), [""] * len(rating))
        predicted = self.predicted_rating(batch.embeddings)
        raw = self._raw(rating, predicted)
        details = [
            "" if not np.isfinite(r) else f"rated {r:g} star{'' if r == 1 else 's'}, the text reads like {p:.1f}"
            for r, p in zip(rating, predicted, strict=True)
        ]
        return SignalScores(raw, details)

    def held_out_scores(self, reference: SignalInputs) -> np.ndarray:
        self._check_fitted()
        if not self.available_:
            return np.full(len(reference.frame), np.nan)
        return self._held_out
