"""The steps of the retraining pipeline, one function per orchestrator task.

The Airflow DAG in ``dags/review_pipeline.py`` calls exactly one of these per task and passes only small
values between them (object keys, batch names, version numbers, a few metrics), so every step can also be
run and tested without Airflow::

    key = pick_new_batch()                       # oldest object under incoming/ in the workspace storage
    batch = ingest_batch(key)                    # load + validate + store (Workspace.ingest_bytes)
    embed_batch(batch)                           # embeddings into the cache the training reads
    trained = train_challenger(batch)            # fit, track, register as challenger
    evaluation = evaluate_on_labels(trained["version"], trained["champion"])
    shift = shift_against_champion(batch, trained["champion"])
    decision = promote_if_rule_passes(trained["version"], trained["champion"], evaluation, shift)
    archive_batch(key)                           # incoming/ -> processed/

Each step opens the workspace from the environment (``WORKBENCH_*``, ``MLFLOW_TRACKING_URI``), so the same
code runs against the embedded default (local folder, sqlite) and the full stack (MinIO, MLflow server).
Steps are safe to retry: re-running one repeats its effect without corrupting what an earlier try wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from core.defaults import CHALLENGER, CHAMPION, DEFAULT_PROJECT, DEFAULT_USE_LABELS, parse_detectors
from core.errors import InputFileError, NotFoundError, ParameterError, SchemaError
from core.pipeline import Workspace
from core.settings import Settings

INCOMING = "incoming/"
PROCESSED = "processed/"
REJECTED = "rejected/"
REPORTS = "reports/"
#: Metrics the promotion rule can compare (measured on the stored labels, see `evaluate_on_labels`).
LABEL_METRICS = ("average_precision", "auroc", "precision_at_k")
_SUFFIXES = (".csv", ".tsv", ".tab", ".json", ".jsonl", ".ndjson", ".parquet", ".pq")


def _workspace(settings: Settings | None) -> Workspace:
    return Workspace.open(settings)


def _is_review_file(key: str) -> bool:
    name = PurePosixPath(key).name.lower()
    if name.startswith("."):
        return False
    name = name[:-3] if name.endswith(".gz") else name
    return name.endswith(_SUFFIXES)


def _detectors(value: str | Sequence[str] | None) -> tuple[str, ...]:
    out = parse_detectors(value)
    if not out:
        raise ParameterError(f"detectors must name at least one detector, got {value!r}")
    return out


# -- 1. pick up ------------------------------------------------------------------------------------------
def pick_new_batch(prefix: str = INCOMING, settings: Settings | None = None) -> str | None:
    """The storage key of the oldest-named review file waiting under `prefix`, or None when there is none.

    Files are taken in name order (name them ``2026-11-27-reviews.csv`` to get date order); a file leaves
    the prefix only when its run succeeded (`archive_batch`) or its content was refused (`ingest_batch`).
    """
    prefix = prefix if prefix.endswith("/") else f"{prefix}/"
    ws = _workspace(settings)
    waiting = [k for k in ws.storage.list(prefix) if _is_review_file(k)]
    return waiting[0] if waiting else None


# -- 2. validate + store ---------------------------------------------------------------------------------
def batch_name_for(key: str) -> str:
    """The batch name a waiting file is stored under: ``incoming/week-48.csv.gz`` -> ``week-48``."""
    from core.io.batches import batch_name_from

    return batch_name_from(PurePosixPath(key).name)


def ingest_batch(
    key: str, max_quarantine_share: float = 0.2, settings: Settings | None = None
) -> str:
    """Load, validate and store the file at `key` as a batch; return the batch name.

    A file that cannot be read, or whose share of quarantined rows exceeds `max_quarantine_share`, is moved
    to ``rejected/`` with a ``.reason.txt`` next to it and the step fails with that reason, so the next run
    moves on to the next file instead of failing on the same one forever.
    """
    if not 0 <= max_quarantine_share <= 1:
        raise ParameterError(f"max_quarantine_share must be in [0, 1], got {max_quarantine_share}")
    ws = _workspace(settings)
    rejected = REJECTED + key.removeprefix(INCOMING)
    if not ws.storage.exists(key):
        reason_key = f"{rejected}.reason.txt"
        if ws.storage.exists(reason_key):
            raise SchemaError(f"{key} was rejected earlier: {ws.storage.get_bytes(reason_key).decode()}")
        raise NotFoundError(f"no object {key!r} in {ws.describe_storage()}")
    data = ws.storage.get_bytes(key)
    name = batch_name_for(key)
    try:
        info, result = ws.ingest_bytes(data, filename=PurePosixPath(key).name, name=name)
        total = result.report.rows_read
        share = info.quarantined / total if total else 1.0
        if share > max_quarantine_share:
            ws.delete_batch(name)
            raise SchemaError(
                f"{info.quarantined} of {total} rows of {key} were quarantined ({share:.0%}); "
                f"at most {max_quarantine_share:.0%} is accepted"
            )
    except (InputFileError, SchemaError) as err:
        ws.storage.put_bytes(rejected, data)
        ws.storage.put_bytes(f"{rejected}.reason.txt", str(err).encode())
        ws.storage.delete(key)
        raise
    return info.name


# -- 3. embed ----------------------------------------------------------------------------------------------
def embed_batch(batch: str, settings: Settings | None = None) -> int:
    """Embed the batch's reviews into the workspace's embedding cache; return how many reviews were embedded.

    Training and the shift report read the same cache, so the model runs over each review once.
    """
    from core.text.embed import embedding_text

    ws = _workspace(settings)
    frame = ws.batches.frame(batch)
    vectors = ws.embedder().encode(embedding_text(frame, ws.settings.embed_fields))
    return int(vectors.shape[0])


# -- 4. train ----------------------------------------------------------------------------------------------
def train_challenger(
    batch: str,
    detectors: str | Sequence[str] | None = None,
    project: bool = DEFAULT_PROJECT,
    use_labels: bool = DEFAULT_USE_LABELS,
    settings: Settings | None = None,
) -> dict[str, str | None]:
    """Fit a model on the batch, track it and register it as challenger.

    `detectors` is a comma-separated string (the DAG's parameter) or a sequence; None trains
    `core.defaults.DEFAULT_DETECTORS`, like every other entry point. The other training parameters take the
    workbench defaults too (`core.defaults.TrainParameters`).

    Returns ``{"version", "champion", "run_id"}``: the new version, the champion *before* this training
    (None on a fresh registry, where the new version became champion itself) and the MLflow run id.
    """
    ws = _workspace(settings)
    champion = ws.registry().champion_version()
    outcome = ws.train(batch, detectors=_detectors(detectors), project=bool(project), use_labels=bool(use_labels))
    record = outcome.record
    return {"version": str(record.version), CHAMPION: champion, "run_id": record.run_id}


# -- 5. evaluate ---------------------------------------------------------------------------------------------
def label_metrics(version: str, settings: Settings | None = None) -> dict[str, float]:
    """How well a registered version's unsupervised ensemble ranks the stored labels.

    The unsupervised ensemble never sees labels, so champion and challenger are measured on equal terms on
    today's labels (the label-aware scorer's held-out metrics are in each training run). Empty when fewer
    than one outlier and one normal review are labelled.
    """
    from core.detect.supervised import score_metrics
    from core.labels import as_binary

    ws = _workspace(settings)
    batches, labels = ws.labelled_batches()
    if not batches:
        return {}
    bundle, _ = ws.registry().load(str(version))
    embedder = ws.embedder_for(bundle, f"model version {version}")
    by_id: dict[str, float] = {}
    for batch in batches:  # each labelled review scored within its batch, as it was when it was labelled
        scores = bundle.score(batch, embedder).frame
        column = "unsupervised_score" if "unsupervised_score" in scores.columns else "score"
        for review_id, value in zip(scores["review_id"].astype(str), scores[column], strict=True):
            by_id.setdefault(review_id, float(value))
    ids = [i for i in labels.index.astype(str) if i in by_id]
    y = as_binary(labels.set_axis(labels.index.astype(str)).loc[ids])
    if y.size == 0 or y.min() == y.max():
        return {"n_labelled": float(y.size)}
    metrics = score_metrics([by_id[i] for i in ids], y)  # type: ignore[arg-type]
    out = {k: float(v) for k, v in asdict(metrics).items() if v is not None and k in LABEL_METRICS}
    out["n_labelled"] = float(y.size)
    return out


def evaluate_on_labels(
    challenger: str, champion: str | None, settings: Settings | None = None
) -> dict[str, dict[str, float]]:
    """Label metrics of the challenger and of the champion it would replace (see `label_metrics`)."""
    out = {CHALLENGER: label_metrics(challenger, settings)}
    out[CHAMPION] = label_metrics(champion, settings) if champion and champion != challenger else {}
    return out


# -- 6. shift report ------------------------------------------------------------------------------------------
def shift_against_champion(
    batch: str,
    champion: str | None,
    n_permutations: int = 1000,
    alpha: float = 0.05,
    settings: Settings | None = None,
    engine: str = "local",
) -> dict[str, Any]:
    """Compare the batch with the champion's reference; store the report as HTML and JSON.

    The reports go to ``reports/<batch>/shift.html`` and ``.json`` in the workspace storage (the bucket in
    the full stack). The batch is also scored with the champion; both land in the run history
    (`core.monitor`), and alerts not delivered yet go to the webhook. Returns ``{"drift", "p_value", "report",
    "alerts", "engine"}`` (alerts: how many the history holds on this batch), or ``{"skipped": reason}`` when
    there is no earlier champion to compare with.

    With `engine` ``spark`` the comparison is `core.spark.shift.shift_datasets` on ``WORKBENCH_SPARK_MASTER``
    (per-feature and novelty tests over every row); the champion's reference is first written to
    ``references/<model>-v<version>/reviews.parquet`` of the workspace storage, where the executors read it.
    """
    from core.report import report_to_html, report_to_json

    if engine not in ("local", "spark"):
        raise ParameterError(f"engine must be local or spark, got {engine!r}")
    if not champion:
        return {"skipped": "no earlier champion: this batch trained the first model"}
    ws = _workspace(settings)
    bundle, _ = ws.registry().load(str(champion))
    frame = ws.batches.frame(batch)
    ws.score_with(bundle, str(champion), frame, batch=batch)  # recorded: flagged shares, excess p-values
    if engine == "spark":
        from core.spark.read import stage_frame
        from core.spark.shift import shift_datasets

        reference = stage_frame(bundle.reference, f"references/{ws.model_file_name(str(champion))}/reviews.parquet",
                                ws.settings)
        report = shift_datasets(reference, batch, alpha=alpha, n_permutations=int(n_permutations),
                                settings=ws.settings).report
        ws.record_shift(batch, report, model_version=str(champion))  # one history row per batch and model, as local
    else:
        report = ws.compare(reference=bundle.reference, current=frame, alpha=alpha,
                            n_permutations=int(n_permutations), batch=batch, model_version=str(champion))
    ws.deliver_alerts()  # also those an earlier try could not deliver
    base = f"{REPORTS}{batch}/shift"
    ws.storage.put_bytes(f"{base}.json", report_to_json(report).encode())
    ws.storage.put_bytes(f"{base}.html", report_to_html(
        report, title=f"Shift of {batch} against champion v{champion}'s reference").encode())
    alerts = sum(a.batch == batch for a in ws.monitor().alerts())
    return {"drift": bool(report.drift), "p_value": float(report.p_value), "report": f"{base}.html", "alerts": alerts,
            "engine": engine}


# -- 7. promote ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PromotionRule:
    """When a challenger replaces the champion.

    Attributes
    ----------
    metric
        Label metric compared (one of `LABEL_METRICS`).
    max_drop
        Largest accepted decrease of `metric` from champion to challenger (0 = no regression at all).
    min_labels
        Below this many labelled reviews the metric is not trusted and `without_labels` decides.
    without_labels
        Promote when labels are too few to compare (True: the newest data wins; False: keep the champion).
    block_on_drift
        Keep the champion when the batch drifted from its reference (for pipelines where drift means bad
        data rather than a changed world).
    """

    metric: str = "average_precision"
    max_drop: float = 0.0
    min_labels: int = 10
    without_labels: bool = True
    block_on_drift: bool = False

    def __post_init__(self) -> None:
        if self.metric not in LABEL_METRICS:
            raise ParameterError(f"metric must be one of {', '.join(LABEL_METRICS)}, got {self.metric!r}")
        if self.max_drop < 0:
            raise ParameterError(f"max_drop must be >= 0, got {self.max_drop}")


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str


def decide_promotion(
    evaluation: Mapping[str, Mapping[str, float]], shift: Mapping[str, Any], rule: PromotionRule
) -> PromotionDecision:
    """Apply `rule` to the outcome of `evaluate_on_labels` and `shift_against_champion`."""
    if rule.block_on_drift and shift.get("drift"):
        return PromotionDecision(False, f"the batch drifted from the champion's reference (p={shift.get('p_value'):.3g})")
    new, old = evaluation.get(CHALLENGER, {}), evaluation.get(CHAMPION, {})
    n = min(new.get("n_labelled", 0.0), old.get("n_labelled", 0.0))
    if rule.metric not in new or rule.metric not in old or n < rule.min_labels:
        verdict = "promoted" if rule.without_labels else "kept the champion"
        return PromotionDecision(rule.without_labels,
                                 f"{verdict}: fewer than {rule.min_labels} usable labels to compare {rule.metric}")
    drop = old[rule.metric] - new[rule.metric]
    text = f"{rule.metric} {old[rule.metric]:.3f} -> {new[rule.metric]:.3f} on {int(n)} labels"
    if drop > rule.max_drop + 1e-12:
        return PromotionDecision(False, f"regression: {text} (more than the accepted drop {rule.max_drop:g})")
    return PromotionDecision(True, f"no regression: {text}")


def promote_if_rule_passes(
    challenger: str,
    champion: str | None,
    evaluation: Mapping[str, Mapping[str, float]],
    shift: Mapping[str, Any],
    rule: PromotionRule | Mapping[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Promote the challenger to champion when `rule` passes; return ``{"promoted", "reason", "champion"}``."""
    rule = rule if isinstance(rule, PromotionRule) else PromotionRule(**dict(rule or {}))
    ws = _workspace(settings)
    registry = ws.registry()
    if not champion or champion == challenger:
        return {"promoted": True, "reason": "first model: it became champion when it was registered",
                CHAMPION: registry.champion_version()}
    decision = decide_promotion(evaluation, shift, rule)
    if decision.promote:
        registry.promote(str(challenger))
    return {"promoted": decision.promote, "reason": decision.reason, CHAMPION: registry.champion_version()}


# -- 8. archive -------------------------------------------------------------------------------------------
def archive_batch(key: str, summary: Mapping[str, Any] | None = None, settings: Settings | None = None) -> str:
    """Move a processed file from ``incoming/`` to ``processed/`` (with the run summary next to it)."""
    ws = _workspace(settings)
    target = PROCESSED + key.removeprefix(INCOMING)
    if ws.storage.exists(key):
        ws.storage.put_bytes(target, ws.storage.get_bytes(key))  # copy first: a failure here loses nothing
        ws.storage.delete(key)
    elif not ws.storage.exists(target):
        raise NotFoundError(f"no object {key!r} in {ws.describe_storage()} (and none archived at {target!r})")
    if summary is not None:
        record = {"key": key, "archived": datetime.now(UTC).isoformat(timespec="seconds"), **dict(summary)}
        ws.storage.put_bytes(f"{target}.run.json", json.dumps(record, indent=2, default=str).encode())
    return target
