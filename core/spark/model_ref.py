"""Which model the executors score with, and loading it once per Python worker.

The driver pins the reference before any task runs: ``models:/NAME@champion`` is resolved to its version
(``models:/NAME/7``), so an alias moved during a long job cannot mix two models in one output. Each Python
worker loads that pyfunc with MLflow once (Spark reuses workers across tasks) and keeps it in a module-level
cache, with an embedder of its own: the fastest backend with the model's vectors (`FASTEST_EQUIVALENT`: ONNX fp32
for a torch-trained model), one intra-op thread (Spark already runs one worker per core), no embedding cache
(a local SQLite file is no place for many writers on many machines).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import ModelUnavailableError, ParameterError

if TYPE_CHECKING:
    from core.bundle import ModelBundle
    from core.settings import Settings
    from core.text.embed import SentenceEmbedder


@dataclass(frozen=True)
class ModelRef:
    """A model the executors can load: a registry URI pinned to a version, or a bundle folder.

    Attributes
    ----------
    uri
        ``models:/NAME/VERSION`` or a local (shared) folder holding a saved `core.bundle.ModelBundle`.
    tracking_uri
        The MLflow tracking/registry store (None for a folder).
    version
        The registry version (None for a folder).
    embedding_model, embedding_backend, onnx_dir
        The workspace's embedding settings, which the executors reproduce.
    """

    uri: str
    tracking_uri: str | None
    version: str | None
    embedding_model: str
    embedding_backend: str
    onnx_dir: str | None = None

    @property
    def is_folder(self) -> bool:
        return not self.uri.startswith("models:/")


@dataclass(frozen=True)
class EmbeddingRef:
    """The workspace's embedding settings, which executors reproduce where no model is involved (shift tests
    compare two datasets in the workspace's vector space, as ``workbench shift`` does on one machine)."""

    embedding_model: str
    embedding_backend: str
    onnx_dir: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddingRef:
        return cls(embedding_model=settings.embedding_model, embedding_backend=settings.embedding_backend,
                   onnx_dir=str(settings.onnx_dir) if settings.onnx_dir else None)


def resolve_model(model: str, settings: Settings) -> ModelRef:
    """Pin `model` (an alias, a version number, ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or a bundle
    folder) to what every executor will load.

    Raises
    ------
    ModelUnavailableError
        No such alias, version or folder.
    """
    onnx_dir = str(settings.onnx_dir) if settings.onnx_dir else None
    folder = Path(model)
    if not model.startswith("models:/") and folder.is_dir():
        if not (folder / "bundle.json").is_file():
            raise ModelUnavailableError(f"{folder} holds no saved model bundle (bundle.json missing)")
        return ModelRef(uri=str(folder.resolve()), tracking_uri=None, version=None,
                        embedding_model=settings.embedding_model, embedding_backend=settings.embedding_backend,
                        onnx_dir=onnx_dir)
    from core.tracking import Registry

    registry = Registry(settings)
    name, ref = registry.name, model
    if model.startswith("models:/"):
        rest = model[len("models:/"):]
        name, _, ref = rest.partition("@") if "@" in rest else rest.partition("/")
        if not name or not ref:
            raise ParameterError(f"a model URI is models:/NAME@ALIAS or models:/NAME/VERSION, got {model!r}")
        if name != registry.name:
            raise ModelUnavailableError(
                f"{model} names model {name!r}; this workspace registers {registry.name!r} (WORKBENCH_REGISTERED_MODEL_NAME)")
    found = registry.version(ref)
    if found is None:
        raise ModelUnavailableError(f"no model with alias or version {ref!r} in {registry.uri}; "
                                    "train one with `workbench train --reference BATCH`")
    return ModelRef(uri=f"models:/{name}/{found.version}", tracking_uri=registry.uri, version=str(found.version),
                    embedding_model=settings.embedding_model, embedding_backend=settings.embedding_backend,
                    onnx_dir=onnx_dir)


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _bundle(ref: ModelRef) -> ModelBundle:
    return _load_bundle(ref)


@functools.lru_cache(maxsize=2)
def _embedder(ref: ModelRef) -> SentenceEmbedder:
    bundle = _bundle(ref)
    embedder = worker_embedder(ref)
    bundle.check_weights(embedder.weights_digest, f"model {ref.uri}")
    key = embedder.model_key
    if key != bundle.outlier.embedding_model_:
        raise ParameterError(f"{ref.uri} was fitted on {bundle.outlier.embedding_model_} embeddings; the executors "
                             f"embed with {key} (WORKBENCH_EMBEDDING_MODEL / WORKBENCH_EMBEDDING_BACKEND)")
    return embedder


def worker_bundle(ref: ModelRef) -> ModelBundle:
    """The model of this Python worker, loaded on first use and kept for the worker's life."""
    with _LOCK:
        return _bundle(ref)


def worker_model(ref: ModelRef) -> tuple[ModelBundle, SentenceEmbedder]:
    """The model and its embedder of this Python worker (the embedder only where reviews are embedded: loading
    it costs more than the model)."""
    with _LOCK:
        return _bundle(ref), _embedder(ref)


def _load_bundle(ref: ModelRef) -> ModelBundle:
    from core.bundle import ModelBundle

    if ref.is_folder:
        return ModelBundle.load(ref.uri)
    import mlflow
    import mlflow.pyfunc

    from core.tracking import _WEIGHTS_CHECKED_BY_CALLER

    assert ref.tracking_uri is not None  # a registry reference always carries its store
    mlflow.set_tracking_uri(ref.tracking_uri)
    mlflow.set_registry_uri(ref.tracking_uri)
    token = _WEIGHTS_CHECKED_BY_CALLER.set(True)  # checked below against the worker's own embedder
    try:
        wrapper: Any = mlflow.pyfunc.load_model(ref.uri).unwrap_python_model()
    finally:
        _WEIGHTS_CHECKED_BY_CALLER.reset(token)
    return wrapper.bundle


@functools.lru_cache(maxsize=2)
def _text_embedder(ref: EmbeddingRef) -> SentenceEmbedder:
    return worker_embedder(ref)


def worker_text_embedder(ref: EmbeddingRef) -> SentenceEmbedder:
    """The embedder of this Python worker for `ref`, loaded on first use and kept for the worker's life."""
    with _LOCK:
        return _text_embedder(ref)


def worker_embedder(ref: ModelRef | EmbeddingRef, threads: int = 1) -> SentenceEmbedder:
    """An embedder with the model's vectors on the fastest equivalent backend, `threads` intra-op threads."""
    from core.text.embed import FASTEST_EQUIVALENT, SentenceEmbedder

    backend = FASTEST_EQUIVALENT[ref.embedding_backend]
    embedder = SentenceEmbedder(model=ref.embedding_model, backend=backend, batch_size=32, cache=None,
                                onnx_dir=ref.onnx_dir, threads=threads)
    if not backend.startswith("onnx"):
        with contextlib.suppress(Exception):
            import torch

            torch.set_num_threads(threads)
    embedder._load()
    return embedder
