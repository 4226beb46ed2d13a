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

import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
from sklearn.decomposition import PCA
from sklearn.model_selection import KFold

from core.errors import NotFittedError, ParameterError
from core.text.embed import unit_rows

DETECTORS: tuple[str, ...] = ("knn", "lof", "mahalanobis", "iforest", "autoencoder")


def _as_matrix(X: Any, name: str = "X") -> np.ndarray:
    arr = np.asarray(X, dtype=np.float32)
    if arr.ndim != 2:
        raise ParameterError(f"{name} must be a 2-d array (rows x features), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ParameterError(f"{name} contains NaN or infinite values; expected finite features")
    return arr


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < low
        or (high is not None and value > high)
    ):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ParameterError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


class Detector(ABC):
    """Base class: ``fit(X)`` returns self; ``decision_function(X)`` gives raw scores, higher = more abnormal.

    Parameters
    ----------
    n_components
        PCA dimensions applied before the detector, or None for none.
    random_state
        Seed for every random step (PCA solver, trees, network initialisation, fold assignment).
    """

    name: ClassVar[str] = "base"

    def __init__(self, n_components: int | None = None, random_state: int = 0) -> None:
        self.n_components = n_components
        self.random_state = random_state

    # -- to implement ------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, Z: np.ndarray) -> None: ...

    @abstractmethod
    def _score(self, Z: np.ndarray) -> np.ndarray: ...

    def _min_samples(self) -> int:
        return 2

    def _training_scores(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self._score(Z), dtype=np.float64)

    def _validate(self) -> None:
        if self.n_components is not None:
            _check_int("n_components", self.n_components, 1)

    # -- shared ------------------------------------------------------------------------------------
    def _reduce_fit(self, X: np.ndarray) -> np.ndarray:
        if self.n_components is None or self.n_components >= min(X.shape):
            self.pca_ = None
            return X
        # covariance_eigh: n >> d here, and it is ~20x faster than the default solver on 10k x 384.
        self.pca_ = PCA(
            n_components=self.n_components, svd_solver="covariance_eigh", random_state=self.random_state
        ).fit(X)
        return self.pca_.transform(X).astype(np.float32)

    def _reduce(self, X: np.ndarray) -> np.ndarray:
        return X if self.pca_ is None else self.pca_.transform(X).astype(np.float32)

    def fit(self, X: np.ndarray) -> Detector:
        """Fit on reference features `X` (rows x features); sets ``decision_scores_``."""
        self._validate()
        X = _as_matrix(X)
        need = self._min_samples()
        if X.shape[0] < need:
            raise ParameterError(
                f"{self.name} with these parameters needs at least {need} reference rows, got {X.shape[0]}"
            )
        Z = self._reduce_fit(X)
        self._fit(Z)
        self.n_features_in_ = X.shape[1]
        self.decision_scores_ = self._training_scores(Z)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(reference) first")

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Raw outlier scores of `X`; higher = more abnormal."""
        self._check_fitted()
        X = _as_matrix(X)
        if X.shape[1] != self.n_features_in_:
            raise ParameterError(
                f"{self.name} was fitted on {self.n_features_in_} features, got {X.shape[1]}"
            )
        if X.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._score(self._reduce(X)), dtype=np.float64)

    def held_out_scores(self, X: np.ndarray, n_splits: int = 5) -> np.ndarray:
        """Scores of the rows of `X` from models that did not see them (K-fold cross-fitting).

        Leaves this detector's fitted state untouched.
        """
        X = _as_matrix(X)
        n_splits = _check_int("n_splits", n_splits, 2)
        if X.shape[0] < n_splits:
            raise ParameterError(
                f"cross-fitting with {n_splits} folds needs at least {n_splits} rows, got {X.shape[0]}"
            )
        out = np.empty(X.shape[0], dtype=np.float64)
        folds = KFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        for train, test in folds.split(X):
            clone = type(self)(**self.get_params())
            clone.fit(X[train])
            out[test] = clone.decision_function(X[test])
        return out

    def fit_held_out(self, X: np.ndarray, n_splits: int = 5) -> np.ndarray:
        """Fit on `X` and return held-out scores of its rows (see `held_out_scores`)."""
        held = self.held_out_scores(X, n_splits=n_splits)
        self.fit(X)
        return held

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn's ``get_params(deep=False)``."""
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


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
        _check_int("n_neighbors", self.n_neighbors, 1)
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
        Q = unit_rows(self._reduce(_as_matrix(X)))
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
        _check_int("n_neighbors", self.n_neighbors, 1)

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


class IForestDetector(Detector):
    """Isolation Forest (PyOD ``IForest``), by default after PCA to 32 dimensions.

    Parameters
    ----------
    n_estimators
        Number of trees.
    max_samples
        Rows drawn per tree (capped at the number of rows).
    """

    name = "iforest"

    def __init__(
        self,
        n_estimators: int = 200,
        max_samples: int = 256,
        n_components: int | None = 32,
        random_state: int = 0,
    ) -> None:
        super().__init__(n_components=n_components, random_state=random_state)
        self.n_estimators = n_estimators
        self.max_samples = max_samples

    def _validate(self) -> None:
        super()._validate()
        _check_int("n_estimators", self.n_estimators, 1)
        _check_int("max_samples", self.max_samples, 2)

    def _fit(self, Z: np.ndarray) -> None:
        from pyod.models.iforest import IForest

        self.model_ = IForest(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, Z.shape[0]),
            random_state=self.random_state,
            n_jobs=1,
        ).fit(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        forest = getattr(self.model_, "detector_", None)
        if Z.shape[0] > 256 or forest is None or not hasattr(forest, "_decision_path_lengths"):
            return self.model_.decision_function(Z)
        # A few rows (an API request): sklearn dispatches each of the trees through joblib, ~0.3 ms apiece,
        # which is most of the time of scoring one review. Walking all fitted trees at once, level by level in
        # numpy, gives the same numbers (tests/test_detectors.py checks it) in a fraction of a millisecond.
        from sklearn.ensemble._iforest import _average_path_length

        walk = self._forest_arrays(forest)
        X = np.ascontiguousarray(Z, dtype=np.float32)
        nodes = np.broadcast_to(walk["roots"], (X.shape[0], walk["roots"].size)).copy()
        rows = np.arange(X.shape[0])[:, None]
        while True:
            inner = walk["left"][nodes] >= 0
            if not inner.any():
                break
            go_left = X[rows, walk["feature"][nodes]] <= walk["threshold"][nodes]
            step = np.where(go_left, walk["left"][nodes], walk["right"][nodes])
            nodes = np.where(inner, step, nodes)
        depths = walk["leaf_depth"][nodes].sum(axis=1)
        denominator = len(forest.estimators_) * _average_path_length([forest._max_samples])[0]
        scores = 2 ** -np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0)
        # sklearn's decision_function is -scores - offset_; PyOD flips the sign so higher = more abnormal.
        return scores + forest.offset_


    @staticmethod
    def _forest_arrays_of(forest: Any) -> dict[str, np.ndarray]:
        """Every tree's nodes in one set of arrays (child indices offset per tree, features in X's columns)."""
        lefts, rights, features, thresholds, leaf_depths, roots = [], [], [], [], [], []
        # As sklearn: trees see X's columns through `estimators_features_` only when features were subsampled.
        subsample = forest._max_features != forest.n_features_in_
        offset = 0
        for i, (tree, columns) in enumerate(zip(forest.estimators_, forest.estimators_features_, strict=True)):
            t = tree.tree_
            is_leaf = t.children_left < 0
            roots.append(offset)
            lefts.append(np.where(is_leaf, -1, t.children_left + offset))
            rights.append(np.where(is_leaf, -1, t.children_right + offset))
            feature = np.maximum(t.feature, 0)
            features.append(np.where(is_leaf, 0, np.asarray(columns)[feature] if subsample else feature))
            thresholds.append(t.threshold.astype(np.float64))
            leaf_depths.append(forest._decision_path_lengths[i] + forest._average_path_length_per_tree[i] - 1.0)
            offset += t.node_count
        return {"left": np.concatenate(lefts), "right": np.concatenate(rights),
                "feature": np.concatenate(features), "threshold": np.concatenate(thresholds),
                "leaf_depth": np.concatenate(leaf_depths), "roots": np.asarray(roots)}

    def _forest_arrays(self, forest: Any) -> dict[str, np.ndarray]:
        # Kept beside the detector, not in it: the arrays (~5 MB) are rebuilt after loading, never pickled.
        if forest not in _FOREST_ARRAYS:
            _FOREST_ARRAYS[forest] = self._forest_arrays_of(forest)
        return _FOREST_ARRAYS[forest]


_FOREST_ARRAYS: weakref.WeakKeyDictionary[Any, dict[str, np.ndarray]] = weakref.WeakKeyDictionary()


class AutoEncoderDetector(Detector):
    """Reconstruction error of PyOD's torch ``AutoEncoder``, by default after PCA to 64 dimensions.

    Parameters
    ----------
    hidden
        Widths of the encoder's hidden layers (the decoder mirrors them).
    epochs
        Training epochs.
    batch_size
        Rows per step; 256 measured about 5x faster than 32 on 2 CPU cores at the same quality.
    """

    name = "autoencoder"

    def __init__(
        self,
        hidden: tuple[int, ...] = (32, 16),
        epochs: int = 15,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        n_components: int | None = 64,
        random_state: int = 0,
    ) -> None:
        super().__init__(n_components=n_components, random_state=random_state)
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate

    def _validate(self) -> None:
        super()._validate()
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        if not self.hidden or any(
            isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 for h in self.hidden
        ):
            raise ParameterError(
                f"hidden must be a non-empty sequence of positive integers, got {self.hidden!r}"
            )
        if not 0 < float(self.learning_rate) < 1:
            raise ParameterError(f"learning_rate must be in (0, 1), got {self.learning_rate!r}")

    def _min_samples(self) -> int:
        return 10

    def _fit(self, Z: np.ndarray) -> None:
        import torch
        from pyod.models.auto_encoder import AutoEncoder

        torch.manual_seed(self.random_state)
        with _torch_threads(1):
            self._fit_model(AutoEncoder, Z)

    def _fit_model(self, AutoEncoder: Any, Z: np.ndarray) -> None:  # noqa: N803 - the PyOD class
        self.model_ = AutoEncoder(
            hidden_neuron_list=list(self.hidden),
            epoch_num=self.epochs,
            batch_size=min(self.batch_size, Z.shape[0]),
            lr=self.learning_rate,
            device="cpu",
            random_state=self.random_state,
            verbose=0,
            preprocessing=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model_.fit(Z)

    def _score(self, Z: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings(), _torch_threads(1):
            warnings.simplefilter("ignore")
            return self.model_.decision_function(Z)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run torch on `n` threads. The AE's layers are tiny: with 2+ threads on a shared 2-core machine
    thread hand-offs dominate (measured: 10 epochs on 2k rows took 22 s on 2 threads, 0.44 s on 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
