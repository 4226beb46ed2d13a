"""2-D maps of review embeddings: UMAP fitted on the reference, any batch transformed into the same map."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from core.errors import NotFittedError, ParameterError


def _numba_cache() -> None:
    # numba compiles UMAP on first use (tens of seconds); a persistent cache makes it a one-time cost.
    # It lives per user, not per WORKBENCH_HOME, so a fresh workspace (or test run) does not compile again.
    if "NUMBA_CACHE_DIR" not in os.environ:
        folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "review-workbench" / "numba"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["NUMBA_CACHE_DIR"] = str(folder)


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
    """

    def __init__(self, n_neighbors: int = 15, min_dist: float = 0.1, random_state: int = 0) -> None:
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.random_state = random_state

    def fit(self, reference_embeddings: np.ndarray) -> Projection:
        n = len(reference_embeddings)
        if n < 5:
            raise ParameterError(f"a 2-D map needs at least 5 reference reviews, got {n}")
        _numba_cache()
        import umap

        self.umap_ = umap.UMAP(
            n_neighbors=min(self.n_neighbors, n - 1), min_dist=self.min_dist, metric="cosine",
            random_state=self.random_state, n_jobs=1, low_memory=True,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.reference_coords_ = self.umap_.fit_transform(reference_embeddings).astype(np.float32)
        return self

    def transform(self, embeddings: np.ndarray) -> np.ndarray:
        if not hasattr(self, "umap_"):
            raise NotFittedError("this Projection is not fitted yet; call fit(reference_embeddings) first")
        if len(embeddings) == 0:
            return np.zeros((0, 2), dtype=np.float32)
        _numba_cache()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.umap_.transform(embeddings).astype(np.float32)

    def save_coords(self, path: Path) -> None:
        np.save(path, self.reference_coords_)
