"""One SQL database shared by the label store and the run history: engine, connections, tables, errors.

SQLite (a file under ``WORKBENCH_HOME``) by default, any SQLAlchemy URL (PostgreSQL in the full stack)
otherwise. Messages name the database without its password and carry the driver's first line only.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from core.errors import StorageError

#: Seconds to wait before each new connection attempt; None: give up. About 3 s in all, so a server restart
#: passes unnoticed and a dead server is reported quickly.
CONNECT_RETRIES: tuple[float | None, ...] = (0.25, 0.75, 2.0, None)


def installed_driver(url: URL) -> URL:
    """`url` with a PostgreSQL driver that is installed: ``postgresql://`` and ``postgresql+psycopg2://``
    (SQLAlchemy's default driver, spelled so in many deployments) use psycopg 3 when psycopg2 is absent."""
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in ("psycopg2", ""):
        return url
    if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None:
        return url.set(drivername="postgresql+psycopg")
    return url


def one_line(err: BaseException) -> str:
    """The driver's own first line of an error, without SQLAlchemy's statement dump and help links."""
    cause = getattr(err, "orig", None) or err
    lines = [line.strip() for line in str(cause).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(cause).__name__


class Database:
    """An engine on `url` whose tables `metadata` describes, created on first use.

    Parameters
    ----------
    url
        SQLAlchemy URL.
    metadata
        The tables this store needs; created when missing (safe when several processes start at once).
    what
        How messages name the store, e.g. "the label store".
    """

    def __init__(self, url: str, metadata: MetaData, what: str) -> None:
        parsed = installed_driver(make_url(url))
        self.what = what
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
            for attempt in range(2):
                try:
                    with self.connect(f"opening {what}") as conn:
                        metadata.create_all(conn)
                        conn.commit()
                    break
                except (IntegrityError, ProgrammingError):
                    # Another process created the tables between our check and our CREATE: they are there now.
                    if attempt:
                        raise
        except (SQLAlchemyError, ImportError) as err:
            raise StorageError(f"cannot open {what} at {self.where}: {one_line(err)}") from err

    def connect(self, action: str) -> Connection:
        """A connection, retried briefly while the server refuses them (a restart); nothing is sent before."""
        for delay in CONNECT_RETRIES:
            try:
                return self.engine.connect()
            except OperationalError as err:
                if delay is None:
                    raise StorageError(f"{action} failed: {self.what} at {self.where} is unreachable "
                                       f"({one_line(err)})") from err
                time.sleep(delay)
        raise AssertionError("unreachable")
