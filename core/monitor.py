"""Run history of stored batches and their alerts, in SQL next to the labels.

Every `score` and `shift` of a stored batch (`core.pipeline.Workspace`) writes one row of ``monitor_runs``:
the batch, its time range (review dates, else the ingest time), rows, model version, flagged share overall and
per kind, each kind's excess p-value, the shift verdict and p-value, drifted features and the terms of grown
clusters. The same batch scored again with the same model (or compared again with the same reference)
replaces its row. After each write the alert rules of `core.alerts` run over the history; new alerts go to
``monitor_alerts`` and, when ``WORKBENCH_ALERT_WEBHOOK_URL`` is set, to the webhook (delivery recorded).
See docs/monitoring.md.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    delete,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from core import alerts as rules
from core.database import Database, one_line
from core.errors import StorageError

SCORE = "score"
SHIFT = "shift"
GROWN = ("new", "grown")  # cluster statuses whose terms the history keeps
_TERMS = 5  # terms kept per grown cluster
_CLUSTERS = 5  # grown clusters kept per record
_Row = TypeVar("_Row")  # what `MonitorStore._read` converts each selected row to


class _Base(DeclarativeBase):
    pass


class RunRow(_Base):
    """One `score` or `shift` of a stored batch."""

    __tablename__ = "monitor_runs"
    __table_args__ = (UniqueConstraint("batch", "record", "model_version", "reference", name="uq_monitor_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch: Mapped[str] = mapped_column(String(200), index=True)
    record: Mapped[str] = mapped_column(String(16))  # score | shift
    model_version: Mapped[str] = mapped_column(String(64), default="")  # "" when no model was involved
    reference: Mapped[str] = mapped_column(String(200), default="")  # shift: what the batch was compared with
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    time_source: Mapped[str] = mapped_column(String(16))  # reviews | ingest
    rows: Mapped[int] = mapped_column(Integer)
    flagged_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    kinds: Mapped[str] = mapped_column(Text, default="{}")  # JSON {kind: {flagged_share, p_value}}
    shift_p_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    drift: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    drifted_features: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    grown_clusters: Mapped[str] = mapped_column(Text, default="[]")  # JSON [{status, change, terms}]
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AlertRow(_Base):
    """One alert as stored, with its delivery."""

    __tablename__ = "monitor_alerts"
    __table_args__ = (UniqueConstraint("batch", "kind", "rule", "model_version", name="uq_monitor_alert"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(64), default="")
    p_value: Mapped[float] = mapped_column(Float)
    level: Mapped[float] = mapped_column(Float)
    statistic: Mapped[float] = mapped_column(Float)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)


class ChampionRow(_Base):
    """One change of the champion alias: a promotion, a rollback, or the first registered version."""

    __tablename__ = "monitor_champions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64))
    event: Mapped[str] = mapped_column(String(16))  # promoted | rolled back
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class ChampionChange:
    """The champion alias given to `version` at `at` (`event`: ``promoted`` or ``rolled back``)."""

    version: str
    event: str
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"version": self.version, "event": self.event, "at": self.at.isoformat()}


@dataclass(frozen=True)
class RunRecord:
    """What one `score` or `shift` of a batch left in the history (`MonitorStore.record`)."""

    batch: str
    record: str
    start: datetime
    end: datetime
    time_source: str
    rows: int
    model_version: str = ""
    reference: str = ""
    flagged_share: float | None = None
    kinds: dict[str, dict[str, float | None]] = field(default_factory=dict)
    shift_p_value: float | None = None
    drift: bool | None = None
    drifted_features: tuple[str, ...] = ()
    grown_clusters: tuple[dict[str, Any], ...] = ()
    recorded_at: datetime | None = None


@dataclass(frozen=True)
class Alert:
    """A stored alert (see `core.alerts.AlertDecision`) with its delivery."""

    batch: str
    kind: str
    rule: str
    model_version: str
    p_value: float
    level: float
    statistic: float
    created: datetime
    delivered: bool
    attempts: int
    last_error: str | None

    def as_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "kind": self.kind, "rule": self.rule, "model_version": self.model_version,
                "p_value": self.p_value, "level": self.level, "statistic": self.statistic,
                "created": self.created.isoformat(), "delivered": self.delivered, "attempts": self.attempts,
                "last_error": self.last_error}


@dataclass(frozen=True)
class BatchPoint:
    """One batch on the timeline: its latest score under a model and its latest shift check."""

    batch: str
    start: datetime
    end: datetime
    time_source: str
    rows: int
    model_version: str
    flagged_share: float | None
    kinds: dict[str, dict[str, float | None]]
    shift_p_value: float | None
    drift: bool | None
    drifted_features: tuple[str, ...]
    grown_clusters: tuple[dict[str, Any], ...]

    def as_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "time_source": self.time_source, "rows": self.rows, "model_version": self.model_version,
                "flagged_share": self.flagged_share, "kinds": self.kinds, "shift_p_value": self.shift_p_value,
                "drift": self.drift, "drifted_features": list(self.drifted_features),
                "grown_clusters": list(self.grown_clusters)}


@dataclass(frozen=True)
class History:
    """The timeline (batches in time order) and the alerts (oldest first); what `workbench monitor`,
    ``GET /monitor`` and the Monitor page show."""

    batches: tuple[BatchPoint, ...]
    alerts: tuple[Alert, ...]
    level: float
    champions: tuple[ChampionChange, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"level": self.level, "batches": [b.as_json() for b in self.batches],
                "alerts": [a.as_json() for a in self.alerts],
                "champion_changes": [c.as_json() for c in self.champions]}

    def version_changes(self) -> list[tuple[BatchPoint, ChampionChange | None]]:
        """The batches where the scoring model changes, each with the champion change that brought that version
        in (the latest one before the batch was scored), if one was recorded.

        The timeline's axis is the batches' review dates, not the wall clock of a promotion; a promotion is
        therefore shown at the first batch its version scored.
        """
        out: list[tuple[BatchPoint, ChampionChange | None]] = []
        previous = None
        for point in self.batches:
            if point.model_version and previous is not None and point.model_version != previous:
                changes = [c for c in self.champions if c.version == point.model_version]
                out.append((point, changes[-1] if changes else None))
            previous = point.model_version or previous
        return out


# -- building records --------------------------------------------------------------------------------------
def _as_utc(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def time_range(date_min: Any, date_max: Any, ingested: Any) -> tuple[datetime, datetime, str]:
    """The batch's time on the timeline: its reviews' dates, else when it was ingested."""
    start, end = _as_utc(date_min), _as_utc(date_max)
    if start is not None and end is not None:
        return start, end, "reviews"
    stamp = _as_utc(ingested) or datetime.now(UTC)
    return stamp, stamp, "ingest"


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def score_record(
    batch: str, scores: Any, model_version: str, when: tuple[datetime, datetime, str]
) -> RunRecord:
    """The history row of a scored batch (`scores`: a `core.bundle.BundleScores`).

    A flagged review counts for the kind that leads its reasons (its strongest group score).
    """
    result = scores.result
    table = result.scores
    n = len(table)
    flagged = table["is_outlier"].to_numpy(dtype=bool) if n else np.zeros(0, dtype=bool)
    groups = result.group_scores
    evidence = dict(result.group_evidence or {})
    kinds_seen = list(dict.fromkeys([*groups.columns, *evidence]))
    counts = dict.fromkeys(kinds_seen, 0)
    if n and len(groups.columns):
        scored = groups[flagged].dropna(how="all")  # a review without any applicable group leads no kind
        leading = scored.idxmax(axis=1, skipna=True) if len(scored) else []
        for kind in leading:
            if isinstance(kind, str) and kind in counts:
                counts[kind] += 1
    kinds = {k: {"flagged_share": counts[k] / n if n else None, "p_value": _finite(evidence.get(k, 1.0))}
             for k in kinds_seen}
    start, end, source = when
    return RunRecord(batch=batch, record=SCORE, start=start, end=end, time_source=source, rows=n,
                     model_version=str(model_version or ""), flagged_share=float(flagged.mean()) if n else None,
                     kinds=kinds)


def shift_record(
    batch: str, report: Any, when: tuple[datetime, datetime, str], model_version: str = "", reference: str = ""
) -> RunRecord:
    """The history row of a shift check of a batch (`report`: a `core.shift` ``ShiftReport``)."""
    grown = []
    for cluster in report.clusters:
        if getattr(cluster, "status", "") in GROWN:
            grown.append({"status": cluster.status, "change": _finite(cluster.change),
                          "terms": [str(t) for t in list(cluster.top_terms)[:_TERMS]]})
    start, end, source = when
    return RunRecord(batch=batch, record=SHIFT, start=start, end=end, time_source=source,
                     rows=int(report.n_current), model_version=str(model_version or ""), reference=str(reference),
                     shift_p_value=_finite(report.p_value), drift=bool(report.drift),
                     drifted_features=tuple(str(f) for f in report.drifted_features),
                     grown_clusters=tuple(grown[:_CLUSTERS]))


# -- the store -------------------------------------------------------------------------------------------
class MonitorStore:
    """Run history and alerts in the label store's database.

    Parameters
    ----------
    url
        SQLAlchemy URL (the settings' ``resolved_labels_url``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database(url, _Base.metadata, "the run history")
        self.engine = self.db.engine
        self.where = self.db.where

    # runs ------------------------------------------------------------------------------------------------
    def record(self, run: RunRecord) -> None:
        """Store `run`, replacing the row of the same batch, record, model version and reference."""
        row = RunRow(batch=run.batch, record=run.record, model_version=run.model_version, reference=run.reference,
                     start=run.start, end=run.end, time_source=run.time_source, rows=int(run.rows),
                     flagged_share=run.flagged_share, kinds=json.dumps(run.kinds), shift_p_value=run.shift_p_value,
                     drift=run.drift, drifted_features=json.dumps(list(run.drifted_features)),
                     grown_clusters=json.dumps(list(run.grown_clusters)), recorded_at=datetime.now(UTC))
        same = delete(RunRow).where(RunRow.batch == run.batch, RunRow.record == run.record,
                                    RunRow.model_version == run.model_version, RunRow.reference == run.reference)
        for attempt in range(2):  # two writers of the same key: the loser replaces the winner's row
            try:
                with self.db.connect("recording a run") as conn, Session(bind=conn) as session, session.begin():
                    session.execute(same)
                    session.add(row)
                return
            except IntegrityError as err:
                if attempt:
                    raise StorageError(f"could not record the run of {run.batch!r} in {self.where}: "
                                       f"{one_line(err)}") from err
                row = RunRow(**{c.name: getattr(row, c.name) for c in RunRow.__table__.columns if c.name != "id"})
            except SQLAlchemyError as err:
                raise StorageError(f"could not record the run of {run.batch!r} in {self.where}: "
                                   f"{one_line(err)}") from err

    def _read(self, what: str, query: Any, convert: Callable[[Any], _Row]) -> list[_Row]:
        """Every row `query` selects, converted; a database error as one `StorageError` line naming `what`."""
        try:
            with self.db.connect(f"reading {what}") as conn, Session(bind=conn) as session:
                return [convert(r) for r in session.execute(query).scalars().all()]
        except SQLAlchemyError as err:
            raise StorageError(f"could not read {what} from {self.where}: {one_line(err)}") from err

    def runs(self) -> list[RunRecord]:
        """Every stored run, oldest recording first."""
        return self._read("the run history", select(RunRow).order_by(RunRow.recorded_at, RunRow.id), _run_of)

    # alerts ----------------------------------------------------------------------------------------------
    def add_alerts(self, decisions: Iterable[rules.AlertDecision]) -> list[Alert]:
        """Store the decisions not stored yet (same batch, kind, rule and model version); return the new ones."""
        known = {(a.batch, a.kind, a.rule, a.model_version) for a in self.alerts()}
        now = datetime.now(UTC)
        fresh = []
        seen = set()
        for d in decisions:
            key = (d.batch, d.kind, d.rule, d.model_version)
            if key in known or key in seen:
                continue
            seen.add(key)
            fresh.append(AlertRow(batch=d.batch, kind=d.kind, rule=d.rule, model_version=d.model_version,
                                  p_value=float(d.p_value), level=float(d.level), statistic=float(d.statistic),
                                  created=now, delivered=False, attempts=0, last_error=None))
        if not fresh:
            return []
        try:
            with self.db.connect("storing alerts") as conn, Session(bind=conn) as session, session.begin():
                session.add_all(fresh)
                session.flush()
                stored = [_alert_of(r) for r in fresh]
        except IntegrityError:  # another process stored them first: theirs are the alerts
            return []
        except SQLAlchemyError as err:
            raise StorageError(f"could not store alerts in {self.where}: {one_line(err)}") from err
        return stored

    def alerts(self, undelivered: bool = False) -> list[Alert]:
        """Stored alerts, oldest first (only those not delivered yet with `undelivered`)."""
        query = select(AlertRow).order_by(AlertRow.created, AlertRow.id)
        if undelivered:
            query = query.where(AlertRow.delivered.is_(False))
        return self._read("alerts", query, _alert_of)

    def mark_delivery(self, alert: Alert, delivery: rules.Delivery) -> None:
        """Record the outcome of sending `alert` (attempts add up over calls)."""
        try:
            with self.db.connect("recording a delivery") as conn, Session(bind=conn) as session, session.begin():
                row = session.execute(select(AlertRow).where(
                    AlertRow.batch == alert.batch, AlertRow.kind == alert.kind, AlertRow.rule == alert.rule,
                    AlertRow.model_version == alert.model_version)).scalar_one_or_none()
                if row is not None:
                    row.delivered = bool(delivery.delivered)
                    row.attempts = int(row.attempts or 0) + int(delivery.attempts)
                    row.last_error = delivery.last_error
        except SQLAlchemyError as err:
            raise StorageError(f"could not record an alert delivery in {self.where}: {one_line(err)}") from err

    # champion changes ----------------------------------------------------------------------------------
    def record_champion(self, version: str, event: str) -> None:
        """Store that the champion alias moved to `version` now (`event`: ``promoted`` or ``rolled back``)."""
        try:
            with self.db.connect("recording a champion change") as conn, Session(bind=conn) as session, \
                    session.begin():
                session.add(ChampionRow(version=str(version), event=event, at=datetime.now(UTC)))
        except SQLAlchemyError as err:
            raise StorageError(f"could not record the champion change to version {version} in {self.where}: "
                               f"{one_line(err)}") from err

    def champion_changes(self) -> list[ChampionChange]:
        """Every recorded champion change, oldest first."""
        return self._read("champion changes", select(ChampionRow).order_by(ChampionRow.at, ChampionRow.id),
                          lambda r: ChampionChange(r.version, r.event, _as_utc(r.at) or datetime.now(UTC)))

    # the timeline -----------------------------------------------------------------------------------------
    def timeline(self) -> list[BatchPoint]:
        """One point per batch and model version scored (shift-only batches too), in time order."""
        return timeline(self.runs())

    def history(self, level: float) -> History:
        return History(batches=tuple(self.timeline()), alerts=tuple(self.alerts()), level=level,
                       champions=tuple(self.champion_changes()))

    def evaluate(self, level: float, sequential: bool = True) -> list[Alert]:
        """Run the alert rules over the timeline; store and return the alerts not stored before."""
        return self.add_alerts(rules.evaluate(evidence_sequence(self.timeline()), level, sequential=sequential))


def timeline(runs: Iterable[RunRecord]) -> list[BatchPoint]:
    """Batch points from run records: each (batch, model version) of a score with the batch's latest shift
    check (the one under the same model version when there is one); batches only compared get a point too."""
    runs = list(runs)
    shifts: dict[str, list[RunRecord]] = {}
    for run in runs:
        if run.record == SHIFT:
            shifts.setdefault(run.batch, []).append(run)  # oldest first: the last one is the latest
    points = []
    scored = set()
    for run in runs:
        if run.record != SCORE:
            continue
        scored.add(run.batch)
        candidates = shifts.get(run.batch, [])
        same = [s for s in candidates if s.model_version == run.model_version]
        points.append(_point(run, (same or candidates)[-1] if candidates else None))
    for batch, candidates in shifts.items():
        if batch not in scored:
            points.append(_point(None, candidates[-1]))
    return sorted(points, key=lambda p: (p.start, p.end, p.batch, p.model_version))


def _point(score: RunRecord | None, shift: RunRecord | None) -> BatchPoint:
    base = score or shift
    assert base is not None
    kinds = dict(score.kinds) if score else {}
    return BatchPoint(batch=base.batch, start=base.start, end=base.end, time_source=base.time_source,
                      rows=base.rows, model_version=base.model_version, flagged_share=score.flagged_share if score
                      else None, kinds=kinds, shift_p_value=shift.shift_p_value if shift else None,
                      drift=shift.drift if shift else None,
                      drifted_features=shift.drifted_features if shift else (),
                      grown_clusters=shift.grown_clusters if shift else ())


def evidence_sequence(points: Iterable[BatchPoint]) -> list[tuple[str, dict[str, float], str]]:
    """``(batch, {kind: p_value, "shift": p_value}, model_version)`` per point in time order: the input of
    `core.alerts.evaluate`. A member without a p-value counts as 1 (not tested)."""
    latest: dict[str, BatchPoint] = {}
    for p in points:  # one point per batch (the newest model's): a batch rescored is not new evidence
        if p.batch not in latest or _version_key(p.model_version) >= _version_key(latest[p.batch].model_version):
            latest[p.batch] = p
    points = [p for p in points if latest[p.batch] is p]
    family = sorted({k for p in points for k in p.kinds})
    out = []
    for p in points:
        values = {k: _p_or_one(p.kinds.get(k, {}).get("p_value")) for k in family}
        values[rules.SHIFT] = _p_or_one(p.shift_p_value)
        out.append((p.batch, values, p.model_version))
    return out


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def _p_or_one(value: Any) -> float:
    number = _finite(value)
    return 1.0 if number is None else min(1.0, max(0.0, number))


def _run_of(r: RunRow) -> RunRecord:
    return RunRecord(batch=r.batch, record=r.record, start=_as_utc(r.start) or datetime.now(UTC),
                     end=_as_utc(r.end) or datetime.now(UTC), time_source=r.time_source, rows=int(r.rows),
                     model_version=r.model_version or "", reference=r.reference or "",
                     flagged_share=r.flagged_share, kinds=json.loads(r.kinds or "{}"),
                     shift_p_value=r.shift_p_value, drift=r.drift,
                     drifted_features=tuple(json.loads(r.drifted_features or "[]")),
                     grown_clusters=tuple(json.loads(r.grown_clusters or "[]")), recorded_at=_as_utc(r.recorded_at))


def _alert_of(r: AlertRow) -> Alert:
    return Alert(batch=r.batch, kind=r.kind, rule=r.rule, model_version=r.model_version or "",
                 p_value=float(r.p_value), level=float(r.level), statistic=float(r.statistic),
                 created=_as_utc(r.created) or datetime.now(UTC), delivered=bool(r.delivered),
                 attempts=int(r.attempts or 0), last_error=r.last_error)


# -- delivery ---------------------------------------------------------------------------------------------
def webhook_body(alert: Alert) -> dict[str, Any]:
    """The JSON body sent for one alert (docs/monitoring.md)."""
    return {"source": "review-workbench", "alert": {k: v for k, v in alert.as_json().items()
                                                    if k not in ("delivered", "attempts", "last_error")}}


def deliver(store: MonitorStore, url: str | None, alerts: Iterable[Alert] | None = None,
            retries: int = 3, backoff: float = 0.5, timeout: float = 5.0) -> list[rules.Delivery]:
    """Send `alerts` (default: every alert not delivered yet) to the webhook at `url` and record each outcome.

    Nothing is sent without a URL; the alerts stay undelivered, to be sent by a later call.
    """
    if not url:
        return []
    pending = list(alerts) if alerts is not None else store.alerts(undelivered=True)
    outcomes = []
    for alert in pending:
        outcome = rules.post_json(url, webhook_body(alert), retries=retries, backoff=backoff, timeout=timeout)
        store.mark_delivery(alert, outcome)
        outcomes.append(outcome)
    return outcomes


def kinds_of(points: Iterable[BatchPoint]) -> list[str]:
    """Every kind that appears on the timeline, sorted."""
    return sorted({k for p in points for k in p.kinds})


def history_frame_rows(history: History) -> list[dict[str, Any]]:
    """Flat rows of the timeline (one per batch point, one column per kind): for tables and CSV downloads."""
    kinds = kinds_of(history.batches)
    rows = []
    for p in history.batches:
        row: dict[str, Any] = {"batch": p.batch, "start": p.start.isoformat(), "end": p.end.isoformat(),
                               "rows": p.rows, "model_version": p.model_version, "flagged_share": p.flagged_share}
        for k in kinds:
            values: Mapping[str, Any] = p.kinds.get(k, {})
            row[f"{k}_flagged_share"] = values.get("flagged_share")
            row[f"{k}_p_value"] = values.get("p_value")
        row.update({"shift_p_value": p.shift_p_value, "drift": p.drift,
                    "drifted_features": ", ".join(p.drifted_features),
                    "grown_cluster_terms": "; ".join(", ".join(c.get("terms", [])) for c in p.grown_clusters)})
        rows.append(row)
    return rows
