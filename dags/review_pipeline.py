"""Retrain on each new review batch: pick up -> validate + store -> embed -> train a challenger ->
evaluate on labels -> shift report against the champion's reference -> promote when the rule passes -> archive.

Every task calls one function of ``core.orchestration`` in the workbench's own interpreter (torch, MLflow and
the core package live there, not in Airflow's venv): ``WORKBENCH_PYTHON`` names it, default
``<repo>/.venv/bin/python``. Tasks pass only small values (object keys, batch names, versions, a few
metrics); data stays in the workspace storage (a local folder by default, MinIO in the full stack), chosen
by the same ``WORKBENCH_*`` environment the rest of the workbench reads.

Drop a review file into ``incoming/`` of the workspace storage to trigger the work (the DAG polls hourly,
one run at a time; trigger it by hand for an immediate run).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

from airflow.sdk import Param, dag, task

REPO = Path(__file__).resolve().parents[1]
WORKBENCH_PYTHON = os.environ.get("WORKBENCH_PYTHON") or str(REPO / ".venv" / "bin" / "python")


def _load_defaults() -> ModuleType:
    """``core/defaults.py`` (standard library only), loaded by path: the workbench package is not installed in
    Airflow's interpreter, and the DAG's parameters must default to what every other entry point trains."""
    name = "_workbench_defaults"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "core" / "defaults.py")
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {REPO / 'core' / 'defaults.py'}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


DEFAULTS = _load_defaults()

DEFAULT_ARGS = {
    "owner": "workbench",
    "retries": int(os.environ.get("WORKBENCH_DAG_RETRIES", "2")),
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=2),
}


@dag(
    dag_id="review_pipeline",
    description="Retrain the review outlier model on each new batch and promote it when the rule passes.",
    schedule=os.environ.get("WORKBENCH_DAG_SCHEDULE", "@hourly"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs must not pick up the same file
    default_args=DEFAULT_ARGS,
    render_template_as_native_obj=True,  # params reach the tasks as bool / int / dict, not strings
    tags=["workbench"],
    params={
        "incoming_prefix": Param("incoming/", type="string", description="Storage prefix polled for new files."),
        "max_quarantine_share": Param(0.2, type="number", minimum=0, maximum=1,
                                      description="Refuse a file when more of its rows are quarantined."),
        "detectors": Param(",".join(DEFAULTS.DEFAULT_DETECTORS), type="string",
                           description="Detectors, comma-separated."),
        "project": Param(DEFAULTS.DEFAULT_PROJECT, type="boolean",
                         description="Fit the 2-D map (UMAP); off is faster."),
        "use_labels": Param(DEFAULTS.DEFAULT_USE_LABELS, type="boolean",
                            description="Learn from stored labels while training."),
        "n_permutations": Param(1000, type="integer", minimum=100, description="Permutations of the shift tests."),
        "shift_engine": Param(
            os.environ.get("WORKBENCH_DAG_SHIFT_ENGINE", "local"), type="string", enum=["local", "spark"],
            description="Where the shift report is computed: local (in the task) or spark (WORKBENCH_SPARK_MASTER; "
                        "per-feature and novelty tests over every row)."),
        "promotion_rule": Param(
            {"metric": "average_precision", "max_drop": 0.0, "min_labels": 10, "without_labels": True,
             "block_on_drift": False},
            type="object",
            description="core.orchestration.PromotionRule fields: promote when the label metric does not drop "
                        "by more than max_drop (and, with block_on_drift, when the batch did not drift).",
        ),
    },
)
def review_pipeline():
    # Each task body runs in WORKBENCH_PYTHON (Airflow is not installed there) and calls one core function.
    @task.external_python(python=WORKBENCH_PYTHON, expect_airflow=False)
    def pick_new_batch(prefix):
        from core.orchestration import pick_new_batch

        return pick_new_batch(prefix)

    @task.short_circuit
    def has_new_batch(key):
        return key is not None

    @task.external_python(python=WORKBENCH_PYTHON, expect_airflow=False)
    def ingest_batch(key, max_quarantine_share):
        from core.orchestration import ingest_batch

        return ingest_batch(key, max_quarantine_share=max_quarantine_share)

    @task.external_python(python=WORKBENCH_PYTHON, expect_airflow=False)
    def embed_batch(batch):
        from core.orchestration import embed_batch

        return embed_batch(batch)

    @task.external_python(python=WORKBENCH_PYTHON, expect_airflow=False, multiple_outputs=True)
    def train_challenger(batch, detectors, project, use_labels):
        from core.orchestration import train_challenger

        return train_challenger(batch, detectors=detectors, project=project, use_labels=use_labels)

    @task.external_python(python=WORKBENCH_PYTHON, expect_airflow=False)
    def evaluate_on_labels(challenger, champion):
        from core.orchestration import evaluate_on_labels

        return evaluate_on_labels(challenger, champion)

    @task.external_python(python=WORKBENCH_PYTHON, expect_airflow=False)
    def shift_against_champion(batch, champion, n_permutations, engine):
        from core.orchestration import shift_against_champion

        return shift_against_champion(batch, champion, n_permutations=n_permutations, engine=engine)

    @task.external_python(python=WORKBENCH_PYTHON, expect_airflow=False)
    def promote_if_rule_passes(challenger, champion, evaluation, shift, rule):
        from core.orchestration import promote_if_rule_passes

        return promote_if_rule_passes(challenger, champion, evaluation, shift, rule)

    @task.external_python(python=WORKBENCH_PYTHON, expect_airflow=False)
    def archive_batch(key, summary):
        from core.orchestration import archive_batch

        return archive_batch(key, summary=summary)

    key = pick_new_batch("{{ params.incoming_prefix }}")
    batch = ingest_batch(key, "{{ params.max_quarantine_share }}")
    has_new_batch(key) >> batch
    embedded = embed_batch(batch)
    trained = train_challenger(batch, "{{ params.detectors }}", "{{ params.project }}", "{{ params.use_labels }}")
    embedded >> trained
    champion = trained[DEFAULTS.CHAMPION]  # the champion before this training (see train_challenger)
    evaluation = evaluate_on_labels(trained["version"], champion)
    shift = shift_against_champion(batch, champion, "{{ params.n_permutations }}", "{{ params.shift_engine }}")
    decision = promote_if_rule_passes(trained["version"], champion, evaluation, shift,
                                      "{{ params.promotion_rule }}")
    archive_batch(key, decision)


dag = review_pipeline()

if __name__ == "__main__":  # `python dags/review_pipeline.py` runs it once, here, without a scheduler
    dag.test()
