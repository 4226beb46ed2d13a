"""Reasons per review: which signals contributed, the nearest reference reviews, every detector's score."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: Names shown to analysts for the groups of the ensemble.
GROUP_LABELS: dict[str, str] = {
    "novelty": "unusual text for this reference",
    "rating_mismatch": "rating contradicts the text",
    "duplicate": "duplicate or near-duplicate text",
    "text_quality": "unusual text form",
    "predictable_text": "machine-like predictable wording",
    "text_form": "unusual text form or machine-like wording",
    "unusual_wording": "wording unusual for this reference",
    "batch_contrast": "stands apart from the reference with others of this batch",
    "campaign": "reviewer, product and timing look organised",
}

#: A calibrated score from which a group is named as a reason (more unusual than 90 % of the reference).
REASON_LEVEL = 0.9


@dataclass(frozen=True)
class Neighbour:
    """A reference review close to the scored one."""

    review_id: str
    text: str
    rating: float | None
    similarity: float


@dataclass(frozen=True)
class Contribution:
    """One group's (or signal's) calibrated score for a review, with a human-readable detail."""

    name: str
    label: str
    score: float
    detail: str = ""


@dataclass(frozen=True)
class Reasons:
    """Everything an analyst needs to judge one scored review."""

    review_id: str
    score: float
    p_value: float
    is_outlier: bool
    summary: str
    contributions: tuple[Contribution, ...]
    neighbours: tuple[Neighbour, ...]
    detector_scores: Mapping[str, float] = field(default_factory=dict)
    signal_scores: Mapping[str, float] = field(default_factory=dict)

    @property
    def top_signals(self) -> tuple[Contribution, ...]:
        """The contributions at or above `REASON_LEVEL`, strongest first (at least the strongest one)."""
        strong = tuple(c for c in self.contributions if c.score >= REASON_LEVEL)
        return strong or self.contributions[:1]


def contributions(group_scores: Mapping[str, float], details: Mapping[str, str]) -> tuple[Contribution, ...]:
    """Groups sorted by calibrated score, strongest first; NaN (not applicable) left out."""
    items = [
        Contribution(name=g, label=GROUP_LABELS.get(g, g), score=float(s), detail=details.get(g, ""))
        for g, s in group_scores.items()
        if s is not None and np.isfinite(s)
    ]
    return tuple(sorted(items, key=lambda c: -c.score))


def summary_line(items: Sequence[Contribution]) -> str:
    """A short reason: the strong contributions, or "nothing unusual" with the strongest one."""
    strong = [c for c in items if c.score >= REASON_LEVEL]
    if not strong:
        if not items:
            return "no signal available"
        return f"nothing unusual (strongest: {items[0].label} {items[0].score:.2f})"
    parts = []
    for c in strong[:3]:
        parts.append(f"{c.label} {c.score:.2f}" + (f" ({c.detail})" if c.detail else ""))
    return "; ".join(parts)


def nearest_reviews(
    query: np.ndarray, reference_embeddings: np.ndarray, k: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the `k` nearest reference reviews of each query row."""
    n_ref = reference_embeddings.shape[0]
    k = min(k, n_ref)
    idx = np.zeros((query.shape[0], k), dtype=np.int64)
    sims = np.zeros((query.shape[0], k), dtype=np.float32)
    if k == 0 or query.shape[0] == 0:
        return idx, sims
    step = max(1, 20_000_000 // n_ref)
    for start in range(0, query.shape[0], step):
        sim = query[start : start + step] @ reference_embeddings.T
        part = (
            np.argpartition(-sim, k - 1, axis=1)[:, :k]
            if k < n_ref
            else np.tile(np.arange(k), (sim.shape[0], 1))
        )
        part_sim = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-part_sim, axis=1, kind="stable")
        idx[start : start + step] = np.take_along_axis(part, order, axis=1)
        sims[start : start + step] = np.take_along_axis(part_sim, order, axis=1)
    return idx, sims


def values_at(frame: pd.DataFrame, rows: np.ndarray) -> dict[str, list[Any]]:
    """Per column of `frame`, its values at positions `rows` as Python objects, as a row-wise ``.iloc`` gives them.

    The rows are taken together: reading a micro-batch's answers one ``.iloc`` row at a time, or one column at a
    time, cost more than scoring its reviews.
    """
    values = frame.take(rows).to_numpy(dtype=object)
    return {name: values[:, j].tolist() for j, name in enumerate(frame.columns)}


def neighbours_table(
    reference_frame: pd.DataFrame, indices: np.ndarray, similarities: np.ndarray, max_chars: int = 300
) -> list[tuple[Neighbour, ...]]:
    """Per row of `indices` (positions in `reference_frame`, one row per scored review) and of `similarities`,
    those reference reviews as `Neighbour` records (text shortened to `max_chars`)."""
    wanted = np.asarray(indices, dtype=np.int64)
    flat = wanted.ravel()

    def column(name: str) -> list[Any]:
        # Three columns of a large reference: taken column by column, not as rows of the whole frame.
        if name not in reference_frame.columns:
            return [None] * flat.size
        values = reference_frame[name]
        if isinstance(values.dtype, np.dtype):
            return values.to_numpy()[flat].tolist()
        return values.array.take(flat).tolist()

    ids, texts, ratings = column("review_id"), column("text"), column("rating")
    sims = np.asarray(similarities)
    out = []
    for r in range(wanted.shape[0]):
        row = []
        for c in range(wanted.shape[1]):
            k = r * wanted.shape[1] + c
            rating = ratings[k]
            text = str(texts[k] or "")
            row.append(
                Neighbour(
                    review_id=str(ids[k]),
                    text=text if len(text) <= max_chars else text[: max_chars - 1] + "…",
                    rating=None if rating is None or pd.isna(rating) else float(rating),
                    similarity=float(sims[r, c]),
                )
            )
        out.append(tuple(row))
    return out
