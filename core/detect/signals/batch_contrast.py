"""The batch-contrast signal: reviews that stand apart from the reference together with the rest of their batch."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from core.detect.signals.base import (
    Signal,
    SignalInputs,
    SignalScores,
    independent_requests,
    review_ids,
    text_digest,
)
from core.errors import ParameterError
from core.text.embed import unit_rows


class BatchContrastSignal(Signal):
    """Reviews that resemble the rest of their batch more than the reference: a new kind arriving together.

    A logistic regression learns to tell the batch's embeddings from the reference's, cross-fitted (every
    review is scored by a model that did not see it); the raw score is its decision value. With no change the
    two are exchangeable and the classifier learns noise, so a batch's scores are calibrated against the
    reference reviews' own cross-fitted scores from the same fits (`SignalScores.calibration`). When some
    reviews come from elsewhere, the direction the classifier finds is theirs, and it sees them as a group
    where the detectors see one review at a time: on bench/detect.py (category injection) it adds 0.03 AUROC
    to the novelty group. The reference is subsampled to `max_reference` reviews (cost).

    It needs a batch: with fewer than `min_batch` new reviews, or for requests scored as independent groups
    (the API), the scores are NaN and the model leaves this signal out of that batch's headline. Reference
    reviews scored again (same id and text) are not counted as batch reviews; they get their reference score.
    Its fit-time held-out scores (for the ensemble's calibration) come from the same procedure on a random
    half-split of the reference, i.e. a batch with no change. The folds are drawn over the batch's reviews in
    the order of their content (text digest, then id), so a review's score does not depend on the row order.

    Parameters
    ----------
    C
        Inverse regularisation strength of the logistic regression (small: the batch's direction is faint).
    n_splits
        Folds of the cross-fitting.
    min_batch
        Fewest new reviews for which the signal is computed.
    max_reference
        Most reference reviews the classifier uses.
    """

    name = "batch_contrast"

    def __init__(
        self,
        C: float = 0.1,
        n_splits: int = 5,
        min_batch: int = 100,
        max_reference: int = 2000,
        random_state: int = 0,
    ) -> None:
        self.C = C
        self.n_splits = n_splits
        self.min_batch = min_batch
        self.max_reference = max_reference
        self.random_state = random_state

    def fit(self, reference: SignalInputs) -> BatchContrastSignal:
        if not self.C > 0:
            raise ParameterError(f"C must be > 0, got {self.C!r}")
        if not (isinstance(self.n_splits, int) and self.n_splits >= 2):
            raise ParameterError(f"n_splits must be an integer >= 2, got {self.n_splits!r}")
        rng = np.random.default_rng(self.random_state)
        n = len(reference.frame)
        take = np.sort(rng.choice(n, size=min(n, self.max_reference), replace=False))
        self.reference_rows_ = take
        self.reference_embeddings_ = unit_rows(reference.embeddings)[take].astype(np.float64)
        ids, texts = review_ids(reference.frame), reference.frame["text"].tolist()
        self.reference_texts_ = {ids[i]: (j, text_digest(texts[i])) for j, i in enumerate(take)}
        self.available_ = bool(len(take) >= 4 * self.n_splits)
        return self

    def _cross_fitted(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.empty(len(y), dtype=np.float64)
        folds = StratifiedKFold(self.n_splits, shuffle=True, random_state=self.random_state)
        for train, test in folds.split(X, y):
            model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000)
            out[test] = model.fit(X[train], y[train]).decision_function(X[test])
        return out

    def held_out_scores(self, reference: SignalInputs) -> np.ndarray:
        # A batch with no change: a random half of the (subsampled) reference against the other half. Rows
        # left out of the subsample are scored by a model fitted on that whole split; they are unseen by it.
        self._check_fitted()
        R = self.reference_embeddings_
        y = np.zeros(len(R), dtype=int)
        y[np.random.default_rng(self.random_state + 1).permutation(len(R))[: len(R) // 2]] = 1
        out = np.empty(len(reference.frame), dtype=np.float64)
        out[self.reference_rows_] = self._cross_fitted(R, y)
        rest = np.setdiff1d(np.arange(len(out)), self.reference_rows_)
        if rest.size:
            model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000).fit(R, y)
            out[rest] = model.decision_function(unit_rows(reference.embeddings[rest]).astype(np.float64))
        return out

    def score(self, batch: SignalInputs) -> SignalScores:
        self._check_fitted()
        frame = batch.frame
        n = len(frame)
        if independent_requests(frame) or n < self.min_batch:  # (checked first: the API's path, per request)
            return SignalScores(np.full(n, np.nan), [""] * n)
        ids, texts = review_ids(frame), frame["text"].tolist()
        own = np.array(
            [
                self.reference_texts_[rid][0]
                if rid in self.reference_texts_ and self.reference_texts_[rid][1] == text_digest(t)
                else -1
                for rid, t in zip(ids, texts, strict=True)
            ],
            dtype=np.int64,
        )
        new = np.flatnonzero(own < 0)
        if new.size < self.min_batch:
            return SignalScores(np.full(n, np.nan), [""] * n)
        # The cross-fitting's folds follow the reviews' content, not their places in the batch: the same batch
        # in another row order (a re-export, a sorted file, Spark's partitions) gets the same scores.
        new = new[np.argsort([f"{text_digest(texts[i])}\x00{ids[i]}" for i in new], kind="stable")]
        R = self.reference_embeddings_
        X = np.vstack([R, unit_rows(batch.embeddings[new]).astype(np.float64)])
        y = np.r_[np.zeros(len(R), dtype=int), np.ones(new.size, dtype=int)]
        scores = self._cross_fitted(X, y)
        reference_scores = scores[: len(R)]
        raw = np.empty(n, dtype=np.float64)
        raw[new] = scores[len(R) :]
        raw[own >= 0] = reference_scores[own[own >= 0]]
        level = float(np.quantile(reference_scores, 0.99))
        details = [
            "resembles other reviews of this batch more than the reference (batch-vs-reference classifier)"
            if x > level
            else ""
            for x in raw
        ]
        return SignalScores(raw, details, calibration=reference_scores)
