"""Analysts' labels: a durable SQL store, reading and writing label files, and labels as model targets.

The store is plain SQLAlchemy (SQLite file under ``WORKBENCH_HOME`` by default, any URL such as Postgres
in the full stack). Labels are append-only: relabelling a review adds a row, and `LabelStore.latest`
gives each review's most recent label, so nothing an analyst did is lost.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import DateTime, Integer, String, Text, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from core.database import Database, one_line
from core.errors import InputFileError, ParameterError, StorageError
from core.io.readers import sniff_delimiter
from core.spreadsheet import restore_cell

LABELS: tuple[str, ...] = ("outlier", "normal")
COLUMNS: tuple[str, ...] = ("id", "review_id", "label", "note", "author", "batch", "created_at")


class _Base(DeclarativeBase):
    pass


class LabelRow(_Base):
    """One label as stored."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    review_id: Mapped[str] = mapped_column(String(200), index=True)
    label: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    author: Mapped[str | None] = mapped_column(String(200), nullable=True)
    batch: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def _check_label(label: Any, where: str = "") -> str:
    value = str(label).strip().lower() if label is not None else ""
    if value not in LABELS:
        raise ParameterError(f"{where}label must be one of {', '.join(LABELS)}, got {label!r}")
    return value


def _check_review_id(review_id: Any, where: str = "") -> str:
    if (
        review_id is None
        or (isinstance(review_id, float) and np.isnan(review_id))
        or not str(review_id).strip()
    ):
        raise ParameterError(f"{where}review_id must be a non-empty string, got {review_id!r}")
    return str(review_id).strip()


class LabelStore:
    """Labels in a SQL database.

    Parameters
    ----------
    url
        SQLAlchemy URL; None means the settings' ``labels_url`` (SQLite ``labels.db`` under ``WORKBENCH_HOME``).
    """

    def __init__(self, url: str | None = None) -> None:
        if url is None:
            from core.settings import get_settings

            url = get_settings().resolved_labels_url
        self.url = url
        self.db = Database(url, _Base.metadata, "the label store")
        self.engine = self.db.engine
        #: The URL as messages show it: never the password.
        self.where = self.db.where

    def add(
        self,
        review_id: str,
        label: str,
        note: str | None = None,
        author: str | None = None,
        batch: str | None = None,
    ) -> None:
        """Store one label (``outlier`` or ``normal``)."""
        self.add_many(
            [{"review_id": review_id, "label": label, "note": note, "author": author, "batch": batch}]
        )

    def add_many(self, records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> int:
        """Store many labels in one transaction; all are checked first, so a bad one stores none.

        Returns the number stored.
        """
        if isinstance(records, pd.DataFrame):
            records = records.to_dict("records")
        now = datetime.now(UTC)
        rows = []
        for i, rec in enumerate(records):
            where = f"record {i + 1}: "
            rows.append(
                LabelRow(
                    review_id=_check_review_id(rec.get("review_id"), where),
                    label=_check_label(rec.get("label"), where),
                    note=_none_if_missing(rec.get("note")),
                    author=_none_if_missing(rec.get("author")),
                    batch=_none_if_missing(rec.get("batch")),
                    created_at=now,
                )
            )
        # One transaction: when the server goes away mid-way, none of the rows is stored.
        try:
            with self.db.connect("storing labels") as conn, Session(bind=conn) as session, session.begin():
                session.add_all(rows)
        except SQLAlchemyError as err:
            raise StorageError(f"could not store labels in {self.where}: {one_line(err)}; none stored") from err
        return len(rows)

    def all(self) -> pd.DataFrame:
        """Every stored label, oldest first."""
        try:
            with self.db.connect("reading labels") as conn, Session(bind=conn) as session:
                rows = session.execute(select(LabelRow).order_by(LabelRow.id)).scalars().all()
                data = [{c: getattr(r, c) for c in COLUMNS} for r in rows]
        except SQLAlchemyError as err:
            raise StorageError(f"could not read labels from {self.where}: {one_line(err)}") from err
        return pd.DataFrame(data, columns=list(COLUMNS))

    def latest(self) -> pd.DataFrame:
        """The most recent label of each review."""
        frame = self.all()
        return frame.drop_duplicates("review_id", keep="last").reset_index(drop=True)

    def export(self, history: bool = False, batch: str | None = None) -> pd.DataFrame:
        """Labels in the layout `import_csv` reads back: ``review_id, label, note, author, batch, created_at``.

        The latest label of each review by default; `history` gives every stored row, oldest first. `batch`
        keeps the labels given in that batch only. Importing the export into another workspace reproduces its
        latest labels (stamped with the time of the import).
        """
        frame = self.all() if history else self.latest()
        return as_export(frame if batch is None else frame[frame["batch"] == batch])

    def as_series(self) -> pd.Series:
        """Latest labels as a Series ``review_id -> label``, the input of `OutlierModel.fit_labels`."""
        latest = self.latest()
        return pd.Series(latest["label"].to_numpy(), index=latest["review_id"].to_numpy(), name="label")

    def import_csv(self, path: str | Path, author: str | None = None, batch: str | None = None) -> int:
        """Import a CSV with columns ``review_id,label`` (and optionally ``note``, ``author``, ``batch``; `author`
        and `batch` given here fill the rows that have none).

        Every row is checked before anything is stored; a bad row raises with its line number.
        """
        path = Path(path)
        if not path.is_file():
            raise InputFileError(str(path), "file not found")
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                # Spreadsheets export with semicolons in much of Europe; the header says which.
                reader = csv.DictReader(handle, delimiter=sniff_delimiter(handle.readline()))
                handle.seek(0)
                fields = [f.strip().lower() for f in reader.fieldnames or []]
                if "review_id" not in fields or "label" not in fields:
                    raise InputFileError(
                        str(path), f"expected columns review_id,label; got {','.join(fields) or 'none'}"
                    )
                records = []
                previous_end = reader.line_num
                for raw in reader:
                    line, previous_end = previous_end + 1, reader.line_num  # a quoted note may span lines
                    # Exports quote cells a spreadsheet would run as formulas ('=...): read the value back.
                    rec = {str(k).strip().lower(): restore_cell(v) for k, v in raw.items() if k is not None}
                    where = f"{path.name} line {line}: "
                    records.append(
                        {
                            "review_id": _check_review_id(rec.get("review_id"), where),
                            "label": _check_label(rec.get("label"), where),
                            "note": rec.get("note") or None,
                            "author": rec.get("author") or author,
                            "batch": rec.get("batch") or batch,
                        }
                    )
        except UnicodeDecodeError as err:
            raise InputFileError(str(path), f"not UTF-8 text ({err})") from err
        return self.add_many(records)


def as_export(labels: pd.DataFrame) -> pd.DataFrame:
    """Stored label rows (`LabelStore.all` / `latest`) in the layout `LabelStore.import_csv` reads back."""
    frame = labels.drop(columns=["id"]).reset_index(drop=True)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame


def _none_if_missing(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


# -- labels as targets -------------------------------------------------------------------------------
def as_binary(labels: pd.Series) -> np.ndarray:
    """``outlier`` -> 1, ``normal`` -> 0 (also accepts booleans and 0/1)."""

    def convert(v: Any) -> int:
        if isinstance(v, (bool, np.bool_)):
            return int(v)
        if isinstance(v, (int, np.integer, float)) and v in (0, 1):
            return int(v)
        return 1 if _check_label(v) == "outlier" else 0

    return np.array([convert(v) for v in labels], dtype=np.int64)


#: Orders of the Label page's queue: the ensemble's ranking, or a fixed random order of the batch.
QUEUE_ORDERS: tuple[str, ...] = ("most unusual first", "random sample")


def random_order(review_ids: pd.Series) -> np.ndarray:
    """A random but fixed rank per review id (a hash), so the sample stays the same across reruns and
    labelling the next review never reshuffles the rest."""
    return pd.util.hash_pandas_object(review_ids.astype(str), index=False).to_numpy()
