"""Features of a review batch: text descriptors, scaled numeric and encoded categorical columns, embeddings.

A `FeaturePipeline` is fitted on a reference batch and applied to any batch. It copes with columns the batch
lacks (imputed, and reported) and categories it has never seen (encoded as all-zero).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from core.errors import NotFittedError
from core.progress import CountProgress
from core.text.descriptors import DESCRIPTORS, text_descriptors
from core.text.embed import Embedder, embedding_text, has_title, title_share

NUMERIC_INPUTS: tuple[str, ...] = ("rating", "log_helpful_vote")
CATEGORICAL_INPUTS: tuple[str, ...] = ("verified_purchase", "category")


def tabular_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """The raw (unscaled) numeric, categorical and descriptor columns of a canonical frame."""
    out = text_descriptors(frame["text"])
    out["rating"] = pd.to_numeric(frame.get("rating"), errors="coerce") if "rating" in frame else np.nan
    votes = pd.to_numeric(frame["helpful_vote"], errors="coerce") if "helpful_vote" in frame else np.nan
    out["log_helpful_vote"] = np.log1p(np.clip(votes, 0, None)) if "helpful_vote" in frame else np.nan
    for col in CATEGORICAL_INPUTS:
        values = frame[col] if col in frame else pd.Series(pd.NA, index=frame.index)
        out[col] = values.astype("string").str.lower()
    return out


@dataclass(frozen=True)
class FeatureSet:
    """Features of one batch, aligned with its rows."""

    embeddings: np.ndarray
    tabular: np.ndarray
    tabular_names: list[str]
    raw: pd.DataFrame
    missing: list[str] = field(default_factory=list)

    def matrix(self, embedding_weight: float = 1.0) -> np.ndarray:
        """Embeddings and scaled tabular features side by side."""
        return np.hstack([self.embeddings * embedding_weight, self.tabular]).astype(np.float32)


class FeaturePipeline:
    """Fit on a reference batch, transform any batch.

    Parameters
    ----------
    embed_fields
        Canonical columns joined into the embedded text.
    """

    def __init__(self, embed_fields: Sequence[str] = ("title", "text")) -> None:
        self.embed_fields = tuple(embed_fields)

    def fit(self, frame: pd.DataFrame) -> FeaturePipeline:
        raw = tabular_inputs(frame)
        self.title_share_ = title_share(frame)
        # A column counts as present when the reference has at least one value for it.
        self.numeric_ = [c for c in (*NUMERIC_INPUTS, *DESCRIPTORS) if raw[c].notna().any()]
        self.categorical_ = [c for c in CATEGORICAL_INPUTS if raw[c].notna().any()]
        transformers = [
            ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
             self.numeric_),
        ]
        if self.categorical_:
            transformers.append((
                "cat",
                Pipeline([
                    ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                    ("encode", OneHotEncoder(handle_unknown="ignore", max_categories=20, sparse_output=False)),
                ]),
                self.categorical_,
            ))
        self.transformer_ = ColumnTransformer(transformers, sparse_threshold=0.0)
        self.transformer_.fit(self._prepare(raw))
        self.tabular_names_ = [str(n) for n in self.transformer_.get_feature_names_out()]
        return self

    def _prepare(self, raw: pd.DataFrame) -> pd.DataFrame:
        prepared = raw[self.numeric_ + self.categorical_].copy()
        for col in self.categorical_:
            prepared[col] = prepared[col].astype(object).where(prepared[col].notna(), np.nan)
        return prepared

    def missing_columns(self, frame: pd.DataFrame) -> list[str]:
        """Columns the reference had and the canonical `frame` lacks (all values missing)."""
        return self.missing_in_slices(frame, [slice(None)])[0]

    def missing_in_slices(self, frame: pd.DataFrame, slices: Sequence[slice]) -> list[list[str]]:
        """`missing_columns` of several row ranges of one frame (the requests of an API micro-batch).

        Read from the source columns: the text descriptors exist wherever text does, so they are not computed
        here (this runs on every API request).
        """
        self._check_fitted()
        present: dict[str, np.ndarray | None] = {}  # named as in the input, not as the feature
        for column in self.numeric_ + self.categorical_:
            if column in DESCRIPTORS:
                continue
            source = "helpful_vote" if column == "log_helpful_vote" else column
            present[source] = frame[source].notna().to_numpy() if source in frame.columns else None
        if "title" in self.embed_fields and getattr(self, "title_share_", 0.0) >= 0.5:
            # Titles are embedded with the text; a batch without them reads as more novel than it is.
            present["title"] = has_title(frame)
        return [
            [c for c, has in present.items() if has is None or not has[part].any()] for part in slices
        ]

    def transform(
        self, frame: pd.DataFrame, embedder: Embedder, progress: CountProgress | None = None
    ) -> FeatureSet:
        """Features of `frame`; embeddings come from `embedder` (and its cache)."""
        self._check_fitted()
        raw = tabular_inputs(frame)
        missing = [c for c in self.numeric_ + self.categorical_ if raw[c].isna().all()]
        tabular = self.transformer_.transform(self._prepare(raw)).astype(np.float32)
        embeddings = embedder.encode(embedding_text(frame, self.embed_fields), progress=progress)
        return FeatureSet(embeddings=embeddings, tabular=tabular, tabular_names=self.tabular_names_,
                          raw=raw, missing=missing)

    def _check_fitted(self) -> None:
        if not hasattr(self, "transformer_"):
            raise NotFittedError("this FeaturePipeline is not fitted yet; call fit(reference_frame) first")
