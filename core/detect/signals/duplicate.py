"""The duplicate signal: exact copies, near copies by embedding and templated copies by shared words."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from core.detect.signals.base import (
    GROUP_COLUMN,
    Signal,
    SignalInputs,
    SignalScores,
    normalise_text,
    plain_texts,
    review_ids,
)
from core.errors import ParameterError
from core.text.descriptors import text_descriptors, word_count
from core.text.embed import unit_rows


def _hashes(texts: list[str]) -> list[str]:
    return [hashlib.blake2b(normalise_text(t).encode(), digest_size=12).hexdigest() for t in texts]


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


def _word_sets(texts: list[str]) -> Any:
    """Each text's set of lower-cased words as a binary sparse row (hashed: no vocabulary to fit or store)."""
    global _WORD_HASHER
    if _WORD_HASHER is None:
        from sklearn.feature_extraction.text import HashingVectorizer

        _WORD_HASHER = HashingVectorizer(
            n_features=2**20, binary=True, norm=None, alternate_sign=False,
            token_pattern=r"(?u)\b\w+\b", dtype=np.float32,
        )
    return _WORD_HASHER.transform(texts).tocsr()


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
        texts = plain_texts(reference.frame["text"])
        hashes = _hashes(texts)
        self.reference_hashes_ = (
            pd.Series(range(len(hashes)), index=hashes).groupby(level=0).first().to_dict()
        )
        self.reference_hash_counts_ = pd.Series(hashes).value_counts().to_dict()
        self.reference_hash_list_ = list(hashes)
        self.reference_ids_ = review_ids(reference.frame)
        if not 0 < self.word_overlap <= 1:
            raise ParameterError(f"word_overlap must be in (0, 1], got {self.word_overlap!r}")
        if isinstance(self.min_words, bool) or not isinstance(self.min_words, int) or self.min_words < 1:
            raise ParameterError(f"min_words must be an integer >= 1, got {self.min_words!r}")
        self._reference_words = text_descriptors(reference.frame["text"])["n_words"].to_numpy()
        self.reference_word_sets_ = _word_sets(texts)
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
        ids = review_ids(batch.frame)
        # A reference review scored again (the Explore map shows both batches) is not a copy of itself.
        own_index = self._own_index()
        own = np.array([own_index.get(rid, -1) for rid in ids], dtype=np.int64)
        texts = plain_texts(batch.frame["text"])
        words = _word_sets(texts)
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
        hashes = _hashes(texts)
        # Requests scored together (the API's micro-batches) are compared within their own group only.
        keys = hashes if groups is None else [f"{g}\x1f{h}" for g, h in zip(groups, hashes, strict=True)]
        counts = Counter(keys)
        exact_ref = np.array([
            self.reference_hash_counts_.get(h, 0)
            - (1 if own[i] >= 0 and self.reference_hash_list_[own[i]] == h else 0) > 0
            for i, h in enumerate(hashes)
        ])
        exact_in = np.array([counts[k] > 1 for k in keys])
        n_words = np.array([word_count(t) for t in texts], dtype=np.float64)
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
