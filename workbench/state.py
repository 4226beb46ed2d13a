"""Typed keys of `st.session_state`.

Only what belongs to one browser tab lives here (the last upload's outcome, a skipped review, a selection).
Everything that must survive a reload or a restart lives in ``WORKBENCH_HOME`` through `Workspace.state()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import streamlit as st

T = TypeVar("T")


@dataclass(frozen=True)
class Key(Generic[T]):
    """A session-state slot with its default; `get` never raises for a missing key."""

    name: str
    default_factory: Any = field(default=lambda: None)

    def get(self) -> T:
        if self.name not in st.session_state:
            st.session_state[self.name] = self.default_factory()
        return st.session_state[self.name]

    def set(self, value: T) -> None:
        st.session_state[self.name] = value

    def clear(self) -> None:
        st.session_state.pop(self.name, None)


@dataclass(frozen=True)
class IngestOutcome:
    """What one upload turned into: a stored batch or the reason it was refused."""

    filename: str
    batch: str
    ok: bool
    message: str
    report_lines: tuple[str, ...] = ()
    quarantined: int = 0
    rows: int = 0


@dataclass(frozen=True)
class TrainSummary:
    """The last training run started from this tab."""

    run_id: str
    version: str
    aliases: tuple[str, ...]
    seconds: float
    reference: str
    label_note: str | None = None


# Data page
LAST_INGEST: Key[list[IngestOutcome]] = Key("data.last_ingest", list)
# Train page
LAST_TRAIN: Key[TrainSummary | None] = Key("train.last_run")
# Label page: "skip" is a per-session choice, not a label; the store only knows outlier/normal.
SKIPPED: Key[set[str]] = Key("label.skipped", set)
LABEL_FLASH: Key[str | None] = Key("label.flash")
# The label this tab gave last (review_id, label, note, batch), offered for a one-click correction.
LAST_LABEL: Key[tuple[str, str, str | None, str] | None] = Key("label.last")
# Explore page
EXPLORE_FLASH: Key[str | None] = Key("explore.flash")
# Models page
MODELS_FLASH: Key[str | None] = Key("models.flash")
