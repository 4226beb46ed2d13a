"""The table behind the Explore map: every review of several batches with its scores, 2-D position and the
columns an analyst reads, one row per review."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Review columns shown next to the scores (hover text, the review list, downloads).
DISPLAY_COLUMNS: tuple[str, ...] = ("text", "title", "rating", "category", "timestamp", "verified_purchase")


@dataclass(frozen=True)
class ScoredBatch:
    """A stored batch's reviews and their scores under one model (``BundleScores.frame``), in input order."""

    name: str
    reviews: pd.DataFrame
    scores: pd.DataFrame


def map_frame(batches: Sequence[ScoredBatch], reference_batch: str | None = None,
              reference_coords: np.ndarray | None = None) -> pd.DataFrame:
    """One frame of every review: ``batch``, ``pos`` (its row in the batch), the score columns and the display
    columns the batch has.

    The model's own reference batch (`reference_batch`) is drawn where the projection placed it when fitting
    (`reference_coords`), because transforming it again would move it.
    """
    parts = []
    for batch in batches:
        part = batch.scores.reset_index(drop=True).copy()
        reviews = batch.reviews.reset_index(drop=True)
        part.insert(0, "batch", batch.name)
        part.insert(1, "pos", range(len(part)))
        if len(reviews) == len(part):  # scores come back in input order, one row per review
            for column in DISPLAY_COLUMNS:
                if column in reviews.columns:
                    part[column] = reviews[column].to_numpy()
        if batch.name == reference_batch and reference_coords is not None and len(reference_coords) == len(part):
            part["x"], part["y"] = reference_coords[:, 0], reference_coords[:, 1]
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
