"""Isolation Forest (PyOD) after PCA: random axis-aligned splits see almost nothing on the raw 384 dimensions."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from core.detect.base import Detector, check_int


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
        check_int("n_estimators", self.n_estimators, 1)
        check_int("max_samples", self.max_samples, 2)

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


