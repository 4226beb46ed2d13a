"""The onnx backends: int8 close to fp32 on real reviews, exported once, cached apart from torch."""

from __future__ import annotations

import copy
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from core.errors import WorkbenchError


@pytest.fixture(scope="module")
def st_model():
    from sentence_transformers import SentenceTransformer

    from core.text.embed import resolve_model_path

    return SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-int8")


@pytest.fixture(scope="module")
def encoder(st_model, onnx_dir: Path):
    pytest.importorskip("onnxruntime")
    from core.text.onnx_backend import OnnxEncoder

    return OnnxEncoder(st_model, onnx_dir)


@pytest.fixture(scope="module")
def reviews(giftcards_path: Path, vgames_path: Path) -> list[str]:
    """50 real reviews of mixed length."""
    from core.io.load import load_path
    from core.text.embed import embedding_text

    texts = (
        embedding_text(load_path(giftcards_path).frame)[:25]
        + embedding_text(load_path(vgames_path).frame)[:25]
    )
    assert len(texts) == 50
    return texts


@pytest.mark.slow
def test_int8_vectors_match_fp32_on_real_reviews(encoder, st_model, reviews: list[str]) -> None:
    expected = st_model.encode(reviews, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    got = encoder(reviews)
    assert got.shape == (50, 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    # Row-wise cosine also proves every vector lands in its own row.
    cosine = np.sum(got * expected, axis=1)
    assert cosine.mean() >= 0.98, f"mean cosine to fp32 {cosine.mean():.4f}"
    assert cosine.min() >= 0.95, f"worst review's cosine to fp32 {cosine.min():.4f}"


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [False, True], ids=["fp32", "int8"])
def test_a_review_gets_the_same_bits_in_any_batch_in_any_order(
    quantize: bool, st_model, tmp_path: Path, reviews: list[str]
) -> None:
    """What lets one machine, the API and Spark executors agree exactly: a text's vector does not depend on the
    texts embedded with it, their order, or the number of threads. Batched int8 passes moved a vector by up to 0.06
    per component (activations are quantised per batch), batched fp32 ones by ~1e-7."""
    from core.text.onnx_backend import OnnxEncoder

    encoder = OnnxEncoder(st_model, tmp_path, quantize=quantize, threads=2)
    together = encoder(reviews)
    alone = np.stack([encoder([text])[0] for text in reviews])
    order = np.random.default_rng(0).permutation(len(reviews))
    shuffled = encoder([reviews[i] for i in order])[np.argsort(order)]
    one_thread = OnnxEncoder(st_model, tmp_path, quantize=quantize, threads=1)(reviews[::-1])[::-1]
    for other in (alone, shuffled, one_thread):
        assert np.array_equal(together, other)


@pytest.mark.slow
def test_exported_model_is_reused_on_second_load(
    encoder, st_model, onnx_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.text.onnx_backend as backend

    assert encoder.model_path.is_file() and encoder.model_path.parent == onnx_dir
    mtime = encoder.model_path.stat().st_mtime_ns

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr(backend, "_export", no_export)
    again = backend.OnnxEncoder(st_model, onnx_dir)
    assert not again.exported
    assert again.model_path == encoder.model_path
    assert encoder.model_path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in onnx_dir.glob("*.onnx")) == [encoder.model_path.name]
    np.testing.assert_allclose(again(["Great card, easy to use."]), encoder(["Great card, easy to use."]))


@pytest.mark.slow
def test_changed_weights_change_the_fingerprint(st_model) -> None:
    import torch

    from core.text.onnx_backend import model_fingerprint

    edited = copy.deepcopy(st_model)
    with torch.no_grad():
        next(edited[0].model.parameters()).add_(1e-3)
    assert model_fingerprint(edited) != model_fingerprint(st_model)
    assert model_fingerprint(st_model) == model_fingerprint(st_model)


@pytest.mark.slow
def test_racing_loads_export_once(st_model, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from core.text.onnx_backend import OnnxEncoder

    results: list[OnnxEncoder] = []
    errors: list[BaseException] = []

    def load() -> None:
        try:
            results.append(OnnxEncoder(st_model, tmp_path))
        except BaseException as err:  # surfaced below; a thread would otherwise swallow it
            errors.append(err)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(r.exported for r in results) == [False, True]
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    assert not list(tmp_path.glob(".export-*")), "temporary export folders must not be left behind"
    a, b = (r(["Arrived late but works."]) for r in results)
    np.testing.assert_allclose(a, b)


@pytest.mark.slow
def test_int8_embedder_has_its_own_cache_key(onnx_dir: Path, encoder, tmp_path: Path) -> None:
    from core.text.embed import EmbeddingCache, SentenceEmbedder

    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    torch_embedder = SentenceEmbedder(backend="torch", cache=cache)
    int8_embedder = SentenceEmbedder(backend="onnx-int8", cache=cache, onnx_dir=onnx_dir)
    assert int8_embedder.model_key != torch_embedder.model_key

    texts = ["Works as described.", "The box was crushed and the card was missing."]
    torch_vectors = torch_embedder.encode(texts)
    # A torch vector in the shared cache must not be served to the int8 embedder: it computes its own.
    int8_vectors = int8_embedder.encode(texts)
    assert cache.count(torch_embedder.model_key) == 2
    assert cache.count(int8_embedder.model_key) == 2
    assert not np.array_equal(int8_vectors, torch_vectors)
    assert np.all(np.sum(int8_vectors * torch_vectors, axis=1) > 0.95)


def test_missing_onnxruntime_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.text.onnx_backend import OnnxEncoder

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(WorkbenchError, match="install.*onnxruntime"):
        OnnxEncoder(object(), tmp_path)


@pytest.fixture(scope="module")
def int8_model(onnx_dir: Path, encoder, tmp_path_factory: pytest.TempPathFactory, subscription_path: Path):
    """A model trained with WORKBENCH_EMBEDDING_BACKEND=onnx-int8, and the embedder it was trained with."""
    from core.bundle import ModelBundle
    from core.io.load import load_path
    from core.text.embed import EmbeddingCache, SentenceEmbedder

    cache = EmbeddingCache(tmp_path_factory.mktemp("int8-train") / "train-cache.sqlite")
    trained_with = SentenceEmbedder(backend="onnx-int8", onnx_dir=onnx_dir, cache=cache)
    bundle = ModelBundle.fit(load_path(subscription_path).frame.head(120), trained_with, detectors=("knn",),
                             project=False)
    assert bundle.meta["embedding_model"].endswith("|onnx-int8")
    return bundle, trained_with


@pytest.mark.slow
def test_a_model_trained_on_int8_vectors_is_served_with_int8(onnx_dir: Path, int8_model, tmp_path: Path) -> None:
    """Trained with WORKBENCH_EMBEDDING_BACKEND=onnx-int8, served by an API left at the default backend: the API
    embeds with int8 (the model's own vectors), and scores as the training embedder would."""
    from types import SimpleNamespace

    from api.serving import ServedModel, score_jobs
    from core.errors import ParameterError
    from core.io.load import load_records
    from core.pipeline import Workspace
    from core.settings import Settings
    from core.text.embed import SentenceEmbedder

    bundle, trained_with = int8_model
    settings = Settings(home=tmp_path / "home", onnx_dir=onnx_dir)  # embedding_backend: the default, torch
    ws = Workspace.open(settings)
    version = SimpleNamespace(version="1", aliases=["champion"])
    ws.registry = lambda: SimpleNamespace(name="m", champion_version=lambda: "1")  # type: ignore[method-assign]
    ws.model = lambda alias="champion": (bundle, version)  # type: ignore[method-assign]

    loaded = ServedModel(ws).refresh()
    assert loaded is not None and loaded.embedder.backend == "onnx-int8"  # type: ignore[attr-defined]
    review = {"text": "The tea sampler was stale and the box arrived late.", "rating": 2}
    ((served,),) = score_jobs(loaded, loaded.embedder, [[review]])
    expected = bundle.score(load_records([review]), trained_with).frame
    assert served.score == pytest.approx(float(expected["score"].iloc[0]))
    # What the API did before choosing by the model: the configured backend's fp32 vectors, refused by the
    # model at every request (before anything is embedded, so this embedder is never loaded).
    with pytest.raises(ParameterError, match="onnx-int8"):
        bundle.score(load_records([review]), SentenceEmbedder(backend="onnx", onnx_dir=onnx_dir))


@pytest.mark.slow
def test_the_workspace_scores_an_int8_model_with_int8_whatever_its_configured_backend(
    onnx_dir: Path, int8_model, tmp_path: Path, giftcards_path: Path
) -> None:
    """`workbench score`, the DAG and Spark's driver pick the model's own vectors, as the API does; a model of
    another embedding model is refused in one line that says what to do."""
    from core.io.load import load_path
    from core.pipeline import Workspace
    from core.settings import Settings
    from core.text.embed import EncoderMismatchError

    bundle, trained_with = int8_model
    ws = Workspace.open(Settings(home=tmp_path / "home", onnx_dir=onnx_dir))  # the default backend
    assert ws.embedder().model_key != bundle.embedding_key

    frame = load_path(giftcards_path).frame.head(40)
    scores = ws.score_with(bundle, "1", frame)
    expected = bundle.score(frame, trained_with)
    assert scores.frame["score"].tolist() == expected.frame["score"].tolist()
    assert ws.embedder_for(bundle).model_key == bundle.embedding_key

    stranger = copy.copy(bundle)
    stranger.outlier = copy.copy(bundle.outlier)
    stranger.outlier.embedding_model_ = "someone/else-model|fp32"
    with pytest.raises(EncoderMismatchError, match="WORKBENCH_EMBEDDING_MODEL"):
        ws.embedder_for(stranger)
