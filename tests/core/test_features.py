"""Feature pipeline: shapes, missing columns, unseen categories, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import NotFittedError
from core.features import FeaturePipeline
from core.io.load import load_path
from core.text.descriptors import DESCRIPTORS, text_descriptors


def test_descriptors_see_garbage_and_shouting() -> None:
    d = text_descriptors(pd.Series(["Good product, works as described.", "!!!!!!!!!!!!", "AMAZING BUY NOW", ""]))
    assert list(d.columns) == list(DESCRIPTORS)
    assert d.loc[1, "share_non_letters"] == 1.0
    assert d.loc[1, "max_char_run"] == 12
    assert d.loc[2, "share_upper"] == 1.0
    assert d.loc[3, "n_chars"] == 0


def test_pipeline_copes_with_missing_columns_and_unseen_categories(vgames_path: Path, hashing_embedder) -> None:
    reference = load_path(vgames_path).frame.head(200)
    pipeline = FeaturePipeline().fit(reference)
    ref_features = pipeline.transform(reference, hashing_embedder)
    assert ref_features.tabular.shape == (200, len(pipeline.tabular_names_))
    assert ref_features.embeddings.shape == (200, 32)

    text_only = pd.DataFrame({"text": ["a review with nothing else", "another one"]})
    other = reference.head(2).assign(category="Garden")  # a category the reference never had
    f_text = pipeline.transform(text_only, hashing_embedder)
    f_other = pipeline.transform(other, hashing_embedder)
    assert f_text.tabular.shape[1] == ref_features.tabular.shape[1]
    assert {"rating", "category", "verified_purchase"} <= set(f_text.missing)
    # named as in the input: a user can map "helpful_vote" and "title", not "log_helpful_vote"
    assert {"helpful_vote", "title"} <= set(pipeline.missing_columns(text_only))
    assert "log_helpful_vote" not in pipeline.missing_columns(text_only)
    assert "title" not in pipeline.missing_columns(reference.head(5))
    assert np.isfinite(f_text.tabular).all() and np.isfinite(f_other.tabular).all()
    cat_cols = [i for i, n in enumerate(pipeline.tabular_names_) if n.startswith("cat__category")]
    assert (f_other.tabular[:, cat_cols] == 0).all()


def test_pipeline_is_deterministic(vgames_path: Path, hashing_embedder) -> None:
    frame = load_path(vgames_path).frame.head(100)
    a = FeaturePipeline().fit(frame).transform(frame, hashing_embedder)
    b = FeaturePipeline().fit(frame).transform(frame, hashing_embedder)
    assert np.array_equal(a.matrix(), b.matrix())


def test_transform_before_fit_is_a_clear_error(hashing_embedder) -> None:
    with pytest.raises(NotFittedError, match="call fit"):
        FeaturePipeline().transform(pd.DataFrame({"text": ["x"]}), hashing_embedder)


@pytest.mark.slow
def test_real_features_on_both_schemas(giftcards_path: Path, vgames_path: Path, embedder) -> None:
    reference = load_path(vgames_path).frame.head(60)
    current = load_path(giftcards_path).frame.head(60)
    pipeline = FeaturePipeline().fit(reference)
    features = pipeline.transform(current, embedder)
    assert features.embeddings.shape == (60, 384)
    assert features.matrix().shape == (60, 384 + len(pipeline.tabular_names_))
    assert "category" in features.missing  # 2018 5-core files have no category column
