"""MLflow tracking and registry: every training is a run, every model a registered pyfunc version.

Aliases: ``challenger`` marks the newest candidate, ``champion`` the served model. The first version ever
registered becomes champion as well, so a fresh install has something to serve. ``rollback`` returns the
champion alias to the version that held it before (history kept as a registered-model tag).

The pyfunc model holds a `core.bundle.ModelBundle` folder and needs this package installed to load; it is
our own joblib/torch data: load only models registered by this workbench.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import logging
import os
import re
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from core.bundle import ModelBundle
from core.defaults import CHALLENGER, CHAMPION
from core.errors import ModelUnavailableError, NotFoundError, StorageError, WorkbenchError
from core.settings import Settings

_log = logging.getLogger(__name__)

EXPERIMENT = "review-workbench"
_HISTORY_TAG = "champion_history"
_WEIGHTS_CHECKED_BY_CALLER = contextvars.ContextVar("weights_checked_by_caller", default=False)

warnings.filterwarnings("ignore", module="mlflow")
# Every training logged these to the terminal: the store's table set-up (INFO), "python_model is serialised
# with CloudPickle" and "failed to infer a signature" (WARNING). The model is our own class, loaded only from
# this workbench's registry (see above), and its input is validated by core.load, not by a signature.
for _logger in ("mlflow.store.db.utils", "mlflow.pyfunc", "alembic.runtime.migration"):
    logging.getLogger(_logger).setLevel(logging.ERROR)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow's client retries a failed request 7 times with doubling back-off and waits up to 120 s for each answer:
# a dead tracking server would hang `train` and the API's start for minutes. Two quick retries report a dead
# server within seconds and a hung one within ~90 s; the environment still wins (docs/deploy.md).
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def _unreachable(err: BaseException) -> BaseException | None:
    """The connection failure behind an MLflow error (refused, reset, timed out), or None for other errors."""
    import requests
    import urllib3.exceptions

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.exceptions.RetryError):
            return None  # the server answered, with errors (5xx) every time: reachable
        if isinstance(current, urllib3.exceptions.MaxRetryError) and isinstance(
                current.reason, urllib3.exceptions.ResponseError):
            return None
        if isinstance(current, requests.exceptions.ConnectionError | requests.exceptions.Timeout
                      | urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _connection_reason(cause: BaseException) -> str:
    """'connection refused' from urllib3's long 'Max retries exceeded ... [Errno 111] Connection refused'."""
    text = " ".join(str(cause).split())
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if found:
        return found.group(1).strip().lower()
    for phrase in ("Connection aborted", "Connection reset", "Remote end closed connection", "timed out"):
        if phrase.lower() in text.lower():
            return phrase.lower()
    return type(cause).__name__


class BundlePyfunc:
    """The MLflow ``PythonModel``: loads the bundle and the embedder once, scores DataFrames."""

    def load_context(self, context: Any) -> None:
        from core.text.embed import make_embedder

        self.bundle = ModelBundle.load(context.artifacts["bundle"])
        self.embedder = make_embedder()
        # Served by MLflow directly too: refuse here, before the first prediction. `Registry.load` checks against
        # its own settings' weights and names the version, so it asks to skip this one.
        if not _WEIGHTS_CHECKED_BY_CALLER.get():
            self.bundle.check_weights(self.embedder.weights_digest, "this model")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from core.io.load import load_frame

        frame = load_frame(pd.DataFrame(model_input), name="model input", strict=True).frame
        return self.bundle.score(frame, self.embedder).frame


def _pyfunc_class() -> type:
    import mlflow.pyfunc

    # Built lazily so importing core.tracking does not import MLflow.
    return type("ReviewOutlierModel", (BundlePyfunc, mlflow.pyfunc.PythonModel), {"__module__": __name__})


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: list[str]
    run_id: str | None
    created: str
    metrics: dict[str, float]
    tags: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "aliases": self.aliases, "run_id": self.run_id,
                "created": self.created, "metrics": self.metrics, "tags": self.tags}


@dataclass(frozen=True)
class TrainingRecord:
    run_id: str
    experiment_id: str
    version: str
    aliases: list[str]
    model_uri: str
    tracking_uri: str


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[1])
        if sha.returncode == 0:
            return sha.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("review-workbench")
    except PackageNotFoundError:
        return "unknown"


class Registry:
    """Tracking and registry operations against the store the settings choose."""

    def __init__(self, settings: Settings, on_champion: Callable[[str, str], None] | None = None) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.settings = settings
        self.on_champion = on_champion  # told (version, "promoted" | "rolled back") after the alias moved
        self.uri = settings.resolved_tracking_uri
        self.name = settings.registered_model_name
        if self.uri.startswith("sqlite:"):
            settings.home.mkdir(parents=True, exist_ok=True)
        # MLflow's setters also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI into os.environ, which would make
        # this process's choice look like the user's from then on; put the environment back as it was.
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def _failure(self, action: str, err: Exception) -> WorkbenchError:
        """One line for the person at the terminal: what failed, at which endpoint, and why."""
        from mlflow.exceptions import MlflowException

        if isinstance(err, WorkbenchError):
            return err
        cause = _unreachable(err)
        if cause is not None:
            return StorageError(f"{action} failed: MLflow at {self.uri} is unreachable ({_connection_reason(cause)})")
        if isinstance(err, MlflowException):
            if "RESOURCE_DOES_NOT_EXIST" in str(err.error_code):
                return NotFoundError(f"{action}: {' '.join(err.message.split())}")
            return WorkbenchError(f"{action} failed at {self.uri}: {' '.join(err.message.split())}")
        if isinstance(err, OSError):
            reason = (err.strerror or str(err)).lower()
            return StorageError(f"{action} failed: {reason}" + (f" ({err.filename})" if err.filename else ""))
        raise err

    def _call(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise self._failure(action, err) from err

    @contextlib.contextmanager
    def _guard(self, action: str):
        try:
            yield
        except Exception as err:
            raise self._failure(action, err) from err

    def _lookup(self, action: str, fn: Any, *args: Any) -> Any:
        """A read that may find nothing: None when the store says so, `StorageError` when it cannot be asked."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args)
        except MlflowException as err:
            if _unreachable(err) is not None:
                raise self._failure(action, err) from err
            return None

    def experiment_id(self) -> str:
        experiment = self._call("finding the experiment", self.client.get_experiment_by_name, EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):
            # Without this, MLflow would put artifacts in ./mlruns of whatever folder the process runs in.
            location = (self.settings.home / "mlartifacts").resolve().as_uri()
        return self._call("creating the experiment", self.client.create_experiment, EXPERIMENT,
                          artifact_location=location)

    # Training -------------------------------------------------------------------------------------
    def log_training(
        self,
        bundle: ModelBundle,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        artifacts: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> TrainingRecord:
        """Log one training as a run, log the bundle as a pyfunc model, register it as ``challenger``."""
        import mlflow
        import mlflow.pyfunc

        experiment_id = self.experiment_id()
        meta = bundle.meta
        run_name = f"{meta.get('reference_batch') or 'reference'}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
        all_params = {
            "detectors": ",".join(meta["detectors"]),
            "signals": ",".join(meta["signals"]),
            "contamination": meta["contamination"],
            "random_state": meta["random_state"],
            "embedding_model": meta["embedding_model"],
            "embedding_backend": self.settings.embedding_backend,
            "embed_fields": ",".join(bundle.outlier.embed_fields),
            "reference_batch": meta.get("reference_batch"),
            "n_reference": meta["n_reference"],
            "data_fingerprint": meta["data_fingerprint"],
            # A bundle saved before digests were recorded keeps its own format version: it has none.
            "embedding_digest": meta.get("embedding_digest") or "unknown",
            "model_format_version": meta.get("model_format_version", "1.0"),
            "code_version": code_version(),
            **(params or {}),
        }
        described = bundle.outlier.describe()
        all_metrics = {"n_reference": float(meta["n_reference"]), "threshold": float(described["threshold"])}
        for stage, seconds in (described.get("timings_s") or {}).items():
            all_metrics[f"fit_seconds_{stage}".replace(" ", "_")] = float(seconds)
        all_metrics.update(metrics or {})
        with tempfile.TemporaryDirectory() as tmp:
            folder = bundle.save(Path(tmp) / "bundle")
            # Registration comes only after the run, every artifact and the model are logged and the run is closed:
            # a server lost on the way leaves a failed run, never a registered version without its files.
            with self._guard("logging the training run"), \
                    mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
                mlflow.log_params({k: str(v)[:500] for k, v in all_params.items()})
                mlflow.log_metrics(all_metrics)
                run_tags = {"workbench.kind": "training", "workbench.reference_batch": str(meta.get("reference_batch")),
                            "workbench.detectors": all_params["detectors"],
                            "workbench.embedding_digest": str(all_params["embedding_digest"]),
                            "workbench.model_format_version": str(all_params["model_format_version"]),
                            **(tags or {})}
                mlflow.set_tags(run_tags)
                mlflow.log_dict(bundle.meta, "bundle.json")
                for name, value in (artifacts or {}).items():
                    if isinstance(value, pd.DataFrame):
                        path = Path(tmp) / name
                        value.to_csv(path, index=False)
                        mlflow.log_artifact(str(path))
                    else:
                        mlflow.log_dict(value, name)
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=_pyfunc_class()(),
                    artifacts={"bundle": str(folder)},
                    pip_requirements=["review-workbench"],
                )
            # The version carries the run's tags too: the registry lists what each version was trained on.
            # mlflow prints "Successfully registered model ..." to stderr; the callers say it in their own words.
            with contextlib.redirect_stderr(io.StringIO()):
                version = self._call("registering the model", mlflow.register_model, info.model_uri, self.name,
                                     tags={k: v for k, v in run_tags.items() if k != "workbench.kind"})
        self._call("setting the challenger alias", self.client.set_registered_model_alias,
                   self.name, CHALLENGER, version.version)
        aliases = [CHALLENGER]
        if self.champion_version() is None:
            self._set_champion(str(version.version))
            aliases.append(CHAMPION)
        return TrainingRecord(run_id=run.info.run_id, experiment_id=experiment_id, version=str(version.version),
                              aliases=aliases, model_uri=f"models:/{self.name}/{version.version}", tracking_uri=self.uri)

    # Registry -----------------------------------------------------------------------------------
    def versions(self) -> list[VersionInfo]:
        found = self._lookup("listing model versions", self.client.search_model_versions, f"name='{self.name}'")
        if found is None:
            return []
        alias_map = self._alias_map()
        return [self._info(v, alias_map) for v in sorted(found, key=lambda v: int(v.version), reverse=True)]

    def version(self, ref: str) -> VersionInfo | None:
        """One version by alias (``champion``) or number, in two or three store calls; None when absent."""
        if str(ref).isdigit():
            found = self._lookup(f"finding version {ref}", self.client.get_model_version, self.name, str(ref))
        else:
            found = self._lookup(f"finding the {ref} alias", self.client.get_model_version_by_alias, self.name, str(ref))
        if found is None:
            return None
        return self._info(found, self._alias_map())

    def _alias_map(self) -> dict[str, list[str]]:
        # Version searches leave aliases out; the registered model has the alias -> version map.
        alias_map: dict[str, list[str]] = {}
        model = self._lookup("reading the model's aliases", self.client.get_registered_model, self.name)
        for alias, version in ((model.aliases or {}) if model is not None else {}).items():
            alias_map.setdefault(str(version), []).append(alias)
        return alias_map

    def _info(self, found: Any, alias_map: dict[str, list[str]]) -> VersionInfo:
        metrics: dict[str, float] = {}
        if found.run_id:
            run = self._lookup("reading the version's run", self.client.get_run, found.run_id)
            metrics = dict(run.data.metrics) if run is not None else {}
        created = datetime.fromtimestamp(found.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
        return VersionInfo(str(found.version), sorted(alias_map.get(str(found.version), [])), found.run_id,
                           created, metrics, dict(found.tags or {}))

    def champion_version(self) -> str | None:
        """The champion's version number; None when there is none, `StorageError` when MLflow cannot be asked."""
        found = self._lookup("finding the champion", self.client.get_model_version_by_alias, self.name, CHAMPION)
        return str(found.version) if found is not None else None

    def _history(self) -> list[str]:
        model = self.client.get_registered_model(self.name)
        return json.loads((model.tags or {}).get(_HISTORY_TAG, "[]"))

    def _set_champion(self, version: str, record: bool = True) -> None:
        self._call("setting the champion alias", self.client.set_registered_model_alias, self.name, CHAMPION, version)
        if record:
            history = [v for v in self._history() if v != version][-19:] + [version]
            self.client.set_registered_model_tag(self.name, _HISTORY_TAG, json.dumps(history))
        if self.on_champion is not None:
            try:
                self.on_champion(version, "promoted" if record else "rolled back")
            except WorkbenchError as err:  # the alias moved; only its mark on the Monitor timeline is missing
                _log.warning("the champion change to version %s was not recorded: %s", version, err)

    def promote(self, version: str | None = None) -> str:
        """Make `version` (default: the challenger) the champion."""
        if version is None:
            found = self._lookup("finding the challenger", self.client.get_model_version_by_alias, self.name, CHALLENGER)
            if found is None:
                raise NotFoundError(f"model {self.name!r} has no challenger; train one with `workbench train`")
            version = str(found.version)
        if self.version(str(version)) is None:
            known = {v.version for v in self.versions()}
            raise NotFoundError(f"model {self.name!r} has no version {version} (versions: {', '.join(sorted(known)) or 'none'})")
        self._set_champion(str(version))
        return str(version)

    def rollback(self) -> str:
        """Give the champion alias back to the version that held it before."""
        history = self._history() if self.versions() else []
        if len(history) < 2:
            raise NotFoundError(f"model {self.name!r} has no earlier champion to roll back to")
        previous = history[-2]
        self._set_champion(previous, record=False)
        self.client.set_registered_model_tag(self.name, _HISTORY_TAG, json.dumps(history[:-1]))
        return previous

    def load(self, alias: str = CHAMPION) -> tuple[ModelBundle, VersionInfo]:
        """The bundle behind an alias (or a version number), and its version."""
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        ref = f"models:/{self.name}/{alias}" if str(alias).isdigit() else f"models:/{self.name}@{alias}"
        token = _WEIGHTS_CHECKED_BY_CALLER.set(True)
        try:
            model = mlflow.pyfunc.load_model(ref)
        except MlflowException as err:
            if _unreachable(err) is not None:  # not "no model": the one served so far stays served
                raise self._failure(f"loading {ref}", err) from err
            raise ModelUnavailableError(
                f"no model at {ref} in {self.uri}; train one with `workbench train --reference BATCH`"
            ) from err
        except OSError as err:  # the artifact download cut short
            raise self._failure(f"loading {ref}", err) from err
        finally:
            _WEIGHTS_CHECKED_BY_CALLER.reset(token)
        wrapper = model.unwrap_python_model()
        version = self.version(str(alias))
        if version is None:
            raise ModelUnavailableError(f"{ref} disappeared while loading")
        from core.text.embed import weights_digest

        # The weights this workspace embeds with, which may be other than the process default `load_context` saw.
        wrapper.bundle.check_weights(weights_digest(self.settings.embedding_model),
                                     f"model {self.name} version {version.version}")
        return wrapper.bundle, version

    def runs(self, max_results: int = 50) -> pd.DataFrame:
        import mlflow

        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            return pd.DataFrame()
        return mlflow.search_runs([experiment.experiment_id], max_results=max_results, order_by=["start_time DESC"])
