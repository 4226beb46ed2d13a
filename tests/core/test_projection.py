"""The 2-D map: exact cosine neighbours for small references, UMAP's index for large ones, same map after saving."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest

from core.errors import NotFittedError, ParameterError
from core.io.load import load_path
from core.projection import Projection
from core.text.embed import embedding_text


@pytest.fixture(scope="module")
def vectors(subscription_path: Path, giftcards_path: Path, embedder) -> tuple[np.ndarray, np.ndarray]:
    reference = load_path(subscription_path).frame.head(150)
    other = load_path(giftcards_path).frame.head(40)
    return embedder.encode(embedding_text(reference)), embedder.encode(embedding_text(other))


def _typical_distance(coords: np.ndarray) -> float:
    """Median distance between two fitted points: where a point lands when the map loses track of it."""
    diffs = coords[:, None, :] - coords[None, :, :]
    return float(np.median(np.linalg.norm(diffs, axis=2)[np.triu_indices(len(coords), k=1)]))


@pytest.mark.parametrize("exact_below", [4096, 50], ids=["exact", "approximate"])
def test_reference_reviews_transform_back_near_where_the_fit_put_them(vectors, exact_below: int, tmp_path: Path) -> None:
    reference, _ = vectors
    projection = Projection(exact_below=exact_below).fit(reference)
    assert projection.reference_coords_.shape == (len(reference), 2)
    again = projection.transform(reference[:30])
    moved = np.linalg.norm(again - projection.reference_coords_[:30], axis=1)
    # Transform places a review at the weighted mean of its nearest reference reviews' places; a reference review
    # is its own nearest, so it lands at or next to its place (a wrong distance matrix puts it anywhere).
    assert np.median(moved) < 0.5 * _typical_distance(projection.reference_coords_)

    joblib.dump(projection, tmp_path / "projection.joblib")
    loaded = joblib.load(tmp_path / "projection.joblib")
    np.testing.assert_allclose(loaded.transform(reference[:30]), again, atol=1e-5)


def test_exact_map_is_saved_without_the_distance_matrix(vectors, tmp_path: Path) -> None:
    reference, _ = vectors
    projection = Projection().fit(reference)
    joblib.dump(projection, tmp_path / "projection.joblib")
    # The reference embeddings (150 x 384 float32 = 230 kB) are kept; the 150 x 150 distances are not.
    assert projection.umap_._raw_data.size == 0
    assert (tmp_path / "projection.joblib").stat().st_size < 1_000_000


def test_transform_in_chunks_matches_one_call(vectors) -> None:
    reference, other = vectors
    projection = Projection().fit(reference)
    many = np.concatenate([other] * 60)  # 2,400 rows: more than one chunk
    coords = projection.transform(many)
    assert coords.shape == (len(many), 2) and np.isfinite(coords).all()
    np.testing.assert_allclose(coords[: len(other)], projection.transform(other), atol=1e-5)


def test_new_reviews_land_next_to_their_nearest_reference_reviews(vectors) -> None:
    reference, other = vectors
    projection = Projection().fit(reference)
    coords = projection.transform(other)
    unit_ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    unit_other = other / np.linalg.norm(other, axis=1, keepdims=True)
    similar = np.argsort(-(unit_other @ unit_ref.T), axis=1)[:, :15]  # the 15 most similar reference reviews
    on_map = np.argmin(np.linalg.norm(coords[:, None, :] - projection.reference_coords_[None], axis=2), axis=1)
    # UMAP places a new point among its nearest neighbours: on the map it sits next to one of them.
    # By chance that would happen for 15 / 150 = 10 % of the reviews.
    share = np.mean([on_map[i] in similar[i] for i in range(len(other))])
    assert share >= 0.4, f"only {share:.0%} of the new reviews landed next to a similar reference review"


def test_bad_use_is_explained(vectors) -> None:
    reference, _ = vectors
    with pytest.raises(ParameterError, match="at least 5"):
        Projection().fit(reference[:3])
    with pytest.raises(NotFittedError, match="fit"):
        Projection().transform(reference)
    assert Projection().fit(reference).transform(reference[:0]).shape == (0, 2)
