"""Campaign benchmark: the behavioural kind on real filter labels, planted campaigns, burst false alarms, cost.

a. yelp       ../shared/data/yelpchi_restaurants (Yelp's filter decisions; no text): the campaign signal fitted on
              the whole file (unsupervised), against single-feature baselines, and plain logistic regression and
              gradient boosting on the same features with 1 % and 10 % of the reviews labelled (3 draws; scored on
              the unlabelled rest), and logistic regression on the signal's feature surprises with the
              unsupervised score as an offset (the label route: few labels move it away from the unsupervised
              ranking only as far as they justify).
b. planted    Amazon 2018 5-core files (real reviewer ids, products and dates): groups of k new or aged accounts
              giving one product 5 stars within hours or days; recall of the planted reviews in the top 5 % of the
              campaign kind (calibrated against the unplanted reviews), AUROC of the kind, windows found.
c. null       no campaign planted: products' review times redrawn as a Poisson process at their own rate and
              rating mix, >= 200 sequences; the share of sequences with a burst window at level 0.01.
d. cost       a 10,000-review batch added to a history of 1,000,000 (synthetic ids over real dates and ratings)
              in the embedded SQLite database, then its behavioural features read: seconds and peak RSS.

Run:  .venv/bin/python bench/campaigns.py                 # everything, ~5 min on 2 cores
      .venv/bin/python bench/campaigns.py --smoke         # tiny sizes, for the test suite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.campaigns.behaviour import FEATURE_DIRECTIONS, FEATURES, PREFIX, behaviour_features  # noqa: E402
from core.campaigns.campaigns import burst_windows  # noqa: E402
from core.campaigns.history import HistoryStore, history_rows, with_behaviour  # noqa: E402
from core.detect.calibration import ScoreCalibrator  # noqa: E402
from core.detect.signals import CampaignSignal, SignalInputs  # noqa: E402

DATA = REPO.parent / "shared" / "data"
YELP = DATA / "yelpchi_restaurants" / "metadata.tsv.gz"
AMAZON = ("amazon2018_5core/AMAZON_FASHION_5.json.gz", "amazon2018_5core/All_Beauty_5.json.gz",
          "amazon2018_5core/Appliances_5.json.gz", "amazon2018_5core/Magazine_Subscriptions_5.json.gz")


def _inputs(frame: pd.DataFrame) -> SignalInputs:
    return SignalInputs(frame=frame, embeddings=np.zeros((len(frame), 1), dtype=np.float32))


def _featured(frame: pd.DataFrame) -> pd.DataFrame:
    rows = history_rows(frame)
    return pd.concat([frame.reset_index(drop=True), behaviour_features(rows, rows.iloc[:0])], axis=1)


def _precision_at(y: np.ndarray, score: np.ndarray, k: int = 100) -> float:
    return float(y[np.argsort(-score, kind="stable")[:k]].mean())


def _metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    score = np.nan_to_num(score, nan=np.nanmin(score) if np.isfinite(score).any() else 0.0)
    return {"auroc": round(float(roc_auc_score(y, score)), 4),
            "ap": round(float(average_precision_score(y, score)), 4),
            "p_at_100": round(_precision_at(y, score), 3)}


# a. Yelp ---------------------------------------------------------------------------------------------------
def yelp(rows: int | None, seeds: int) -> dict:
    data = pd.read_csv(YELP, sep="\t")
    if rows is not None:
        data = data.sample(n=rows, random_state=0).reset_index(drop=True)
    y = (data["label"] == "filtered").to_numpy()
    frame = pd.DataFrame({"review_id": [f"y{i}" for i in range(len(data))], "text": "",
                          "user_id": data["user_id"].astype(str), "product_id": data["product_id"].astype(str),
                          "rating": data["rating"].astype(float), "timestamp": pd.to_datetime(data["date"], utc=True)})
    featured = _featured(frame)
    signal = CampaignSignal().fit(_inputs(featured))
    unsupervised = signal.score(_inputs(featured)).raw
    out: dict = {"rows": len(frame), "filtered_share": round(float(y.mean()), 4),
                 "unsupervised": {"campaign kind": _metrics(y, unsupervised)}, "single": {}, "labelled": {}}
    for feature in FEATURES:
        values = FEATURE_DIRECTIONS[feature] * featured[PREFIX + feature].to_numpy(dtype=np.float64)
        out["single"][feature] = _metrics(y, values)
    raw = np.column_stack([np.nan_to_num(featured[PREFIX + f].to_numpy(dtype=np.float64)) for f in signal.features_])
    surprises = signal.feature_surprises(featured)
    rng = np.random.default_rng(0)
    for share in (0.01, 0.10):
        scores: dict[str, list[float]] = {}
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            labelled = np.zeros(len(y), dtype=bool)
            for cls in (True, False):  # stratified: both classes in the labelled share
                idx = np.flatnonzero(y == cls)
                labelled[rng.choice(idx, max(int(round(share * len(idx))), 1), replace=False)] = True
            rest = ~labelled
            candidates = {
                "unsupervised kind": unsupervised,
                "logistic regression": LogisticRegression(max_iter=2000).fit(
                    np.log1p(np.abs(raw[labelled])), y[labelled]).decision_function(np.log1p(np.abs(raw))),
                "gradient boosting": HistGradientBoostingClassifier(random_state=seed).fit(
                    raw[labelled], y[labelled]).predict_proba(raw)[:, 1],
                "kind + labels (offset LR)": _offset_lr(surprises, unsupervised, labelled, y),
            }
            for name, score in candidates.items():
                scores.setdefault(name, []).append(float(roc_auc_score(y[rest], np.nan_to_num(score[rest]))))
        out["labelled"][f"{share:.0%}"] = {k: {"auroc_mean": round(float(np.mean(v)), 4),
                                               "auroc_min": round(float(np.min(v)), 4)} for k, v in scores.items()}
    return out


def _offset_lr(surprises: np.ndarray, unsupervised: np.ndarray, labelled: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Logistic regression on the feature surprises, strongly shrunk, plus the unsupervised score scaled so
    that its weight is barely penalised: with few labels the ranking stays the unsupervised one."""
    u = np.nan_to_num(unsupervised)[:, None] * 30.0
    X = np.hstack([u, surprises])
    model = LogisticRegression(C=0.01, max_iter=2000).fit(X[labelled], y[labelled])
    return model.decision_function(X)


# b. planted campaigns --------------------------------------------------------------------------------------
def _amazon(limit: int | None) -> pd.DataFrame:
    frames = []
    for name in AMAZON:
        raw = pd.read_json(DATA / name, lines=True, nrows=limit)
        frames.append(pd.DataFrame({"user_id": raw["reviewerID"].astype(str), "product_id": raw["asin"].astype(str),
                                    "rating": raw["overall"].astype(float),
                                    "timestamp": pd.to_datetime(raw["unixReviewTime"], unit="s", utc=True),
                                    "text": raw["reviewText"].fillna("").astype(str)}))
    frame = pd.concat(frames, ignore_index=True).drop_duplicates(["user_id", "product_id"])
    frame.insert(0, "review_id", [f"a{i}" for i in range(len(frame))])
    return frame.reset_index(drop=True)


def planted(limit: int | None, draws: int) -> dict:
    base = _amazon(limit)
    reference = base.sample(frac=0.5, random_state=0)
    pool = base.drop(reference.index)
    signal = CampaignSignal().fit(_inputs(_featured(reference)))
    calibrator = ScoreCalibrator().fit(signal.held_out_scores(_inputs(_featured(reference))))
    products = pool["product_id"].value_counts()
    products = products[products >= 5].index.to_numpy()
    users = pool["user_id"].unique()
    out: dict = {}
    for accounts in (5, 10):
        for aged in (False, True):
            for spread_hours in (6.0, 72.0):
                recalls, aurocs, found = [], [], []
                for draw in range(draws):
                    rng = np.random.default_rng(1000 * draw + accounts + int(aged) * 7 + int(spread_hours))
                    product = rng.choice(products)
                    times = pool.loc[pool["product_id"] == product, "timestamp"]
                    at = times.min() + (times.max() - times.min()) * rng.uniform(0.2, 0.8)
                    if aged:  # existing accounts of the batch with their own history
                        who = rng.choice(users, accounts, replace=False)
                    else:
                        who = np.array([f"new-{draw}-{k}" for k in range(accounts)])
                    plant = pd.DataFrame({
                        "review_id": [f"plant-{draw}-{k}" for k in range(accounts)], "user_id": who,
                        "product_id": product, "rating": 5.0,
                        "timestamp": at + pd.to_timedelta(np.sort(rng.uniform(0, spread_hours, accounts)), unit="h"),
                        "text": "Great product, exactly as described, five stars!",
                    })
                    batch = _featured(pd.concat([pool, plant], ignore_index=True))
                    kind = calibrator.transform(signal.score(_inputs(batch)).raw)
                    is_plant = batch["review_id"].str.startswith("plant-").to_numpy()
                    cut = np.quantile(np.nan_to_num(kind), 0.95)
                    recalls.append(float((np.nan_to_num(kind[is_plant]) >= cut).mean()))
                    aurocs.append(float(roc_auc_score(is_plant, np.nan_to_num(kind))))
                    windows = burst_windows(batch)
                    found.append(any(set(w.review_ids) & set(plant["review_id"]) for w in windows))
                key = f"{accounts} {'aged' if aged else 'new'} accounts within {spread_hours:g} h"
                out[key] = {"recall_top5pct": round(float(np.mean(recalls)), 3),
                            "kind_auroc": round(float(np.mean(aurocs)), 4),
                            "window_found": round(float(np.mean(found)), 3), "draws": draws}
    return out


# c. burst false alarms ------------------------------------------------------------------------------------
def null_windows(limit: int | None, sequences: int, level: float = 0.01) -> dict:
    base = _amazon(limit)
    counts = base["product_id"].value_counts()
    products = counts[counts >= 10].index.to_numpy()
    rng = np.random.default_rng(7)
    alarms = 0
    for s in range(sequences):
        product = products[s % len(products)]
        real = base[base["product_id"] == product]
        span = max((real["timestamp"].max() - real["timestamp"].min()).total_seconds(), 86400.0 * 30)
        n = rng.poisson(len(real))
        frame = pd.DataFrame({
            "review_id": [f"n{s}-{i}" for i in range(n)], "user_id": [f"n{s}-u{i}" for i in range(n)],
            "product_id": product, "rating": rng.choice(real["rating"].to_numpy(), n),
            "timestamp": real["timestamp"].min() + pd.to_timedelta(np.sort(rng.uniform(0, span, n)), unit="s"),
            "text": "",
        })
        alarms += bool(burst_windows(_featured(frame), level))
    return {"sequences": sequences, "level": level, "sequences_with_a_window": alarms,
            "false_alarm_rate": round(alarms / sequences, 4), "ratio_to_level": round(alarms / sequences / level, 2)}


# d. cost ---------------------------------------------------------------------------------------------------
def cost(history_size: int, batch_size: int) -> dict:
    rng = np.random.default_rng(3)
    n_products = max(history_size // 50, 10)
    n_users = max(history_size // 4, 10)
    start = pd.Timestamp("2015-01-01", tz="UTC").value / 1e9

    def synthetic(n: int, tag: str) -> pd.DataFrame:
        return pd.DataFrame({
            "review_id": [f"{tag}{i}" for i in range(n)], "text": "",
            "user_id": [f"u{u}" for u in rng.integers(0, n_users, n)],
            "product_id": [f"p{p}" for p in rng.zipf(1.3, n) % n_products],
            "rating": rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n, p=[0.08, 0.06, 0.1, 0.22, 0.54]),
            "timestamp": pd.to_datetime(start + rng.uniform(0, 8 * 365 * 86400, n), unit="s", utc=True),
        })

    with tempfile.TemporaryDirectory() as folder:
        store = HistoryStore(f"sqlite:///{folder}/history.db")
        t0 = time.perf_counter()
        chunk = 100_000
        for i in range(0, history_size, chunk):
            store.add_batch(f"old-{i // chunk}", synthetic(min(chunk, history_size - i), f"o{i}-"))
        build = time.perf_counter() - t0
        batch = synthetic(batch_size, "new-")
        t0 = time.perf_counter()
        store.add_batch("new", batch)
        added = time.perf_counter() - t0
        t0 = time.perf_counter()
        featured = with_behaviour(batch, store, "new")
        read = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"history_reviews": history_size, "batch_reviews": batch_size, "history_build_s": round(build, 1),
            "add_batch_s": round(added, 2), "features_s": round(read, 2), "total_s": round(added + read, 2),
            "peak_rss_mb": round(peak_mb), "features_present": int(featured[PREFIX + "reviewer_reviews"].notna().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script runs, not the numbers")
    parser.add_argument("--only", nargs="*", choices=("yelp", "planted", "null", "cost"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "campaigns.json"))
    args = parser.parse_args()
    smoke = args.smoke
    parts = args.only or ["yelp", "planted", "null", "cost"]
    results: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
                     "smoke": smoke, "load": os.getloadavg()[0]}
    t0 = time.perf_counter()
    if "yelp" in parts:
        results["yelp"] = yelp(rows=4000 if smoke else None, seeds=1 if smoke else 3)
    if "planted" in parts:
        results["planted"] = planted(limit=600 if smoke else None, draws=1 if smoke else 10)
    if "null" in parts:
        results["null"] = null_windows(limit=600 if smoke else None, sequences=5 if smoke else 300)
    if "cost" in parts:
        results["cost"] = cost(history_size=20_000 if smoke else 1_000_000, batch_size=1_000 if smoke else 10_000)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
