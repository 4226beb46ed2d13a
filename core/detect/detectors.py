"""Novelty detectors on review embeddings behind one interface with PyOD semantics.

Every detector is fitted on reference features and scores any batch; a higher score means more abnormal.
Besides PyOD's ``decision_scores_`` (scores of the training rows) each detector gives *held-out* scores
of its training rows (`held_out_scores`): leave-one-out for the neighbourhood methods (exact and cheap),
K-fold cross-fitting for the others. Those are what `core.detect.calibration` calibrates against, so a reference
review scored by a model that saw it does not make every new review look unusual.

Defaults follow what was measured on sentence embeddings (all-MiniLM-L6-v2, unit vectors):

* ``knn``: mean cosine distance to the k nearest reference reviews, on the full 384 dimensions (exact,
  brute force; 10k x 1k is one matrix product).
* ``lof``: PyOD/sklearn LOF in novelty mode on the unit vectors (Euclidean on unit vectors ranks like cosine).
* ``iforest``: PyOD Isolation Forest after PCA to 32 dimensions; on the raw 384 dimensions random
  axis-aligned splits see almost nothing (near chance in the literature and here).
* ``autoencoder``: PyOD's torch AutoEncoder after PCA to 64 dimensions (faster, less noise to reconstruct).
* ``mahalanobis``: squared Mahalanobis distance to the reference mean under a Ledoit-Wolf shrunk covariance,
  on the unit vectors. On category injection (bench/detect.py's reviews, 5 seeds, raw detector alone) it
  ranked off-category reviews best: AUROC 0.864 against kNN 0.820 and LOF 0.841; the covariance sees which
  directions the reference's topics span, so a review along an unused direction stands out even when its
  nearest neighbours are not far.
"""

from __future__ import annotations

from typing import Any

from core.detect.autoencoder import AutoEncoderDetector
from core.detect.base import Detector
from core.detect.forest import IForestDetector
from core.detect.neighbours import KNNDetector, LOFDetector, MahalanobisDetector
from core.errors import ParameterError

# The classes are also reachable here: models saved before they moved name them by this module.
__all__ = ["DETECTORS", "AutoEncoderDetector", "Detector", "IForestDetector", "KNNDetector", "LOFDetector",
           "MahalanobisDetector", "make_detector"]

DETECTORS: tuple[str, ...] = ("knn", "lof", "mahalanobis", "iforest", "autoencoder")


_REGISTRY: dict[str, type[Detector]] = {
    "knn": KNNDetector,
    "lof": LOFDetector,
    "mahalanobis": MahalanobisDetector,
    "iforest": IForestDetector,
    "autoencoder": AutoEncoderDetector,
}


def make_detector(name: str, **params: Any) -> Detector:
    """A detector by name (one of `DETECTORS`) with its parameters."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ParameterError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}") from None
    try:
        return cls(**params)
    except TypeError as err:
        raise ParameterError(f"bad parameters for detector {name!r}: {err}") from None
