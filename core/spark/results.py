"""What a Spark scoring run reports (also written as ``_SUMMARY.json`` next to its output)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
