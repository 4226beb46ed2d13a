"""The Airflow DAG, in Airflow's own venv (.venv-airflow, made by scripts/airflow-venv.sh).

Import check: the DAG loads without errors, with the expected tasks, order and retries, and every task only
calls `core.orchestration`. End to end: `dag.test()` on the embedded defaults (a temporary WORKBENCH_HOME, a
sqlite Airflow database) picks up a real batch from ``incoming/``, trains a challenger, writes the shift
report and applies the promotion rule, with each task running in the workbench's interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"

EXPECTED_UPSTREAM = {
    "pick_new_batch": set(),
    "has_new_batch": {"pick_new_batch"},
    "ingest_batch": {"pick_new_batch", "has_new_batch"},
    "embed_batch": {"ingest_batch"},
    "train_challenger": {"ingest_batch", "embed_batch"},
    "evaluate_on_labels": {"train_challenger"},
    "shift_against_champion": {"ingest_batch", "train_challenger"},
    "promote_if_rule_passes": {"train_challenger", "evaluate_on_labels", "shift_against_champion"},
    "archive_batch": {"pick_new_batch", "promote_if_rule_passes"},
}


@pytest.fixture(scope="module")
def airflow_python() -> Path:
    if not AIRFLOW_PYTHON.exists():
        pytest.fail(f"Airflow's venv is missing ({AIRFLOW_PYTHON}); create it with `bash scripts/airflow-venv.sh`")
    return AIRFLOW_PYTHON


def _airflow_env(airflow_home: Path, workbench_home: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "WORKBENCH_", "MLFLOW_"))}
    env.update({
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "WORKBENCH_PYTHON": sys.executable,
        "WORKBENCH_DAG_RETRIES": "0",  # a failure should fail the test now, not after retry delays
        "HF_HUB_OFFLINE": "1",
        "PYTHONWARNINGS": "ignore",
    })
    if workbench_home is not None:
        env["WORKBENCH_HOME"] = str(workbench_home)
    return env


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args[:3])} ... exited {result.returncode}\n{result.stdout[-6000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


INSPECT = textwrap.dedent("""
    import inspect, json
    from airflow.dag_processing.dagbag import DagBag
    bag = DagBag(dag_folder={dags!r})
    dag = bag.dags.get("review_pipeline")
    out = {{"errors": {{k: str(v) for k, v in bag.import_errors.items()}}, "tasks": {{}}}}
    for t in (dag.tasks if dag else []):
        fn = getattr(t, "python_callable", None)
        out["tasks"][t.task_id] = {{
            "upstream": sorted(t.upstream_task_ids), "retries": t.retries, "operator": type(t).__name__,
            "python": getattr(t, "python", None), "source": inspect.getsource(fn) if fn else "",
        }}
    out["params"] = dict(dag.params) if dag else {{}}
    out["max_active_runs"] = dag.max_active_runs if dag else None
    print("RESULT " + json.dumps(out, default=str))
""")


def test_dag_imports_with_expected_tasks(airflow_python: Path, tmp_path: Path) -> None:
    env = _airflow_env(tmp_path / "airflow")
    result = _run([str(airflow_python), "-c", INSPECT.format(dags=str(REPO / "dags"))], env, tmp_path, 120)
    found = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert found["errors"] == {}
    tasks = found["tasks"]
    assert {name: set(t["upstream"]) for name, t in tasks.items()} == EXPECTED_UPSTREAM
    assert found["max_active_runs"] == 1
    for name, t in tasks.items():
        if name == "has_new_batch":
            continue
        # Each task runs in the workbench interpreter and calls the one core function of its name.
        assert t["python"] == sys.executable
        assert f"from core.orchestration import {name}" in t["source"]
        assert t["retries"] == 0  # WORKBENCH_DAG_RETRIES=0 here; the default is 2
    assert {"detectors", "project", "promotion_rule", "n_permutations", "shift_engine"} <= set(found["params"])


def test_dag_retries_by_default(airflow_python: Path, tmp_path: Path) -> None:
    env = _airflow_env(tmp_path / "airflow")
    env.pop("WORKBENCH_DAG_RETRIES")
    result = _run([str(airflow_python), "-c", INSPECT.format(dags=str(REPO / "dags"))], env, tmp_path, 120)
    found = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert all(t["retries"] == 2 for t in found["tasks"].values())


RUN_DAG = textwrap.dedent("""
    import json
    from airflow.dag_processing.dagbag import DagBag
    dag = DagBag(dag_folder={dags!r}).dags["review_pipeline"]
    run = dag.test(run_conf={conf!r})
    states = {{ti.task_id: str(ti.state) for ti in run.get_task_instances()}} if hasattr(run, "get_task_instances") else {{}}
    print("RESULT " + json.dumps({{"state": str(run.state), "tasks": states}}))
""")


@pytest.fixture()
def prepared_home(tmp_path: Path, subscription_path: Path, vgames_path: Path, embedder) -> Path:
    """A workspace with a champion trained on Subscription Box reviews, 16 labels and a Video Games batch
    (with 6 off-topic Subscription Box reviews planted in it) waiting under incoming/."""
    from core import pipeline
    from core.pipeline import Workspace
    from core.settings import Settings
    from tests.seeding import seed_pipeline

    home = tmp_path / "home"
    settings = Settings(home=home, tracking_uri=None)
    undo = pipeline.share_embedder(settings, embedder)  # the session's loaded model, for the champion only
    try:
        seed_pipeline(Workspace.open(settings), tmp_path, subscription_path, vgames_path, reference_rows=150,
                      games_rows=144, planted_from=400, incoming_name="2026-11-27-games.csv")
    finally:
        undo()
    return home


@pytest.mark.slow
def test_dag_runs_end_to_end(airflow_python: Path, prepared_home: Path, tmp_path: Path) -> None:
    from core.pipeline import Workspace
    from core.settings import Settings

    airflow_home = tmp_path / "airflow"
    env = _airflow_env(airflow_home, prepared_home)
    _run([str(airflow_python), "-m", "airflow", "db", "migrate"], env, tmp_path, 180)
    conf = {"detectors": "knn,lof", "project": False, "n_permutations": 200}
    result = _run([str(airflow_python), "-c", RUN_DAG.format(dags=str(REPO / "dags"), conf=conf)], env, tmp_path, 400)
    outcome = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert outcome["state"] == "success", result.stdout[-4000:] + result.stderr[-4000:]

    ws = Workspace.open(Settings(home=prepared_home, tracking_uri=None))
    # The batch was validated and stored, the file archived with the run's decision next to it.
    assert ws.batches.info("2026-11-27-games").rows == 150
    assert not ws.storage.list("incoming/")
    summary = json.loads(ws.storage.get_bytes("processed/2026-11-27-games.csv.run.json"))
    assert summary["reason"]
    # A challenger was registered, and the champion moved to it exactly when the rule said so.
    versions = {v.version: v for v in ws.registry().versions()}
    assert set(versions) == {"1", "2"} and "challenger" in versions["2"].aliases
    assert ws.registry().champion_version() == ("2" if summary["promoted"] else "1")
    assert "average_precision" in summary["reason"]  # 16 labels >= min_labels: the metric decided
    # The shift report against the champion's (Subscription Box) reference flags the Video Games batch.
    report = json.loads(ws.storage.get_bytes("reports/2026-11-27-games/shift.json"))
    assert report["drift"] is True
    assert ws.storage.get_bytes("reports/2026-11-27-games/shift.html").startswith(b"<!")


@pytest.mark.slow
def test_dag_without_new_batch_skips_the_rest(airflow_python: Path, tmp_path: Path) -> None:
    airflow_home = tmp_path / "airflow"
    env = _airflow_env(airflow_home, tmp_path / "empty-home")
    _run([str(airflow_python), "-m", "airflow", "db", "migrate"], env, tmp_path, 180)
    result = _run([str(airflow_python), "-c", RUN_DAG.format(dags=str(REPO / "dags"), conf={})], env, tmp_path, 200)
    outcome = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert outcome["state"] == "success"
    if outcome["tasks"]:
        assert outcome["tasks"]["train_challenger"] == "skipped"
