"""Many scoring requests as one batch: one embedding pass and one pass of every detector, a bad one isolated.

Each request is its own group (`core.detect.signals.GROUP_COLUMN`): the duplicate signal never compares one
client's review with another's, and the ensemble uses every group, so a request's scores do not depend on
which other requests happened to share its batch. Requests are canonicalised together (ids and duplicate
flags per request); when that fails, one by one, so only the bad request fails.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.bundle import BundleScores, ModelBundle
from core.detect.signals import GROUP_COLUMN
from core.errors import WorkbenchError
from core.io.load import load_records
from core.text.embed import Embedder


@dataclass(frozen=True)
class RequestScores:
    """One request's share of a batch's scores: its rows of `scores` and the columns it lacked."""

    scores: BundleScores
    rows: range
    missing: list[str]


def canonical_request(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Request rows -> the canonical frame; a row that cannot be scored raises `InputFileError`."""
    return load_records(records, name="request")


def score_requests(
    bundle: ModelBundle, embedder: Embedder, requests: list[list[dict[str, Any]]],
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> list[RequestScores | Exception]:
    """Score several requests (each a list of review records) in one `bundle.score` call.

    `prepare` adds what the model reads beyond the records (the reviewers' and products' stored history), one
    request at a time: requests scored together never see each other's reviews.
    Returns one entry per request, in order: its scores, or the exception that request alone raised.
    """
    results: list[RequestScores | Exception | None] = [None] * len(requests)
    try:
        combined = load_records([r for records in requests for r in records], name="request",
                                groups=[k for k, records in enumerate(requests) for _ in records])
        valid = list(range(len(requests)))
    except WorkbenchError:
        frames: list[tuple[int, pd.DataFrame]] = []
        for k, records in enumerate(requests):
            try:
                frames.append((k, canonical_request(records)))
            except WorkbenchError as err:
                results[k] = err
        if not frames:
            return [r for r in results if r is not None]
        combined = pd.concat([frame for _, frame in frames], ignore_index=True)
        valid = [k for k, _ in frames]
    combined[GROUP_COLUMN] = np.repeat(valid, [len(requests[k]) for k in valid])
    if prepare is not None:
        combined = pd.concat([prepare(part.reset_index(drop=True)) for _, part in
                              combined.groupby(GROUP_COLUMN, sort=False)], ignore_index=True)
    bounds = np.cumsum([0] + [len(requests[k]) for k in valid])
    slices = [slice(int(bounds[i]), int(bounds[i + 1])) for i in range(len(valid))]
    try:
        scores = bundle.score(combined, embedder)
    except Exception:
        if len(valid) == 1:
            raise
        # One bad request must not fail the others: score each on its own to find and isolate it.
        for k, part in zip(valid, slices, strict=True):
            try:
                frame = combined.iloc[part].drop(columns=GROUP_COLUMN).reset_index(drop=True)
                alone = bundle.score(frame, embedder)
                results[k] = RequestScores(alone, range(len(frame)), list(alone.missing))
            except Exception as err:
                results[k] = err
        return [r for r in results if r is not None]
    # What a request lacked is its own business, not the batch's; a lone request lacked what the batch did.
    missing = ([list(scores.missing)] if len(valid) == 1
               else bundle.outlier.feature_pipeline_.missing_in_slices(combined, slices))
    for k, part, lacked in zip(valid, slices, missing, strict=True):
        results[k] = RequestScores(scores, range(part.start, part.stop), list(lacked))
    return [r for r in results if r is not None]
