"""Training defaults and registry alias names, defined once for every entry point.

The CLI, the workbench pages, the API, the Airflow DAG and `core.settings.Settings` read these constants
instead of spelling their own, so the same words train the same model everywhere.

This module imports only the standard library: the DAG loads it by path in Airflow's own interpreter, where
the workbench package is not installed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Detectors a training fits when none are named. All five are fitted, calibrated and shown in the reasons;
#: the headline's novelty group listens only to kNN, LOF and Mahalanobis
#: (`core.detect.model.OutlierModel.novelty_detectors`), because Isolation Forest and the autoencoder measured weaker
#: on sentence embeddings. bench/detect.py fits this same set.
DEFAULT_DETECTORS: tuple[str, ...] = ("knn", "lof", "mahalanobis", "iforest", "autoencoder")
#: Expected share of outliers; sets the flag threshold (``Settings.contamination``).
DEFAULT_CONTAMINATION: float = 0.05
#: Fit the 2-D map (UMAP) of the reference.
DEFAULT_PROJECT: bool = True
#: Learn from the stored labels while training.
DEFAULT_USE_LABELS: bool = True
#: Embed review titles with the text.
DEFAULT_TITLES: bool = True
#: Canonical columns joined into the embedded text, with titles and without.
DEFAULT_EMBED_FIELDS: tuple[str, ...] = ("title", "text")
TEXT_ONLY_FIELDS: tuple[str, ...] = ("text",)

#: Registry aliases: the served model and the newest candidate.
CHAMPION = "champion"
CHALLENGER = "challenger"


def embed_fields_for(titles: bool) -> tuple[str, ...]:
    """The embedded fields of a model trained with or without titles."""
    return DEFAULT_EMBED_FIELDS if titles else TEXT_ONLY_FIELDS


@dataclass(frozen=True)
class TrainParameters:
    """The model-defining arguments of `core.pipeline.Workspace.train`, with the workbench's defaults.

    `contamination` None means ``Settings.contamination`` (itself `DEFAULT_CONTAMINATION` unless configured).
    """

    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    contamination: float | None = None
    project: bool = DEFAULT_PROJECT
    use_labels: bool = DEFAULT_USE_LABELS
    titles: bool = DEFAULT_TITLES

    @classmethod
    def of_model(cls, meta: Mapping[str, Any], use_labels: bool = DEFAULT_USE_LABELS) -> TrainParameters:
        """The parameters that trained a registered model, read from its bundle's `meta`; a key the model
        does not record (an older bundle) takes the default.

        Parameters
        ----------
        meta
            ``ModelBundle.meta``: ``detectors``, ``contamination``, ``projection``, ``embed_fields``.
        use_labels
            Labels are not part of a model's meta: whether the retraining learns from them.
        """
        fields = meta.get("embed_fields")
        return cls(
            detectors=tuple(meta.get("detectors") or DEFAULT_DETECTORS),
            contamination=meta.get("contamination"),
            project=bool(meta.get("projection", DEFAULT_PROJECT)),
            use_labels=use_labels,
            titles="title" in fields if fields else DEFAULT_TITLES,
        )

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Workspace.train`."""
        return {"detectors": self.detectors, "contamination": self.contamination, "project": self.project,
                "use_labels": self.use_labels, "titles": self.titles}


def parse_detectors(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Detector names from a comma-separated string or a sequence; None means `DEFAULT_DETECTORS`.

    An explicit empty list is returned empty, for the caller to refuse with its own wording.
    """
    if value is None:
        return DEFAULT_DETECTORS
    names = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(n).strip() for n in names if str(n).strip())
