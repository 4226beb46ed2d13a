"""The trained artefact that is versioned and served: outlier model, per-review shift scorer, 2-D map, reference.

One folder holds it all; `core.tracking` logs that folder as an MLflow pyfunc model. Only folders written by
`ModelBundle.save` are loaded (joblib runs code when it loads): never load a bundle from an untrusted source.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.defaults import DEFAULT_CONTAMINATION, DEFAULT_DETECTORS, DEFAULT_EMBED_FIELDS, DEFAULT_PROJECT
from core.detect.model import OutlierModel
from core.detect.results import ScoreResult
from core.errors import ModelUnavailableError
from core.io.schema import CANONICAL_COLUMNS
from core.legacy_paths import load_joblib
from core.progress import ProgressCallback
from core.projection import Projection
from core.shift.novelty import ReviewShiftScorer
from core.text.embed import Embedder, serving_backend, title_share

BUNDLE_FORMAT = 1
#: What a bundle's meta records, logged with every MLflow run: "<BUNDLE_FORMAT>.<revision>". The revision goes
#: up when meta gains fields that older bundles lack and loaders must treat as unknown; 1.1 added
#: ``embedding_digest`` (the verified embedding weights, `core.weights`).
MODEL_FORMAT_VERSION = f"{BUNDLE_FORMAT}.1"


def data_fingerprint(frame: pd.DataFrame) -> str:
    """A short hash of the review ids and texts: the same data gives the same fingerprint."""
    digest = hashlib.sha256()
    for rid, text in zip(frame["review_id"].astype(str), frame["text"].astype(str), strict=True):
        digest.update(rid.encode())
        digest.update(b"\x1f")
        digest.update(text.encode())
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class BundleScores:
    """Scores of a batch plus the per-review shift p-value and, when asked, 2-D coordinates."""

    result: ScoreResult
    frame: pd.DataFrame  # result.scores + shift_p_value (+ x, y)
    text_only_twin: bool = False  # scored by the model's text-only twin (`ModelBundle.text_twin`): no titles

    @property
    def missing(self) -> list[str]:
        return self.result.missing


class ModelBundle:
    """Everything a served model needs, fitted on one reference batch."""

    def __init__(
        self,
        outlier: OutlierModel,
        shift_scorer: ReviewShiftScorer,
        projection: Projection | None,
        reference: pd.DataFrame,
        meta: dict[str, Any],
    ) -> None:
        self.outlier = outlier
        self.shift_scorer = shift_scorer
        self.projection = projection
        self.reference = reference
        self.meta = meta
        pipeline = getattr(outlier, "feature_pipeline_", None)
        if pipeline is not None and not hasattr(pipeline, "title_share_"):
            # Saved before the reference's title share was kept: without it a batch without titles would not
            # be recognised (`lacks_titles`); the bundle keeps the reference's titles, so it is measured again.
            pipeline.title_share_ = title_share(reference)

    @classmethod
    def fit(
        cls,
        reference: pd.DataFrame,
        embedder: Embedder,
        detectors: tuple[str, ...] = DEFAULT_DETECTORS,
        contamination: float = DEFAULT_CONTAMINATION,
        random_state: int = 0,
        project: bool = DEFAULT_PROJECT,
        reference_batch: str | None = None,
        progress: ProgressCallback | None = None,
        embed_fields: tuple[str, ...] = DEFAULT_EMBED_FIELDS,
    ) -> ModelBundle:
        """Fit the outlier model, the per-review shift scorer and (optionally) the UMAP map on `reference`.

        `embed_fields`: what each review's embedding is made of; ``("text",)`` for a model that will score
        batches without titles.
        """
        outlier = OutlierModel(detectors=detectors, contamination=contamination, random_state=random_state,
                               embed_fields=embed_fields)
        outlier.fit(reference, embedder, progress=progress)
        embeddings = outlier.reference_embeddings_
        if progress:
            progress("fitting shift scorer", 0.0)
        shift_scorer = ReviewShiftScorer(random_state=random_state).fit(embeddings)
        projection = None
        if project:
            if progress:
                progress("projecting (UMAP)", 0.0)
            projection = Projection(random_state=random_state).fit(embeddings)
            if progress:
                progress("projecting (UMAP)", 1.0)
        kept = [c for c in (*CANONICAL_COLUMNS, "is_duplicate") if c in reference.columns]
        meta = {
            "format": BUNDLE_FORMAT,
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "reference_batch": reference_batch,
            "n_reference": len(reference),
            "data_fingerprint": data_fingerprint(reference),
            "detectors": list(outlier.detector_names_),
            "signals": list(outlier.signal_names_),
            "embedding_model": outlier.embedding_model_,
            # None for an embedder without model files (test fakes): such a model is never checked.
            "embedding_digest": getattr(embedder, "weights_digest", None),
            "model_format_version": MODEL_FORMAT_VERSION,
            "contamination": contamination,
            "random_state": random_state,
            "projection": projection is not None,
            "embed_fields": list(outlier.embed_fields),
        }
        return cls(outlier, shift_scorer, projection, reference[kept].reset_index(drop=True), meta)

    def check_weights(self, installed: str | None, what: str = "this model") -> None:
        """Refuse (`WeightsError`, one line) to score with embedding weights other than the ones this model was
        trained with; a bundle saved before digests were recorded is let through with one warning."""
        from core.text.weights import check_recorded_digest

        check_recorded_digest(self.meta.get("embedding_digest"), installed, what)

    @property
    def embedding_key(self) -> str:
        """The vectors this model was trained on: the embedder's `model_key` (``"model|vector space"``) that
        `fit` records as ``embedding_model``."""
        return str(getattr(self.outlier, "embedding_model_", None) or self.meta.get("embedding_model"))

    def serving_backend(self, embedding_model: str, what: str = "this model") -> str:
        """The fastest embedding backend that gives this model's own vectors with `embedding_model` installed
        (`core.text.embed.serving_backend`); `EncoderMismatchError` (one line) when none does."""
        return serving_backend(self.embedding_key, embedding_model, what)

    @property
    def reference_embeddings(self) -> np.ndarray:
        return self.outlier.reference_embeddings_

    def score(
        self, frame: pd.DataFrame, embedder: Embedder, progress: ProgressCallback | None = None, project: bool = False
    ) -> BundleScores:
        """Outlier scores, reasons and the per-review shift p-value of every row of `frame`."""
        result = self.outlier.score(frame, embedder, progress=progress)
        table = result.scores.copy()
        embeddings = result.embeddings  # already computed by the outlier model: not embedded twice
        table["shift_p_value"] = self.shift_scorer.score(embeddings) if len(frame) else np.zeros(0)
        if project and self.projection is not None:
            coords = self.projection.transform(embeddings)
            table["x"], table["y"] = coords[:, 0], coords[:, 1]
        return BundleScores(result=result, frame=table)

    @property
    def uses_behaviour(self) -> bool:
        """Whether the model scores reviewer, product and timing evidence (the reference had it): batches are
        then read against the review history before scoring."""
        return "campaign" in getattr(self.outlier, "signal_names_", ())

    def lacks_titles(self, frame: pd.DataFrame) -> bool:
        """True when this model embeds title + text, its reference had titles, and `frame` has none."""
        return len(frame) > 0 and "title" in self.outlier.feature_pipeline_.missing_columns(frame)

    def text_twin(
        self, embedder: Embedder, folder: str | Path | None = None, progress: ProgressCallback | None = None
    ) -> ModelBundle:
        """This model refitted on its own reference with the review text alone, for batches without titles.

        A title + text model reads every review of such a batch as more novel than it is (a user trial: 101
        of 300 in-category reviews flagged instead of 21). The twin has the same detectors, contamination and
        seed, and shares this model's 2-D map (batch reviews are placed on it by their text). It has no
        label-aware scorer. With `folder` the twin is kept there and reused while it matches this model.
        """
        if "title" not in self.outlier.embed_fields:
            return self
        origin = {"data_fingerprint": self.meta.get("data_fingerprint"), "trained_at": self.meta.get("trained_at")}
        twin = None
        if folder is not None and (Path(folder) / "bundle.json").is_file():
            with contextlib.suppress(ModelUnavailableError, OSError, ValueError):
                kept = ModelBundle.load(folder)
                # A twin kept from other (or unrecorded) embedding weights is fitted again, not used.
                same_weights = kept.meta.get("embedding_digest") == getattr(embedder, "weights_digest", None)
                twin = kept if kept.meta.get("twin_of") == origin and same_weights else None
        if twin is None:
            twin = ModelBundle.fit(
                self.reference, embedder, detectors=tuple(self.meta["detectors"]),
                contamination=self.meta["contamination"], random_state=self.meta["random_state"], project=False,
                reference_batch=self.meta.get("reference_batch"), progress=progress, embed_fields=("text",),
            )
            twin.meta["twin_of"] = origin
            if folder is not None:
                twin.save(folder)  # without the map: it is this model's, shared below
        twin.projection = self.projection
        return twin

    def reference_coords(self) -> np.ndarray | None:
        return None if self.projection is None else self.projection.reference_coords_

    # Persistence ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        import joblib

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.outlier.save(folder / "outlier")
        joblib.dump({"shift_scorer": self.shift_scorer, "projection": self.projection}, folder / "extras.joblib")
        self.reference.to_parquet(folder / "reference.parquet", index=False)
        (folder / "bundle.json").write_text(json.dumps(self.meta, indent=2, default=str), encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ModelBundle:
        folder = Path(folder)
        meta_path = folder / "bundle.json"
        if not meta_path.is_file():
            raise ModelUnavailableError(f"no model bundle in {folder} (bundle.json missing)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != BUNDLE_FORMAT:
            raise ModelUnavailableError(f"{folder} holds bundle format {meta.get('format')!r}, expected {BUNDLE_FORMAT}")
        extras = load_joblib(folder / "extras.joblib")
        return cls(
            outlier=OutlierModel.load(folder / "outlier"),
            shift_scorer=extras["shift_scorer"],
            projection=extras["projection"],
            reference=pd.read_parquet(folder / "reference.parquet"),
            meta=meta,
        )
