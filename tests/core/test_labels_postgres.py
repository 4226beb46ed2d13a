"""The label store on a real PostgreSQL server: the same behaviour as on SQLite, concurrent writers, restarts."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pandas as pd
import pytest

from core.errors import ParameterError, StorageError, WorkbenchError
from core.labels import LabelStore
from tests.postgres import PASSWORD, PostgresCluster

pytestmark = pytest.mark.slow  # starts a PostgreSQL server
WRITERS = 8
REVIEWS_PER_WRITER = 12


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'labels.db'}"
    return request.getfixturevalue("postgres_url")


def test_labels_survive_a_new_store_and_the_latest_wins(store_url: str) -> None:
    store = LabelStore(store_url)
    store.add("r1", "outlier", note="copied text \u00e9\u2014\u4e2d", author="ana", batch="week-1")
    store.add_many([{"review_id": "r2", "label": "normal"}, {"review_id": "r1", "label": "normal", "author": "bo"}])
    again = LabelStore(store_url).all()
    assert list(again["review_id"]) == ["r1", "r2", "r1"]
    assert again.loc[0, "note"] == "copied text \u00e9\u2014\u4e2d" and again.loc[0, "author"] == "ana"
    created = pd.to_datetime(again["created_at"], utc=True)
    assert created.notna().all() and (created.diff().dropna() >= pd.Timedelta(0)).all()
    assert LabelStore(store_url).as_series().to_dict() == {"r1": "normal", "r2": "normal"}


def test_a_bad_label_stores_nothing(store_url: str) -> None:
    store = LabelStore(store_url)
    with pytest.raises(ParameterError, match="record 2: label must be one of outlier, normal, got 'spam'"):
        store.add_many([{"review_id": "a", "label": "outlier"}, {"review_id": "b", "label": "spam"}])
    assert store.all().empty


def test_export_round_trips_through_import(store_url: str, tmp_path: Path) -> None:
    store = LabelStore(store_url)
    store.add("r1", "outlier", note="off topic", author="ana", batch="week-1")
    store.add("r2", "normal", batch="week-2")
    store.add("r1", "normal", author="ben", batch="week-1")
    latest = store.export()
    assert dict(zip(latest["review_id"], latest["label"], strict=True)) == {"r1": "normal", "r2": "normal"}
    assert len(store.export(history=True)) == 3 and list(store.export(batch="week-2")["review_id"]) == ["r2"]
    latest.to_csv(tmp_path / "labels.csv", index=False)
    other = LabelStore(f"sqlite:///{tmp_path / 'other.db'}")
    assert other.import_csv(tmp_path / "labels.csv") == 2
    columns = ["review_id", "label", "note", "author", "batch"]
    assert other.export()[columns].fillna("").to_dict("records") == latest[columns].fillna("").to_dict("records")


def test_long_values_fit_the_columns(postgres_url: str) -> None:
    # Postgres enforces VARCHAR lengths that SQLite ignores.
    store = LabelStore(postgres_url)
    store.add("x" * 200, "outlier", note="n" * 100_000, author="a" * 200, batch="b" * 200)
    assert store.all()["note"].iloc[0] == "n" * 100_000
    with pytest.raises(StorageError, match="none stored") as info:
        store.add("y" * 201, "outlier")
    assert PASSWORD not in str(info.value) and len(str(info.value).splitlines()) == 1
    assert len(store.all()) == 1


def _write_labels(store: LabelStore, writer: int) -> None:
    """Each review first labelled outlier, then relabelled normal; plus one shared review everyone labels."""
    for i in range(REVIEWS_PER_WRITER):
        store.add(f"w{writer}-r{i}", "outlier", author=f"w{writer}")
        store.add(f"w{writer}-r{i}", "normal", author=f"w{writer}")
        store.add("shared", "outlier" if i % 2 else "normal", note=f"w{writer}-{i}")
    store.add_many([{"review_id": f"w{writer}-bulk{i}", "label": "outlier"} for i in range(20)])


def _process_writer(url: str, writer: int) -> None:
    _write_labels(LabelStore(url), writer)  # each process opens its own store, table creation racing


def _check_nothing_lost(store: LabelStore) -> None:
    rows = store.all()
    assert len(rows) == WRITERS * (3 * REVIEWS_PER_WRITER + 20)
    assert rows["id"].is_unique and rows["id"].is_monotonic_increasing
    latest = store.latest().set_index("review_id")
    assert len(latest) == WRITERS * (REVIEWS_PER_WRITER + 20) + 1
    for w in range(WRITERS):
        assert (latest.loc[[f"w{w}-r{i}" for i in range(REVIEWS_PER_WRITER)], "label"] == "normal").all()
        assert (latest.loc[[f"w{w}-bulk{i}" for i in range(20)], "label"] == "outlier").all()
    shared = rows[rows["review_id"] == "shared"]
    assert len(shared) == WRITERS * REVIEWS_PER_WRITER
    assert latest.loc["shared", "note"] == shared.iloc[-1]["note"]  # the last stored label wins


def test_eight_threads_write_at_once_and_no_label_is_lost(postgres_url: str) -> None:
    store = LabelStore(postgres_url)
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        try:
            _write_labels(store, writer)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    _check_nothing_lost(store)


def test_eight_processes_write_at_once_and_no_label_is_lost(postgres_url: str) -> None:
    context = multiprocessing.get_context("fork")  # the parent has imported everything already
    processes = [context.Process(target=_process_writer, args=(postgres_url, w)) for w in range(WRITERS)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * WRITERS
    _check_nothing_lost(LabelStore(postgres_url))


def test_a_database_restart_between_two_writes_is_survived(postgres: PostgresCluster, postgres_url: str) -> None:
    store = LabelStore(postgres_url)
    store.add("before", "outlier")  # leaves a pooled connection that the restart kills
    postgres.restart()
    store.add("after", "normal")
    assert list(store.all()["review_id"]) == ["before", "after"]


def test_a_database_that_is_down_gives_one_clear_line_and_stores_nothing(
    postgres: PostgresCluster, postgres_url: str
) -> None:
    store = LabelStore(postgres_url)
    store.add("before", "outlier")
    postgres.stop()
    try:
        with pytest.raises(WorkbenchError) as info:
            store.add_many([{"review_id": f"down-{i}", "label": "normal"} for i in range(50)])
        message = str(info.value)
        assert isinstance(info.value, StorageError)
        assert len(message.splitlines()) == 1
        assert f"127.0.0.1:{postgres.port}/{postgres_url.rsplit('/', 1)[1]}" in message  # names the database
        assert PASSWORD not in message and "unreachable" in message
        with pytest.raises(StorageError, match="unreachable"):
            LabelStore(postgres_url)
    finally:
        postgres.start()
    assert list(store.all()["review_id"]) == ["before"]  # nothing half-written
    store.add("after", "normal")
    assert list(store.all()["review_id"]) == ["before", "after"]


def test_a_transaction_cut_by_the_server_leaves_no_half_batch(postgres: PostgresCluster, postgres_url: str) -> None:
    import psycopg

    store = LabelStore(postgres_url)
    store.add("before", "outlier")
    database = postgres_url.rsplit("/", 1)[1]
    rows = [{"review_id": f"bulk-{i}", "label": "normal", "note": "x" * 200} for i in range(20_000)]
    done = threading.Event()

    def kill_writers() -> None:
        # Terminate the writing session once it is inside its transaction.
        with psycopg.connect(host=postgres.host, port=postgres.port, user="workbench", password=PASSWORD,
                             dbname="postgres", autocommit=True) as conn:
            while not done.is_set():
                killed = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND state = 'active' AND pid <> pg_backend_pid()", (database,)).fetchall()
                if killed:
                    return

    killer = threading.Thread(target=kill_writers)
    killer.start()
    try:
        with pytest.raises(StorageError, match="none stored") as info:
            store.add_many(rows)
    finally:
        done.set()
        killer.join(timeout=30)
    assert PASSWORD not in str(info.value) and len(str(info.value).splitlines()) == 1
    assert list(store.all()["review_id"]) == ["before"]
    store.add("after", "normal")
    assert len(store.all()) == 2


def test_the_compose_spelling_of_the_url_works(postgres: PostgresCluster) -> None:
    url = postgres.create_database()
    for driver in ("psycopg2", "psycopg"):
        spelled = url.replace("postgresql+psycopg://", f"postgresql+{driver}://")
        LabelStore(spelled).add(f"via-{driver}", "normal")
    LabelStore(url.replace("postgresql+psycopg://", "postgresql://")).add("via-default", "normal")
    assert list(LabelStore(url).all()["review_id"]) == ["via-psycopg2", "via-psycopg", "via-default"]
