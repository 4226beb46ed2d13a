"""The review history: who reviewed which product, when, with which rating and text, over every stored batch.

One table in the workspace's database (SQLite under ``WORKBENCH_HOME`` by default, PostgreSQL in the full stack).
A batch's rows are added when it is stored and removed when it is deleted, so the history never re-reads
earlier batches; `HistoryStore.sync` brings it in line with the stored batches after a restore or a repair.
Ids are strangers' strings of any length: rows are looked up by a fixed-size hash of each id and the id
itself is kept verbatim beside it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sqlalchemy import DateTime, Float, Integer, String, Text, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from core.database import Database, one_line
from core.detect.signals.base import normalise_text, plain_texts
from core.errors import StorageError, WorkbenchError
from core.io.batches import BatchInfo, BatchStore

log = logging.getLogger(__name__)

#: Columns of a history frame, as `HistoryStore.lookup` and `history_rows` give them.
HISTORY_COLUMNS: tuple[str, ...] = ("batch", "review_id", "user_id", "product_id", "rating", "posted", "fingerprint")
_CHUNK = 500  # ids per IN (...) list: well below every database's limit on bound parameters


class _Base(DeclarativeBase):
    pass


class HistoryRow(_Base):
    __tablename__ = "review_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch: Mapped[str] = mapped_column(String(200), index=True)
    review_id: Mapped[str] = mapped_column(Text)
    user_key: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    user_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    product_key: Mapped[str | None] = mapped_column(String(32), index=True, nullable=True)
    product_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    rating: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Seconds since 1970-01-01 UTC; NULL when the review has no date.
    posted: Mapped[float | None] = mapped_column(Float, nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(32), nullable=True)


class HistoryBatch(_Base):
    """Which version of each stored batch the history holds."""

    __tablename__ = "review_history_batches"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(Integer)
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def id_key(value: object) -> str | None:
    """A fixed-size lookup key of an id (None for a missing or blank id)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    if not text:
        return None
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).hexdigest()


def _ids(frame: pd.DataFrame, column: str) -> list[str | None]:
    if column not in frame.columns:
        return [None] * len(frame)
    out: list[str | None] = []
    for value in frame[column].tolist():
        key = id_key(value)
        out.append(None if key is None else str(value).strip())
    return out


def posted_seconds(frame: pd.DataFrame) -> np.ndarray:
    """Each review's time as seconds since 1970 UTC (NaN without a date)."""
    if "timestamp" not in frame.columns:
        return np.full(len(frame), np.nan)
    stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
    seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    return seconds.to_numpy(dtype=np.float64, na_value=np.nan)


def _fingerprints(frame: pd.DataFrame) -> list[str | None]:
    if "text" not in frame.columns:
        return [None] * len(frame)
    out: list[str | None] = []
    for text in plain_texts(frame["text"]):
        norm = normalise_text(text)
        out.append(hashlib.blake2b(norm.encode("utf-8"), digest_size=8).hexdigest() if norm else None)
    return out


def history_rows(frame: pd.DataFrame, batch: str = "") -> pd.DataFrame:
    """`frame` (a canonical review frame) as history rows: ids verbatim, time in seconds, text fingerprints."""
    ratings = (pd.to_numeric(frame["rating"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
               if "rating" in frame.columns else np.full(len(frame), np.nan))
    review_ids = ([str(v) for v in frame["review_id"].tolist()] if "review_id" in frame.columns
                  else [f"row-{i}" for i in range(len(frame))])
    return pd.DataFrame({
        "batch": [batch] * len(frame),
        "review_id": review_ids,
        "user_id": pd.array(_ids(frame, "user_id"), dtype=object),
        "product_id": pd.array(_ids(frame, "product_id"), dtype=object),
        "rating": ratings,
        "posted": posted_seconds(frame),
        "fingerprint": pd.array(_fingerprints(frame), dtype=object),
    }, columns=list(HISTORY_COLUMNS))


@dataclass(frozen=True)
class SyncReport:
    """What `HistoryStore.sync` changed."""

    added: tuple[str, ...]
    removed: tuple[str, ...]


class HistoryStore:
    """Every stored batch's reviewers, products, ratings, dates and text fingerprints, in one SQL table.

    Parameters
    ----------
    url
        SQLAlchemy URL (the settings' ``resolved_labels_url``: the same database as the labels).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.db = Database(url, _Base.metadata, "the review history")
        self.where = self.db.where

    # writing ---------------------------------------------------------------------------------------
    def add_batch(self, name: str, frame: pd.DataFrame, version: str = "") -> int:
        """Put the reviews of batch `name` in the history, replacing the rows of an earlier version of it.

        One transaction: when the database fails half-way the history keeps the earlier rows. Returns the
        rows written.
        """
        rows = history_rows(frame, name)
        records = [
            {"batch": name, "review_id": r.review_id, "user_id": r.user_id, "user_key": id_key(r.user_id),
             "product_id": r.product_id, "product_key": id_key(r.product_id),
             "rating": None if not np.isfinite(r.rating) else float(r.rating),
             "posted": None if not np.isfinite(r.posted) else float(r.posted), "fingerprint": r.fingerprint}
            for r in rows.itertuples(index=False)
        ]
        try:
            with self.db.connect("updating the review history") as conn, conn.begin():
                conn.execute(delete(HistoryRow).where(HistoryRow.batch == name))
                conn.execute(delete(HistoryBatch).where(HistoryBatch.name == name))
                if records:
                    conn.execute(insert(HistoryRow), records)
                conn.execute(insert(HistoryBatch),
                             [{"name": name, "version": version, "rows": len(records), "added_at": datetime.now(UTC)}])
        except SQLAlchemyError as err:
            raise StorageError(f"could not add batch {name!r} to the review history in {self.where}: "
                               f"{one_line(err)}; the history is unchanged") from err
        return len(records)

    def remove_batch(self, name: str) -> None:
        """Take the rows of batch `name` out of the history (nothing happens for a batch it does not hold)."""
        try:
            with self.db.connect("updating the review history") as conn, conn.begin():
                conn.execute(delete(HistoryRow).where(HistoryRow.batch == name))
                conn.execute(delete(HistoryBatch).where(HistoryBatch.name == name))
        except SQLAlchemyError as err:
            raise StorageError(f"could not remove batch {name!r} from the review history in {self.where}: "
                               f"{one_line(err)}") from err

    def batches(self) -> dict[str, str]:
        """The batches the history holds, name -> version."""
        try:
            with self.db.connect("reading the review history") as conn:
                return {r.name: r.version for r in conn.execute(select(HistoryBatch.name, HistoryBatch.version))}
        except SQLAlchemyError as err:
            raise StorageError(f"could not read the review history in {self.where}: {one_line(err)}") from err

    def sync(self, stored: dict[str, str], read: Callable[[str], pd.DataFrame]) -> SyncReport:
        """Make the history hold exactly the `stored` batches (name -> version): batches it lacks, or holds in
        another version, are read with `read(name)` and added; batches no longer stored are removed."""
        held = self.batches()
        added = [name for name, version in stored.items() if held.get(name) != version]
        removed = [name for name in held if name not in stored]
        for name in removed:
            self.remove_batch(name)
        for name in added:
            self.add_batch(name, read(name), version=stored[name])
        return SyncReport(added=tuple(added), removed=tuple(removed))

    # reading ---------------------------------------------------------------------------------------
    def count(self) -> int:
        try:
            with self.db.connect("reading the review history") as conn:
                return int(conn.execute(select(func.count()).select_from(HistoryRow)).scalar_one())
        except SQLAlchemyError as err:
            raise StorageError(f"could not read the review history in {self.where}: {one_line(err)}") from err

    def lookup(self, user_ids: Iterable[object] = (), product_ids: Iterable[object] = ()) -> pd.DataFrame:
        """Every stored review by any of `user_ids` or about any of `product_ids` (`HISTORY_COLUMNS`)."""
        users = sorted({k for k in (id_key(u) for u in user_ids) if k is not None})
        products = sorted({k for k in (id_key(p) for p in product_ids) if k is not None})
        table = HistoryRow.__table__
        columns = [table.c[c] for c in HISTORY_COLUMNS]
        parts: list[pd.DataFrame] = []
        try:
            with self.db.connect("reading the review history") as conn:
                for column, keys in ((table.c.user_key, users), (table.c.product_key, products)):
                    for start in range(0, len(keys), _CHUNK):
                        query = select(table.c.id, *columns).where(column.in_(keys[start:start + _CHUNK]))
                        # Plain tuples: pandas probes every SQLAlchemy Row for attributes (3 s per 300k rows).
                        found = [tuple(r) for r in conn.execute(query)]
                        parts.append(pd.DataFrame(found, columns=["id", *HISTORY_COLUMNS]))
        except SQLAlchemyError as err:
            raise StorageError(f"could not read the review history in {self.where}: {one_line(err)}") from err
        parts = [p for p in parts if len(p)]
        if not parts:
            return history_rows(pd.DataFrame({"text": []}))
        found = pd.concat(parts, ignore_index=True).drop_duplicates("id").drop(columns="id")
        found["rating"] = pd.to_numeric(found["rating"], errors="coerce").astype(np.float64)
        found["posted"] = pd.to_numeric(found["posted"], errors="coerce").astype(np.float64)
        return found.reset_index(drop=True)

    def product_means(self, product_ids: Sequence[object]) -> pd.DataFrame:
        """Reviews and mean rating of each product (``product_id``, ``reviews``, ``mean_rating``)."""
        keys = sorted({k for k in (id_key(p) for p in product_ids) if k is not None})
        table = HistoryRow.__table__
        parts: list[tuple[str, int, float | None]] = []
        try:
            with self.db.connect("reading the review history") as conn:
                for start in range(0, len(keys), _CHUNK):
                    query = (select(table.c.product_key, func.min(table.c.product_id), func.count(),
                                    func.avg(table.c.rating))
                             .where(table.c.product_key.in_(keys[start:start + _CHUNK]))
                             .group_by(table.c.product_key))
                    parts.extend((r[1], int(r[2]), r[3]) for r in conn.execute(query))
        except SQLAlchemyError as err:
            raise StorageError(f"could not read the review history in {self.where}: {one_line(err)}") from err
        return pd.DataFrame(parts, columns=["product_id", "reviews", "mean_rating"])


@dataclass(frozen=True)
class BehaviourRead:
    """A frame read against the review history: the frame with its behavioural columns, and the pool they were
    computed over (`core.campaigns.behaviour.pool_of`: the frame's history rows, then the stored reviews of its
    reviewers and products)."""

    frame: pd.DataFrame
    pool: pd.DataFrame


def read_behaviour(frame: pd.DataFrame, history: HistoryStore | None, batch: str = "") -> BehaviourRead:
    """`frame` with the behavioural columns (`core.campaigns.behaviour.behaviour_columns`) added, computed over
    the frame and every stored review of its reviewers and products (none when `history` is None).

    Columns of the same names already in `frame` are replaced: they are always recomputed from the history.
    """
    from core.campaigns.behaviour import behaviour_columns, pool_features, pool_of

    rows = history_rows(frame, batch)
    has_ids = rows["user_id"].notna().any() or rows["product_id"].notna().any()
    means = None
    if history is not None and has_ids:
        context = history.lookup(rows["user_id"].dropna(), rows["product_id"].dropna())
        products = context["product_id"].dropna().unique() if len(context) else []
        means = history.product_means(list(products)) if len(products) else None
        pool = pool_of(rows, context)[0]
    else:
        pool = rows
    features = pool_features(pool, len(rows), means) if has_ids else pd.DataFrame(
        {c: np.full(len(frame), np.nan) for c in behaviour_columns()})
    out = frame.drop(columns=[c for c in behaviour_columns() if c in frame.columns]).reset_index(drop=True)
    return BehaviourRead(frame=pd.concat([out, features.reset_index(drop=True)], axis=1), pool=pool)


def with_behaviour(frame: pd.DataFrame, history: HistoryStore | None, batch: str = "") -> pd.DataFrame:
    """`read_behaviour(frame, history, batch).frame`."""
    return read_behaviour(frame, history, batch).frame


class WorkspaceHistory:
    """The review history of one workspace, kept in line with its stored batches.

    Opened and synced with `batches` on first use in a process. Following a batch that was just stored or
    removed never fails the caller: the batch is stored (or gone) either way, a failure is logged, and the next
    sync catches up. Reading behaviour without a reachable history gives the frame's own evidence only.

    Parameters
    ----------
    url
        SQLAlchemy URL of the workspace's database.
    batches
        The workspace's stored batches.
    """

    def __init__(self, url: str, batches: BatchStore) -> None:
        self.url = url
        self.batches = batches
        self._store: HistoryStore | None = None

    def store(self) -> HistoryStore:
        """The history, synced with the stored batches when first opened."""
        if self._store is None:
            store = HistoryStore(self.url)
            store.sync({i.name: i.version for i in self.batches.list()}, self.batches.frame)
            self._store = store
        return self._store

    def resync(self) -> None:
        """Sync again (after batches were removed behind the workspace's back, e.g. by a repair)."""
        self._store = None
        try:
            self.store()
        except WorkbenchError as err:
            log.warning("the review history could not be brought in line with the stored batches: %s", err)

    def added(self, info: BatchInfo, frame: pd.DataFrame) -> None:
        """Follow a batch just stored as `info` holding `frame`."""
        try:
            if self._store is None:
                self.store()  # the first sync reads this batch with the others
            else:
                self._store.add_batch(info.name, frame, version=info.version)
        except WorkbenchError as err:
            self._store = None
            log.warning("batch %r is stored but not in the review history yet: %s", info.name, err)

    def removed(self, name: str) -> None:
        """Follow the removal of batch `name`."""
        try:
            self.store().remove_batch(name)
        except WorkbenchError as err:
            log.warning("batch %r is deleted but still in the review history: %s", name, err)

    def read(self, frame: pd.DataFrame, batch: str = "") -> BehaviourRead:
        """`read_behaviour` against this history, or against nothing when it cannot be read."""
        try:
            history: HistoryStore | None = self.store()
        except WorkbenchError as err:
            log.warning("reading behaviour without the review history: %s", err)
            history = None
        return read_behaviour(frame, history, batch)
