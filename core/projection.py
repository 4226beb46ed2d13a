"""2-D maps of review embeddings: UMAP fitted on the reference, any batch transformed into the same map."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from core.errors import NotFittedError, ParameterError
from core.settings import user_cache_dir
from core.text.embed import unit_rows


def _numba_cache() -> None:
    # numba compiles UMAP on first use (tens of seconds); a persistent cache makes it a one-time cost.
    # It lives per user, not per WORKBENCH_HOME, so a fresh workspace (or test run) does not compile again.
    if "NUMBA_CACHE_DIR" not in os.environ:
        folder = user_cache_dir("numba")
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(folder)


# UMAP's own limit for exact neighbours. Below it UMAP's transform scores every new review against every reference
# review through a Python-level metric callback (about 75 s for 20k reviews against 2k here); handing it cosine
# distances computed with one matrix product instead ("precomputed") gives the same neighbours in a few seconds.
# Above it UMAP builds an approximate index whose queries are fast anyway.
EXACT_BELOW = 4096


class Projection:
    """UMAP on cosine distance with a fixed seed.

    Parameters
    ----------
    n_neighbors
        Neighbourhood size; shrunk for tiny references.
    min_dist
        How tightly points may pack.
    random_state
        Seed; makes the map reproducible.
    exact_below
        References smaller than this use exact cosine neighbours; larger ones UMAP's approximate index.
    """

    def __init__(self, n_neighbors: int = 15, min_dist: float = 0.1, random_state: int = 0,
                 exact_below: int = EXACT_BELOW) -> None:
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.random_state = random_state
        self.exact_below = exact_below

    def fit(self, reference_embeddings: np.ndarray) -> Projection:
        n = len(reference_embeddings)
        if n < 5:
            raise ParameterError(f"a 2-D map needs at least 5 reference reviews, got {n}")
        _numba_cache()
        import umap

        exact = n < self.exact_below
        self.umap_ = umap.UMAP(
            n_neighbors=min(self.n_neighbors, n - 1), min_dist=self.min_dist,
            metric="precomputed" if exact else "cosine", force_approximation_algorithm=not exact,
            random_state=self.random_state, n_jobs=1, low_memory=True,
        )
        self.reference_ = unit_rows(reference_embeddings) if exact else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inputs = self._cosine_distances(self.reference_) if exact else reference_embeddings
            self.reference_coords_ = self.umap_.fit_transform(inputs).astype(np.float32)
        if exact:
            # UMAP keeps its training input (here n x n distances, 16 MB for 2k reviews) only to read its row
            # count when transforming precomputed distances; an empty n x 0 array keeps the saved model small.
            self.umap_._raw_data = np.empty((n, 0), dtype=np.float32)
        return self

    def _cosine_distances(self, unit: np.ndarray | None) -> np.ndarray:
        assert unit is not None and self.reference_ is not None, "exact projection keeps its reference"
        distances = 1.0 - unit @ self.reference_.T
        np.clip(distances, 0.0, 2.0, out=distances)
        if unit is self.reference_:
            np.fill_diagonal(distances, 0.0)
        return distances

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        if not hasattr(self, "umap_"):
            raise NotFittedError("this Projection is not fitted yet; call fit(reference_embeddings) first")
        if len(embeddings) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        _numba_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if getattr(self, "reference_", None) is None:  # approximate index (or a map saved before exact mode)
                return self._placed(embeddings)
            unit = unit_rows(embeddings)
            # Chunks bound the distance matrix (2,048 x reference rows); each review is placed on its own, so
            # chunking changes nothing but memory.
            return np.concatenate([
                self._placed(self._cosine_distances(unit[start:start + 2048])) for start in range(0, len(unit), 2048)
            ])

    def _placed(self, inputs: np.ndarray) -> np.ndarray:
        """Each new review at the membership-weighted mean of its nearest reference reviews' places on the map:
        UMAP's own starting point for new points (`init_graph_transform`), without its refinement epochs. Those
        move all new points in one optimisation whose negative samples depend on which other reviews came in the
        same call (measured with umap-learn 0.5.12: up to 1.3 map units for the same review), so a review's place
        would depend on its batch; the starting point depends on the review alone."""
        from umap.umap_ import init_graph_transform

        self.umap_.transform_mode = "graph"  # the membership graph to the reference, not the optimised layout
        graph = self.umap_.transform(inputs).tocsr()
        graph.eliminate_zeros()
        return np.asarray(init_graph_transform(graph, self.umap_.embedding_), dtype=np.float32)

    def save_coords(self, path: Path) -> None:
        np.save(path, self.reference_coords_)
