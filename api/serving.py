"""The served model and the scoring queue: what the routes share across requests.

`ServedModel` holds the champion loaded at start-up and follows the registry's ``champion`` alias, so a
newly promoted version is served without a restart. `MicroBatcher` collects concurrent requests for a few
milliseconds and embeds their texts in one forward pass in a worker thread: on 2 cores one batched pass is
several times cheaper than many small ones, and one scoring thread keeps torch from oversubscribing the CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from api.schemas import ContributionOut, ModelRef, NeighbourOut, PredictionOut
from core.errors import ModelUnavailableError, WorkbenchError
from core.pipeline import Workspace

log = logging.getLogger("api")
CHAMPION = "champion"


@dataclass(frozen=True)
class Loaded:
    """One loaded model version."""

    bundle: Any  # core.bundle.ModelBundle
    version: Any  # core.tracking.VersionInfo
    ref: ModelRef


class ServedModel:
    """The champion as served: loaded once, re-checked against the registry at most every `check_every` s."""

    def __init__(self, workspace: Workspace, check_every: float = 5.0) -> None:
        self.workspace = workspace
        self.check_every = check_every
        self._loaded: Loaded | None = None
        self._reason: str | None = "the model has not been loaded yet"
        self._checked = 0.0
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
                bundle, version = self.workspace.model(CHAMPION)
            except ModelUnavailableError as err:
                self._loaded, self._reason = None, str(err)
                return None
            except Exception as err:  # registry unreachable, corrupt artefact: say so, keep the old model
                log.warning("could not load the champion: %s", err)
                if self._loaded is None:
                    self._reason = f"the champion model could not be loaded: {err}"
                return self._loaded
            self._loaded = Loaded(bundle, version, ModelRef(name=registry.name, version=str(version.version)))
            self._reason = None
            log.info("serving %s version %s", registry.name, version.version)
            return self._loaded

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
    frame = scores.frame
    missing = list(scores.missing) if missing is None else missing
    out = []
    for i in rows if rows is not None else range(len(frame)):
        reasons = scores.result.reasons(i)
        out.append(PredictionOut(
            review_id=reasons.review_id,
            score=float(reasons.score),
            p_value=float(reasons.p_value),
            is_outlier=bool(reasons.is_outlier),
            shift_p_value=float(frame["shift_p_value"].iloc[i]),
            reason=reasons.summary,
            detector_scores={k: _number(v) for k, v in reasons.detector_scores.items()},
            signal_scores={k: _number(v) for k, v in reasons.signal_scores.items()},
            contributions=[ContributionOut(name=c.name, label=c.label, score=c.score, detail=c.detail)
                           for c in reasons.contributions],
            neighbours=[NeighbourOut(review_id=n.review_id, text=n.text, rating=n.rating, similarity=n.similarity)
                        for n in reasons.neighbours],
            missing=missing,
            model=ref,
        ))
    return out


def canonical_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Request rows -> the canonical frame; a row that cannot be scored raises `InputFileError` (422)."""
    from core.load import load_frame

    return load_frame(pd.DataFrame(records), name="request", strict=True).frame


def score_jobs(loaded: Loaded, embedder: Any, jobs: list[list[dict[str, Any]]]) -> list[list[PredictionOut] | Exception]:
    """Score several requests in one `bundle.score` call: one embedding pass, one pass of every detector.

    Each request is its own group (`core.signals.GROUP_COLUMN`): the duplicate signal never compares one
    client's review with another's, and the ensemble uses every group, so a request's scores do not depend
    on which other requests happened to share its micro-batch.
    """
    from core.signals import GROUP_COLUMN

    frames: list[pd.DataFrame | Exception] = []
    for records in jobs:
        try:
            frames.append(canonical_frame(records))
        except WorkbenchError as err:
            frames.append(err)
    valid = [(k, f) for k, f in enumerate(frames) if isinstance(f, pd.DataFrame)]
    results: list[list[PredictionOut] | Exception] = list(frames)  # errors stay in place
    if not valid:
        return results
    combined = pd.concat([f.assign(**{GROUP_COLUMN: k}) for k, f in valid], ignore_index=True)
    try:
        scores = loaded.bundle.score(combined, embedder)
    except Exception:
        if len(valid) == 1:
            raise
        # One bad request must not fail the others: score each on its own to find and isolate it.
        for k, frame in valid:
            try:
                results[k] = to_predictions(loaded.bundle.score(frame, embedder), loaded.ref)
            except Exception as err:
                results[k] = err
        return results
    start = 0
    for k, frame in valid:
        # What a request lacked is its own business, not the micro-batch's.
        missing = loaded.bundle.outlier.feature_pipeline_.missing_columns(frame)
        results[k] = to_predictions(scores, loaded.ref, range(start, start + len(frame)), missing)
        start += len(frame)
    return results


@dataclass
class _Job:
    records: list[dict[str, Any]]
    future: asyncio.Future[list[PredictionOut]] = field(repr=False)


class MicroBatcher:
    """Collects scoring requests for up to `max_wait` seconds (or `max_rows` rows), scores them in one thread."""

    def __init__(self, served: ServedModel, embedder_factory: Any, max_wait: float = 0.004, max_rows: int = 256) -> None:
        self.served = served
        self.embedder_factory = embedder_factory
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
                    self._executor, score_jobs, loaded, self.embedder_factory(), [j.records for j in jobs]
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
