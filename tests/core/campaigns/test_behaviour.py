"""Behavioural features, burst windows, groups and the campaign signal on tables with a planted campaign."""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.campaigns.behaviour import PREFIX, behaviour_features, coverage
from core.campaigns.campaigns import account_groups, burst_windows
from core.campaigns.history import history_rows
from core.detect.signals import CampaignSignal, SignalInputs
from tests.core.campaigns.planted import planted_campaign, steady_reviews


def _with_features(frame: pd.DataFrame, context: pd.DataFrame | None = None) -> pd.DataFrame:
    rows = history_rows(frame)
    ctx = history_rows(context) if context is not None else rows.iloc[:0]
    return pd.concat([frame.reset_index(drop=True), behaviour_features(rows, ctx)], axis=1)


def _signal_inputs(frame: pd.DataFrame) -> SignalInputs:
    return SignalInputs(frame=frame, embeddings=np.zeros((len(frame), 2), dtype=np.float32))


def test_reviewer_features_count_every_review_of_the_account() -> None:
    frame = pd.DataFrame({
        "review_id": ["a", "b", "c", "d"], "user_id": ["x", "x", "y", None], "product_id": ["p", "q", "p", "p"],
        "rating": [5.0, 1.0, 4.0, 3.0], "text": ["t"] * 4,
        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-01", "2024-01-05", "2024-01-06"], utc=True),
    })
    out = _with_features(frame)
    assert out[PREFIX + "reviewer_reviews"].tolist()[:3] == [2, 2, 1]
    assert out[PREFIX + "reviewer_max_day"].tolist()[:2] == [2, 2]
    assert out[PREFIX + "reviewer_extreme_share"].tolist()[:3] == [1.0, 1.0, 0.0]
    # No reviewer id: the reviewer evidence is absent, not guessed; the product evidence is still there.
    assert np.isnan(out[PREFIX + "reviewer_reviews"].iloc[3])
    assert out[PREFIX + "product_rank"].iloc[3] == 3
    cover = coverage(out)
    assert (cover.with_reviewer, cover.with_product_time) == (3, 4)
    assert "1 of 4 reviews have no reviewer id" in cover.line()


def test_earlier_history_counts_as_the_batch_own() -> None:
    stored = pd.DataFrame({"review_id": ["old1", "old2"], "user_id": ["x", "x"], "product_id": ["p", "q"],
                           "rating": [5.0, 5.0], "text": ["a", "b"],
                           "timestamp": pd.to_datetime(["2023-01-01", "2023-02-01"], utc=True)})
    batch = pd.DataFrame({"review_id": ["new"], "user_id": ["x"], "product_id": ["p"], "rating": [5.0],
                          "text": ["c"], "timestamp": pd.to_datetime(["2024-01-01"], utc=True)})
    out = _with_features(batch, context=pd.concat([stored, batch]))  # the batch's own stored row is not counted twice
    assert out[PREFIX + "reviewer_reviews"].iloc[0] == 3
    assert out[PREFIX + "product_rank"].iloc[0] == 2


def test_steady_products_give_windows_at_no_more_than_the_level() -> None:
    steady = steady_reviews(n_products=60, days=200, seed=1)
    windows = burst_windows(_with_features(steady), level=0.01)
    # At most the level per product: 0.6 false windows expected over 60 products; more than 3 has p < 0.004.
    assert len({w.product_id for w in windows}) <= 3


def test_a_busy_season_is_not_a_burst_but_a_campaign_inside_it_is() -> None:
    quiet = steady_reviews(n_products=1, days=300, per_day=0.5, seed=8)
    season = steady_reviews(n_products=1, days=40, per_day=6.0, seed=9, prefix="s")
    season["product_id"] = "p0"
    season["timestamp"] = season["timestamp"] + pd.Timedelta(days=150)  # ten times busier for 40 days
    frame = pd.concat([quiet, season], ignore_index=True)
    assert burst_windows(_with_features(frame)) == []
    campaign = planted_campaign("p0", accounts=25, at_day=170, hours=12)
    windows = burst_windows(_with_features(pd.concat([frame, campaign], ignore_index=True)))
    assert windows and set(campaign["review_id"]) <= set(windows[0].review_ids)


def test_a_burst_of_five_star_reviews_is_a_window() -> None:
    steady = steady_reviews(seed=1)
    batch = pd.concat([steady, planted_campaign("p2")], ignore_index=True)
    windows = burst_windows(_with_features(batch))
    assert windows, "the planted burst was not found"
    top = windows[0]
    assert top.product_id == "p2" and top.rating == "5" and top.reviews >= 8 and top.expected < 2
    assert {f"c{a}-0" for a in range(8)} <= set(top.review_ids)
    assert top.new_accounts >= 8 and top.p_value < 1e-4
    assert "5-star reviews of p2 within 48 hours around" in top.line()


def test_accounts_that_review_the_same_products_together_form_a_group() -> None:
    steady = steady_reviews(seed=2)
    ring = planted_campaign("p0", accounts=5, products=("p1", "p3"), hours=20)
    pool = history_rows(pd.concat([steady, ring], ignore_index=True))
    groups = account_groups(pool)
    assert groups and set(groups[0].user_ids) == {f"c-acct{a}" for a in range(5)}
    assert set(groups[0].product_ids) == {"p0", "p1", "p3"}
    assert "5 accounts reviewed 3 of the same products" in groups[0].line()


def test_campaign_signal_ranks_planted_reviews_first_and_says_why() -> None:
    reference = _with_features(steady_reviews(seed=3))
    signal = CampaignSignal().fit(_signal_inputs(reference))
    assert signal.available_
    batch = _with_features(pd.concat([steady_reviews(seed=4), planted_campaign("p1", accounts=10)], ignore_index=True))
    scored = signal.score(_signal_inputs(batch))
    planted = batch["review_id"].str.startswith("c").to_numpy()
    top = np.argsort(-np.nan_to_num(scored.raw, nan=-1))[: planted.sum() * 2]
    assert planted[top].sum() >= 0.9 * planted.sum()
    detail = scored.details[int(np.flatnonzero(planted)[0])]
    assert "the reviewer's only review" in detail or "within 48 hours" in detail
    held = signal.held_out_scores(_signal_inputs(reference))
    assert np.isfinite(held).all() and held.shape == (len(reference),)


def test_campaign_signal_is_absent_without_ids_or_dates() -> None:
    frame = pd.DataFrame({"review_id": [f"r{i}" for i in range(60)], "text": ["fine"] * 60,
                          "rating": [5.0] * 60})
    signal = CampaignSignal().fit(_signal_inputs(_with_features(frame)))
    assert not signal.available_
