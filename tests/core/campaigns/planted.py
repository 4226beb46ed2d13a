"""Review tables with a planted campaign, for the campaign tests (ids, ratings and dates; short texts)."""

from __future__ import annotations

import numpy as np
import pandas as pd

START = pd.Timestamp("2024-01-01", tz="UTC")


def steady_reviews(n_products: int = 4, days: int = 200, per_day: float = 1.0, seed: int = 0,
                   prefix: str = "") -> pd.DataFrame:
    """Products reviewed at a steady Poisson rate by accounts that each review a few products."""
    rng = np.random.default_rng(seed)
    rows = []
    n_users = max(int(n_products * days * per_day / 3), 10)
    for p in range(n_products):
        count = rng.poisson(per_day * days)
        times = START + pd.to_timedelta(np.sort(rng.uniform(0, days * 86400, count)), unit="s")
        ratings = rng.choice([1, 2, 3, 4, 5], size=count, p=[0.08, 0.07, 0.15, 0.3, 0.4])
        users = rng.integers(0, n_users, size=count)
        for t, r, u in zip(times, ratings, users, strict=True):
            rows.append({"user_id": f"{prefix}u{u}", "product_id": f"{prefix}p{p}", "rating": float(r),
                         "timestamp": t, "text": f"review {len(rows)} of product {p}, it was fine for me"})
    frame = pd.DataFrame(rows)
    frame.insert(0, "review_id", [f"{prefix}r{i}" for i in range(len(frame))])
    return frame


def planted_campaign(product: str, accounts: int = 8, at_day: float = 120.0, hours: float = 10.0,
                     products: tuple[str, ...] = (), rating: float = 5.0, prefix: str = "c") -> pd.DataFrame:
    """`accounts` new accounts each giving `product` (and every one of `products`) `rating` stars within
    `hours` of day `at_day`."""
    rows = []
    targets = (product, *products)
    for a in range(accounts):
        for k, target in enumerate(targets):
            t = START + pd.Timedelta(days=at_day + k * 0.5) + pd.Timedelta(hours=hours * a / max(accounts, 1))
            rows.append({"review_id": f"{prefix}{a}-{k}", "user_id": f"{prefix}-acct{a}", "product_id": target,
                         "rating": rating, "timestamp": t, "text": f"Amazing product number {a}, best ever!"})
    return pd.DataFrame(rows)
