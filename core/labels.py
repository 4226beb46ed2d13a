"""Analysts' labels: a durable SQL store, metrics of scores against labels, and the label-aware scorer.

The store is plain SQLAlchemy (SQLite file under ``WORKBENCH_HOME`` by default, any URL such as Postgres
in the full stack). Labels are append-only: relabelling a review adds a row, and `LabelStore.latest`
gives each review's most recent label, so nothing an analyst did is lost.
"""

from __future__ import annotations

import csv
import importlib.util
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from sqlalchemy import DateTime, Integer, String, Text, create_engine, select
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from core.errors import InputFileError, NotFittedError, ParameterError, StorageError
from core.load import sniff_delimiter
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
        parsed = _installed_driver(make_url(url))
        #: The URL as messages show it: never the password.
        self.where = parsed.render_as_string(hide_password=True)
        options: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            if parsed.database not in (None, "", ":memory:"):
                Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        else:
            # A database server restarts under long-lived processes (API, workbench): test each pooled
            # connection before use instead of failing the next write on a dead one.
            options["pool_pre_ping"] = True
        try:
            self.engine = create_engine(parsed, **options)
        except (SQLAlchemyError, ImportError) as err:
            raise StorageError(f"cannot open the label store at {self.where}: {_one_line(err)}") from err
        try:
            with self._connect("opening the label store") as conn:
                _Base.metadata.create_all(conn)
                conn.commit()
        except (IntegrityError, ProgrammingError):
            # Another process created the table between our check and our CREATE: it is there now.
            try:
                with self._connect("opening the label store") as conn:
                    _Base.metadata.create_all(conn)
                    conn.commit()
            except SQLAlchemyError as err:
                raise StorageError(f"cannot open the label store at {self.where}: {_one_line(err)}") from err
        except SQLAlchemyError as err:
            raise StorageError(f"cannot open the label store at {self.where}: {_one_line(err)}") from err

    def _connect(self, action: str) -> Connection:
        """A connection, retried briefly while the server refuses them (a restart); nothing is sent before."""
        for delay in _CONNECT_RETRIES:
            try:
                return self.engine.connect()
            except OperationalError as err:
                if delay is None:
                    raise StorageError(f"{action} failed: the label store at {self.where} is unreachable "
                                       f"({_one_line(err)})") from err
                time.sleep(delay)
        raise AssertionError("unreachable")

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
            with self._connect("storing labels") as conn, Session(bind=conn) as session, session.begin():
                session.add_all(rows)
        except SQLAlchemyError as err:
            raise StorageError(f"could not store labels in {self.where}: {_one_line(err)}; none stored") from err
        return len(rows)

    def all(self) -> pd.DataFrame:
        """Every stored label, oldest first."""
        try:
            with self._connect("reading labels") as conn, Session(bind=conn) as session:
                rows = session.execute(select(LabelRow).order_by(LabelRow.id)).scalars().all()
                data = [{c: getattr(r, c) for c in COLUMNS} for r in rows]
        except SQLAlchemyError as err:
            raise StorageError(f"could not read labels from {self.where}: {_one_line(err)}") from err
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


#: Seconds to wait before each new connection attempt; None: give up. About 3 s in all.
_CONNECT_RETRIES: tuple[float | None, ...] = (0.25, 0.75, 2.0, None)


def _installed_driver(url: URL) -> URL:
    """`url` with a PostgreSQL driver that is installed: ``postgresql://`` and ``postgresql+psycopg2://``
    (SQLAlchemy's default driver, spelled so in many deployments) use psycopg 3 when psycopg2 is absent."""
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in ("psycopg2", ""):
        return url
    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return url.set(drivername="postgresql+psycopg")
    return url


def _one_line(err: BaseException) -> str:
    """The driver's own first line of an error, without SQLAlchemy's statement dump and help links."""
    cause = getattr(err, "orig", None) or err
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


def as_export(labels: pd.DataFrame) -> pd.DataFrame:
    """Stored label rows (`LabelStore.all` / `latest`) in the layout `LabelStore.import_csv` reads back."""
    frame = labels.drop(columns=["id"]).reset_index(drop=True)
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return frame


def _none_if_missing(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


# -- metrics -----------------------------------------------------------------------------------------
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


def precision_at_k(scores: np.ndarray, y: np.ndarray, k: int) -> float:
    """Share of true outliers among the `k` highest scores."""
    k = max(1, min(int(k), len(scores)))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(np.asarray(y)[top].mean())


@dataclass(frozen=True)
class ScoreMetrics:
    """How well one score ranks the labelled reviews."""

    auroc: float | None
    average_precision: float | None
    precision_at_k: float | None
    k: int


def score_metrics(scores: np.ndarray, y: np.ndarray, k: int | None = None) -> ScoreMetrics:
    """AUROC, average precision and precision@k (k = number of labelled outliers by default)."""
    y = np.asarray(y)
    k = int(k or max(int(y.sum()), 1))
    if y.size == 0 or y.min() == y.max():
        return ScoreMetrics(None, None, None if y.size == 0 else precision_at_k(scores, y, k), k)
    return ScoreMetrics(
        auroc=float(roc_auc_score(y, scores)),
        average_precision=float(average_precision_score(y, scores)),
        precision_at_k=precision_at_k(scores, y, k),
        k=k,
    )


@dataclass(frozen=True)
class LabelMetrics:
    """The unsupervised ensemble and the label-aware scorer measured on labelled reviews.

    ``label_aware`` holds held-out (cross-validated) metrics; the scorer becomes the headline score only
    when ``uses_label_scorer`` is True, i.e. it beat the ensemble there.
    """

    n_labelled: int
    n_outlier: int
    n_normal: int
    unsupervised: ScoreMetrics
    label_aware: ScoreMetrics | None
    uses_label_scorer: bool
    note: str


# -- label-aware scorer ------------------------------------------------------------------------------
class LabelAwareScorer:
    """A regularised logistic regression over detector/signal surprises, descriptors and reduced embeddings.

    In the spirit of XGBOD: the unsupervised scores are features, so a handful of labels is enough to learn
    *which* of them matters for this kind of anomaly. With very few labels a boosted-tree model overfits,
    hence the linear model. Reference reviews can join as presumed-normal rows (the reference is what the
    analyst called normal), weighted so that they count as much as the labelled rows together.

    The unsupervised ensemble statistic (column `prior_column`) is scaled up by `prior_weight` after
    standardisation, which lowers its effective penalty: with few labels the model stays close to the
    unsupervised ranking and only learns corrections the labels support.

    Parameters
    ----------
    C
        Inverse regularisation strength.
    reference_share
        Total weight of presumed-normal reference rows relative to the labelled rows (0 = not used).
    prior_column
        Index of the unsupervised ensemble statistic among the features, or None.
    prior_weight
        Factor applied to that column after standardisation.
    """

    def __init__(
        self,
        C: float = 0.1,
        reference_share: float = 1.0,
        prior_column: int | None = None,
        prior_weight: float = 5.0,
        random_state: int = 0,
    ) -> None:
        self.C = C
        self.reference_share = reference_share
        self.prior_column = prior_column
        self.prior_weight = prior_weight
        self.random_state = random_state

    def _design(self, X: np.ndarray) -> np.ndarray:
        Z = self.scaler_.transform(X)
        if self.prior_column is not None:
            Z[:, self.prior_column] *= self.prior_weight
        return Z

    def fit(self, X: np.ndarray, y: np.ndarray, X_reference: np.ndarray | None = None) -> LabelAwareScorer:
        y = np.asarray(y, dtype=np.int64)
        if not self.C > 0:
            raise ParameterError(f"C must be > 0, got {self.C!r}")
        if y.sum() < 1 or (y == 0).sum() + (0 if X_reference is None else len(X_reference)) < 1:
            raise ParameterError(
                f"the label-aware scorer needs at least one outlier and one normal label, got "
                f"{int(y.sum())} outlier and {int((y == 0).sum())} normal"
            )
        X_all, y_all, w = X, y, np.ones(len(y))
        if X_reference is not None and len(X_reference) and self.reference_share > 0:
            ref_w = self.reference_share * len(y) / len(X_reference)
            X_all = np.vstack([X, X_reference])
            y_all = np.concatenate([y, np.zeros(len(X_reference), dtype=np.int64)])
            w = np.concatenate([w, np.full(len(X_reference), ref_w)])
        # Balance the classes by weight: outliers are rare, and precision at the top is what matters.
        pos = y_all == 1
        w = w.copy()
        w[pos] *= w[~pos].sum() / max(w[pos].sum(), 1e-12)
        self.scaler_ = StandardScaler().fit(X_all)
        self.model_ = LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state)
        self.model_.fit(self._design(X_all), y_all, sample_weight=w)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of ``outlier`` per row."""
        if not hasattr(self, "model_"):
            raise NotFittedError("this LabelAwareScorer is not fitted yet; call fit first")
        return self.model_.predict_proba(self._design(X))[:, 1]

    def cross_validated(
        self, X: np.ndarray, y: np.ndarray, X_reference: np.ndarray | None = None, n_splits: int = 5
    ) -> np.ndarray | None:
        """Out-of-fold probabilities of the labelled rows; None when there are too few of a class."""
        y = np.asarray(y, dtype=np.int64)
        folds = min(n_splits, int(y.sum()), int((y == 0).sum()))
        if folds < 2:
            return None
        out = np.empty(len(y))
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        for train, test in splitter.split(X, y):
            clone = LabelAwareScorer(
                C=self.C,
                reference_share=self.reference_share,
                prior_column=self.prior_column,
                prior_weight=self.prior_weight,
                random_state=self.random_state,
            )
            out[test] = clone.fit(X[train], y[train], X_reference).predict_proba(X[test])
        return out
