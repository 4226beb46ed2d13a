"""One set of training defaults (`core.defaults`) reaches `Workspace.train` from every entry point.

Each face is driven through its own entry point: ``workbench train`` (typer's runner), the Train page and the
Label page's retrain button (Streamlit's AppTest), and the DAG's task function with the DAG's own parameter
defaults. `Workspace.train` is replaced by a recorder (the real training is tested in test_tracking,
test_cli and test_ui_apptest); what is compared is every argument, with the real signature's defaults
applied, that defines the model.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.defaults import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_CONTAMINATION,
    DEFAULT_DETECTORS,
    DEFAULT_EMBED_FIELDS,
    DEFAULT_PROJECT,
    DEFAULT_TITLES,
    DEFAULT_USE_LABELS,
    TrainParameters,
    embed_fields_for,
)
from core.pipeline import TrainOutcome, Workspace

REPO = Path(__file__).resolve().parents[2]

#: What `workbench train --reference reference` trains, written out once more on purpose: the test must fail
#: when a default changes without anyone meaning it.
EXPECTED = {"reference": "reference", "detectors": ("knn", "lof", "mahalanobis", "iforest", "autoencoder"),
            "contamination": 0.05, "project": True, "use_labels": True, "titles": True}


def _fake_outcome(args: dict[str, Any]) -> TrainOutcome:
    """What a training returns, with the bundle meta `ModelBundle.fit` records for these arguments."""
    meta = {"detectors": list(args["detectors"]), "contamination": args["contamination"],
            "projection": args["project"], "embed_fields": list(embed_fields_for(args["titles"])),
            "reference_batch": args["reference"], "n_reference": 12, "signals": ["duplicates"]}
    record = SimpleNamespace(run_id="run-2", version="2", aliases=[CHALLENGER], model_uri="models:/review-outlier/2",
                             tracking_uri="sqlite:///mlflow.db")
    return TrainOutcome(record=record, bundle=SimpleNamespace(meta=meta), seconds=0.1)


@pytest.fixture()
def trainings(home: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A workspace with a stored ``reference`` batch and one label; every `Workspace.train` call is recorded
    (arguments bound to the real signature, its defaults applied) instead of run."""
    ws = Workspace.open()
    rows = [f"r{i},Title {i},text of review number {i} about a gift box,{1 + i % 5}" for i in range(12)]
    ws.ingest_bytes(("review_id,title,text,rating\n" + "\n".join(rows) + "\n").encode(), filename="reference.csv",
                    name="reference")
    ws.update_state(reference="reference", current="reference")
    ws.labels().add("r1", "outlier")

    calls: list[dict[str, Any]] = []
    signature = inspect.signature(Workspace.train)

    def train(self: Workspace, *args: Any, **kwargs: Any) -> TrainOutcome:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        found = {k: v for k, v in bound.arguments.items() if k not in ("self", "progress", "on_wait")}  # callbacks, not parameters
        found["reference"] = str(found["reference"])
        found["detectors"] = tuple(found["detectors"])
        if found["contamination"] is None:  # what Workspace.train does with None
            found["contamination"] = self.settings.contamination
        calls.append(found)
        return _fake_outcome(found)

    monkeypatch.setattr(Workspace, "train", train)
    # The DAG's task asks the registry for the champion first; no MLflow store is needed for that here.
    monkeypatch.setattr(Workspace, "registry", lambda self: SimpleNamespace(champion_version=lambda: "1"))
    return calls


def _train_with_cli() -> None:
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["train", "--reference", "reference", "--json"])
    assert result.exit_code == 0, result.output


def _apptest(page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages" / f"{page}.py"), default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _train_on_train_page(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench import cached

    monkeypatch.setattr(cached, "versions", lambda: [])  # nothing registered yet
    at = _apptest("train")
    at.button[0].click().run()  # "Train and register", every widget at its default
    assert not at.exception, [e.value for e in at.exception]


def _retrain_on_label_page(monkeypatch: pytest.MonkeyPatch, champion_meta: dict[str, Any]) -> None:
    """The Label page with a champion whose bundle meta is `champion_meta`; click "Retrain with labels"."""
    from core.tracking import VersionInfo
    from workbench import cached

    champion = VersionInfo(version="1", aliases=[CHAMPION], run_id="run-1", created="", metrics={}, tags={})
    frame = Workspace.open().batches.frame("reference")
    scored = frame.assign(batch="reference", score=0.5, is_outlier=False, reason="typical", category="Gift Cards")
    monkeypatch.setattr(cached, "versions", lambda: [champion])
    monkeypatch.setattr(cached, "map_frame", lambda names, version: scored)
    monkeypatch.setattr(cached, "model", lambda version: SimpleNamespace(meta=champion_meta))
    at = _apptest("label")
    next(b for b in at.button if b.label == "Retrain with labels").click().run()
    assert not at.exception, [e.value for e in at.exception]


def _load_dag(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The DAG file's ``@dag`` arguments, read with a stand-in for ``airflow.sdk`` (Airflow lives in its own
    venv; test_dag parses the DAG with the real one)."""
    sdk = types.ModuleType("airflow.sdk")

    class Param:
        def __init__(self, default: Any = None, **schema: Any) -> None:
            self.default, self.schema = default, schema

    sdk.Param = Param  # type: ignore[attr-defined]
    sdk.dag = lambda **kwargs: (lambda body: (lambda: kwargs))  # type: ignore[attr-defined]
    sdk.task = SimpleNamespace()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "airflow", types.ModuleType("airflow"))
    monkeypatch.setitem(sys.modules, "airflow.sdk", sdk)
    spec = importlib.util.spec_from_file_location("_review_pipeline_under_test", REPO / "dags" / "review_pipeline.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("_workbench_defaults", None)
    return module.dag


def test_every_entry_point_trains_the_same_default_model(
    trainings: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import orchestration

    _train_with_cli()
    _train_on_train_page(monkeypatch)
    # The Label page retrains its champion: here the model `workbench train` just made.
    _retrain_on_label_page(monkeypatch, _fake_outcome(trainings[0]).bundle.meta)
    params = {name: p.default for name, p in _load_dag(monkeypatch)["params"].items()}
    trained = orchestration.train_challenger("reference", detectors=params["detectors"], project=params["project"],
                                             use_labels=params["use_labels"])
    assert trained == {"version": "2", CHAMPION: "1", "run_id": "run-2"}
    orchestration.train_challenger("reference")  # the task function's own defaults

    faces = ["workbench train", "Train page", "Label page retrain", "DAG (its parameters)", "train_challenger()"]
    assert len(trainings) == len(faces)
    for face, found in zip(faces, trainings, strict=True):
        assert found == EXPECTED, face


def test_label_page_retrains_its_champion_with_the_champions_own_parameters(
    trainings: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = {"detectors": ["knn", "lof"], "contamination": 0.1, "projection": False, "embed_fields": ["text"],
            "reference_batch": "reference"}
    _retrain_on_label_page(monkeypatch, meta)
    assert trainings == [{"reference": "reference", "detectors": ("knn", "lof"), "contamination": 0.1,
                          "project": False, "use_labels": True, "titles": False}]


def test_a_champion_that_records_no_parameters_is_retrained_with_the_defaults(
    trainings: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _retrain_on_label_page(monkeypatch, {"reference_batch": "reference"})
    assert trainings == [EXPECTED]


def test_the_defaults_are_the_ones_every_layer_declares() -> None:
    from core.bundle import ModelBundle
    from core.detect.detectors import DETECTORS
    from core.settings import Settings

    assert set(DEFAULT_DETECTORS) <= set(DETECTORS)
    settings = Settings(_env_file=None)
    assert settings.contamination == DEFAULT_CONTAMINATION and settings.embed_fields == DEFAULT_EMBED_FIELDS
    fit = inspect.signature(ModelBundle.fit).parameters
    assert fit["detectors"].default == DEFAULT_DETECTORS and fit["contamination"].default == DEFAULT_CONTAMINATION
    assert fit["project"].default == DEFAULT_PROJECT and fit["embed_fields"].default == DEFAULT_EMBED_FIELDS
    train = inspect.signature(Workspace.train).parameters
    assert train["detectors"].default == DEFAULT_DETECTORS and train["project"].default == DEFAULT_PROJECT
    assert train["use_labels"].default == DEFAULT_USE_LABELS and train["titles"].default == DEFAULT_TITLES
    assert {k: v for k, v in TrainParameters().as_kwargs().items() if k != "contamination"} == {
        k: v for k, v in EXPECTED.items() if k not in ("reference", "contamination")}


def test_parameters_read_back_from_a_fitted_bundle(hashing_embedder) -> None:
    """`TrainParameters.of_model` reads the keys `ModelBundle.fit` really writes."""
    from core.bundle import ModelBundle
    from core.io.load import load_records

    words = ["card", "gift", "great", "easy", "fast", "love", "perfect", "nice", "birthday", "present"]
    reference = load_records([{"review_id": f"r{i}", "text": " ".join(words[(i + j) % 10] for j in range(6)),
                               "rating": 5} for i in range(80)], name="reference")
    bundle = ModelBundle.fit(reference, hashing_embedder, detectors=("knn",), contamination=0.1, project=False,
                             reference_batch="reference", embed_fields=("text",))
    assert TrainParameters.of_model(bundle.meta) == TrainParameters(
        detectors=("knn",), contamination=0.1, project=False, use_labels=True, titles=False)


# Spelled once --------------------------------------------------------------------------------------------
def _python_files(*, exclude: tuple[str, ...]) -> list[Path]:
    files = []
    for path in sorted(REPO.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if any(p.startswith(".") or p.endswith(".egg-info") for p in parts) or parts[0] in exclude:
            continue
        files.append(path)
    return files


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_alias_names_are_spelled_only_in_core_defaults() -> None:
    """Outside tests and docs, ``"champion"`` / ``"challenger"`` are written only as `core.defaults` constants
    (prose in docstrings and messages is fine: only a string that *is* the alias counts)."""
    spelled = [f"{path.relative_to(REPO)}:{line}: {value!r}"
               for path in _python_files(exclude=("tests", "docs"))
               if path.relative_to(REPO) != Path("core/defaults.py")
               for line, value in _string_constants(path) if value in (CHAMPION, CHALLENGER)]
    assert not spelled, "use core.defaults.CHAMPION / CHALLENGER:\n" + "\n".join(spelled)


def test_no_face_spells_its_own_detector_set() -> None:
    """A set of two or more detector names (a tuple/list literal or ``"knn,lof"``) is written only in
    `core.defaults` (the default), `core.detect.detectors` (the registry) and `core.detect.model` (the
    headline's novelty members). Benchmark scripts under bench/ choose the configuration they measure and are
    not checked."""
    from core.detect.detectors import DETECTORS

    allowed = {Path("core/defaults.py"), Path("core/detect/detectors.py"), Path("core/detect/model.py")}

    def names_a_set(node: ast.AST) -> bool:
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            return len(node.elts) >= 2 and len(values) == len(node.elts) and set(values) <= set(DETECTORS)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "," in node.value:
            return set(node.value.split(",")) <= set(DETECTORS)
        return False

    spelled = []
    for path in _python_files(exclude=("tests", "docs", "bench")):
        if path.relative_to(REPO) in allowed:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        spelled += [f"{path.relative_to(REPO)}:{node.lineno}" for node in ast.walk(tree) if names_a_set(node)]
    assert not spelled, "use core.defaults.DEFAULT_DETECTORS:\n" + "\n".join(spelled)


def test_the_dag_reads_the_defaults_without_the_workbench_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow's interpreter has no workbench package: core/defaults.py must import the standard library only."""
    tree = ast.parse((REPO / "core" / "defaults.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported
    params = _load_dag(monkeypatch)["params"]
    assert params["detectors"].default == ",".join(DEFAULT_DETECTORS)
    assert (params["project"].default, params["use_labels"].default) == (DEFAULT_PROJECT, DEFAULT_USE_LABELS)
