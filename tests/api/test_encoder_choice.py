"""The API serves each champion with an embedder that gives the vectors it was trained on, or refuses it.

The registry is a stand-in here (what is tested is the choice, not MLflow): models fitted with the hashing
fake under the identity of real vector spaces. The real int8 path end to end: tests/core/text/test_embed_backend.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.serving import ServedModel
from core.bundle import ModelBundle
from core.settings import Settings
from core.tracking import VersionInfo
from tests.conftest import HashingEmbedder

PACKAGED = "sentence-transformers/all-MiniLM-L6-v2"
SEED = {"text": "Sample review text", "rating": 5, "verified_purchase": True}


class Vectors(HashingEmbedder):
    """The hashing fake, claiming to give the vectors of `key`."""

    backend = "onnx"

    def __init__(self, key: str) -> None:
        self.model_key = key


def _bundle(key: str) -> ModelBundle:
    from core.io.load import load_records

    rng = np.random.default_rng(0)
    words = ["box", "tea", "snack", "late", "great", "crushed", "gift", "monthly", "cookbook", "shipping"]
    reference = load_records([{"text": " ".join(rng.choice(words, 7)), "rating": 4} for _ in range(80)])
    return ModelBundle.fit(reference, Vectors(key), detectors=("knn",), project=False)


@pytest.fixture(scope="module")
def bundles() -> dict[str, ModelBundle]:
    return {"fp32": _bundle(f"{PACKAGED}|torch"), "other-model": _bundle("/data/other-minilm|torch"),
            "unknown-space": _bundle(f"{PACKAGED}|fp16")}


class Registry:
    name = "review-outlier"

    def __init__(self) -> None:
        self.champion: str | None = None

    def champion_version(self) -> str | None:
        return self.champion


class Models:
    """A workspace whose registry holds the given bundles as versions "1", "2", ...; `fast_embedder` gives
    torch's vectors as the real one does (with the hashing fake)."""

    def __init__(self, settings: Settings, versions: list[ModelBundle]) -> None:
        self.settings = settings
        self.versions = versions
        self._registry = Registry()
        self.embedder = Vectors(f"{PACKAGED}|torch")

    def registry(self) -> Registry:
        return self._registry

    def promote(self, version: str) -> None:
        self._registry.champion = version

    def model(self, alias: str = "champion") -> tuple[ModelBundle, VersionInfo]:
        version = self._registry.champion
        assert version is not None
        info = VersionInfo(version=version, aliases=["champion"], run_id=None, created="2026-12-02", metrics={},
                           tags={})
        return self.versions[int(version) - 1], info

    def fast_embedder(self) -> Vectors:
        return self.embedder


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")


def test_a_champion_on_torchs_vectors_is_served_with_them(settings, bundles) -> None:
    models = Models(settings, [bundles["fp32"]])
    models.promote("1")
    loaded = ServedModel(models).refresh()  # type: ignore[arg-type]
    assert loaded is not None and loaded.embedder is models.embedder


@pytest.mark.parametrize(("kind", "reason"), [
    ("other-model", "was trained on '/data/other-minilm|torch' embeddings but this installation embeds with"),
    ("unknown-space", "was trained on 'fp16' vectors"),
])
def test_a_champion_whose_vectors_cannot_be_made_is_refused_and_the_old_one_kept(
    settings, bundles, kind: str, reason: str, caplog
) -> None:
    models = Models(settings, [bundles["fp32"], bundles[kind]])
    models.promote("2")
    first = ServedModel(models)  # type: ignore[arg-type]
    assert first.refresh() is None  # nothing else to serve: /ready says why
    assert first.reason is not None and "the champion model is refused" in first.reason
    assert "model review-outlier version 2 " + reason in first.reason and "\n" not in first.reason

    models.promote("1")
    served = ServedModel(models)  # type: ignore[arg-type]
    assert served.refresh().version.version == "1"  # type: ignore[union-attr]
    models.promote("2")
    with caplog.at_level(logging.ERROR, logger="api"):
        assert served.refresh().version.version == "1"  # type: ignore[union-attr]
        assert served.refresh().version.version == "1"  # type: ignore[union-attr]
    refusals = [r.getMessage() for r in caplog.records if "still serving version 1" in r.getMessage()]
    assert len(refusals) == 1 and reason in refusals[0]  # refused once, not at every check
    assert served.reason is None


def test_the_api_answers_503_with_the_reason_for_a_refused_champion(settings, bundles) -> None:
    models = Models(settings, [bundles["other-model"]])
    models.promote("1")
    app = create_app(settings)
    app.state.served = ServedModel(models)  # type: ignore[arg-type]
    with TestClient(app) as client:
        ready = client.get("/ready")
        assert ready.status_code == 503 and "trained on '/data/other-minilm|torch'" in ready.json()["reason"]
        r = client.post("/predict", json=SEED)
        assert r.status_code == 503 and "WORKBENCH_EMBEDDING_MODEL" in r.json()["detail"]


def test_the_api_scores_with_the_embedder_it_chose_and_says_which(settings, bundles) -> None:
    models = Models(settings, [bundles["fp32"]])
    models.promote("1")
    app = create_app(settings)
    app.state.served = ServedModel(models)  # type: ignore[arg-type]
    with TestClient(app) as client:
        r = client.post("/predict", json=SEED)
        assert r.status_code == 200, r.text
        info = client.get("/model").json()
    assert info["embedding_model"] == f"{PACKAGED}|torch" and info["embedding_backend"] == "onnx"
