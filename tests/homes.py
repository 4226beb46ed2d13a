"""Copies of a live workspace for tests that change one."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

_SQLITE_SUFFIXES = (".db", ".sqlite")


def copy_home(source: Path, target: Path) -> Path:
    """Copy a workspace folder; its SQLite databases through SQLite's backup API.

    The session's workspace stays open while tests copy it (the embedding cache, the label store and the
    MLflow store run in WAL mode). Copying a database file and its ``-wal`` file one after the other can
    pair pages from two moments ("database disk image is malformed" later); the backup API takes one
    consistent snapshot, with the WAL's committed pages folded in.
    """

    def databases(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n.endswith(_SQLITE_SUFFIXES) or n.endswith(("-wal", "-shm", "-journal"))}

    shutil.copytree(source, target, ignore=databases)
    for db in Path(source).rglob("*"):
        if db.is_file() and db.name.endswith(_SQLITE_SUFFIXES):
            copy = Path(target) / db.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(db)) as src, closing(sqlite3.connect(copy)) as dst:
                src.backup(dst)
    return Path(target)
