"""Advisory file locks under ``WORKBENCH_HOME``: one training (fit and registration) at a time per workspace.

Two trainings at once would race on the registry's aliases (both see no champion, both claim ``challenger``) and
fight for the same cores. The lock is an ``flock`` on a file that also holds the owner's pid, so a waiting
process can say whom it waits for. The kernel releases it when its owner exits, killed or not: a crashed
training never leaves a stale lock. It covers the processes of one machine; workspaces shared by several
machines (one bucket, one MLflow server) need their trainings run from one place, e.g. the DAG.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from core.errors import StorageError

log = logging.getLogger(__name__)

TRAINING_LOCK = "locks/training.lock"


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def exclusive(path: str | Path, what: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the body, waiting for the current holder when there is one.

    Parameters
    ----------
    path
        Lock file; created with its folder when missing.
    what
        What the lock protects, for the waiting message ("training").
    on_wait
        Called once with "waiting for another training (pid N)" when the lock is held elsewhere; logged otherwise.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")  # noqa: SIM115 - closed below; "a+" never truncates another owner's pid
    except OSError as err:
        raise StorageError(f"cannot open the lock file {path}: {(err.strerror or str(err)).lower()}") from err
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            message = f"waiting for another {what} (pid {_holder(path)}) to finish"
            (on_wait or log.warning)(message)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
