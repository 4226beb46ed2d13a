"""What changed: clusters over both batches, new topics listed first with their terms and examples."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ParameterError
from core.shift.clusters import class_tfidf_terms, cluster_shift, default_n_clusters


def _blob(rng: np.random.Generator, n: int, axis: int, dim: int = 24) -> np.ndarray:
    x = rng.normal(scale=0.3, size=(n, dim))
    x[:, axis] += 3.0
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_a_new_topic_in_the_current_batch_is_listed_first_with_its_terms() -> None:
    rng = np.random.default_rng(0)
    ref_emb = np.vstack([_blob(rng, 150, 0), _blob(rng, 150, 1)])
    ref_text = ["soap smells fresh lather"] * 150 + ["shampoo hair shiny"] * 150
    cur_emb = np.vstack([_blob(rng, 100, 0), _blob(rng, 100, 1), _blob(rng, 60, 2)])
    cur_text = ["soap smells fresh lather"] * 100 + ["shampoo hair shiny"] * 100 + ["gift card code redeemed"] * 60
    clusters, labels = cluster_shift(reference_embeddings=ref_emb, current_embeddings=cur_emb,
                                     reference_texts=ref_text, current_texts=cur_text, n_clusters=3)
    first = clusters[0]
    assert first.status == "new"
    assert first.share_reference == 0 and first.share_current == pytest.approx(60 / 260)
    assert set(first.top_terms[:3]) <= {"gift", "card", "code", "redeemed"}
    assert first.examples and all("gift card" in e for e in first.examples)
    assert {c.status for c in clusters[1:]} <= {"stable", "shrunk"}
    assert sum(c.share_current for c in clusters) == pytest.approx(1.0)
    assert len(labels) == len(cur_emb) and set(labels[200:]) == {first.id}


def test_class_tfidf_prefers_terms_specific_to_a_cluster() -> None:
    terms = class_tfidf_terms(["great soap great smell", "great card great gift"], n_terms=2)
    assert "great" not in terms[0][:1] and terms[0][0] in {"soap", "smell"}
    assert terms[1][0] in {"card", "gift"}
    assert class_tfidf_terms(["the and", ""]) == [[], []]


def test_default_cluster_count_grows_slowly_and_texts_must_align() -> None:
    assert default_n_clusters(20) == 2 and default_n_clusters(100_000) == 12
    rng = np.random.default_rng(1)
    with pytest.raises(ParameterError, match="aligned"):
        cluster_shift(reference_embeddings=_blob(rng, 10, 0), current_embeddings=_blob(rng, 10, 0),
                      reference_texts=["a"] * 9, current_texts=["b"] * 10)
