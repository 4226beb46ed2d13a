"""How much power can any test have in scenario (iv)? An oracle bound next to the shipped novelty test.

Scenario (iv) of bench/shift.py: 150 current reviews of Magazine_Subscriptions, 15 of them (10 %) from another
category, against a reference of 150 magazine reviews. The shipped novelty test counts the current reviews
whose per-review conformal p-value (kNN-5 novelty, `core.shift.ReviewShiftScorer`) is small. This script asks
what the best possible test could do with the same evidence, by giving it what no real test has: the law of
the injected reviews' per-review scores, learned from half of the draws with the answer known.

For each draw every current review gets per-review features (conformal p-values of the kNN-1, kNN-5 and
kNN-20 novelty and of the distance to the reference centroid, all calibrated by jackknife on the reference).
A classifier learns P(injected | features) on the first half of the draws (labels known: the oracle), which
gives each review's likelihood ratio LR = f_injected / f_magazine; the statistic of a draw is the mixture
log-likelihood ratio ``sum log(0.9 + 0.1 LR)``, the Neyman-Pearson test for "10 % of reviews from the
learned law" (exact when reviews are independent). Its threshold is the 95 % quantile of the statistic on
same-distribution draws; for kNN-5 alone also on the exact distribution-free law of conformal p-values (ranks
of m + n exchangeable scores), which does not depend on the null draws. Power is measured on the second half
of the draws, and the shipped test on the same draws.

    WORKBENCH_HOME=/work/bench-home .venv/bin/python bench/shift_bound.py          # about 1 min with cached embeddings
    WORKBENCH_HOME=/work/bench-home .venv/bin/python bench/shift_bound.py --reference 1000

Prints a markdown table and writes JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.shift import BASE, DATA, FILES, Pool, load_pool  # noqa: E402
from core.shift.novelty import ReviewShiftScorer, novelty_test  # noqa: E402
from core.text.embed import unit_rows  # noqa: E402

FEATURES = ("knn1", "knn5", "knn20", "centroid")


def centroid_p_values(reference: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Conformal p-values of the cosine distance to the reference centroid (reference scored without itself)."""
    total, m = reference.sum(axis=0), reference.shape[0]
    without_self = unit_rows((total[None, :] - reference) / (m - 1))
    calibration = np.sort(1.0 - np.sum(reference * without_self, axis=1))
    distance = 1.0 - current @ unit_rows(total[None, :])[0]
    at_least = m - np.searchsorted(calibration, distance - 1e-12, side="left")
    return (1.0 + at_least) / (m + 1.0)


def features(reference: np.ndarray, current: np.ndarray, seed: int) -> np.ndarray:
    """Per current review: ``-log p`` of each feature in `FEATURES` (columns in that order)."""
    ref, cur = unit_rows(reference), unit_rows(current)
    cols = [ReviewShiftScorer(n_neighbors=k, random_state=seed).fit(ref).score(cur) for k in (1, 5, 20)]
    cols.append(centroid_p_values(ref, cur))
    return -np.log(np.stack(cols, axis=1))


def draws(pool: Pool, n_draws: int, n_ref: int, n: int, share: float, null: bool, seed: int):
    """(features, injected mask, injected category) per draw, in the design of bench/shift.py's (iv)."""
    base = np.flatnonzero(pool.source == BASE)
    others = [name for name in FILES if name != BASE and np.any(pool.source == name)]
    rng = np.random.default_rng(seed)
    k = 0 if null else int(round(share * n))
    out = []
    for s in range(n_draws):
        idx = rng.choice(base, size=n_ref + n - k, replace=False)
        category = others[s % len(others)]
        injected = rng.choice(np.flatnonzero(pool.source == category), size=k, replace=False)
        cur = np.concatenate([idx[n_ref:], injected]).astype(int)
        mask = np.r_[np.zeros(n - k, dtype=bool), np.ones(k, dtype=bool)]
        out.append((features(pool.embeddings[idx[:n_ref]], pool.embeddings[cur], s), mask,
                    "none" if null else category))
    return out


def exact_null_p_values(m: int, n: int, sims: int, seed: int) -> np.ndarray:
    """Conformal p-values of n current reviews against m calibration reviews under no shift: only ranks matter,
    so uniform scores give their exact joint law (sims x n)."""
    rng = np.random.default_rng(seed)
    calibration = np.sort(rng.random((sims, m)), axis=1)
    current = rng.random((sims, n))
    at_least = np.stack([m - np.searchsorted(c, x, side="left") for c, x in zip(calibration, current, strict=True)])
    return (1.0 + at_least) / (m + 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--draws", type=int, default=1200, help="draws with injected reviews (half teach the oracle)")
    parser.add_argument("--null-draws", type=int, default=1000, help="same-distribution draws (thresholds, false alarms)")
    parser.add_argument("--reference", type=int, default=150, help="reference reviews per draw")
    parser.add_argument("--current", type=int, default=150, help="current reviews per draw")
    parser.add_argument("--share", type=float, default=0.10, help="share of injected reviews")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the shared review data")
    parser.add_argument("--out", type=Path, default=Path("bench/results/shift_bound.json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    pool = load_pool(list(FILES), args.data)
    alt = draws(pool, args.draws, args.reference, args.current, args.share, null=False, seed=11)
    null = draws(pool, args.null_draws, args.reference, args.current, args.share, null=True, seed=12)
    teach, test = alt[: len(alt) // 2], alt[len(alt) // 2:]
    prior_odds = args.share / (1 - args.share)

    def statistic(model, cols: list[int], x: np.ndarray) -> float:
        post = np.clip(model.predict_proba(x[:, cols])[:, 1], 1e-9, 1 - 1e-9)
        ratio = post / (1 - post) / prior_odds  # likelihood ratio of "injected" at these features
        return float(np.sum(np.log(1 - args.share + args.share * ratio)))

    def oracle(name: str, cols: list[int], model) -> dict[str, object]:
        model.fit(np.vstack([x[:, cols] for x, _, _ in teach]), np.concatenate([y for _, y, _ in teach]))
        null_stat = np.array([statistic(model, cols, x) for x, _, _ in null])
        cut = float(np.quantile(null_stat, 1 - args.alpha))
        hits = np.array([statistic(model, cols, x) > cut for x, _, _ in test])
        row = {"test": name, "power": float(hits.mean()), "threshold": "95 % of same-distribution draws"}
        if cols == [1]:  # kNN-5 p-values alone: also thresholded on their exact law under no shift
            sims = exact_null_p_values(args.reference, args.current, 20_000, seed=3)
            wide = np.zeros((sims.size, len(FEATURES)))
            wide[:, 1] = -np.log(sims.ravel())
            post = np.clip(model.predict_proba(wide[:, cols])[:, 1], 1e-9, 1 - 1e-9).reshape(sims.shape)
            exact = np.log(1 - args.share + args.share * post / (1 - post) / prior_odds).sum(axis=1)
            exact_cut = float(np.quantile(exact, 1 - args.alpha))
            row["power_exact_threshold"] = float(np.mean([statistic(model, cols, x) > exact_cut for x, _, _ in test]))
            row["false_alarms_exact_threshold"] = float(np.mean(null_stat > exact_cut))
        row["by_category"] = by_category(hits)
        return row

    def by_category(hits: np.ndarray) -> dict[str, float]:
        names = np.array([c for _, _, c in test])
        return {c: float(hits[names == c].mean()) for c in sorted(set(names))}

    def shipped(x: np.ndarray) -> bool:
        return novelty_test(p_values=np.exp(-x[:, 1]), n_calibration=args.reference, alpha=args.alpha).p_value < args.alpha

    shipped_hits = np.array([shipped(x) for x, _, _ in test])
    rows = [
        {"test": "shipped novelty test (kNN-5 p-values, counts at 1-10 %)", "power": float(shipped_hits.mean()),
         "false_alarms": float(np.mean([shipped(x) for x, _, _ in null])), "by_category": by_category(shipped_hits)},
        oracle("oracle likelihood ratio, kNN-5 p-values (logistic)", [1], LogisticRegression(max_iter=1000)),
        oracle("oracle likelihood ratio, kNN-1/5/20 p-values (boosted trees)", [0, 1, 2],
               HistGradientBoostingClassifier(max_depth=3, random_state=0)),
        oracle("oracle likelihood ratio, kNN-1/5/20 + centroid p-values (boosted trees)", [0, 1, 2, 3],
               HistGradientBoostingClassifier(max_depth=3, random_state=0)),
    ]
    categories = list(rows[0]["by_category"])
    lines = [f"(iv) bound: {args.current} current reviews, {args.share:.0%} injected, reference {args.reference}; "
             f"{len(test)} test draws, {len(null)} same-distribution draws, alpha {args.alpha}", "",
             "| test | power | " + " | ".join(categories) + " |", "|---|---|" + "---|" * len(categories)]
    for r in rows:
        power = f"{r['power']:.3f}"
        if "power_exact_threshold" in r:
            power += f" ({r['power_exact_threshold']:.3f} at the exact null, false alarms {r['false_alarms_exact_threshold']:.3f})"
        if "false_alarms" in r:
            power += f" (false alarms {r['false_alarms']:.3f})"
        lines.append(f"| {r['test']} | {power} | " + " | ".join(f"{r['by_category'][c]:.2f}" for c in categories) + " |")
    table = "\n".join(lines)
    print(table)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
              "settings": vars(args) | {"data": str(args.data), "out": str(args.out)}, "rows": rows, "table": table,
              "seconds": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out} in {result['seconds']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
