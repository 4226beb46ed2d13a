"""What an analyst opens when hunting campaigns: product bursts as windows, groups of accounts that review the
same products together, and products ranked by that evidence.

A burst window is a stretch of time in which a product got more reviews of one rating than its own rate and
rating mix predict (`core.campaigns.behaviour`); the per-review test is held to `level` divided by the number
of days the product has reviews in the batch, so a product reviewed on many days does not produce windows by
chance. A group is a set of accounts linked by reviewing the same products within `days` of each other more often
than chance allows (`account_groups`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from core.campaigns.behaviour import BURST_HALF_WIDTH, DAY, PREFIX, Coverage, coverage

DEFAULT_LEVEL = 0.01
GROUP_DAYS = 3.0
MIN_SHARED = 2
MIN_GROUP = 3
PAIR_LEVEL = 1e-3


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(float(seconds), tz=UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class BurstWindow:
    """A burst of one product's reviews of one rating: the test at its peak, and the batch's reviews in it.

    `reviews`, `expected`, `new_accounts` and `p_value` are those of the strongest review's 48 hours, counted
    over every stored review of the product; `review_ids` and `user_ids` are the batch's reviews of that rating
    within 24 hours of any review of the burst (what an analyst labels).
    """

    product_id: str
    rating: str | None
    peak: str
    reviews: int
    expected: float
    new_accounts: int
    p_value: float
    start: str
    end: str
    review_ids: tuple[str, ...]
    user_ids: tuple[str, ...]

    def line(self) -> str:
        what = f"{self.rating}-star reviews" if self.rating else "reviews"
        return (f"{self.reviews} {what} of {self.product_id} within 48 hours around {self.peak[:16]}, where about "
                f"{self.expected:.2g} were expected (p = {self.p_value:.1e}); {self.new_accounts} from accounts with "
                f"no other review; {len(self.review_ids)} in this batch, {self.start[:16]} to {self.end[:16]}")


@dataclass(frozen=True)
class AccountGroup:
    """Accounts that reviewed the same products within a few days of each other."""

    user_ids: tuple[str, ...]
    product_ids: tuple[str, ...]
    review_ids: tuple[str, ...]
    reviews: int

    def line(self) -> str:
        return (f"{len(self.user_ids)} accounts reviewed {len(self.product_ids)} of the same products within "
                f"{GROUP_DAYS:g} days of each other ({self.reviews} reviews)")


@dataclass(frozen=True)
class ProductEvidence:
    """One product's campaign evidence in the batch."""

    product_id: str
    reviews: int
    score: float  # the highest campaign score of its reviews (0-1, calibrated), NaN without one
    windows: int
    daily_rate: float


@dataclass(frozen=True)
class CampaignReport:
    """The campaign evidence of one batch."""

    batch: str
    coverage: Coverage
    products: list[ProductEvidence] = field(default_factory=list)
    windows: list[BurstWindow] = field(default_factory=list)
    groups: list[AccountGroup] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not np.isfinite(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v) for v in value]
            return value

        return clean({
            "batch": self.batch,
            "coverage": {**asdict(self.coverage), "summary": self.coverage.line()},
            "products": [asdict(p) for p in self.products],
            "windows": [{**asdict(w), "summary": w.line()} for w in self.windows],
            "groups": [{**asdict(g), "summary": g.line()} for g in self.groups],
        })


def burst_windows(frame: pd.DataFrame, level: float = DEFAULT_LEVEL) -> list[BurstWindow]:
    """The burst windows among the reviews of `frame` (a batch with behavioural columns), strongest first."""
    needed = {"product_id", "timestamp", PREFIX + "burst_surprise"}
    if not needed <= set(frame.columns) or frame.empty:
        return []
    from core.campaigns.history import posted_seconds

    def column(name: str) -> np.ndarray:
        return pd.to_numeric(frame[PREFIX + name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)

    data = pd.DataFrame({
        "review_id": frame["review_id"].astype(str).to_numpy(),
        "user_id": frame["user_id"].to_numpy() if "user_id" in frame.columns else None,
        "product_id": frame["product_id"].to_numpy(),
        "rating": pd.to_numeric(frame["rating"], errors="coerce").to_numpy() if "rating" in frame.columns else np.nan,
        "posted": posted_seconds(frame),
        "surprise": column("burst_surprise"),
        "count": np.where(np.isfinite(column("burst_same_rating")), column("burst_same_rating"),
                          column("burst_reviews")),
        "expected": column("burst_expected"),
        "new": column("burst_new_accounts"),
    }).dropna(subset=["product_id", "posted", "surprise"])
    windows: list[BurstWindow] = []
    for product, rows in data.groupby("product_id", sort=False):
        rows = rows.sort_values("posted")
        days = max(int(np.unique(np.floor(rows["posted"] / DAY)).size), 1)
        hot = rows[rows["surprise"] >= -np.log(level / days)]
        # Merge the 48-hour windows of the reviews found in a burst, per rating.
        for rating, same in hot.groupby(hot["rating"].fillna(-1), sort=False):
            same = same.sort_values("posted")
            starts = same["posted"].to_numpy() - BURST_HALF_WIDTH
            ends = same["posted"].to_numpy() + BURST_HALF_WIDTH
            cluster = np.concatenate([[0], np.cumsum(starts[1:] > np.maximum.accumulate(ends)[:-1])])
            for c in np.unique(cluster):
                members = same[cluster == c]
                peak = members.loc[members["surprise"].idxmax()]
                inside = rows[(rows["posted"] >= starts[cluster == c].min()) & (rows["posted"] <= ends[cluster == c].max())]
                if rating >= 0:
                    inside = inside[inside["rating"] == rating]
                windows.append(BurstWindow(
                    product_id=str(product), rating=f"{rating:g}" if rating >= 0 else None, peak=_iso(peak["posted"]),
                    reviews=int(peak["count"]), expected=float(peak["expected"]), new_accounts=int(peak["new"]),
                    p_value=float(np.exp(-peak["surprise"])), start=_iso(inside["posted"].min()),
                    end=_iso(inside["posted"].max()), review_ids=tuple(inside["review_id"]),
                    user_ids=tuple(str(u) for u in inside["user_id"].dropna()),
                ))
    return sorted(windows, key=lambda w: (w.p_value, -w.reviews))


def account_groups(pool: pd.DataFrame, batch_ids: set[str] | None = None, days: float = GROUP_DAYS,
                   min_shared: int = MIN_SHARED, min_group: int = MIN_GROUP,
                   pair_level: float = PAIR_LEVEL) -> list[AccountGroup]:
    """Groups of accounts in `pool` (history rows) that reviewed the same products within `days` of each other
    more often than chance allows; with `batch_ids`, only groups with a review among them. Largest first.

    Two accounts are linked when they reviewed at least `min_shared` products within `days` of each other and a
    Poisson test puts that count at or below `pair_level`, given how often two reviews of each of their common
    products fall that close by chance (``2 * days / the product's span``). A group is a set of at least
    `min_group` accounts each linked to two others of it (the 2-core of the links, networkx).
    """
    import networkx as nx
    from scipy.stats import poisson

    data = pool.dropna(subset=["user_id", "product_id", "posted"])
    if data.empty:
        return []
    close: dict[tuple[str, str], set[str]] = defaultdict(set)
    horizon = days * DAY
    chance: dict[str, float] = {}
    for product, rows in data.groupby("product_id", sort=False):
        times = np.sort(rows["posted"].to_numpy())
        chance[str(product)] = min(1.0, 2 * horizon / max(times[-1] - times[0], horizon))
        if len(rows) < 2 or len(rows) > 5_000:  # a product everyone reviews links nobody in particular
            continue
        rows = rows.sort_values("posted")
        users, stamps = rows["user_id"].astype(str).to_numpy(), rows["posted"].to_numpy()
        right = np.searchsorted(stamps, stamps + horizon, side="right")
        for i in range(len(rows)):
            for j in range(i + 1, right[i]):
                if users[i] != users[j]:
                    a, b = sorted((users[i], users[j]))
                    close[(a, b)].add(str(product))
    products_of = data.assign(u=data["user_id"].astype(str), p=data["product_id"].astype(str)).groupby("u")["p"]
    reviewed = {u: set(ps) for u, ps in products_of}
    graph = nx.Graph()
    for (a, b), shared in close.items():
        if len(shared) < min_shared:
            continue
        expected = sum(chance[p] for p in reviewed[a] & reviewed[b])
        if poisson.sf(len(shared) - 1, expected) <= pair_level:
            graph.add_edge(a, b, products=shared)
    core = nx.k_core(graph, k=2) if graph.number_of_edges() else graph
    groups = []
    for members in nx.connected_components(core):
        if len(members) < min_group:
            continue
        products = set().union(*(core.edges[e]["products"] for e in core.subgraph(members).edges))
        rows = data[data["user_id"].astype(str).isin(members) & data["product_id"].astype(str).isin(products)]
        ids = tuple(rows["review_id"].astype(str))
        if batch_ids is not None and not set(ids) & batch_ids:
            continue
        groups.append(AccountGroup(user_ids=tuple(sorted(members)), product_ids=tuple(sorted(products)),
                                   review_ids=ids, reviews=len(rows)))
    return sorted(groups, key=lambda g: (-len(g.user_ids), -g.reviews))


def product_evidence(frame: pd.DataFrame, scores: pd.Series | None, windows: list[BurstWindow]) -> list[ProductEvidence]:
    """Products of `frame` ranked by their strongest campaign score, then by burst windows."""
    if "product_id" not in frame.columns or frame["product_id"].isna().all():
        return []
    per_window: dict[str, int] = defaultdict(int)
    for w in windows:
        per_window[w.product_id] += 1
    data = pd.DataFrame({"product_id": frame["product_id"].astype("string"),
                         "score": scores.to_numpy() if scores is not None else np.nan,
                         "rate": pd.to_numeric(frame.get(PREFIX + "product_daily_rate"), errors="coerce")})
    data = data.dropna(subset=["product_id"])
    out = [ProductEvidence(product_id=str(p), reviews=len(rows), score=float(rows["score"].max()),
                           windows=per_window.get(str(p), 0), daily_rate=float(rows["rate"].median()))
           for p, rows in data.groupby("product_id", sort=False)]
    return sorted(out, key=lambda e: (-(e.score if np.isfinite(e.score) else -1), -e.windows, -e.reviews))


def campaign_report(batch: str, frame: pd.DataFrame, pool: pd.DataFrame, scores: pd.Series | None = None,
                    level: float = DEFAULT_LEVEL) -> CampaignReport:
    """Everything `CampaignReport` holds for `frame` (a batch with behavioural columns) over `pool` (the batch's
    history rows and the stored reviews of its reviewers and products); `scores` are the campaign kind's."""
    windows = burst_windows(frame, level)
    batch_ids = set(frame["review_id"].astype(str)) if "review_id" in frame.columns else None
    return CampaignReport(
        batch=batch, coverage=coverage(frame), products=product_evidence(frame, scores, windows), windows=windows,
        groups=account_groups(pool, batch_ids),
    )


def daily_reviews(pool: pd.DataFrame, product: str) -> pd.DataFrame:
    """Reviews of `product` per day and star rating over `pool` (history rows): ``day``, ``rating``, ``reviews``."""
    rows = pool[(pool["product_id"].astype("string") == product) & pool["posted"].notna()]
    if rows.empty:
        return pd.DataFrame({"day": pd.Series(dtype="datetime64[ns, UTC]"), "rating": [], "reviews": []})
    days = pd.to_datetime(np.floor(rows["posted"] / DAY) * DAY, unit="s", utc=True)
    rating = rows["rating"].map(lambda r: "no rating" if pd.isna(r) else f"{r:g} stars")
    counts = pd.DataFrame({"day": days, "rating": rating}).value_counts().rename("reviews").reset_index()
    return counts.sort_values(["day", "rating"]).reset_index(drop=True)
