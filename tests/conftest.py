"""Shared fixtures: real data from ../shared/data, the real embedding model loaded once per session."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from tests.postgres import postgres, postgres_url  # noqa: F401  (fixtures: a throwaway PostgreSQL)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WORKBENCH_TEST_DATA", REPO.parent / "shared" / "data"))
TEST_OUTPUT = REPO / "test-output"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real review data not found at {DATA} (set WORKBENCH_TEST_DATA)")
    return DATA


@pytest.fixture(scope="session")
def vgames_path(data_dir: Path) -> Path:
    return data_dir / "amazon2023_subscription_videogames" / "processed_VGames.csv.gz"


@pytest.fixture(scope="session")
def subscription_path(data_dir: Path) -> Path:
    return data_dir / "amazon2023_subscription_videogames" / "processed_Subscription_box.csv.gz"


@pytest.fixture(scope="session")
def giftcards_path(data_dir: Path) -> Path:
    return data_dir / "amazon2018_5core" / "Gift_Cards_5.json.gz"


@pytest.fixture(scope="session")
def fake_reviews_path(data_dir: Path) -> Path:
    return data_dir / "fake_reviews_salminen_dev" / "fake_reviews_dev.csv.gz"


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workbench-home")


@pytest.fixture(scope="session")
def embedder(session_home: Path):
    """The real all-MiniLM-L6-v2, loaded once, with a cache shared by the whole session."""
    from core.text.embed import EmbeddingCache, SentenceEmbedder

    model = SentenceEmbedder(cache=EmbeddingCache(session_home / "cache" / "embeddings.sqlite"))
    model._load()
    return model


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh WORKBENCH_HOME for one test, with settings re-read."""
    from core.settings import get_settings

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


class HashingEmbedder:
    """A deterministic fake for unit tests of logic that does not depend on meaning. Never for user paths."""

    model_key = "hashing-test|fake"
    dim = 32

    def encode(self, texts, progress=None):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in str(text).lower().split():
                out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


@pytest.fixture()
def hashing_embedder() -> HashingEmbedder:
    return HashingEmbedder()


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory: pytest.TempPathFactory, subscription_path: Path, vgames_path: Path, embedder):
    """A workspace with two small real batches (reference + current) and a registered champion model.

    Built once per session; tests that change it must use their own `home` instead. Its folder is
    ``ws.settings.home``; start servers with ``WORKBENCH_HOME`` set to it.
    """
    import pandas as pd

    from core.pipeline import Workspace
    from core.settings import Settings

    home = tmp_path_factory.mktemp("trained-home")
    files = tmp_path_factory.mktemp("trained-files")
    pd.read_csv(subscription_path).head(300).to_csv(files / "reference.csv", index=False)
    pd.read_csv(vgames_path).head(150).to_csv(files / "current.csv", index=False)
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ws = Workspace.open(settings)
    ws.ingest_path(files / "reference.csv", name="reference")
    ws.ingest_path(files / "current.csv", name="current")
    ws.update_state(reference="reference", current="current")
    # Share the session's loaded model and cache instead of loading a second copy.
    from core import pipeline

    pipeline.share_embedder(settings, embedder)
    ws.train("reference", detectors=("knn", "lof", "iforest"), project=True)
    return ws
