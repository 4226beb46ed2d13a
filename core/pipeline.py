"""The workflows that the CLI, the workbench, the API and the DAG call: ingest, embed, train, score, compare.

A `Workspace` ties the settings to the storage backend, the stored batches, the shared embedder and the
small piece of state that survives restarts (which batch is the reference, which the current one).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from core.batches import BatchInfo, BatchStore
from core.embed import Embedder, make_embedder
from core.errors import NotFoundError
from core.load import LoadResult, load_path
from core.settings import Settings, get_settings
from core.storage import Storage, make_storage

STATE_KEY = "state/workspace.json"


class WorkspaceState(BaseModel):
    """Choices that outlive a browser tab or a process."""

    reference: str | None = None
    current: str | None = None
    last_shift: dict[str, object] | None = None


_EMBEDDERS: dict[tuple[str, str, int, str], Embedder] = {}


class Workspace:
    """Everything under one ``WORKBENCH_HOME`` (or one bucket, in the full stack)."""

    def __init__(self, settings: Settings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.batches = BatchStore(storage)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Workspace:
        settings = settings or get_settings()
        settings.home.mkdir(parents=True, exist_ok=True)
        return cls(settings, make_storage(settings))

    def describe_storage(self) -> str:
        return self.storage.describe()

    # State ---------------------------------------------------------------------------------
    def state(self) -> WorkspaceState:
        if not self.storage.exists(STATE_KEY):
            return WorkspaceState()
        return WorkspaceState.model_validate_json(self.storage.get_bytes(STATE_KEY))

    def update_state(self, **changes: object) -> WorkspaceState:
        for key in ("reference", "current"):
            name = changes.get(key)
            if isinstance(name, str) and not self.batches.exists(name):
                self.batches.info(name)  # raises NotFoundError naming the known batches
        state = self.state().model_copy(update=changes)
        self.storage.put_bytes(STATE_KEY, state.model_dump_json(indent=2).encode())
        return state

    # Batches -------------------------------------------------------------------------------
    def ingest_path(
        self,
        path: str | Path,
        name: str,
        mapping: Mapping[str, str] | None = None,
        encoding: str | None = None,
    ) -> tuple[BatchInfo, LoadResult]:
        """Load, validate and store a file; nothing is stored when the file cannot be read."""
        result = load_path(path, mapping=mapping, encoding=encoding)
        return self.batches.save(name, result), result

    def ingest_bytes(
        self, data: bytes, filename: str, name: str, mapping: Mapping[str, str] | None = None
    ) -> tuple[BatchInfo, LoadResult]:
        return self.batches.ingest_bytes(name, data, filename, mapping=mapping)

    def resolve_frame(self, source: str | Path) -> pd.DataFrame:
        """A stored batch by name, or a review file by path."""
        text = str(source)
        if Path(text).exists():
            return load_path(text).frame
        if self.batches.exists(text):
            return self.batches.frame(text)
        known = ", ".join(i.name for i in self.batches.list()) or "none"
        raise NotFoundError(f"{text!r} is neither a file nor a stored batch (stored batches: {known})")

    # Shared resources ----------------------------------------------------------------------
    def embedder(self) -> Embedder:
        """One embedder per model configuration and process: the model loads once."""
        s = self.settings
        key = (s.embedding_model, s.embedding_backend, s.embedding_batch_size, str(s.cache_dir))
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = make_embedder(s)
        return _EMBEDDERS[key]
