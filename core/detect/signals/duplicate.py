"""Signals beyond "unusual embedding": rating/text mismatch, duplicates, text quality, predictable and unusual
wording, and reviews that stand apart from the reference together with the rest of their batch.

Each signal is fitted on the reference, gives a raw score per review (higher = more abnormal, NaN where its
inputs are missing), held-out raw scores of the reference for calibration, and a short human-readable
detail per review for the reasons. A signal whose inputs the reference lacks is not fitted
(``available_`` is False) and the model leaves it out.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

from core.embed import unit_rows
from core.errors import NotFittedError, ParameterError
from core.features import DESCRIPTORS, text_descriptors, word_count
from core.language_model import BigramLanguageModel

SIGNALS: tuple[str, ...] = (
    "rating_mismatch",
    "duplicate",
    "text_quality",
    "predictable_text",
    "unusual_wording",
    "batch_contrast",
)


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


# --------------------------------------------------------------------------------------------------
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
        return pd.to_numeric(frame["rating"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

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
        return np.clip(self.model_.predict(embeddings), *self.rating_range_)

    def score(self, batch: SignalInputs) -> SignalScores:
        self._check_fitted()
        rating = self._ratings(batch.frame)
        if not self.available_ or len(rating) == 0:
            return SignalScores(np.full(len(rating), np.nan), [""] * len(rating))
        predicted = self.predicted_rating(batch.embeddings)
        raw = self._raw(rating, predicted)
        details = [
            "" if not np.isfinite(r) else f"rated {r:g} stars, the text reads like {p:.1f}"
            for r, p in zip(rating, predicted, strict=True)
        ]
        return SignalScores(raw, details)

    def held_out_scores(self, reference: SignalInputs) -> np.ndarray:
        self._check_fitted()
        if not self.available_:
            return np.full(len(reference.frame), np.nan)
        return self._held_out


# --------------------------------------------------------------------------------------------------
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


def _hashes(texts: pd.Series) -> list[str]:
    return [
        hashlib.blake2b(normalise_text(t).encode(), digest_size=12).hexdigest()
        for t in texts.fillna("").astype(str)
    ]


def _review_ids(frame: pd.DataFrame) -> list[str]:
    # str() per value, not .astype(str): on an Arrow string column that costs ~0.2 ms per API request.
    if "review_id" not in frame:
        return [str(i) for i in range(len(frame))]
    return [str(x) for x in frame["review_id"].tolist()]


def _digest(text: object) -> str:
    return hashlib.blake2b(str(text).encode("utf-8"), digest_size=8).hexdigest()


def _max_similarity(
    Q: np.ndarray,
    R: np.ndarray,
    exclude_diagonal: bool = False,
    exclude: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Highest cosine similarity of each row of Q to a row of R, and which row.

    `exclude` gives, per row of Q, one row of R to leave out (-1 for none): the review itself. With
    `groups` (Q is R), rows are only compared with rows of the same group.
    """
    best = np.full(Q.shape[0], -1.0, dtype=np.float32)
    arg = np.full(Q.shape[0], -1, dtype=np.int64)
    if R.shape[0] == 0 or Q.shape[0] == 0:
        return best, arg
    step = max(1, 20_000_000 // R.shape[0])
    for start in range(0, Q.shape[0], step):
        sim = Q[start : start + step] @ R.T
        if exclude_diagonal:
            rows = np.arange(sim.shape[0])
            sim[rows, rows + start] = -np.inf
        if groups is not None:
            sim[groups[start : start + step, None] != groups[None, :]] = -np.inf
        if exclude is not None:
            own = exclude[start : start + step]
            rows = np.flatnonzero(own >= 0)
            sim[rows, own[rows]] = -np.inf
        arg[start : start + step] = sim.argmax(axis=1)
        best[start : start + step] = sim.max(axis=1)
    return best, arg


_WORD_HASHER = None


def _word_sets(texts: pd.Series) -> Any:
    """Each text's set of lower-cased words as a binary sparse row (hashed: no vocabulary to fit or store)."""
    global _WORD_HASHER
    if _WORD_HASHER is None:
        from sklearn.feature_extraction.text import HashingVectorizer

        _WORD_HASHER = HashingVectorizer(
            n_features=2**20, binary=True, norm=None, alternate_sign=False,
            token_pattern=r"(?u)\b\w+\b", dtype=np.float32,
        )
    return _WORD_HASHER.transform(texts.fillna("").astype(str).tolist()).tocsr()


def _prepare_words(RA: Any, min_words: int) -> tuple[int, np.ndarray, Any, np.ndarray]:
    """The side of `_max_overlap` that can be kept: rows long enough to compare, transposed for the product."""
    r_long = np.flatnonzero(np.diff(RA.indptr) >= min_words)
    Rl = RA[r_long]
    return RA.shape[0], r_long, Rl.T.tocsr(), np.diff(Rl.indptr).astype(np.float32)


_NO_ROWS = np.zeros(0, dtype=np.int64)  # `column_rows` of a call whose per-column maxima nobody reads


def _max_overlap(
    QA: Any,
    RA: Any,
    min_words: int,
    exclude_diagonal: bool = False,
    exclude: np.ndarray | None = None,
    groups: np.ndarray | None = None,
    column_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Highest word-set Jaccard similarity of each row of QA to a row of RA, which row, and per row of RA its
    highest similarity to the rows `column_rows` of QA (default all; one product serves both directions;
    `_NO_ROWS` skips that maximum).
    `RA` may be given as `_prepare_words(RA, min_words)` (a model keeps it for its reference).

    Exclusions as in `_max_similarity`. Texts with fewer than `min_words` distinct words are never compared
    (0): short generic reviews share most of their few words by chance; leaving them out of the product
    also makes it cheaper.
    """
    n_r, r_long, RlT, r_size = RA if isinstance(RA, tuple) else _prepare_words(RA, min_words)
    best = np.zeros(QA.shape[0], dtype=np.float32)
    arg = np.full(QA.shape[0], -1, dtype=np.int64)
    column_best = np.zeros(n_r, dtype=np.float32)
    q_long = np.flatnonzero(np.diff(QA.indptr) >= min_words)
    if q_long.size == 0 or r_long.size == 0:
        return best, arg, column_best
    Ql = QA[q_long]
    q_size = np.diff(Ql.indptr).astype(np.float32)
    use_in_columns = np.ones(QA.shape[0], dtype=bool)
    if column_rows is not None:
        use_in_columns[:] = False
        use_in_columns[column_rows] = True
    r_position = np.full(n_r, -1, dtype=np.int64)
    r_position[r_long] = np.arange(r_long.size)
    step = max(1, 5_000_000 // r_long.size)
    for start in range(0, q_long.size, step):
        rows_q = q_long[start : start + step]
        inter = (Ql[start : start + step] @ RlT).toarray()
        jac = inter / np.maximum(q_size[start : start + step, None] + r_size[None, :] - inter, 1.0)
        local = np.arange(rows_q.size)
        if exclude_diagonal:  # QA is RA: leave each row's own column out
            own = r_position[rows_q]
            jac[local[own >= 0], own[own >= 0]] = -1.0
        if groups is not None:
            jac[groups[rows_q, None] != groups[None, r_long]] = -1.0
        if exclude is not None:
            own = exclude[rows_q]
            pos = np.where(own >= 0, r_position[np.maximum(own, 0)], -1)
            jac[local[pos >= 0], pos[pos >= 0]] = -1.0
        top = jac.argmax(axis=1)
        arg[rows_q] = r_long[top]
        best[rows_q] = np.maximum(jac[local, top], 0.0)
        counted = use_in_columns[rows_q]
        if counted.any():
            column_best[r_long] = np.maximum(column_best[r_long], jac[counted].max(axis=0))
    return best, arg, column_best


class DuplicateSignal(Signal):
    """Exact and near duplicates, within the batch and against the reference.

    The raw score is the highest cosine similarity of a review's embedding to any other review (the other
    reviews of the batch and the reference), 1 for an exact copy after normalising case, accents and
    punctuation. Below `floor` the score is 0: ordinary reviews are simply "not a copy" (p-value 1), so the
    signal adds no noise to the ensemble. Among duplicates (similarity >= `near_threshold`) longer texts
    score higher: a repeated 80-word review is rarely a coincidence, a repeated "Great!" often is.

    Calibration per batch: a batch review is compared with the reference *and* the rest of its batch, so
    the larger the batch the likelier a chance near copy ("Great gift card!" twice). Calibrating against
    reference reviews compared only with each other made 11.7 % of an ordinary 1,050-review batch of gift
    card reviews fire at p <= 0.05. So a batch's scores are calibrated against the reference reviews
    compared with the same pool, the other reference reviews plus the batch (`SignalScores.calibration`):
    under no duplicates, batch and reference reviews are then exchangeable. Requests scored together as
    independent groups (the API) keep the fitted calibration; each is one or a few reviews.

    Templated copies (a review with a few words swapped: "My kids love this stuff! Well worth the $!" and
    "My kids I this stuff! Well worth the Association") can change a short text's embedding more than its
    words: so two reviews of at least `min_words` distinct words that share `word_overlap` of their word sets
    (Jaccard) are near copies too, their overlap mapped onto the similarity scale from `near_threshold` (at
    `word_overlap`) to 1 (the same words). On bench/detect.py (duplicates) the embedding missed 2-9 of the
    37-76 planted copies per batch on seeds 5-9; word overlap >= 0.6 caught all but 0-1. The signal's AUROC
    there, 10 seeds: 0.947 -> 0.981 (AP 0.752 -> 0.701: generic reviews sharing most words count too; 0.7
    instead of 0.6 gave 0.973).

    Parameters
    ----------
    near_threshold
        Cosine similarity from which two reviews are reported as near duplicates.
    floor
        Cosine similarity below which the score is 0.
    word_overlap
        Jaccard similarity of word sets from which two reviews are near copies.
    min_words
        Fewest distinct words for the word-overlap comparison.
    """

    name = "duplicate"

    def __init__(
        self, near_threshold: float = 0.95, floor: float = 0.95, word_overlap: float = 0.6, min_words: int = 8
    ) -> None:
        self.near_threshold = near_threshold
        self.floor = floor
        self.word_overlap = word_overlap
        self.min_words = min_words

    def fit(self, reference: SignalInputs) -> DuplicateSignal:
        if not 0 < self.near_threshold <= 1:
            raise ParameterError(f"near_threshold must be in (0, 1], got {self.near_threshold!r}")
        if not 0 <= self.floor <= self.near_threshold:
            raise ParameterError(
                f"floor must be in [0, near_threshold={self.near_threshold}], got {self.floor!r}"
            )
        self.reference_embeddings_ = unit_rows(reference.embeddings)
        hashes = _hashes(reference.frame["text"])
        self.reference_hashes_ = (
            pd.Series(range(len(hashes)), index=hashes).groupby(level=0).first().to_dict()
        )
        self.reference_hash_counts_ = pd.Series(hashes).value_counts().to_dict()
        self.reference_hash_list_ = list(hashes)
        self.reference_ids_ = _review_ids(reference.frame)
        if not 0 < self.word_overlap <= 1:
            raise ParameterError(f"word_overlap must be in (0, 1], got {self.word_overlap!r}")
        if isinstance(self.min_words, bool) or not isinstance(self.min_words, int) or self.min_words < 1:
            raise ParameterError(f"min_words must be an integer >= 1, got {self.min_words!r}")
        self._reference_words = text_descriptors(reference.frame["text"])["n_words"].to_numpy()
        self.reference_word_sets_ = _word_sets(reference.frame["text"])
        # per-model caches, rebuilt on demand
        self._reference_prepared: tuple[int, np.ndarray, Any, np.ndarray] | None = None
        self._reference_positions: dict[str, int] | None = None
        Q = self.reference_embeddings_
        cosine, _ = _max_similarity(Q, Q, exclude_diagonal=True)
        overlap, _, _ = _max_overlap(
            self.reference_word_sets_, self.reference_word_sets_, self.min_words, exclude_diagonal=True,
            column_rows=_NO_ROWS,
        )
        self.reference_similarity_ = np.maximum(cosine, self._overlap_similarity(overlap))
        self.reference_exact_ = np.array([self.reference_hash_counts_[h] > 1 for h in hashes])
        self.available_ = True
        return self

    def _overlap_similarity(self, overlap: np.ndarray) -> np.ndarray:
        """Word overlap on the similarity scale: `near_threshold` at `word_overlap`, 1 for the same words."""
        span = max(1.0 - self.word_overlap, 1e-9)
        mapped = self.near_threshold + (1.0 - self.near_threshold) * (overlap - self.word_overlap) / span
        return np.where(overlap >= self.word_overlap, mapped, -1.0).astype(np.float32)

    def _raw(self, sim: np.ndarray, exact: np.ndarray, n_words: np.ndarray) -> np.ndarray:
        sim = np.where(exact, 1.0, sim.astype(np.float64))
        bonus = np.where(sim >= self.near_threshold, np.minimum(n_words, 100) / 1000.0, 0.0)
        return np.where(sim >= self.floor, sim + bonus, 0.0)

    def score(self, batch: SignalInputs) -> SignalScores:
        self._check_fitted()
        n = len(batch.frame)
        if n == 0:
            return SignalScores(np.zeros(0), [])
        Q = unit_rows(batch.embeddings)
        ids = _review_ids(batch.frame)
        # A reference review scored again (the Explore map shows both batches) is not a copy of itself.
        own_index = self._own_index()
        own = np.array([own_index.get(rid, -1) for rid in ids], dtype=np.int64)
        words = _word_sets(batch.frame["text"])
        groups = batch.frame[GROUP_COLUMN].to_numpy() if GROUP_COLUMN in batch.frame else None
        cos_ref, arg_ref = _max_similarity(Q, self.reference_embeddings_, exclude=own)
        # One product gives both directions: batch -> reference here, reference -> batch for the calibration.
        overlap_ref, warg_ref, reference_to_batch = _max_overlap(
            words, self._prepared_reference(), self.min_words, exclude=own, column_rows=np.flatnonzero(own < 0)
        )
        cos_in, arg_in = (
            _max_similarity(Q, Q, exclude_diagonal=True, groups=groups)
            if n > 1 else (np.full(1, -1.0), np.full(1, -1))
        )
        # Requests scored together, one per group (the API's micro-batches), have no batch mates to compare.
        alone = groups is not None and len(set(groups.tolist())) == n
        overlap_in, warg_in, _ = (
            _max_overlap(words, words, self.min_words, exclude_diagonal=True, groups=groups, column_rows=_NO_ROWS)
            if n > 1 and not alone else (np.zeros(n, dtype=np.float32), np.full(n, -1), None)
        )
        # The word overlap decides where it says more than the embedding (a templated copy).
        words_ref, words_in = self._overlap_similarity(overlap_ref), self._overlap_similarity(overlap_in)
        by_words_ref, by_words_in = words_ref > cos_ref, words_in > cos_in
        sim_ref = np.where(by_words_ref, words_ref, cos_ref)
        arg_ref = np.where(by_words_ref, warg_ref, arg_ref)
        sim_in = np.where(by_words_in, words_in, cos_in)
        arg_in = np.where(by_words_in, warg_in, arg_in)
        hashes = _hashes(batch.frame["text"])
        # Requests scored together (the API's micro-batches) are compared within their own group only.
        keys = hashes if groups is None else [f"{g}\x1f{h}" for g, h in zip(groups, hashes, strict=True)]
        counts = Counter(keys)
        exact_ref = np.array([
            self.reference_hash_counts_.get(h, 0)
            - (1 if own[i] >= 0 and self.reference_hash_list_[own[i]] == h else 0) > 0
            for i, h in enumerate(hashes)
        ])
        exact_in = np.array([counts[k] > 1 for k in keys])
        n_words = np.array([word_count(t) for t in batch.frame["text"].fillna("").astype(str)], dtype=np.float64)
        raw = self._raw(np.maximum(sim_ref, sim_in), exact_ref | exact_in, n_words)
        calibration = (
            None if groups is not None else self._pooled_reference_scores(Q, reference_to_batch, hashes, own)
        )
        details = []
        for i, h in enumerate(hashes):
            parts = []
            if exact_in[i]:
                parts.append(f"same text as {counts[keys[i]] - 1} other review(s) in this batch")
            if exact_ref[i]:
                parts.append(
                    "same text as reference review "
                    + (self.reference_ids_[self.reference_hashes_[h]] if self.reference_hashes_[h] != own[i]
                       else "(another copy)")
                )
            if not parts and sim_in[i] >= self.near_threshold and sim_in[i] >= sim_ref[i]:
                how = f"{overlap_in[i]:.0%} of its words shared" if by_words_in[i] else f"cosine {sim_in[i]:.2f}"
                parts.append(f"near copy ({how}) of review {ids[arg_in[i]]} in this batch")
            elif not parts and sim_ref[i] >= self.near_threshold:
                how = f"{overlap_ref[i]:.0%} of its words shared" if by_words_ref[i] else f"cosine {sim_ref[i]:.2f}"
                parts.append(f"near copy ({how}) of reference review {self.reference_ids_[arg_ref[i]]}")
            details.append("; ".join(parts))
        return SignalScores(raw, details, calibration)

    def _pooled_reference_scores(
        self, Q: np.ndarray, overlap_to_batch: np.ndarray, hashes: list[str], own: np.ndarray
    ) -> np.ndarray:
        """Raw scores of the reference reviews against the other reference reviews plus the batch `Q`."""
        # A batch row that is a reference review itself is not that review's copy: the batch rows that are
        # reference reviews are left out, their reference rows already compare with every other one.
        foreign_rows = np.flatnonzero(own < 0)
        pooled = self.reference_similarity_.copy()
        if foreign_rows.size:
            to_batch, _ = _max_similarity(self.reference_embeddings_, Q[foreign_rows])
            pooled = np.maximum(pooled, np.maximum(to_batch, self._overlap_similarity(overlap_to_batch)))
        foreign = {h for h, o in zip(hashes, own, strict=True) if o < 0}
        exact = self.reference_exact_ | np.array([h in foreign for h in self.reference_hash_list_])
        return self._raw(pooled, exact, self._reference_words)

    def _prepared_reference(self) -> tuple[int, np.ndarray, Any, np.ndarray]:
        # Kept per loaded model: preparing the reference's word sets cost ~2 ms per API request.
        prepared = getattr(self, "_reference_prepared", None)
        if prepared is None:
            prepared = self._reference_prepared = _prepare_words(self.reference_word_sets_, self.min_words)
        return prepared

    def _own_index(self) -> dict[str, int]:
        # Built once per loaded model, not per request (10k reference ids cost ~1 ms to index).
        positions = getattr(self, "_reference_positions", None)
        if positions is None:
            positions = self._reference_positions = {rid: j for j, rid in enumerate(self.reference_ids_)}
        return positions

    def held_out_scores(self, reference: SignalInputs) -> np.ndarray:
        # Each reference review against all the others: the batch-time comparison with it left out.
        self._check_fitted()
        return self._raw(self.reference_similarity_, self.reference_exact_, self._reference_words)


# --------------------------------------------------------------------------------------------------
_SENTENCE = re.compile(r"[.!?]+(?:\s+|$)")
_GLUED = re.compile(r"[a-z][.!?][A-Z]")
_WORDS = re.compile(r"[a-z']+")
_FUNCTION_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "me",
        "my",
        "we",
        "our",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "his",
        "her",
        "their",
        "not",
        "no",
        "so",
        "very",
        "just",
        "too",
        "than",
        "then",
    ]
)

#: Extra stylometric descriptors computed here, next to `core.features.DESCRIPTORS`.
STYLE_DESCRIPTORS: tuple[str, ...] = (
    "repeated_trigram_share",
    "function_word_share",
    "glued_sentences",
    "mean_sentence_words",
)

#: Which tail of each descriptor is unusual: very long and very short texts both are; many capitals only high.
DESCRIPTOR_SIDES: dict[str, str] = {
    "n_chars": "both",
    "n_words": "both",
    "share_non_letters": "upper",
    "share_upper": "upper",
    "max_char_run": "upper",
    "type_token_ratio": "lower",
    "mean_word_length": "both",
    "n_exclamations": "upper",
    "repeated_trigram_share": "upper",
    "function_word_share": "both",
    "glued_sentences": "upper",
    "mean_sentence_words": "both",
}

_DESCRIPTOR_LABELS: dict[str, tuple[str, str]] = {
    # name -> (label when high, label when low)
    "n_chars": ("very long", "very short"),
    "n_words": ("many words", "very few words"),
    "share_non_letters": ("mostly non-letters", "few non-letters"),
    "share_upper": ("many capitals", "few capitals"),
    "max_char_run": ("repeated characters", "no repeated characters"),
    "type_token_ratio": ("varied words", "repetitive wording"),
    "mean_word_length": ("long words", "short words"),
    "n_exclamations": ("many exclamation marks", "no exclamation marks"),
    "repeated_trigram_share": ("repeated phrases", "no repeated phrases"),
    "function_word_share": ("many function words", "few function words"),
    "glued_sentences": ("sentences glued without spaces", "no glued sentences"),
    "mean_sentence_words": ("long sentences", "short sentences"),
}


def style_descriptors(texts: pd.Series) -> pd.DataFrame:
    """Stylometric descriptors: repeated phrases, function-word share, sentences glued together, sentence length."""
    rows = []
    for text in texts.astype("string").fillna("").tolist():
        words = _WORDS.findall(text.lower())
        trigrams = list(zip(words, words[1:], words[2:], strict=False))
        repeated = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
        function = sum(w in _FUNCTION_WORDS for w in words) / len(words) if words else 0.0
        sentences = [s for s in _SENTENCE.split(text) if s.strip()]
        rows.append(
            (repeated, function, float(len(_GLUED.findall(text))), len(words) / max(len(sentences), 1))
        )
    return pd.DataFrame(rows, columns=list(STYLE_DESCRIPTORS), index=texts.index, dtype=np.float64)


_ALL_DESCRIPTORS = (*DESCRIPTORS, *STYLE_DESCRIPTORS)


def all_descriptors(texts: pd.Series) -> pd.DataFrame:
    """`core.features.text_descriptors` plus `style_descriptors`."""
    return pd.concat([text_descriptors(texts), style_descriptors(texts)], axis=1)


class TextQualitySignal(Signal):
    """How far a review's text descriptors lie in the reference's tails (ECOD-style, per descriptor).

    Each descriptor gets a tail p-value against the reference's empirical distribution, on its unusual
    side(s) (`DESCRIPTOR_SIDES`); the raw score sums, over descriptors in their `tail` (p < tail), how far
    they are into it, ``sum(max(0, -log p - log(1/tail)))``. Ordinary texts score 0 and add no noise to the
    ensemble. The reference's own held-out scores use leave-one-out tail counts.
    """

    name = "text_quality"

    def __init__(
        self, descriptors: tuple[str, ...] = (*DESCRIPTORS, *STYLE_DESCRIPTORS), tail: float = 0.01
    ) -> None:
        self.descriptors = descriptors
        self.tail = tail

    def _raw(self, tails: np.ndarray) -> np.ndarray:
        return np.clip(tails - np.log(1.0 / self.tail), 0.0, None).sum(axis=1)

    def _values(self, texts: pd.Series) -> np.ndarray:
        """The descriptors of `texts`, one column per entry of `self.descriptors` (numpy: this runs per request)."""
        table = np.hstack([text_descriptors(texts).to_numpy(), style_descriptors(texts).to_numpy()])
        return table[:, [_ALL_DESCRIPTORS.index(d) for d in self.descriptors]]

    def fit(self, reference: SignalInputs) -> TextQualitySignal:
        if not 0 < self.tail < 0.5:
            raise ParameterError(f"tail must be in (0, 0.5), got {self.tail!r}")
        unknown = [d for d in self.descriptors if d not in DESCRIPTOR_SIDES]
        if unknown:
            raise ParameterError(
                f"unknown descriptor(s) {unknown}; expected some of {list(DESCRIPTOR_SIDES)}"
            )
        values = self._values(reference.frame["text"])
        self.reference_values_ = {d: np.sort(values[:, j]) for j, d in enumerate(self.descriptors)}
        self._reference_table = values
        self.available_ = True
        return self

    def _tails(self, values: np.ndarray, leave_one_out: bool = False) -> np.ndarray:
        out = np.empty(values.shape, dtype=np.float64)
        for j, d in enumerate(self.descriptors):
            ref = self.reference_values_[d]
            x = values[:, j]
            n = ref.size - int(leave_one_out)
            ge = ref.size - np.searchsorted(ref, x, side="left") - int(leave_one_out)
            le = np.searchsorted(ref, x, side="right") - int(leave_one_out)
            upper = (1.0 + ge) / (n + 1.0)
            lower = (1.0 + le) / (n + 1.0)
            side = DESCRIPTOR_SIDES[d]
            if side == "upper":
                p = upper
            elif side == "lower":
                p = lower
            else:
                p = np.minimum(1.0, 2 * np.minimum(upper, lower))
            out[:, j] = -np.log(p)
        return out

    def _details(self, values: np.ndarray, tails: np.ndarray) -> list[str]:
        in_tail = np.log(1.0 / self.tail)
        details = []
        for i in range(len(values)):
            parts = []
            for j in np.argsort(-tails[i], kind="stable")[:2]:
                if tails[i, j] < in_tail:  # not in the tail: not worth a reason
                    break
                name, x = self.descriptors[j], float(values[i, j])
                median = float(np.median(self.reference_values_[name]))  # only for reviews in a tail
                label = _DESCRIPTOR_LABELS[name][0 if x >= median else 1]
                parts.append(f"{label} ({name}={x:.3g}, reference median {median:.3g})")
            details.append("; ".join(parts))
        return details

    def score(self, batch: SignalInputs) -> SignalScores:
        self._check_fitted()
        values = self._values(batch.frame["text"])
        tails = self._tails(values)
        return SignalScores(self._raw(tails), self._details(values, tails))

    def held_out_scores(self, reference: SignalInputs) -> np.ndarray:
        self._check_fitted()
        return self._raw(self._tails(self._reference_table, leave_one_out=True))


class PredictableTextSignal(Signal):
    """Wording more predictable than reference reviews allow: how machine-generated text reads.

    A word-bigram model of the reference (`core.language_model`) gives each review its mean log-probability
    per token; the raw score is ``(mean - median) * sqrt(tokens)``, with the median over reference reviews:
    the evidence summed over tokens, standardised like a z-statistic, so that a short review needs a larger
    deviation (its mean is noisier). Higher = more predictable = more suspicious. Without the sqrt(tokens)
    the reference's top percent was filled with short generic reviews ("Great product!") and generated
    reviews reached it less often: on bench/detect.py (d), 10 seeds, 35 % of them beyond the reference's 98th
    percentile instead of 48 % (AUROC 0.900 / 0.899, ordinary reviews 2.3 % / 2.3 %). Reference reviews are
    scored by the model of the other reference reviews (exact leave-one-out) and so calibrate new ones; a
    reference review scored again (same review id and text; the Explore map scores both batches) gets that
    leave-one-out score too, not the score of a model that has seen it. Texts without words get NaN.

    Parameters
    ----------
    prior_strength, unigram_smoothing
        Smoothing of the bigram model (`core.language_model.BigramLanguageModel`).
    """

    name = "predictable_text"

    def __init__(self, prior_strength: float = 10.0, unigram_smoothing: float = 0.1) -> None:
        self.prior_strength = prior_strength
        self.unigram_smoothing = unigram_smoothing

    def fit(self, reference: SignalInputs) -> PredictableTextSignal:
        texts = reference.frame["text"].tolist()
        key = ("bigram", self.prior_strength, self.unigram_smoothing)
        if key not in reference.shared:  # the other wording signal may have fitted the same model already
            model = BigramLanguageModel(self.prior_strength, self.unigram_smoothing).fit(texts)
            reference.shared[key] = (model, *model.mean_log_prob(texts, leave_one_out=True))
        self.model_, means, tokens = reference.shared[key]
        self.reference_texts_ = dict(zip(_review_ids(reference.frame), map(_digest, texts), strict=True))
        self.available_ = bool(np.isfinite(means).sum() >= 2)
        self.reference_median_ = float(np.nanmedian(means)) if self.available_ else float("nan")
        # Kept for held_out_scores: the leave-one-out pass is most of this signal's fitting time.
        self.reference_scores_ = self._raw(means, tokens)
        return self

    def _raw(self, means: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        return (means - self.reference_median_) * np.sqrt(tokens)

    def score(self, batch: SignalInputs) -> SignalScores:
        self._check_fitted()
        texts = batch.frame["text"].tolist()
        fitted = self.reference_texts_
        key = ("bigram scores", id(self.model_))
        if key not in batch.shared:
            own = [fitted.get(rid) == _digest(t) for rid, t in zip(_review_ids(batch.frame), texts, strict=True)]
            batch.shared[key] = self.model_.mean_log_prob(texts, leave_one_out=own)
        means, tokens = batch.shared[key]
        raw = self._raw(means, tokens)
        return SignalScores(raw, self._details(means, raw))

    def _details(self, means: np.ndarray, raw: np.ndarray) -> list[str]:
        median = self.reference_median_
        return [
            f"wording more predictable than usual (mean log-probability per word {x:.2f}, reference median "
            f"{median:.2f}), as machine-generated text often is"
            if np.isfinite(x) and x > median
            else ""
            for x in means
        ]

    def held_out_scores(self, reference: SignalInputs) -> np.ndarray:
        # The reference is the one fitted (as for the duplicate signal): its leave-one-out scores from fit.
        self._check_fitted()
        return self.reference_scores_


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
    half-split of the reference, i.e. a batch with no change.

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
        ids, texts = _review_ids(reference.frame), reference.frame["text"].tolist()
        self.reference_texts_ = {ids[i]: (j, _digest(texts[i])) for j, i in enumerate(take)}
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
        ids, texts = _review_ids(frame), frame["text"].tolist()
        own = np.array(
            [
                self.reference_texts_[rid][0]
                if rid in self.reference_texts_ and self.reference_texts_[rid][1] == _digest(t)
                else -1
                for rid, t in zip(ids, texts, strict=True)
            ],
            dtype=np.int64,
        )
        new = np.flatnonzero(own < 0)
        if new.size < self.min_batch:
            return SignalScores(np.full(n, np.nan), [""] * n)
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


def make_signal(name: str, **params: object) -> Signal:
    """A signal by name (one of `SIGNALS`)."""
    registry: dict[str, type[Signal]] = {
        "rating_mismatch": RatingMismatchSignal,
        "duplicate": DuplicateSignal,
        "text_quality": TextQualitySignal,
        "predictable_text": PredictableTextSignal,
        "unusual_wording": UnusualWordingSignal,
        "batch_contrast": BatchContrastSignal,
    }
    if name not in registry:
        raise ParameterError(f"unknown signal {name!r}; expected one of {', '.join(SIGNALS)}")
    try:
        return registry[name](**params)
    except TypeError as err:
        raise ParameterError(f"bad parameters for signal {name!r}: {err}") from None
