"""Stored batches: the kept rows, the quarantined rows and the validation report, committed by a manifest.

A batch lives under ``batches/NAME/`` in the storage backend. Its manifest is written last, so a failed upload
leaves no batch that reads as valid, and an earlier batch of the same name stays intact until the new one commits.
"""

from __future__ import annotations

import contextlib
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from core.errors import NotFoundError, ParameterError
from core.io.load import LoadResult, load_bytes
from core.io.schema import ValidationReport
from core.storage import Storage

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: The objects of one stored version of a batch, under ``batches/NAME/VERSION/``; the manifest names the version.
BATCH_OBJECTS = ("reviews.parquet", "quarantine.parquet", "report.json")


class BatchInfo(BaseModel):
    """What the manifest says about a stored batch."""

    name: str
    created: str
    source: str
    rows: int
    quarantined: int
    duplicates: int
    columns: dict[str, str]
    missing_columns: list[str]
    date_min: str | None = None
    date_max: str | None = None
    categories: dict[str, int] = {}
    version: str


def batch_name_from(path: str) -> str:
    """A default batch name from a file name: ``Gift_Cards_5.json.gz`` -> ``Gift_Cards_5``."""
    stem = Path(path).name
    for ext in (".gz", ".csv", ".tsv", ".tab", ".jsonl", ".ndjson", ".json", ".parquet", ".pq"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "batch"
    return cleaned[:100]


def check_batch_name(name: str) -> str:
    if not _NAME.match(name):
        raise ParameterError(
            f"batch name must be 1-100 letters, digits, '.', '_' or '-' and start with a letter or digit, got {name!r}"
        )
    return name


class BatchStore:
    """Save, list and read batches in a storage backend."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def save(self, name: str, result: LoadResult) -> BatchInfo:
        """Store a loaded batch; replaces an earlier batch of the same name only once everything is written."""
        check_batch_name(name)
        version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        frame = result.frame
        stamps = frame["timestamp"].dropna()
        categories = frame["category"].dropna().value_counts().head(20)
        info = BatchInfo(
            name=name,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            source=result.report.source,
            rows=len(frame),
            quarantined=result.report.rows_quarantined,
            duplicates=result.report.duplicates,
            columns=result.report.columns,
            missing_columns=result.report.missing_columns,
            date_min=stamps.min().isoformat() if len(stamps) else None,
            date_max=stamps.max().isoformat() if len(stamps) else None,
            categories={str(k): int(v) for k, v in categories.items()},
            version=version,
        )
        report = result.report.model_copy(update={"batch": name})
        objects = {"reviews.parquet": _to_parquet(frame), "quarantine.parquet": _to_parquet(result.quarantined),
                   "report.json": report.model_dump_json(indent=2).encode()}
        previous = self._committed_version(name)
        written: list[str] = []
        try:
            for filename, data in objects.items():
                self.storage.put_bytes(f"batches/{name}/{version}/{filename}", data)
                written.append(f"batches/{name}/{version}/{filename}")
        except BaseException:
            # Best effort: when the server is gone these stay behind, unreferenced; `workbench doctor` removes them.
            for key in written:
                with contextlib.suppress(Exception):
                    self.storage.delete(key)
            raise
        # The manifest commits the batch: readers only ever follow it, and one put replaces it whole. Nothing is
        # cleaned up when this put fails: the server may have stored it before the answer was lost.
        self.storage.put_bytes(f"batches/{name}/manifest.json", info.model_dump_json(indent=2).encode())
        if previous is not None and previous != version:
            for filename in BATCH_OBJECTS:  # no manifest points at the replaced version any more
                with contextlib.suppress(Exception):
                    self.storage.delete(f"batches/{name}/{previous}/{filename}")
        return info

    def _committed_version(self, name: str) -> str | None:
        try:
            return BatchInfo.model_validate_json(self.storage.get_bytes(f"batches/{name}/manifest.json")).version
        except NotFoundError:
            return None
        except ValueError:  # an unreadable manifest: `workbench doctor` reports it
            return None

    def ingest_bytes(self, name: str, data: bytes, filename: str, **load_kwargs: object) -> tuple[BatchInfo, LoadResult]:
        """Load an upload and store it; nothing is stored when loading fails."""
        result = load_bytes(data, name=filename, **load_kwargs)  # type: ignore[arg-type]
        return self.save(name, result), result

    def list(self) -> list[BatchInfo]:
        infos = []
        for key in self.storage.list("batches/"):
            if key.endswith("/manifest.json") and key.count("/") == 2:
                infos.append(BatchInfo.model_validate_json(self.storage.get_bytes(key)))
        return sorted(infos, key=lambda i: i.created)

    def exists(self, name: str) -> bool:
        """Whether a batch of this name is stored; False for anything that cannot be a batch name (a path)."""
        return bool(_NAME.match(name)) and self.storage.exists(f"batches/{name}/manifest.json")

    def info(self, name: str) -> BatchInfo:
        try:
            raw = self.storage.get_bytes(f"batches/{check_batch_name(name)}/manifest.json")
        except NotFoundError:
            known = ", ".join(i.name for i in self.list()) or "none yet; run `workbench ingest PATH`"
            raise NotFoundError(f"no stored batch named {name!r} (stored batches: {known})") from None
        return BatchInfo.model_validate_json(raw)

    def frame(self, name: str) -> pd.DataFrame:
        info = self.info(name)
        return pd.read_parquet(io.BytesIO(self.storage.get_bytes(f"batches/{name}/{info.version}/reviews.parquet")))

    def quarantined(self, name: str) -> pd.DataFrame:
        info = self.info(name)
        return pd.read_parquet(io.BytesIO(self.storage.get_bytes(f"batches/{name}/{info.version}/quarantine.parquet")))

    def report(self, name: str) -> ValidationReport:
        info = self.info(name)
        return ValidationReport.model_validate_json(self.storage.get_bytes(f"batches/{name}/{info.version}/report.json"))

    def delete(self, name: str) -> None:
        for key in self.storage.list(f"batches/{check_batch_name(name)}/"):
            self.storage.delete(key)


def _to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


