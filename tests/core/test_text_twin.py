"""A batch without titles scored by a title + text model goes to the model's text-only twin (real model, real data)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.bundle import ModelBundle


@pytest.fixture(scope="module")
def untitled(subscription_path: Path) -> pd.DataFrame:
    """In-category reviews the champion has not seen (its reference is the file's first 300), titles dropped."""
    from core.io.load import load_path

    frame = load_path(subscription_path).frame.iloc[300:450].reset_index(drop=True)
    return frame.assign(title=None)


def test_the_twin_reads_untitled_in_category_reviews_as_ordinary(trained_workspace, untitled, embedder,
                                                                 tmp_path: Path, monkeypatch) -> None:
    bundle, _ = trained_workspace.model("champion")
    assert bundle.lacks_titles(untitled) and not bundle.lacks_titles(trained_workspace.batches.frame("current"))
    plain = bundle.score(untitled, embedder)
    twin = bundle.text_twin(embedder, folder=tmp_path / "twin")
    assert twin.outlier.embed_fields == ("text",) and twin.meta["detectors"] == bundle.meta["detectors"]
    scored = twin.score(untitled, embedder, project=True)
    assert "title" in plain.missing and "title" not in scored.missing
    # Without titles the title + text model finds these ordinary reviews novel; the twin flags about its
    # contamination share (5 %).
    flagged_plain, flagged_twin = plain.frame["is_outlier"].mean(), scored.frame["is_outlier"].mean()
    assert flagged_twin < flagged_plain and flagged_twin <= 0.15, (flagged_plain, flagged_twin)
    assert {"x", "y"} <= set(scored.frame.columns)  # placed on the original model's map
    # Kept: the next call (a restart) loads it instead of fitting again.
    monkeypatch.setattr(ModelBundle, "fit", classmethod(lambda cls, *a, **k: pytest.fail("refitted")))
    again = bundle.text_twin(embedder, folder=tmp_path / "twin")
    pd.testing.assert_series_equal(again.score(untitled, embedder).frame["score"], scored.frame["score"])


def test_workspace_scores_untitled_batches_with_the_twin(trained_workspace, untitled) -> None:
    scores, version = trained_workspace.score(untitled)
    assert scores.text_only_twin and "title" not in scores.missing
    assert (trained_workspace.twin_folder(version.version) / "bundle.json").is_file()
    titled, _ = trained_workspace.score("current")
    assert not titled.text_only_twin


def test_a_model_saved_before_the_title_share_was_kept_still_sends_untitled_batches_to_the_twin(
        trained_workspace, untitled) -> None:
    import copy

    bundle, _ = trained_workspace.model("champion")
    older = copy.deepcopy(bundle.outlier)
    del older.feature_pipeline_.title_share_
    restored = ModelBundle(older, bundle.shift_scorer, bundle.projection, bundle.reference, bundle.meta)
    assert restored.lacks_titles(untitled)
    assert not restored.lacks_titles(trained_workspace.batches.frame("current"))
