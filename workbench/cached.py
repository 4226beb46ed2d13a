"""Cached resources of the workbench.

Heavy objects (the workspace, the embedding model, the champion model) are `st.cache_resource`: one per server
process, shared by every session. Frames and scores are `st.cache_data`, keyed by the workspace home, the batch
name *and its manifest version* and the model version, so re-uploading a batch or promoting a model gives new
keys instead of stale results. Anything cached here is treated as read-only by the pages.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core import explore
from core.defaults import CHALLENGER, CHAMPION
from core.explore import ScoredBatch
from core.pipeline import Workspace
from core.settings import get_settings


def _home_and_uri() -> tuple[str, str]:
    settings = get_settings()
    return str(settings.home), settings.resolved_tracking_uri


@st.cache_resource(show_spinner=False)
def _workspace(home: str, tracking_uri: str) -> Workspace:
    return Workspace.open(get_settings())


def workspace() -> Workspace:
    """The workspace of the configured ``WORKBENCH_HOME`` (a new one when the home or tracking URI changes)."""
    return _workspace(*_home_and_uri())


@st.cache_resource(show_spinner="Loading the embedding model…")
def _embedder(home: str, model: str, backend: str) -> Any:
    return _workspace(*_home_and_uri()).embedder()


def embedder() -> Any:
    s = get_settings()
    return _embedder(str(s.home), s.embedding_model, s.embedding_backend)


# Registry ---------------------------------------------------------------------------------------------
@st.cache_data(ttl=20, show_spinner=False)
def _versions(home: str, tracking_uri: str) -> list[Any]:
    return workspace().registry().versions()


def versions() -> list[Any]:
    """Registered model versions, newest first (re-read every 20 s, or at once after `refresh_registry`)."""
    return _versions(*_home_and_uri())


def champion() -> Any | None:
    """The `VersionInfo` holding the ``champion`` alias, or None when nothing is trained yet."""
    return next((v for v in versions() if CHAMPION in v.aliases), None)


def challenger() -> Any | None:
    return next((v for v in versions() if CHALLENGER in v.aliases), None)


@st.cache_data(ttl=20, show_spinner=False)
def _runs(home: str, tracking_uri: str) -> pd.DataFrame:
    return workspace().registry().runs()


def runs() -> pd.DataFrame:
    return _runs(*_home_and_uri())


def refresh_registry() -> None:
    """Forget registry reads after this session trained, promoted or rolled back."""
    _versions.clear()
    _runs.clear()


@st.cache_resource(show_spinner="Loading the model…", max_entries=2)
def _model(home: str, tracking_uri: str, version: str) -> Any:
    return workspace().model(version)[0]


def model(version: str) -> Any:
    """The `ModelBundle` of a registered version (loaded once per process)."""
    return _model(*_home_and_uri(), str(version))


# Batches ----------------------------------------------------------------------------------------------
def batches() -> list[Any]:
    """Manifests of the stored batches (cheap: small JSON files; not cached so uploads show at once)."""
    return workspace().batches.list()


def batch_version(name: str) -> str:
    return workspace().batches.info(name).version


@st.cache_data(show_spinner="Reading the batch…", max_entries=16)
def _frame(home: str, name: str, version: str) -> pd.DataFrame:
    return workspace().batches.frame(name)


def frame(name: str) -> pd.DataFrame:
    """A stored batch's reviews; the key holds the manifest version, so a re-upload is read afresh."""
    return _frame(get_settings().home.as_posix(), name, batch_version(name))


@st.cache_data(show_spinner=False, max_entries=16)
def _quarantined(home: str, name: str, version: str) -> pd.DataFrame:
    return workspace().batches.quarantined(name)


def quarantined(name: str) -> pd.DataFrame:
    return _quarantined(get_settings().home.as_posix(), name, batch_version(name))


# Scores and the map frame are resources, not data: cache_data would pickle a copy of 20k rows on every rerun
# (most of the Explore page's time); pages treat them as read-only.
@st.cache_resource(show_spinner="Scoring with the champion model…", max_entries=8)
def _scores(home: str, tracking_uri: str, name: str, version: str, model_version: str) -> Any:
    return workspace().score_with(model(model_version), model_version, frame(name), project=True, batch=name)


def scores(name: str, model_version: str) -> Any:
    """`BundleScores` (scores, reasons, x/y on the model's map) of a stored batch under one model version."""
    return _scores(*_home_and_uri(), name, batch_version(name), str(model_version))


def labels() -> pd.DataFrame:
    """Latest label of every review (not cached: labels change with every click)."""
    return workspace().labels().latest()


@st.cache_resource(show_spinner=False, max_entries=8)
def _map_frame(home: str, tracking_uri: str, names: tuple[str, ...], versions: tuple[str, ...],
               model_version: str) -> pd.DataFrame:
    bundle = model(model_version)
    batches = [ScoredBatch(name, frame(name), scores(name, model_version).frame) for name in names]
    return explore.map_frame(batches, bundle.meta.get("reference_batch"), bundle.reference_coords())


def map_frame(names: list[str], model_version: str) -> pd.DataFrame:
    """Scores, 2-D coordinates and display columns of several batches under one model, one row per review."""
    names_t = tuple(names)
    return _map_frame(*_home_and_uri(), names_t, tuple(batch_version(n) for n in names_t), str(model_version))


@st.cache_resource(show_spinner=False)
def shift_reports() -> dict[tuple[str, ...], Any]:
    """Shift reports computed in this server process, keyed by batches, their versions and the test settings.

    A report is minutes of permutations: keeping it lets a reload (or a colleague's tab) show it again at once.
    The verdict itself also lands in ``Workspace.state().last_shift``, which survives a restart.
    """
    return {}


def shift_key(reference: str, current: str) -> tuple[str, ...]:
    """The latest report of a pair of batches (as stored now) is what a reload shows."""
    return (str(get_settings().home), reference, batch_version(reference), current, batch_version(current))
