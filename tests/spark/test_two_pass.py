"""The decomposition the Spark engine relies on, without Spark: member scores per part, exceedance counts summed
over the parts, evidence from the sums, headline per part, equal to `OutlierModel.score` of the whole batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.detect.model import BATCH_SCOPED_SIGNALS, OutlierModel
from core.io.load import load_path


@pytest.fixture(scope="module")
def model_and_batch(data_dir: Path):
    from tests.conftest import HashingEmbedder

    embedder = HashingEmbedder()
    gifts = load_path(data_dir / "amazon2018_5core" / "Gift_Cards_5.json.gz").frame
    gifts = gifts.drop_duplicates("text").reset_index(drop=True)
    reference, rest = gifts.iloc[:300], gifts.iloc[300:700]
    copies = rest.iloc[:15].assign(review_id=lambda f: f["review_id"] + "-copy")  # planted duplicates
    batch = pd.concat([rest, copies], ignore_index=True)
    # Not LOF here: sklearn's brute-force neighbour search rounds differently for other query shapes, and the
    # hashing embedder's many identical vectors turn that last-bit noise into other neighbours (real embeddings
    # have few exact ties: tests/spark/test_scoring.py compares LOF too).
    model = OutlierModel(detectors=("knn", "mahalanobis"), random_state=0).fit(reference, embedder)
    return model, batch, embedder


def test_parts_scored_in_two_passes_equal_the_whole_batch(model_and_batch) -> None:
    model, batch, embedder = model_and_batch
    whole = model.score(batch, embedder)
    assert any(p < 1.0 for p in whole.group_evidence.values()), "the batch should carry evidence of an excess"

    frame = model._canonical(batch, "the batch")
    embeddings = model._embed(frame, embedder, None)
    scoped = [m for m in model.signal_names_ if m in BATCH_SCOPED_SIGNALS]
    per_review = [m for m in (*model.detector_names_, *model.signal_names_) if m not in scoped]
    parts = np.array_split(np.arange(len(frame)), 4)
    # Pass 1: per-review members part by part, batch-scoped signals over the whole batch.
    whole_scoped = model.member_scores(frame, embeddings, members=scoped)
    members = []
    for rows in parts:
        part = model.member_scores(frame.iloc[rows].reset_index(drop=True), embeddings[rows], members=per_review)
        for name in scoped:
            part.calibrated[name] = whole_scoped.calibrated[name][rows]
            part.surprise[name] = whole_scoped.surprise[name][rows]
            part.details[name] = [whole_scoped.details[name][i] for i in rows]
        members.append(part)
    # Aggregates: which members scored anything, exceedance counts summed over the parts.
    scored = {m: any(np.isfinite(p.calibrated[m]).any() for p in members) for m in members[0].calibrated}
    present = model.present_groups_from(scored)
    counts = [model.exceedance_counts(p.surprise, present) for p in members]
    total = {g: tuple(int(sum(c[g][i] for c in counts)) for i in range(len(model.adaptive_levels))) for g in present}
    evidence = model.evidence_from_counts(present, total, len(frame))
    assert evidence == whole.group_evidence
    alone = model.evidence_from_counts(present, counts[0], len(parts[0]))
    assert alone != evidence, "one part's own evidence differs: scoring parts independently would change scores"
    # Pass 2: the headline part by part.
    headline = pd.concat(
        [model.assemble(frame.iloc[rows].reset_index(drop=True), embeddings[rows], part, present, evidence).scores
         for rows, part in zip(parts, members, strict=True)],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(headline, whole.scores, check_exact=False, rtol=1e-9, atol=1e-12)
    assert (headline["reason"] == whole.scores["reason"]).all()
