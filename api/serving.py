"""The served model and the scoring queue: what the routes share across requests.

`ServedModel` holds the champion loaded at start-up and follows the registry's ``champion`` alias, so a
newly promoted version is served without a restart. Each model is served with the fastest embedding backend that
gives the vectors it was trained on (`ModelBundle.serving_backend`): ``onnx`` for a model trained on torch's
fp32 vectors, ``onnx-int8`` for one trained on int8 vectors; a model whose vectors cannot be produced here is
refused with the reason, like one trained with other weights. `MicroBatcher` scores requests in one worker thread and
takes every request that queued up while it was busy as one batch: one embedding pass and one pass of every
detector for all of them. A lone request is scored at once (no waiting for company), and one scoring thread
keeps the runtimes from oversubscribing the 2 cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from api.schemas import ContributionOut, ModelRef, NeighbourOut, PredictionOut
from core.bundle import ModelBundle
from core.defaults import CHAMPION
from core.detect.explain import values_at
from core.detect.kinds import kind_column, kinds_in
from core.errors import ModelUnavailableError, WeightsError, WorkbenchError
from core.pipeline import Workspace
from core.serving import RequestScores, score_requests
from core.text.embed import FASTEST_EQUIVALENT, Embedder, EncoderMismatchError

log = logging.getLogger("api")


@dataclass(frozen=True)
class Loaded:
    """One loaded model version."""

    bundle: ModelBundle
    version: Any  # core.tracking.VersionInfo
    ref: ModelRef
    embedder: Embedder  # gives the vectors `bundle` was trained on, with the fastest backend that does
    #: Adds the stored history of a request's reviewers and products, for a model that reads them.
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None


class ServedModel:
    """The champion as served: loaded once, re-checked against the registry at most every `check_every` s."""

    def __init__(self, workspace: Workspace, check_every: float = 5.0) -> None:
        self.workspace = workspace
        self.check_every = check_every
        self._loaded: Loaded | None = None
        self._reason: str | None = "the model has not been loaded yet"
        self._checked = 0.0
        self._refused: tuple[str | None, str] | None = None  # (version, reason): not loaded again every check
        self._lock = threading.Lock()

    def refresh(self) -> Loaded | None:
        """Load the champion if the alias moved (or nothing is loaded); keep serving the old one on failure."""
        with self._lock:
            self._checked = time.monotonic()
            registry = self.workspace.registry()
            try:
                # One cheap registry call; the full load only when the alias points elsewhere.
                wanted = registry.champion_version()
                if self._loaded is not None and wanted == self._loaded.version.version:
                    return self._loaded
                if self._refused is not None and self._refused[0] == wanted:
                    return self._loaded  # refused for its embedding weights; they do not change while we run
                bundle, version = self.workspace.model(CHAMPION)
                embedder = self.embedder_for(bundle, f"model {registry.name} version {version.version}")
            except WeightsError as err:
                # Other embedding weights than the installed ones: its scores would be meaningless. Keep the
                # model served so far, if any; /ready says why when there is none.
                self._refused = (wanted, str(err))
                if self._loaded is None:
                    self._reason = f"the champion model is refused: {err}"
                    log.error("not serving the champion: %s", err)
                else:
                    log.error("refusing the new champion, still serving version %s: %s",
                              self._loaded.version.version, err)
                return self._loaded
            except ModelUnavailableError as err:
                self._loaded, self._reason = None, str(err)
                return None
            except Exception as err:  # registry unreachable, corrupt artefact: say so, keep the old model
                log.warning("could not load the champion: %s", err)
                if self._loaded is None:
                    self._reason = f"the champion model could not be loaded: {err}"
                return self._loaded
            self._loaded = Loaded(bundle, version, ModelRef(name=registry.name, version=str(version.version)),
                                  embedder, self.workspace.with_behaviour if bundle.uses_behaviour else None)
            self._reason = None
            log.info("serving %s version %s, embedding with %s", registry.name, version.version,
                     getattr(embedder, "backend", type(embedder).__name__))
            return self._loaded

    def embedder_for(self, bundle: ModelBundle, what: str) -> Embedder:
        """The loaded embedder that gives `bundle`'s own vectors fastest; `EncoderMismatchError` when none can.

        The workspace's own fast embedder is used when it gives those vectors (it may be a shared one); another
        backend is loaded once per process, through a workspace that differs only in its backend.
        """
        settings = self.workspace.settings
        backend = bundle.serving_backend(settings.embedding_model, what)
        workspace = self.workspace
        if backend != FASTEST_EQUIVALENT[settings.embedding_backend]:
            workspace = workspace.with_backend(backend)
        embedder = workspace.fast_embedder()
        try:
            _ = embedder.dim  # loads (or exports once) now, not in the first request
        except WeightsError:
            raise
        except WorkbenchError as err:
            raise EncoderMismatchError(f"{what} needs {backend} vectors, which cannot be computed here: {err}") from err
        key = getattr(embedder, "model_key", None)
        if key != bundle.embedding_key:  # fast_embedder fell back to a backend with other vectors
            raise EncoderMismatchError(f"{what} was trained on {bundle.embedding_key!r} embeddings; the {backend} "
                                       f"backend is unavailable here and the fallback gives {key!r}")
        return embedder

    def due(self) -> bool:
        return time.monotonic() - self._checked >= self.check_every

    def peek(self) -> Loaded | None:
        return self._loaded

    @property
    def reason(self) -> str | None:
        return self._reason

    def get(self) -> Loaded:
        """The served model, or `ModelUnavailableError` with the reason (mapped to 503)."""
        loaded = self._loaded
        if loaded is None:
            raise ModelUnavailableError(self._reason or "no model is loaded")
        return loaded


def _number(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def to_predictions(
    scores: Any, ref: ModelRef, rows: range | None = None, missing: list[str] | None = None
) -> list[PredictionOut]:
    """`BundleScores` -> response rows (every detector and signal score, reasons, neighbours)."""
    positions = list(rows if rows is not None else range(len(scores.frame)))
    lacked = list(scores.missing) if missing is None else missing
    return _predictions(scores, ref, positions, [lacked] * len(positions))


def _predictions(scores: Any, ref: ModelRef, positions: list[int], missing: list[list[str]]) -> list[PredictionOut]:
    frame = scores.frame
    # Read once for all the rows asked for (a micro-batch of requests), not row by row.
    kinds = kinds_in(frame.columns)
    row = values_at(frame, np.asarray(positions, dtype=np.int64))
    shift = row["shift_p_value"]
    out = []
    for k, reasons in enumerate(scores.result.reasons_of(positions)):
        out.append(PredictionOut(
            review_id=reasons.review_id,
            score=float(reasons.score),
            p_value=float(reasons.p_value),
            is_outlier=bool(reasons.is_outlier),
            shift_p_value=float(shift[k]),
            reason=reasons.summary,
            detector_scores={name: _number(v) for name, v in reasons.detector_scores.items()},
            signal_scores={name: _number(v) for name, v in reasons.signal_scores.items()},
            kind_scores={kind: _number(row[kind_column(kind)][k]) for kind in kinds},
            contributions=[ContributionOut(name=c.name, label=c.label, score=c.score, detail=c.detail)
                           for c in reasons.contributions],
            neighbours=[NeighbourOut(review_id=n.review_id, text=n.text, rating=n.rating, similarity=n.similarity)
                        for n in reasons.neighbours],
            missing=list(missing[k]),
            model=ref,
        ))
    return out


def score_jobs(loaded: Loaded, embedder: Embedder, jobs: list[list[dict[str, Any]]]) -> list[list[PredictionOut] | Exception]:
    """Score several requests as one batch (`core.serving.score_requests`) and map each to its response rows."""
    outcomes = score_requests(loaded.bundle, embedder, jobs, prepare=loaded.prepare)
    # Requests scored together share one result, read in one pass; each request keeps what it lacked.
    shared: dict[int, tuple[Any, list[RequestScores]]] = {}
    for outcome in outcomes:
        if not isinstance(outcome, Exception):
            shared.setdefault(id(outcome.scores), (outcome.scores, []))[1].append(outcome)
    answers: dict[int, list[PredictionOut]] = {}
    for scores, requests in shared.values():
        rows = [i for request in requests for i in request.rows]
        predictions = iter(_predictions(scores, loaded.ref, rows,
                                        [request.missing for request in requests for _ in request.rows]))
        for request in requests:
            answers[id(request)] = [next(predictions) for _ in request.rows]
    return [outcome if isinstance(outcome, Exception) else answers[id(outcome)] for outcome in outcomes]


@dataclass
class _Job:
    records: list[dict[str, Any]]
    future: asyncio.Future[list[PredictionOut]] = field(repr=False)


class MicroBatcher:
    """Scores requests in one thread, batching those that arrive while it is busy (up to `max_rows` rows).

    `max_wait` > 0 makes the first request of a batch wait that long for company; 0, the default, measured
    best with 16 clients (bench/api.py: 72-93 requests/s with no wait, 71-76 when waiting 5 ms after a batch
    of several requests) and lets a lone request be scored at once.
    """

    def __init__(self, served: ServedModel, max_wait: float = 0.0, max_rows: int = 256) -> None:
        self.served = served
        self.max_wait = max_wait
        self.max_rows = max_rows
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scoring")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # batches scored, for tests and logs

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def run_in_worker(self, fn: Any, *args: Any) -> Any:
        """Run other CPU work (shift tests, reloads) on the scoring thread so it does not fight for the cores."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def score(self, records: list[dict[str, Any]]) -> list[PredictionOut]:
        """Score one request's rows; waits for the batch it lands in."""
        self.served.get()  # fail fast with 503 while nothing is served
        future: asyncio.Future[list[PredictionOut]] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(records, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            rows = len(jobs[0].records)
            deadline = loop.time() + self.max_wait
            while rows < self.max_rows:
                if not self._queue.empty():
                    job = self._queue.get_nowait()  # queued while the last batch was scored
                else:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                jobs.append(job)
                rows += len(job.records)
            jobs = [j for j in jobs if not j.future.cancelled()]  # clients that went away
            if not jobs:
                continue
            try:
                loaded = self.served.get()
                outcomes = await loop.run_in_executor(
                    self._executor, score_jobs, loaded, loaded.embedder, [j.records for j in jobs]
                )
            except Exception as err:
                outcomes = [err] * len(jobs)
            self.batches += 1
            for job, outcome in zip(jobs, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(outcome, Exception):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)
