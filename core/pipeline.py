"""The workflows that the CLI, the workbench, the API and the DAG call: ingest, embed, train, score, compare.

A `Workspace` ties the settings to the storage backend, the stored batches, the shared embedder and the
small piece of state that survives restarts (which batch is the reference, which the current one).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from pydantic import BaseModel

from core.defaults import (
    CHAMPION,
    DEFAULT_DETECTORS,
    DEFAULT_PROJECT,
    DEFAULT_TITLES,
    DEFAULT_USE_LABELS,
    embed_fields_for,
)
from core.errors import ModelUnavailableError, NotFoundError, WorkbenchError
from core.io.batches import BatchInfo, BatchStore
from core.io.load import LoadResult, load_path
from core.io.schema import ValidationReport
from core.progress import CountProgress, ProgressCallback
from core.settings import Settings, get_settings
from core.storage import Storage, make_storage
from core.text.embed import FASTEST_EQUIVALENT, Embedder, make_embedder

if TYPE_CHECKING:  # these pull in torch, MLflow or SQLAlchemy: imported when first needed, not with the façade
    from datetime import datetime

    from core.alerts import Delivery
    from core.bundle import BundleScores, ModelBundle
    from core.campaigns.campaigns import CampaignReport
    from core.campaigns.history import HistoryStore, WorkspaceHistory
    from core.consistency import StoreReport
    from core.labels import LabelStore
    from core.monitor import Alert, History, MonitorStore, RunRecord
    from core.shift.results import ShiftReport
    from core.tracking import Registry, TrainingRecord, VersionInfo

log = logging.getLogger(__name__)

STATE_KEY = "state/workspace.json"


class WorkspaceState(BaseModel):
    """Choices that outlive a browser tab or a process."""

    reference: str | None = None
    current: str | None = None
    last_shift: dict[str, object] | None = None


_EMBEDDERS: dict[tuple[str, str, int, str], Embedder] = {}


def _embedder_key(s: Settings) -> tuple[str, str, int, str]:
    return (s.embedding_model, s.embedding_backend, s.embedding_batch_size, str(s.cache_dir))


def share_embedder(settings: Settings, embedder: Embedder) -> Callable[[], None]:
    """Make workspaces with `settings` use an already loaded embedder (tests, notebooks, one process with
    several workspaces): the model is loaded once. Returns a function that undoes it."""
    key = _embedder_key(settings)
    previous = _EMBEDDERS.get(key)
    _EMBEDDERS[key] = embedder

    def undo() -> None:
        if previous is None:
            _EMBEDDERS.pop(key, None)
        else:
            _EMBEDDERS[key] = previous

    return undo


class Workspace:
    """Everything under one ``WORKBENCH_HOME`` (or one bucket, in the full stack)."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.batches = BatchStore(storage)
        self._monitor: MonitorStore | None = None  # opened on first use (`monitor`)
        self._history: WorkspaceHistory | None = None  # opened and synced on first use (`history`)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Workspace:
        settings = settings or get_settings()
        settings.home.mkdir(parents=True, exist_ok=True)
        return cls(settings, make_storage(settings))

    def describe_storage(self) -> str:
        return self.storage.describe()

    def check_store(self, repair: bool = False, min_age: float | None = None) -> StoreReport:
        """Batches whose manifest points at missing objects, and objects no manifest points at
        (`core.consistency.check_store`); `repair` removes both."""
        from core.consistency import DEFAULT_MIN_AGE_SECONDS, check_store

        report = check_store(self.storage, repair=repair,
                             min_age=DEFAULT_MIN_AGE_SECONDS if min_age is None else min_age)
        if repair:  # removed batches leave the history too
            self._review_history().resync()
        return report

    # State ---------------------------------------------------------------------------------
    def state(self) -> WorkspaceState:
        if not self.storage.exists(STATE_KEY):
            return WorkspaceState()
        return WorkspaceState.model_validate_json(self.storage.get_bytes(STATE_KEY))

    def update_state(self, **changes: object) -> WorkspaceState:
        for key in ("reference", "current"):
            name = changes.get(key)
            if isinstance(name, str) and not self.batches.exists(name):
                self.batches.info(name)  # raises NotFoundError naming the known batches
        state = self.state().model_copy(update=changes)
        self.storage.put_bytes(STATE_KEY, state.model_dump_json(indent=2).encode())
        return state

    # Batches -------------------------------------------------------------------------------
    def ingest_path(
        self,
        path: str | Path,
        name: str,
        mapping: Mapping[str, str] | None = None,
        encoding: str | None = None,
    ) -> tuple[BatchInfo, LoadResult]:
        """Load, validate and store a file; nothing is stored when the file cannot be read."""
        result = load_path(path, mapping=mapping, encoding=encoding)
        info = self.batches.save(name, result)
        self._review_history().added(info, result.frame)
        return info, result

    def ingest_bytes(
        self, data: bytes, filename: str, name: str, mapping: Mapping[str, str] | None = None
    ) -> tuple[BatchInfo, LoadResult]:
        info, result = self.batches.ingest_bytes(name, data, filename, mapping=mapping)
        self._review_history().added(info, result.frame)
        return info, result

    def delete_batch(self, name: str) -> None:
        """Remove a stored batch and its reviews from the review history."""
        self.batches.delete(name)
        self._review_history().removed(name)

    # Review history ------------------------------------------------------------------------
    def _review_history(self) -> WorkspaceHistory:
        from core.campaigns.history import WorkspaceHistory

        if self._history is None:
            self._history = WorkspaceHistory(self.settings.resolved_labels_url, self.batches)
        return self._history

    def history(self) -> HistoryStore:
        """Who reviewed what and when over every stored batch (`core.campaigns.history`), in the label store's
        database; brought in line with the stored batches when first opened in a process."""
        return self._review_history().store()

    def with_behaviour(self, frame: pd.DataFrame, batch: str | None = None) -> pd.DataFrame:
        """`frame` with its reviews' behavioural columns, read against the review history
        (`core.campaigns.history.read_behaviour`); without the history when it cannot be read."""
        return self._review_history().read(frame, batch or "").frame

    def resolve_frame(self, source: str | Path) -> pd.DataFrame:
        """A stored batch by name, or a review file by path."""
        return self.resolve(source).frame

    def resolve(self, source: str | Path, mapping: Mapping[str, str] | None = None) -> Resolved:
        """A stored batch by name, or a review file by path read with `mapping`; a file comes with its report
        (rows quarantined, columns missing, notes), which callers show: those rows are not scored."""
        text = str(source)
        if Path(text).exists():
            result = load_path(text, mapping=mapping)
            return Resolved(frame=result.frame, report=result.report)
        if mapping:
            raise WorkbenchError(f"--map applies to files; {text!r} is a stored batch, mapped when it was ingested")
        if self.batches.exists(text):
            return Resolved(frame=self.batches.frame(text))
        known = ", ".join(i.name for i in self.batches.list()) or "none"
        raise NotFoundError(f"{text!r} is neither a file nor a stored batch (stored batches: {known})")

    def campaigns(self, source: str | Path, level: float | None = None) -> CampaignReport:
        """Campaign evidence of a stored batch or a file (`core.campaigns.campaigns.campaign_report`): burst
        windows, groups of accounts, products ranked by the champion's campaign score when it has one.

        Nothing is recorded: opening a batch's campaigns is not a run.
        """
        from core.campaigns.campaigns import DEFAULT_LEVEL, campaign_report

        batch = self.stored_batch(source) or ""
        read = self._review_history().read(self.resolve_frame(source), batch)
        scores = None
        try:
            bundle, version = self.model(CHAMPION)
        except WorkbenchError:
            bundle = None
        if bundle is not None and bundle.uses_behaviour:
            scored = self.score_with(bundle, version.version, read.frame).frame
            scores = scored["kind_campaign"] if "kind_campaign" in scored.columns else None
        return campaign_report(batch or str(source), read.frame, read.pool, scores,
                               level=DEFAULT_LEVEL if level is None else level)

    def product_timeline(self, source: str | Path, product: str) -> pd.DataFrame:
        """Reviews of `product` per day and rating, this batch and every stored one together
        (`core.campaigns.campaigns.daily_reviews`)."""
        from core.campaigns.campaigns import daily_reviews

        batch = self.stored_batch(source) or ""
        return daily_reviews(self._review_history().read(self.resolve_frame(source), batch).pool, product)

    # Shared resources ----------------------------------------------------------------------
    def embedder(self) -> Embedder:
        """One embedder per model configuration and process: the model loads once."""
        s = self.settings
        key = _embedder_key(s)
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = make_embedder(s)
        return _EMBEDDERS[key]

    def embedder_for(self, bundle: ModelBundle, what: str = "this model") -> Embedder:
        """An embedder that gives `bundle`'s own vectors: the workspace's when they match, else the fastest
        backend that does (a model trained on ``onnx-int8`` vectors scores with ``onnx-int8`` whatever
        ``WORKBENCH_EMBEDDING_BACKEND`` says), loaded once per process.

        Raises
        ------
        EncoderMismatchError
            One line: no backend here gives those vectors (another embedding model).
        """
        embedder = self.embedder()
        if getattr(embedder, "model_key", None) == bundle.embedding_key:
            return embedder
        return self.with_backend(bundle.serving_backend(self.settings.embedding_model, what)).embedder()

    def with_backend(self, backend: str) -> Workspace:
        """This workspace with another embedding backend (same home and storage): its embedders are loaded once
        per process like this one's."""
        if backend == self.settings.embedding_backend:
            return self
        return Workspace(self.settings.model_copy(update={"embedding_backend": backend}), self.storage)

    def fast_embedder(self) -> Embedder:
        """The lowest-latency embedder that gives the configured backend's vectors (what the API serves with).

        For the default ``torch`` that is ``onnx``: the same fp32 vectors in a third of the time per review.
        When the ONNX export cannot run here, the configured embedder is used, with a warning in the log.
        """
        fast = self.settings.model_copy(update={"embedding_backend": FASTEST_EQUIVALENT[self.settings.embedding_backend]})
        key = _embedder_key(fast)
        if key not in _EMBEDDERS:
            embedder = make_embedder(fast)
            try:
                _ = embedder.dim  # loads (and exports once) now rather than in the first request
            except WorkbenchError as err:
                log.warning("the %s embedding backend is unavailable (%s); serving with %s",
                            fast.embedding_backend, err, self.settings.embedding_backend)
                embedder = self.embedder()  # remembered: one failed export per process, not one per request
            _EMBEDDERS[key] = embedder
        return _EMBEDDERS[key]

    # Models ---------------------------------------------------------------------------------
    def registry(self) -> Registry:
        """The MLflow registry; every champion change through it is also marked on the Monitor timeline."""
        from core.tracking import Registry

        return Registry(self.settings, on_champion=lambda version, event: self.monitor().record_champion(version, event))

    def labels(self) -> LabelStore:
        from core.labels import LabelStore

        return LabelStore(self.settings.resolved_labels_url)

    def labelled_reviews(self) -> tuple[pd.DataFrame, pd.Series]:
        """Every stored review that carries a label, and the labels (latest per review)."""
        batches, labels = self.labelled_batches()
        ids = labels.index.astype(str)
        found = pd.concat([b[b["review_id"].astype(str).isin(ids)] for b in batches], ignore_index=True) \
            if batches else pd.DataFrame()
        if not found.empty:
            found = found.drop_duplicates("review_id")
        return found, labels

    def labelled_batches(self) -> tuple[list[pd.DataFrame], pd.Series]:
        """The stored batches that hold at least one labelled review, whole, and the labels (latest per review).

        Whole batches, because a review's duplicate and batch-contrast signals depend on the rest of its batch:
        scoring a labelled review on its own would show the label-aware scorer features it never meets later.
        """
        labels = self.labels().as_series()
        if labels.empty:
            return [], labels
        ids = labels.index.astype(str)
        frames = [self.batches.frame(info.name) for info in self.batches.list()]
        return [f for f in frames if f["review_id"].astype(str).isin(ids).any()], labels

    def import_labels(
        self, source: str | Path | bytes, author: str | None = None, filename: str = "labels.csv"
    ) -> LabelImport:
        """Import a labels CSV (`core.labels.LabelStore.import_csv`) and say how many labelled reviews no
        stored batch holds: a mistyped id or a batch not ingested yet; those labels are kept but used by nothing.

        `source` is a path or the file's bytes (an upload); `filename` names the bytes in error messages.
        """
        if isinstance(source, bytes):
            import tempfile

            with tempfile.TemporaryDirectory() as folder:  # the file's own name, so errors name it
                path = Path(folder) / (Path(filename).name or "labels.csv")
                path.write_bytes(source)
                imported = self.labels().import_csv(path, author=author)
        else:
            imported = self.labels().import_csv(source, author=author)
        found, labels = self.labelled_reviews()
        return LabelImport(imported=imported, labelled=len(labels), in_no_batch=len(labels) - len(found))

    def train(
        self,
        reference: str | Path,
        detectors: tuple[str, ...] = DEFAULT_DETECTORS,
        contamination: float | None = None,
        project: bool = DEFAULT_PROJECT,
        use_labels: bool = DEFAULT_USE_LABELS,
        progress: ProgressCallback | None = None,
        titles: bool = DEFAULT_TITLES,
        on_wait: Callable[[str], None] | None = None,
    ) -> TrainOutcome:
        """Fit a bundle on a reference (batch name or file), track the run, register it as challenger.

        `titles`: embed review titles with the text (the default); off for a model that scores batches
        exported without titles, which a title + text model reads as more novel than they are.
        `on_wait`: told "waiting for another training (pid N) to finish" when one holds this workspace's
        training lock (`core.locks`): trainings of one workspace run one after the other, so the registry's
        aliases always name the version that was registered last.
        """
        from core.locks import TRAINING_LOCK, exclusive

        with exclusive(self.settings.home / TRAINING_LOCK, "training", on_wait=on_wait):
            return self._train(reference, detectors=detectors, contamination=contamination, project=project,
                               use_labels=use_labels, progress=progress, titles=titles)

    def _train(
        self,
        reference: str | Path,
        detectors: tuple[str, ...],
        contamination: float | None,
        project: bool,
        use_labels: bool,
        progress: ProgressCallback | None,
        titles: bool,
    ) -> TrainOutcome:
        from core.bundle import ModelBundle

        start = time.perf_counter()
        name = str(reference) if self.batches.exists(str(reference)) else Path(str(reference)).name
        frame = self.with_behaviour(self.resolve_frame(reference), batch=name)
        bundle = ModelBundle.fit(
            frame, self.embedder(), detectors=tuple(detectors),
            contamination=contamination if contamination is not None else self.settings.contamination,
            random_state=self.settings.random_state, project=project, reference_batch=name, progress=progress,
            embed_fields=embed_fields_for(titles),
        )
        metrics: dict[str, float] = {}
        label_note = None
        if use_labels:
            labelled, labels = self.labelled_batches()
            if labelled:
                if progress:
                    progress("learning from labels", 0.0)
                labelled = [self.with_behaviour(f) for f in labelled]
                result = bundle.outlier.fit_labels(labelled, labels, self.embedder())
                label_note = result.note
                for prefix, m in (("labels_unsupervised", result.unsupervised), ("labels_label_aware", result.label_aware)):
                    if m is not None:
                        for key in ("auroc", "average_precision", "precision_at_k"):
                            value = getattr(m, key, None)
                            if value is not None:
                                metrics[f"{prefix}_{key}"] = float(value)
                metrics["labels_n"] = float(result.n_labelled)
        artifacts: dict[str, object] = {}
        from core.features import tabular_inputs

        stats = tabular_inputs(frame).describe(include="all").T.reset_index().rename(columns={"index": "feature"})
        artifacts["reference_statistics.csv"] = stats.astype(str)
        coords = bundle.reference_coords()
        if coords is not None:
            artifacts["projection.csv"] = pd.DataFrame(
                {"review_id": frame["review_id"].to_numpy(), "x": coords[:, 0], "y": coords[:, 1]}
            )
        if self.batches.exists(name):
            artifacts["validation_report.json"] = self.batches.report(name).model_dump(mode="json")
        if progress:
            progress("registering (MLflow)", 0.0)
        record = self.registry().log_training(bundle, metrics=metrics, artifacts=artifacts)
        if progress:
            progress("registering (MLflow)", 1.0)
        return TrainOutcome(record=record, bundle=bundle, seconds=time.perf_counter() - start, label_note=label_note)

    def model(self, alias: str = CHAMPION) -> tuple[ModelBundle, VersionInfo]:
        """The bundle behind an alias, loaded once per process and reloaded when the alias moves."""
        registry = self.registry()
        wanted = registry.version(str(alias))
        if wanted is None:
            raise ModelUnavailableError(
                f"no model with alias or version {alias!r} in {registry.uri}; "
                "train one with `workbench train --reference BATCH` (or `workbench demo`)"
            )
        key = (registry.uri, registry.name, wanted.version)
        if key not in _MODELS:
            _MODELS.clear()  # keep one model in memory per process
            _MODELS[key] = registry.load(wanted.version)
        return _MODELS[key]

    def score(self, source: str | Path | pd.DataFrame, alias: str = CHAMPION, project: bool = False,
              progress: ProgressCallback | None = None,
              batch: str | None = None) -> tuple[BundleScores, VersionInfo]:
        """Score a batch name, file or frame with the model behind `alias`.

        `batch` names the stored batch a frame holds (inferred when `source` is a batch name); the score of
        a stored batch is recorded in the run history (`record_run`).
        """
        bundle, version = self.model(alias)
        frame = source if isinstance(source, pd.DataFrame) else self.resolve_frame(source)
        batch = batch or self.stored_batch(source)
        return self.score_with(bundle, version.version, frame, project=project, progress=progress,
                               batch=batch), version

    def score_with(self, bundle: ModelBundle, version: str, frame: pd.DataFrame, project: bool = False,
                   progress: ProgressCallback | None = None,
                   batch: str | None = None) -> BundleScores:
        """`bundle.score`, or its text-only twin's when the batch has no titles and the model embeds them.

        The twin is fitted once per model version on the model's own reference and kept under
        ``WORKBENCH_HOME/text-twins`` (`core.bundle.ModelBundle.text_twin`), so later batches and restarts
        reuse it. With `batch` (the stored batch `frame` holds) the score is recorded in the run history.
        """
        from core.campaigns.behaviour import has_behaviour

        embedder = self.embedder_for(bundle, f"model version {version}")
        if bundle.uses_behaviour and not has_behaviour(frame):  # not read twice (`campaigns` reads it first)
            frame = self.with_behaviour(frame, batch=batch)
        if not bundle.lacks_titles(frame):
            scores = bundle.score(frame, embedder, progress=progress, project=project)
            self.record_score(batch, scores, version, frame)
            return scores
        with _TWIN_LOCK:
            key = (self.settings.home.as_posix(), version, bundle.meta.get("trained_at"))
            if key not in _TWINS:
                if progress:
                    progress("fitting the text-only twin (this batch has no titles)", 0.0)
                _TWINS.clear()
                _TWINS[key] = bundle.text_twin(embedder, folder=self.twin_folder(version), progress=progress)
            twin = _TWINS[key]
        scores = replace(twin.score(frame, embedder, progress=progress, project=project), text_only_twin=True)
        self.record_score(batch, scores, version, frame)
        return scores

    # Run history ----------------------------------------------------------------------------
    def monitor(self) -> MonitorStore:
        """The run history and alerts, in the label store's database."""
        from core.monitor import MonitorStore

        url = self.settings.resolved_labels_url
        if self._monitor is None or self._monitor.url != url:
            self._monitor = MonitorStore(url)
        return self._monitor

    def stored_batch(self, source: object) -> str | None:
        """`source` when it names a stored batch (not a file or a URL), else None."""
        text = str(source) if isinstance(source, str | Path) else None
        if text is None or "://" in text or Path(text).exists() or not self.batches.exists(text):
            return None
        return text

    def _batch_time(self, batch: str, frame: pd.DataFrame | None = None) -> tuple[datetime, datetime, str]:
        """A batch's place on the timeline: a stored batch's review dates (else its ingest time); for a batch
        named by a caller but not stored (an API request), the dates of the reviews in `frame`, else now."""
        from core.monitor import time_range

        if self.batches.exists(batch):
            info = self.batches.info(batch)
            return time_range(info.date_min, info.date_max, info.created)
        stamps = (pd.to_datetime(frame["timestamp"], utc=True, errors="coerce").dropna()
                  if frame is not None and "timestamp" in frame.columns else pd.Series(dtype="datetime64[ns, UTC]"))
        if len(stamps):
            return time_range(stamps.min(), stamps.max(), None)
        return time_range(None, None, None)

    def record_score(self, batch: str | None, scores: BundleScores, version: str,
                     frame: pd.DataFrame | None = None) -> None:
        """Record the score of the batch named `batch` (None: nothing) in the run history and run the alert rules;
        a batch that is not stored is placed at the dates of the reviews in `frame`."""
        if batch:
            from core.monitor import score_record

            self.record_run(lambda: score_record(batch, scores, version, self._batch_time(batch, frame)))

    def monitor_history(self, deliver: bool = False) -> History:
        """The timeline of stored batches and their alerts (`core.monitor.History`); with `deliver`, alerts not
        delivered yet are sent to ``alert_webhook_url`` first."""
        if deliver:
            self.deliver_alerts()
        return self.monitor().history(self.settings.alert_level)

    def deliver_alerts(self) -> list[Delivery]:
        """Send every alert not delivered yet to ``alert_webhook_url`` (none without one); outcomes recorded."""
        from core.monitor import deliver

        s = self.settings
        return deliver(self.monitor(), s.alert_webhook_url, retries=s.alert_webhook_retries,
                       backoff=s.alert_webhook_backoff)

    def record_run(self, build: Callable[[], RunRecord]) -> list[Alert]:
        """Store the run record `build()` makes, run the alert rules over the history and send the new
        alerts to ``alert_webhook_url``; returns the new alerts.

        A failure is logged, not raised: the score or shift check the caller asked for stands without it.
        """
        from core.monitor import deliver

        s = self.settings
        try:
            store = self.monitor()
            run = build()
            store.record(run)
            fresh = store.evaluate(s.alert_level, sequential=s.alert_sequential)
            deliver(store, s.alert_webhook_url, fresh, retries=s.alert_webhook_retries,
                    backoff=s.alert_webhook_backoff)
            return fresh
        except (WorkbenchError, OSError, ValueError, KeyError) as err:
            log.warning("the run history was not updated: %s", err)
            return []

    def record_shift(self, batch: str, report: ShiftReport, reference: str = "", model_version: str = "",
                     frame: pd.DataFrame | None = None) -> list[Alert]:
        """Record a shift check of `batch` in the run history, whichever engine computed `report` (see
        `record_run`); `frame` places a batch that is not stored on the timeline by its review dates."""
        from core.monitor import shift_record

        return self.record_run(lambda: shift_record(batch, report, self._batch_time(batch, frame),
                                                    model_version=model_version, reference=reference))

    def model_file_name(self, version: str) -> str:
        """``<registered model>-v<version>`` with only file-name-safe characters, for what is kept per version."""
        name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.settings.registered_model_name)
        return f"{name}-v{version}"

    def twin_folder(self, version: str) -> Path:
        """Where the text-only twin of a registered model version is kept (see `score_with`)."""
        return self.settings.home / "text-twins" / self.model_file_name(version)

    def compare(
        self,
        reference: str | Path | pd.DataFrame,
        current: str | Path | pd.DataFrame,
        alpha: float = 0.05,
        n_permutations: int = 1000,
        progress: CountProgress | None = None,
        record_state: bool = True,
        names: tuple[str, str] | None = None,
        batch: str | None = None,
        model_version: str | None = None,
    ) -> ShiftReport:
        """Shift report of `current` against `reference` (batch names, files or frames).

        The verdict is remembered as the workspace's last shift unless `record_state` is False; `names` says
        what frames given directly are called there. When `current` is a stored batch (`batch`, or inferred
        from `current` or `names`), the check is recorded in the run history, under `model_version` when the
        reference is a model's.
        """
        from core.shift.compare import compare
        from core.text.embed import embedding_text, shared_embed_fields

        ref = reference if isinstance(reference, pd.DataFrame) else self.resolve_frame(reference)
        cur = current if isinstance(current, pd.DataFrame) else self.resolve_frame(current)
        embedder = self.embedder()
        fields = shared_embed_fields(ref, cur)
        report = compare(
            reference=ref, current=cur,
            reference_embeddings=embedder.encode(embedding_text(ref, fields)),
            current_embeddings=embedder.encode(embedding_text(cur, fields)),
            alpha=alpha, n_permutations=n_permutations, random_state=self.settings.random_state, progress=progress,
            embedded_fields=fields,
        )
        batch = batch or self.stored_batch(current) or (self.stored_batch(names[1]) if names else None)
        if batch:
            label = names[0] if names else (reference if isinstance(reference, str) else "")
            self.record_shift(batch, report, reference=str(label), model_version=model_version or "", frame=cur)
        if not record_state:  # e.g. API calls: they must not overwrite the analyst's "last shift"
            return report
        names = names or (reference if isinstance(reference, str) else "frame",
                          current if isinstance(current, str) else "frame")
        self.update_state(last_shift={
            "reference": names[0], "current": names[1], "drift": bool(report.drift),
            "p_value": float(report.p_value), "created": report.created.isoformat(),
        })
        return report


_MODELS: dict[tuple[str, str, str], tuple[ModelBundle, VersionInfo]] = {}
_TWINS: dict[tuple[str, str, object], ModelBundle] = {}  # one text-only twin in memory per process
_TWIN_LOCK = threading.Lock()  # the workbench and the API score from several threads


@dataclass(frozen=True)
class Resolved:
    frame: pd.DataFrame
    report: ValidationReport | None = None  # None for a stored batch (its report was shown at ingest)

    def load_lines(self) -> list[str]:
        """What a terminal shows about reading a file before it is scored or compared: rows set aside, notes."""
        if self.report is None:
            return []
        r = self.report
        lines = r.reading_lines()
        if r.rows_quarantined:
            reasons = "; ".join(f"{reason} ({count})" for reason, count in
                                sorted(r.quarantine_reasons.items(), key=lambda kv: -kv[1])[:3])
            lines.insert(0, f"{r.rows_quarantined} of {r.rows_read} rows of {r.source} were set aside and not used: "
                            f"{reasons}; `workbench ingest {r.source} --quarantine-out FILE.csv` writes them out")
        return lines


@dataclass(frozen=True)
class LabelImport:
    imported: int  # rows of the file stored
    labelled: int  # reviews with a label in the store, all files together
    in_no_batch: int  # of those, the ones no stored batch holds

    def summary(self, source: str) -> str:
        line = f"{self.imported} labels imported from {source}"
        if self.in_no_batch:
            line += (f"; {self.in_no_batch} of {self.labelled} labelled reviews are in no stored batch: the labels are "
                     "kept and count once their batch is ingested (check the review_id column if that is unexpected)")
        return line


@dataclass(frozen=True)
class TrainOutcome:
    record: TrainingRecord
    bundle: ModelBundle
    seconds: float
    label_note: str | None = None
