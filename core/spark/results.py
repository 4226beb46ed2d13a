"""What a Spark run reports: a scoring run (also written as ``_SUMMARY.json`` next to its output), a shift comparison."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from core.shift.results import ShiftReport


@dataclass(frozen=True)
class SparkScoreSummary:
    """Counts and settings of one `core.spark.scoring.score_dataset` run.

    Attributes
    ----------
    out
        The output folder: a Parquet dataset of scores, ``_quarantine/`` (Parquet) and ``_SUMMARY.json``.
    rows_read, rows_scored, rows_quarantined, flagged
        Rows read (kept + set aside), scored, set aside with file, line and reason, and flagged as outliers.
    files
        Review files read.
    model
        The pinned model URI (``models:/NAME/VERSION`` or a bundle folder) and its version.
    group_evidence
        Per ensemble group, the p-value of its excess over the whole dataset (the first pass's aggregate).
    batch_signal_blocks
        How many blocks the signals that compare a review with the rest of its batch (duplicates, batch
        contrast) were computed in: 1 = over all rows, exactly as on one machine.
    text_only_twin
        The dataset has no titles and the model embeds title + text: scored with the model's text-only twin,
        as ``workbench score`` does.
    """

    out: str
    source: str
    master: str
    model: str
    model_version: str | None
    files: int
    rows_read: int
    rows_scored: int
    rows_quarantined: int
    flagged: int
    partitions: int
    batch_signal_blocks: int
    batch_scoped_signals: list[str]
    missing_columns: list[str]
    group_evidence: dict[str, float]
    active_groups: list[str]
    quarantine_reasons: dict[str, int]
    embedding_backend: str
    text_only_twin: bool = False
    timings_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class SparkShift:
    """What `core.spark.shift.shift_datasets` found: the shift report and how each part of it was computed.

    Attributes
    ----------
    report
        The `core.shift.ShiftReport`, rendered by `core.report` as on one machine; its ``scores`` hold the current
        reviews of the sample (the per-review p-values of every current review were counted, not collected).
    coverage
        Per part of the report (per-feature tests, novelty test, MMD, ...), the rows it used: every row or a
        seeded sample of a stated size.
    feature_values
        Per numeric feature, how its values were counted: exact counts, or bins with the bound on the statistic.
    rows_quarantined
        Rows of each dataset set aside when read (file, line and reason: ``workbench ingest`` rules).
    """

    report: ShiftReport
    master: str
    reference: str
    current: str
    coverage: dict[str, str]
    feature_values: dict[str, str]
    rows_quarantined: dict[str, int]
    partitions: int
    timings_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The run as plain JSON-ready data (the report itself is written by `core.report`)."""
        r = self.report
        return {"reference": self.reference, "current": self.current, "master": self.master,
                "drift": bool(r.drift), "p_value": float(r.p_value), "n_reference": r.n_reference,
                "n_current": r.n_current, "drifted_features": list(r.drifted_features),
                "skipped_features": dict(r.skipped_features), "embedded_fields": list(r.embedded_fields),
                "coverage": self.coverage, "feature_values": self.feature_values,
                "rows_quarantined": self.rows_quarantined, "partitions": self.partitions,
                "timings_s": self.timings_s}
