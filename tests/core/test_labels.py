"""The label store (durable, validated, atomic imports) and metrics on labelled reviews."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from core.detect.supervised import LabelAwareScorer, precision_at_k, score_metrics
from core.errors import InputFileError, ParameterError
from core.labels import QUEUE_ORDERS, LabelStore, random_order


def test_labels_survive_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'labels.db'}"
    store = LabelStore(url)
    store.add("r1", "outlier", note="copied text", author="ana", batch="week-1")
    store.add_many(
        [{"review_id": "r2", "label": "normal"}, {"review_id": "r1", "label": "normal", "author": "bo"}]
    )
    again = LabelStore(url).all()
    assert list(again["review_id"]) == ["r1", "r2", "r1"]
    assert again.loc[0, "note"] == "copied text" and again.loc[0, "author"] == "ana"
    assert again["created_at"].notna().all()
    latest = LabelStore(url).as_series()
    assert latest["r1"] == "normal" and latest["r2"] == "normal"


def test_a_bad_label_stores_nothing(tmp_path: Path) -> None:
    store = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    with pytest.raises(ParameterError, match="record 2: label must be one of outlier, normal, got 'spam'"):
        store.add_many([{"review_id": "a", "label": "outlier"}, {"review_id": "b", "label": "spam"}])
    assert store.all().empty


def test_import_csv_checks_every_row_first(tmp_path: Path) -> None:
    store = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    bad = tmp_path / "bad.csv"
    bad.write_text("review_id,label\nr1,outlier\n,normal\n", encoding="utf-8")
    with pytest.raises(ParameterError, match="bad.csv line 3: review_id must be a non-empty string"):
        store.import_csv(bad)
    assert store.all().empty
    good = tmp_path / "good.csv"
    good.write_text("review_id,label,note\nr1,Outlier,dup\nr2,normal,\n", encoding="utf-8")
    assert store.import_csv(good, author="cli", batch="b7") == 2
    rows = store.all()
    assert list(rows["label"]) == ["outlier", "normal"] and set(rows["batch"]) == {"b7"}
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,verdict\n1,x\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="expected columns review_id,label"):
        store.import_csv(wrong)


def test_import_csv_reads_semicolons_and_counts_lines_of_multiline_notes(tmp_path: Path) -> None:
    store = LabelStore(f"sqlite:///{tmp_path / 'labels.db'}")
    excel = tmp_path / "excel.csv"
    excel.write_text('\ufeffreview_id;label;note\nr1;outlier;"two\nlines"\nr2;normal;\n', encoding="utf-8")
    assert store.import_csv(excel) == 2
    assert store.all()["note"].iloc[0] == "two\nlines"
    bad = tmp_path / "bad.csv"
    bad.write_text('review_id;label;note\nr1;outlier;"two\nlines"\nr2;spam;\n', encoding="utf-8")
    with pytest.raises(ParameterError, match="bad.csv line 4: label must be one of"):
        store.import_csv(bad)


def test_export_is_read_back_by_import_with_latest_labels_and_batches(tmp_path: Path) -> None:
    store = LabelStore(f"sqlite:///{tmp_path / 'a.db'}")
    store.add("r1", "outlier", note="off topic", author="ana", batch="week-1")
    store.add("r2", "normal", batch="week-2")
    store.add("r1", "normal", author="ben", batch="week-1")  # relabelled: the latest wins
    latest = store.export()
    assert list(latest.columns) == ["review_id", "label", "note", "author", "batch", "created_at"]
    assert dict(zip(latest["review_id"], latest["label"], strict=True)) == {"r1": "normal", "r2": "normal"}
    assert len(store.export(history=True)) == 3
    assert list(store.export(batch="week-2")["review_id"]) == ["r2"]
    latest.to_csv(tmp_path / "labels.csv", index=False)
    other = LabelStore(f"sqlite:///{tmp_path / 'b.db'}")
    assert other.import_csv(tmp_path / "labels.csv") == 2
    again = other.export()
    columns = ["review_id", "label", "note", "author", "batch"]
    assert again[columns].fillna("").to_dict("records") == latest[columns].fillna("").to_dict("records")


def test_default_store_lives_under_workbench_home(home: Path) -> None:
    LabelStore().add("r9", "outlier")
    assert (home / "labels.db").is_file()


def test_metrics_match_their_definitions() -> None:
    y = np.array([0, 0, 1, 0, 1, 0, 0, 1])
    s = np.array([0.1, 0.2, 0.9, 0.3, 0.4, 0.5, 0.05, 0.8])
    m = score_metrics(s, y)
    assert m.auroc == pytest.approx(roc_auc_score(y, s))
    assert m.average_precision == pytest.approx(average_precision_score(y, s))
    assert m.k == 3 and m.precision_at_k == pytest.approx(2 / 3)
    assert precision_at_k(s, y, 1) == 1.0
    assert score_metrics(s, np.zeros(8, dtype=int)).auroc is None


def test_label_aware_scorer_learns_what_the_labels_show_and_refuses_too_few() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    y = (X[:, 3] > 1.3).astype(int)  # only feature 3 matters
    scorer = LabelAwareScorer(C=1.0)
    oof = scorer.cross_validated(X, y)
    assert roc_auc_score(y, oof) > 0.9
    assert scorer.cross_validated(X[:20], np.r_[1, np.zeros(19, dtype=int)]) is None


def test_the_blend_takes_the_embedding_model_only_where_the_labels_show_it_ranks_better() -> None:
    rng = np.random.default_rng(1)
    n, dims = 400, 24
    features = rng.normal(size=(n, 4))  # column 0 plays the ensemble statistic (the prior)
    vectors = rng.normal(size=(n, dims))
    topic = (vectors[:, :3].sum(axis=1) > 2.2).astype(int)  # outliers by topic: only the embeddings show it
    X = np.hstack([features, vectors])
    scorer, oof = LabelAwareScorer(prior_column=0, embedding_columns=dims).choose_blend(X, topic)
    assert scorer.embedding_weight > 0 and oof is not None and roc_auc_score(topic, oof) > 0.85
    fitted = scorer.fit(X, topic)
    assert roc_auc_score(topic, fitted.predict_proba(X)) > 0.9
    # Outliers by the prior: the feature model alone is kept.
    prior = (features[:, 0] > 1.5).astype(int)
    scorer, _ = LabelAwareScorer(prior_column=0, embedding_columns=dims).choose_blend(X, prior)
    assert scorer.embedding_weight < 1
    # Weight 0 (or a scorer without embedding columns) is the feature model's own logit.
    alone = LabelAwareScorer(prior_column=0).fit(features, prior).predict_proba(features)
    blended = LabelAwareScorer(prior_column=0, embedding_columns=dims, embedding_weight=0.0).fit(X, prior)
    assert np.allclose(blended.predict_proba(X), alone)


def test_random_order_is_fixed_per_review_and_unrelated_to_position() -> None:
    ids = pd.Series([f"r{i}" for i in range(200)])
    rank = random_order(ids)
    assert np.array_equal(rank, random_order(ids))  # the same sample on every rerun
    assert np.array_equal(random_order(ids.iloc[50:]), rank[50:])  # labelling some never reshuffles the rest
    assert len(np.unique(rank)) == 200
    assert abs(np.corrcoef(np.argsort(np.argsort(rank)), np.arange(200))[0, 1]) < 0.2
    assert QUEUE_ORDERS[0] == "most unusual first"


def test_copies_of_one_review_stay_in_one_fold_of_the_held_out_comparison() -> None:
    from core.detect.supervised import near_copies

    rng = np.random.default_rng(2)
    base = rng.normal(size=(30, 16))
    twins = base + rng.normal(scale=0.01, size=base.shape)  # light edits: cosine ~ 1
    groups = near_copies(np.vstack([base, twins]))
    assert np.array_equal(groups[:30], groups[30:]) and len(np.unique(groups)) == 30
    # Outliers that are pairs of copies: an embedding model that sees one copy in training ranks its twin at
    # the top, so folds that split pairs would credit the embedding model with a ranking it cannot repeat.
    y = np.r_[np.ones(10, dtype=int), np.zeros(20, dtype=int)]
    X = np.hstack([rng.normal(size=(60, 3)), np.vstack([base, twins])])
    oof = LabelAwareScorer(embedding_columns=16, embedding_weight=1.0).cross_validated(X, np.r_[y, y])
    assert oof is not None and roc_auc_score(np.r_[y, y], oof) < 0.8  # nothing to learn without the twin
