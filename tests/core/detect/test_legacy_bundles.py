"""Models saved when their classes lived at other module paths still load and score the same."""

from __future__ import annotations

import contextlib
import importlib
import pickle
import pickletools
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.detect.model import OutlierModel
from core.detect.supervised import LabelAwareScorer
from core.legacy_paths import MOVED_CLASSES, MOVED_MODULES, current_path, load_joblib
from tests.conftest import HashingEmbedder


def _moved() -> list[tuple[str, str, type]]:
    """(former module, name, class) of every class saved models may name by a former path."""
    found = [(old, name, getattr(importlib.import_module(new), name)) for (old, name), new in MOVED_CLASSES.items()]
    for old, new in MOVED_MODULES.items():
        module = importlib.import_module(new)
        for name in dir(module):
            cls = getattr(module, name)
            # Defined there, or re-exported (`__all__`) for saved models after the class moved on again.
            ours = cls.__module__.startswith(new) if isinstance(cls, type) else False
            exported = name in getattr(module, "__all__", ())
            if isinstance(cls, type) and (ours or exported) and (old, name) not in MOVED_CLASSES:
                found.append((old, name, cls))
    return found


@contextlib.contextmanager
def _former_paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pickle as an earlier version did: every moved class named by its former module path."""
    with monkeypatch.context() as m:
        for old, name, cls in _moved():
            if old not in sys.modules:
                m.setitem(sys.modules, old, types.ModuleType(old))
            m.setattr(sys.modules[old], name, cls, raising=False)
            m.setattr(cls, "__module__", old)
        yield


def _reviews(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = ["battery", "screen", "gift", "card", "fast", "slow", "great", "broken", "love", "return"]
    texts = [" ".join(rng.choice(words, size=12)) for _ in range(n)]
    return pd.DataFrame(
        {"review_id": [f"r{seed}-{i}" for i in range(n)], "text": texts, "rating": rng.integers(1, 6, size=n)}
    )


def test_every_former_path_maps_to_a_class_that_exists_now() -> None:
    for old, name in [*MOVED_CLASSES, *((m, "OutlierModel") for m in ("core.model",))]:
        module, same = current_path(old, name)
        assert same == name and hasattr(importlib.import_module(module), name), (old, name)
    assert current_path("core.features", "FeaturePipeline") == ("core.features", "FeaturePipeline")


def test_a_model_saved_under_the_former_module_paths_loads_and_scores_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = HashingEmbedder()
    model = OutlierModel(detectors=("knn", "mahalanobis"), random_state=0).fit(_reviews(120, 0), embedder)
    labelled = _reviews(30, 2)
    labels = pd.Series(["outlier" if i % 3 == 0 else "normal" for i in range(30)], index=labelled["review_id"])
    model.fit_labels(labelled, labels, embedder, force=True)  # the label-aware scorer is pickled too
    batch = _reviews(40, 1)
    expected = model.score(batch, embedder).scores

    with _former_paths(monkeypatch):
        model.save(tmp_path / "outlier")
        import joblib

        joblib.dump(model, tmp_path / "plain.joblib", compress=0)
    raw = (tmp_path / "plain.joblib").read_bytes()
    for old in (b"core.model", b"core.signals", b"core.calibration", b"core.detectors", b"core.labels"):
        assert old in raw
    assert OutlierModel.__module__ == "core.detect.model"

    loaded = OutlierModel.load(tmp_path / "outlier")
    assert type(loaded) is OutlierModel
    assert type(loaded.label_scorer_) is LabelAwareScorer
    assert loaded.label_metrics_ == model.label_metrics_
    pd.testing.assert_frame_equal(loaded.score(batch, embedder).scores, expected)


def test_a_pickle_whose_global_opcode_names_a_former_path_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scorer = LabelAwareScorer(C=0.5).fit(np.eye(4), np.array([1, 0, 0, 1]))
    with _former_paths(monkeypatch):
        data = pickle.dumps(scorer, protocol=2)  # protocol 2 names classes with GLOBAL "module name"
    globals_ = [arg for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"]
    assert "core.labels LabelAwareScorer" in globals_
    (tmp_path / "scorer.pkl").write_bytes(data)

    loaded = load_joblib(tmp_path / "scorer.pkl")
    assert type(loaded) is LabelAwareScorer
    np.testing.assert_allclose(loaded.predict_proba(np.eye(4)), scorer.predict_proba(np.eye(4)))
