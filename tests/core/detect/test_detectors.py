"""Detectors: PyOD semantics (higher = more abnormal), held-out scores, seeds, parameter validation."""

from __future__ import annotations

import numpy as np
import pytest

from core.detect.detectors import DETECTORS, KNNDetector, make_detector
from core.errors import NotFittedError, ParameterError


def _clustered(n: int, dim: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in a few tight clusters, and planted points in random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, dim))
    X = centres[rng.integers(4, size=n)] + 0.25 * rng.normal(size=(n, dim))
    outliers = rng.normal(size=(8, dim)) * 1.0
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    outliers = outliers / np.linalg.norm(outliers, axis=1, keepdims=True)
    return X.astype(np.float32), outliers.astype(np.float32)


@pytest.mark.parametrize("name", DETECTORS)
def test_planted_outliers_rank_high(name: str) -> None:
    X, planted = _clustered(600)
    params = {"n_components": 16} if name in ("iforest", "autoencoder") else {}
    detector = make_detector(name, random_state=0, **params).fit(X[:400])
    batch = np.vstack([X[400:], planted])
    scores = detector.decision_function(batch)
    rank = (-scores).argsort().argsort()[-len(planted) :]
    assert np.median(rank) < 20, f"{name}: planted outliers ranked {sorted(rank)} among {len(batch)}"
    assert detector.decision_scores_.shape == (400,)


@pytest.mark.parametrize("name", ["iforest", "autoencoder"])
def test_same_seed_same_scores(name: str) -> None:
    X, _ = _clustered(300, seed=3)
    a = make_detector(name, random_state=7, n_components=8).fit(X).decision_function(X[:20])
    b = make_detector(name, random_state=7, n_components=8).fit(X).decision_function(X[:20])
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_knn_held_out_scores_are_leave_one_out() -> None:
    X, _ = _clustered(120, seed=5)
    held = KNNDetector(n_neighbors=3).held_out_scores(X)
    sim = X @ X.T
    np.fill_diagonal(sim, -np.inf)
    expected = (1 - np.sort(sim, axis=1)[:, ::-1][:, :3]).mean(axis=1)
    np.testing.assert_allclose(held, expected, atol=1e-5)
    # Held-out scores are not optimistic: the training rows' own in-sample view would be 0 distance.
    assert held.min() > 0


def test_cross_fitted_scores_cover_every_row() -> None:
    X, _ = _clustered(200, seed=2)
    held = make_detector("iforest", n_components=8).held_out_scores(X, n_splits=3)
    assert held.shape == (200,) and np.isfinite(held).all()


def test_too_few_reference_rows_is_a_clear_error() -> None:
    X, _ = _clustered(8)
    with pytest.raises(
        ParameterError, match="knn with these parameters needs at least 11 reference rows, got 8"
    ):
        KNNDetector(n_neighbors=10).fit(X)


def test_parameters_are_validated_with_what_came() -> None:
    X, _ = _clustered(50)
    with pytest.raises(ParameterError, match="n_neighbors must be an integer >= 1, got 0"):
        make_detector("knn", n_neighbors=0).fit(X)
    with pytest.raises(
        ParameterError, match="unknown detector 'ocsvm'; expected one of knn, lof, mahalanobis, iforest, autoencoder"
    ):
        make_detector("ocsvm")
    with pytest.raises(ParameterError, match="bad parameters for detector 'lof'"):
        make_detector("lof", n_trees=3)
    with pytest.raises(ParameterError, match="hidden must be a non-empty sequence"):
        make_detector("autoencoder", hidden=()).fit(X)


def test_use_before_fit_and_wrong_width() -> None:
    X, _ = _clustered(50)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        KNNDetector().decision_function(X)
    detector = KNNDetector().fit(X)
    with pytest.raises(ParameterError, match="fitted on 48 features, got 10"):
        detector.decision_function(X[:, :10])
    with pytest.raises(ParameterError, match="NaN"):
        detector.decision_function(np.full((2, 48), np.nan))


def test_the_projection_of_a_review_does_not_depend_on_the_rows_around_it() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 48)).astype(np.float32)
    detector = make_detector("iforest", n_components=16, random_state=0).fit(X)
    batch = rng.normal(size=(300, 48)).astype(np.float32)
    together = detector._reduce(batch)
    np.testing.assert_allclose(together, detector.pca_.transform(batch), rtol=0, atol=1e-5)  # PCA's own
    assert together.dtype == np.float32
    assert np.array_equal(np.vstack([detector._reduce(batch[:1]), detector._reduce(batch[1:])]), together)
    # The same path lengths: no step (up to 256 rows the trees are walked directly, sums in another order).
    np.testing.assert_allclose(detector.decision_function(batch[:5]), detector.decision_function(batch)[:5],
                               rtol=1e-12)


def test_isolation_forest_fast_path_matches_sklearn() -> None:
    from core.detect.detectors import make_detector

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 48)).astype(np.float32)
    detector = make_detector("iforest", n_components=16, random_state=0).fit(X)
    few = rng.normal(size=(7, 48)).astype(np.float32)
    fast = detector.decision_function(few)  # <= 256 rows: walks the trees directly
    reference = detector.model_.decision_function(detector._reduce(few))  # sklearn/PyOD's own path
    assert np.allclose(fast, reference, atol=1e-9)


def test_autoencoder_scores_are_pyods_own() -> None:
    from core.detect.autoencoder import _torch_threads

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 48)).astype(np.float32)
    detector = make_detector("autoencoder", n_components=16, epochs=2, batch_size=64, random_state=0).fit(X)
    for rows in (1, 7, 150):  # one review, a micro-batch, several of PyOD's chunks of 64
        new = rng.normal(size=(rows, 48)).astype(np.float32)
        with _torch_threads(1):  # the detector's own setting: other thread counts round differently
            reference = detector.model_.decision_function(detector._reduce(new))  # PyOD's dataset and loader
        np.testing.assert_array_equal(detector.decision_function(new), reference)


def test_mahalanobis_held_out_scores_are_exact_leave_one_out() -> None:
    from core.detect.detectors import MahalanobisDetector

    X, _ = _clustered(80, dim=12, seed=3)
    detector = MahalanobisDetector().fit(X)
    held = detector.decision_scores_
    # Refit without each row, keeping the full fit's shrinkage and identity target (the documented approximation).
    for i in (0, 17, 79):
        rest = np.delete(X, i, axis=0).astype(np.float64)
        mean = rest.mean(axis=0)
        empirical = (rest - mean).T @ (rest - mean) / len(rest)
        covariance = (1 - detector.shrinkage_) * empirical + detector.shrinkage_ * detector.target_scale_ * np.eye(12)
        e = X[i] - mean
        assert held[i] == pytest.approx(float(e @ np.linalg.solve(covariance, e)), rel=1e-6)  # float32 inputs
    # A row scored by the full fit (which saw it) looks less unusual than when held out.
    assert np.all(detector.decision_function(X) < held)
