"""Detectors of the reference's neighbourhood on unit embeddings: kNN cosine distance, LOF, and Mahalanobis
distance under a shrunk covariance (which sees the directions the reference's topics span)."""

from __future__ import annotations

import warnings

import numpy as np

from core.detect.base import Detector, as_matrix, check_int
from core.errors import ParameterError
from core.text.embed import unit_rows


class KNNDetector(Detector):
    """Cosine distance to the nearest reference reviews (mean over the k nearest, or the k-th).

    Parameters
    ----------
    n_neighbors
        k.
    method
        ``mean`` (average distance to the k nearest) or ``largest`` (distance to the k-th).
    """

    name = "knn"

    def __init__(
        self,
        n_neighbors: int = 10,
        method: str = "mean",
        n_components: int | None = None,
        random_state: int = 0,
    ) -> None:
        super().__init__(n_components=n_components, random_state=random_state)
        self.n_neighbors = n_neighbors
        self.method = method

    def _validate(self) -> None:
        super()._validate()
        check_int("n_neighbors", self.n_neighbors, 1)
        if self.method not in ("mean", "largest"):
            raise ParameterError(f"method must be 'mean' or 'largest', got {self.method!r}")

    def _min_samples(self) -> int:
        return int(self.n_neighbors) + 1

    def _fit(self, Z: np.ndarray) -> None:
        self.reference_ = unit_rows(Z)

    def _search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        R = self.reference_
        k = min(k, R.shape[0])
        dist = np.empty((Q.shape[0], k), dtype=np.float32)
        idx = np.empty((Q.shape[0], k), dtype=np.int64)
        step = max(1, 20_000_000 // max(R.shape[0], 1))  # keep each similarity block near 80 MB
        for start in range(0, Q.shape[0], step):
            sim = Q[start : start + step] @ R.T
            part = (
                np.argpartition(-sim, k - 1, axis=1)[:, :k]
                if k < R.shape[0]
                else np.tile(np.arange(k), (sim.shape[0], 1))
            )
            part_sim = np.take_along_axis(sim, part, axis=1)
            order = np.argsort(-part_sim, axis=1, kind="stable")
            idx[start : start + step] = np.take_along_axis(part, order, axis=1)
            dist[start : start + step] = 1.0 - np.take_along_axis(part_sim, order, axis=1)
        return np.clip(dist, 0.0, 2.0), idx

    def kneighbors(
        self, X: np.ndarray, n_neighbors: int | None = None, exclude_self: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine distances and indices of the nearest reference rows, nearest first.

        With ``exclude_self`` `X` must be the reference itself; each row's own entry is dropped.
        """
        self._check_fitted()
        k = int(n_neighbors or self.n_neighbors)
        Q = unit_rows(self._reduce(as_matrix(X)))
        if not exclude_self:
            return self._search(Q, k)
        dist, idx = self._search(Q, k + 1)
        own = idx == np.arange(Q.shape[0])[:, None]
        # Drop the row itself; when an exact copy displaced it from the list, drop the farthest instead.
        drop = np.where(own.any(axis=1), own.argmax(axis=1), dist.shape[1] - 1)
        keep = np.ones_like(own)
        keep[np.arange(Q.shape[0]), drop] = False
        return dist[keep].reshape(Q.shape[0], -1), idx[keep].reshape(Q.shape[0], -1)

    def _aggregate(self, dist: np.ndarray) -> np.ndarray:
        return dist.mean(axis=1) if self.method == "mean" else dist[:, -1]

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return self._aggregate(self._search(unit_rows(Z), self.n_neighbors)[0])

    def held_out_scores(self, X: np.ndarray, n_splits: int = 5) -> np.ndarray:
        """Leave-one-out scores: each reference row against all the others (exact for kNN)."""
        return type(self)(**self.get_params()).fit_held_out(X, n_splits)

    def fit_held_out(self, X: np.ndarray, n_splits: int = 5) -> np.ndarray:
        self.fit(X)
        return self.decision_scores_

    def _training_scores(self, Z: np.ndarray) -> np.ndarray:
        # PyOD's convention for kNN: a training row is not its own neighbour.
        dist, idx = self._search(unit_rows(Z), self.n_neighbors + 1)
        n = Z.shape[0]
        own = idx == np.arange(n)[:, None]
        drop = np.where(own.any(axis=1), own.argmax(axis=1), dist.shape[1] - 1)
        keep = np.ones_like(own)
        keep[np.arange(n), drop] = False
        return np.asarray(self._aggregate(dist[keep].reshape(n, -1)), dtype=np.float64)


class LOFDetector(Detector):
    """Local Outlier Factor in novelty mode (PyOD ``LOF``), scoring new batches against the reference.

    Parameters
    ----------
    n_neighbors
        Neighbourhood size.
    """

    name = "lof"

    def __init__(self, n_neighbors: int = 20, n_components: int | None = None, random_state: int = 0) -> None:
        super().__init__(n_components=n_components, random_state=random_state)
        self.n_neighbors = n_neighbors

    def _validate(self) -> None:
        super()._validate()
        check_int("n_neighbors", self.n_neighbors, 1)

    def _min_samples(self) -> int:
        return int(self.n_neighbors) + 1

    def _fit(self, Z: np.ndarray) -> None:
        from pyod.models.lof import LOF

        self.model_ = LOF(n_neighbors=self.n_neighbors, novelty=True, n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate points make sklearn warn; scores stay defined
            self.model_.fit(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.model_.decision_function(Z)

    def held_out_scores(self, X: np.ndarray, n_splits: int = 5) -> np.ndarray:
        """LOF of each training row computed without itself (sklearn's ``negative_outlier_factor_``)."""
        return type(self)(**self.get_params()).fit_held_out(X, n_splits)

    def fit_held_out(self, X: np.ndarray, n_splits: int = 5) -> np.ndarray:
        self.fit(X)
        return self.decision_scores_

    def _training_scores(self, Z: np.ndarray) -> np.ndarray:
        return -np.asarray(self.model_.detector_.negative_outlier_factor_, dtype=np.float64)


class MahalanobisDetector(Detector):
    """Squared Mahalanobis distance to the reference mean, Ledoit-Wolf shrunk covariance, unit vectors.

    Held-out scores are exact leave-one-out: removing row i changes the mean and the covariance by a
    rank-one term, so with the shrinkage intensity and the identity target kept from the full fit,
    ``d_-i = (n / (n - 1))^2 q / (1 - c q)`` with ``q`` the row's distance under
    ``(n covariance - shrinkage * scale * I) / (n - 1)`` (Sherman-Morrison). That matrix has the
    covariance's eigenvectors, so one eigendecomposition serves both: no refitting, and calibration sees
    what a new review would see.
    """

    name = "mahalanobis"

    def _min_samples(self) -> int:
        return 3

    def _fit(self, Z: np.ndarray) -> None:
        from sklearn.covariance import ledoit_wolf_shrinkage

        U = unit_rows(Z).astype(np.float64)
        n, d = U.shape
        self.location_ = U.mean(axis=0)
        centred = U - self.location_
        empirical = centred.T @ centred / n
        self.shrinkage_ = float(ledoit_wolf_shrinkage(centred, assume_centered=True))
        self.target_scale_ = float(np.trace(empirical) / d)
        covariance = (1 - self.shrinkage_) * empirical + self.shrinkage_ * self.target_scale_ * np.eye(d)
        # Eigenvalues are at least shrinkage * scale > 0 (for a non-constant reference).
        self.eigenvalues_, self.eigenvectors_ = np.linalg.eigh(covariance)

    def _projected(self, Z: np.ndarray) -> np.ndarray:
        return (unit_rows(Z).astype(np.float64) - self.location_) @ self.eigenvectors_

    def _score(self, Z: np.ndarray) -> np.ndarray:
        return (self._projected(Z) ** 2 / np.maximum(self.eigenvalues_, 1e-300)).sum(axis=1)

    def _training_scores(self, Z: np.ndarray) -> np.ndarray:
        n = Z.shape[0]
        loo_eigenvalues = (n * self.eigenvalues_ - self.shrinkage_ * self.target_scale_) / (n - 1)
        q = (self._projected(Z) ** 2 / np.maximum(loo_eigenvalues, 1e-300)).sum(axis=1)
        c = (1 - self.shrinkage_) * n / (n - 1) ** 2
        return (n / (n - 1)) ** 2 * q / np.maximum(1.0 - c * q, 1e-12)

    def held_out_scores(self, X: np.ndarray, n_splits: int = 5) -> np.ndarray:
        """Exact leave-one-out scores of the rows of `X` (see the class notes)."""
        return type(self)(**self.get_params()).fit_held_out(X, n_splits)

    def fit_held_out(self, X: np.ndarray, n_splits: int = 5) -> np.ndarray:
        self.fit(X)
        return self.decision_scores_


