"""The real embedding model, loaded offline, and its persistent cache shared between processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import ParameterError
from core.io.load import load_path
from core.text.embed import EmbeddingCache, SentenceEmbedder, embedding_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample_texts(vgames_path: Path) -> list[str]:
    return embedding_text(load_path(vgames_path).frame.head(40))


def test_real_model_gives_unit_vectors_with_meaning(embedder: SentenceEmbedder) -> None:
    vectors = embedder.encode(["The battery died after two days.", "Battery life is terrible, it died quickly.",
                               "Lovely scarf, soft wool, great colour."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > 0.6 > unrelated


def test_embedding_is_deterministic_and_cache_returns_same_vectors(
    embedder: SentenceEmbedder, sample_texts: list[str], tmp_path: Path
) -> None:
    uncached = SentenceEmbedder(cache=None)
    uncached._encoder, uncached._dim = embedder._encoder, embedder._dim  # same loaded model, no cache
    direct = uncached.encode(sample_texts)
    first = embedder.encode(sample_texts)
    second = embedder.encode(sample_texts)
    assert np.allclose(direct, first, atol=1e-5)
    assert np.array_equal(first, second)


def test_progress_is_reported(embedder: SentenceEmbedder) -> None:
    calls: list[tuple[int, int]] = []
    embedder.encode([f"progress check review number {i}" for i in range(5)], progress=lambda d, t: calls.append((d, t)))
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)


def test_cache_is_shared_between_processes(tmp_path: Path, sample_texts: list[str]) -> None:
    cache_path = tmp_path / "embeddings.sqlite"
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("\n".join(t.replace("\n", " ") for t in sample_texts[:10]))
    script = textwrap.dedent(
        f"""
        from core.text.embed import SentenceEmbedder, EmbeddingCache
        texts = open({str(texts_file)!r}).read().split("\\n")
        SentenceEmbedder(cache=EmbeddingCache({str(cache_path)!r})).encode(texts)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[3])
    cache = EmbeddingCache(cache_path)
    assert cache.count("sentence-transformers/all-MiniLM-L6-v2|torch") == 10

    class NoModel(SentenceEmbedder):
        def _load(self) -> None:  # a cache hit must not need the model beyond its dimension
            self._dim = 384
            self._encoder = lambda texts: (_ for _ in ()).throw(AssertionError("recomputed a cached text"))

    vectors = NoModel(cache=cache).encode(texts_file.read_text().split("\n"))
    assert vectors.shape == (10, 384)


def test_cache_stays_intact_while_processes_write_and_read_it_at_once(tmp_path: Path) -> None:
    # The workbench, the API and `workbench score` open one cache file at the same time.
    cache_path = tmp_path / "embeddings.sqlite"
    EmbeddingCache(cache_path)
    script = textwrap.dedent(
        f"""
        import sys, numpy as np
        from core.text.embed import EmbeddingCache
        me = int(sys.argv[1]); cache = EmbeddingCache({str(cache_path)!r}); rng = np.random.default_rng(me)
        for round in range(40):
            keys = [f"{{me}}-{{round}}-{{i}}".encode() for i in range(50)]
            cache.put_many("m", [(k, rng.random(8, dtype=np.float32)) for k in keys])
            assert len(cache.get_many("m", keys, 8)) == 50
            cache.get_many("m", [f"{{1 - me}}-{{round}}-{{i}}".encode() for i in range(50)], 8)
        """
    )
    workers = [subprocess.Popen([sys.executable, "-c", script, str(i)], cwd=Path(__file__).resolve().parents[3],
                                stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for worker in workers:
        _, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err
    with closing(sqlite3.connect(cache_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert EmbeddingCache(cache_path).count("m") == 2 * 40 * 50


def test_embedding_text_joins_title_and_text() -> None:
    frame = pd.DataFrame({"title": ["Great value", "Works!", None], "text": ["Cheap.", "Yes", "No title"]})
    assert embedding_text(frame) == ["Great value. Cheap.", "Works! Yes", "No title"]
    assert embedding_text(frame, ("text",)) == ["Cheap.", "Yes", "No title"]


def test_bad_backend_is_rejected() -> None:
    with pytest.raises(ParameterError, match="backend must be one of"):
        SentenceEmbedder(backend="gpu")


def test_a_cache_that_cannot_be_written_costs_speed_not_vectors(
    embedder: SentenceEmbedder, sample_texts: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")

    def disk_full(*_args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(cache, "put_many", disk_full)
    full = SentenceEmbedder(cache=cache)
    full._encoder, full._dim = embedder._encoder, embedder._dim  # the loaded model, a cache that cannot grow
    vectors = full.encode(sample_texts)
    assert np.allclose(vectors, embedder.encode(sample_texts), atol=1e-5)
    warnings = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert len(warnings) == 1 and "disk is full" in warnings[0]
