"""Behavioural features of reviews: what the reviewer, the product and the calendar say about each review.

Computed for the reviews of a batch over a pool: the batch itself plus every stored review of its reviewers and
products (`core.campaigns.history`). A feature needs its inputs: without a reviewer id the reviewer features
are NaN, without a product id or a date the product and burst features are; nothing is guessed.

The product-burst test asks whether the product's reviews within 24 hours either side of a review (of the same
rating) are more than the product's own rate and rating mix predict, as a Poisson upper-tail p-value. The rate
is the product's local one: its reviews within `BASELINE_DAYS` either side, outside the window (so a burst does
not hide itself), over the days the product was on sale then. A lifetime rate would call every busy season of
a popular product a burst (measured: nine "bursts" of a gift card in one autumn of Amazon's video games).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import poisson

DAY = 86_400.0
#: Half-width of the burst window around a review: reviews within 24 h either side, "within 48 hours".
BURST_HALF_WIDTH = DAY
#: Half-width of the period around a review whose other reviews give the product's local rate.
BASELINE_DAYS = 30.0
#: Each scored feature with the direction in which it is suspicious (+1: larger is suspicious, -1: smaller is),
#: fixed from the literature (Mukherjee et al. 2013; Rayana & Akoglu 2015), never fitted to labels.
FEATURE_DIRECTIONS: dict[str, int] = {
    "reviewer_reviews": -1,  # accounts with few reviews
    "reviewer_span_days": -1,  # all of an account's reviews within a short time
    "reviewer_burstiness": 1,  # 1 - span / 28 days, clipped to [0, 1]
    "reviewer_single": 1,  # the account's only review
    "reviewer_rating_entropy": -1,  # always the same rating
    "reviewer_deviation": 1,  # the account's ratings far from the products' consensus
    "rating_deviation": 1,  # this rating far from the product's consensus when it was posted
    "rating_extremity": 1,  # |rating - 3|
    "burst_surprise": 1,  # inside a burst of same-rated reviews of the product
}
FEATURES: tuple[str, ...] = tuple(FEATURE_DIRECTIONS)
#: Columns added for the reasons and the Campaigns page, not scored themselves (measured on the Yelp filter's
#: labels: most reviews in one day and the rank in the product's life point the wrong way or nowhere there).
CONTEXT_COLUMNS: tuple[str, ...] = ("reviewer_max_day", "reviewer_extreme_share", "product_rank", "burst_reviews",
                                    "burst_same_rating", "burst_expected", "burst_new_accounts", "product_daily_rate",
                                    "product_reviews")
BURSTINESS_DAYS = 28.0
PREFIX = "behaviour_"


def behaviour_columns() -> list[str]:
    """The columns `behaviour_features` adds, prefixed."""
    return [PREFIX + c for c in (*FEATURES, *CONTEXT_COLUMNS)]


def has_behaviour(frame: pd.DataFrame) -> bool:
    """Whether `frame` already carries every behavioural column (it was read against the history)."""
    return all(c in frame.columns for c in behaviour_columns())


@dataclass(frozen=True)
class Coverage:
    """How many reviews had the inputs of the reviewer and of the product evidence."""

    reviews: int
    with_reviewer: int
    with_product_time: int

    @property
    def without_any(self) -> int:
        return self.reviews - max(self.with_reviewer, self.with_product_time)

    def line(self) -> str:
        """One sentence for reports and pages."""
        missing_reviewer = self.reviews - self.with_reviewer
        missing_product = self.reviews - self.with_product_time
        if not missing_reviewer and not missing_product:
            return f"all {self.reviews} reviews have a reviewer, a product and a date"
        parts = []
        if missing_reviewer:
            parts.append(f"{missing_reviewer} of {self.reviews} reviews have no reviewer id")
        if missing_product:
            parts.append(f"{missing_product} of {self.reviews} have no product id or date")
        return "; ".join(parts) + ": their behavioural evidence is absent, not guessed"


def coverage(features: pd.DataFrame) -> Coverage:
    """`Coverage` of a frame with `behaviour_features` columns."""
    n = len(features)
    if PREFIX + "reviewer_reviews" not in features.columns:
        return Coverage(n, 0, 0)
    return Coverage(
        reviews=n,
        with_reviewer=int(features[PREFIX + "reviewer_reviews"].notna().sum()),
        with_product_time=int(features[PREFIX + "burst_surprise"].notna().sum()),
    )


def _extreme(rating: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(rating), ((rating <= 1) | (rating >= 5)).astype(np.float64), np.nan)


def pool_of(batch: pd.DataFrame, context: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The batch's history rows followed by the stored rows that are not the same reviews, and the positions
    of the batch's rows in it (the first ``len(batch)``)."""
    if len(context):
        def keys(rows: pd.DataFrame) -> pd.MultiIndex:
            return pd.MultiIndex.from_arrays([rows["review_id"].astype(str), rows["user_id"].fillna("").astype(str),
                                              rows["product_id"].fillna("").astype(str)])

        keep = ~keys(context).isin(keys(batch))
        pool = pd.concat([batch, context[keep]], ignore_index=True)
    else:
        pool = batch.reset_index(drop=True)
    return pool, np.arange(len(batch))


def behaviour_features(batch: pd.DataFrame, context: pd.DataFrame,
                       product_means: pd.DataFrame | None = None) -> pd.DataFrame:
    """Behavioural features of each review of `batch` (history rows, `core.campaigns.history.history_rows`).

    Parameters
    ----------
    batch
        The reviews to describe, as history rows.
    context
        Stored history rows of the same reviewers and products (the batch's own rows may be among them).
    product_means
        Reviews and mean rating of every product the batch's reviewers reviewed (``product_id``, ``reviews``,
        ``mean_rating``); products not listed use the pool's own mean.

    Returns
    -------
    One row per review of `batch`, columns `behaviour_columns()`.
    """
    return pool_features(pool_of(batch, context)[0], len(batch), product_means)


def pool_features(pool: pd.DataFrame, n: int, product_means: pd.DataFrame | None = None) -> pd.DataFrame:
    """`behaviour_features` of the first `n` rows of `pool` (`pool_of`: the batch, then the stored reviews)."""
    target = np.arange(n)
    out = {c: np.full(n, np.nan) for c in (*FEATURES, *CONTEXT_COLUMNS)}
    if n == 0:
        return pd.DataFrame({PREFIX + k: v for k, v in out.items()})
    rating = pool["rating"].to_numpy(dtype=np.float64)
    posted = pool["posted"].to_numpy(dtype=np.float64)
    day = np.floor(posted / DAY)
    user = pool["user_id"]
    product = pool["product_id"]

    # Product consensus: the mean of each product's ratings (all stored reviews), for the reviewer's deviation.
    means = pool.groupby("product_id", dropna=True)["rating"].mean()
    if product_means is not None and len(product_means):
        known = product_means.dropna(subset=["mean_rating"]).set_index("product_id")["mean_rating"].astype(float)
        means = known.combine_first(means)
    consensus = product.map(means).to_numpy(dtype=np.float64, na_value=np.nan)

    # Reviewer features over every review of the reviewer.
    has_user = user.notna().to_numpy()
    if has_user.any():
        frame = pd.DataFrame({"user": user, "day": day, "rating": rating, "extreme": _extreme(rating),
                              "deviation": np.abs(rating - consensus)})[has_user]
        by_user = frame.groupby("user", sort=False)
        per_user = pd.DataFrame({
            "reviews": by_user.size(),
            "extreme": by_user["extreme"].mean(),
            "deviation": by_user["deviation"].mean(),
            "span": by_user["day"].max() - by_user["day"].min(),
        })
        per_user["burstiness"] = np.clip(1 - per_user["span"] / BURSTINESS_DAYS, 0, 1)
        per_user["single"] = (per_user["reviews"] == 1).astype(np.float64)
        shares = frame.dropna(subset=["rating"]).groupby(["user", "rating"]).size()
        shares = shares / shares.groupby(level=0).transform("sum")
        per_user["entropy"] = (-(shares * np.log(shares))).groupby(level=0).sum()
        dated = frame.dropna(subset=["day"])
        per_user["max_day"] = dated.groupby(["user", "day"]).size().groupby(level=0).max()
        target_user = user.iloc[target]
        for column, name in (("reviews", "reviewer_reviews"), ("max_day", "reviewer_max_day"),
                             ("extreme", "reviewer_extreme_share"), ("deviation", "reviewer_deviation"),
                             ("span", "reviewer_span_days"), ("burstiness", "reviewer_burstiness"),
                             ("single", "reviewer_single"), ("entropy", "reviewer_rating_entropy")):
            out[name] = target_user.map(per_user[column]).to_numpy(dtype=np.float64, na_value=np.nan)
        reviews_of = user.map(per_user["reviews"]).to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        reviews_of = np.full(len(pool), np.nan)
    # Extremity is read with the account or product evidence it completes, never on its own.
    identified = (has_user | product.notna().to_numpy())[target]
    out["rating_extremity"] = np.where(identified, np.abs(rating[target] - 3.0), np.nan)

    # Product features: rank, consensus at posting time, bursts against the product's own rate and rating mix.
    dated_product = (product.notna() & np.isfinite(posted)).to_numpy()
    target_set = np.zeros(len(pool), dtype=bool)
    target_set[target] = True
    codes, _ = pd.factorize(product.where(dated_product))
    order = np.lexsort((posted, codes))
    order = order[codes[order] >= 0]
    boundaries = np.flatnonzero(np.diff(codes[order])) + 1
    for rows in np.split(order, boundaries) if len(order) else []:
        if not target_set[rows].any():
            continue
        _product_features(rows, rating, posted, reviews_of, target_set, out)
    # The first review of a product has no earlier consensus: the product's overall one stands in.
    first = np.isnan(out["rating_deviation"])
    out["rating_deviation"][first] = np.abs(rating[target] - consensus[target])[first]
    return pd.DataFrame({PREFIX + k: v for k, v in out.items()})


def _product_features(rows: np.ndarray, rating: np.ndarray, posted: np.ndarray, reviews_of: np.ndarray,
                      target_set: np.ndarray, out: dict[str, np.ndarray]) -> None:
    """Fill the product columns of `out` for the batch's reviews among `rows` (one product, sorted by time)."""
    t = posted[rows]
    r = rating[rows]
    n = len(rows)
    left = np.searchsorted(t, t - BURST_HALF_WIDTH, side="left")
    right = np.searchsorted(t, t + BURST_HALF_WIDTH, side="right")
    in_window = right - left
    window_days = 2 * BURST_HALF_WIDTH / DAY
    # The local rate outside the window, over the part of the baseline period in which the product had reviews;
    # one review more than seen, so a quiet baseline never predicts none.
    horizon = BASELINE_DAYS * DAY
    local = np.searchsorted(t, t + horizon, side="right") - np.searchsorted(t, t - horizon, side="left")
    covered_days = (np.minimum(t + horizon, t[-1]) - np.maximum(t - horizon, t[0])) / DAY
    rate = (local - in_window + 1) / np.maximum(covered_days - window_days, window_days)
    outside = np.maximum(n - in_window, 1)
    rated = np.isfinite(r)
    levels = np.unique(r[rated]) if rated.any() else np.zeros(0)
    cumulative = {lv: np.concatenate([[0], np.cumsum(r == lv)]) for lv in levels}
    single = reviews_of[rows] == 1
    new_account = np.concatenate([[0], np.cumsum(single)])
    new_of_level = {lv: np.concatenate([[0], np.cumsum(single & (r == lv))]) for lv in levels}
    rating_sum = np.concatenate([[0.0], np.cumsum(np.where(rated, r, 0.0))])
    rating_n = np.concatenate([[0], np.cumsum(rated)])
    i = np.flatnonzero(target_set[rows])  # the batch's reviews, by their place in the product's life
    pos, lo, hi = rows[i], left[i], right[i]
    expected = rate[i] * window_days
    ri, rated_i = r[i], rated[i]
    same = np.full(len(i), np.nan)
    share_outside = np.ones(len(i))
    new_accounts = (new_account[hi] - new_account[lo]).astype(np.float64)
    for lv in levels:
        of_level = rated_i & (ri == lv)
        same[of_level] = cumulative[lv][hi[of_level]] - cumulative[lv][lo[of_level]]
        share_outside[of_level] = (cumulative[lv][n] - same[of_level] + 1.0) / (outside[i][of_level] + len(levels))
        new_accounts[of_level] = new_of_level[lv][hi[of_level]] - new_of_level[lv][lo[of_level]]
    # P(X >= same - 1): the other same-rated reviews; without a rating, the other reviews of any rating.
    p = np.where(rated_i, poisson.sf(np.nan_to_num(same) - 2, expected * share_outside),
                 poisson.sf(in_window[i] - 2, expected))
    out["burst_same_rating"][pos] = same
    out["burst_surprise"][pos] = -np.log(np.maximum(p, 1e-300))
    out["burst_reviews"][pos] = in_window[i]
    out["burst_expected"][pos] = expected * share_outside
    out["burst_new_accounts"][pos] = new_accounts  # of the same rating as the review, when it has one
    out["product_daily_rate"][pos] = rate[i]
    out["product_reviews"][pos] = n
    out["product_rank"][pos] = i + 1
    earlier = rating_n[i]
    known = rated_i & (earlier > 0)
    out["rating_deviation"][pos[known]] = np.abs(ri[known] - rating_sum[i][known] / earlier[known])
