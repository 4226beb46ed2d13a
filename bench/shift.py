"""Benchmark of the shift tests on real reviews: false-alarm rate, power, calibration and speed.

Embeddings are computed once per file (through the shared cache under WORKBENCH_HOME), then index sets are
resampled, so hundreds of splits cost only the tests. Run from the repository root::

    WORKBENCH_HOME=/work/bench-home .venv/bin/python bench/shift.py            # full (several minutes)
    WORKBENCH_HOME=/work/bench-home .venv/bin/python bench/shift.py --quick    # smoke run (~1 min)

Power scenarios (i)-(iv) are the issue's (a new category mixed into Magazine_Subscriptions reviews, a whole
other category, a ratings-only shift); (v) mixes 20 % GPT-2 reviews of the fake-review file into genuine ones,
which the embedding tests do not see and the word-predictability feature test does.

Prints a markdown table and writes JSON (machine, command, settings, every number) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.features import tabular_inputs  # noqa: E402
from core.io.load import load_path  # noqa: E402
from core.report import report_to_html  # noqa: E402
from core.shift import (  # noqa: E402
    DEFAULT_DRIVERS,
    PREDICTABILITY,
    ReviewShiftScorer,
    classifier_test,
    combine_p_values,
    compare,
    feature_tests,
    mmd_test,
    novelty_test,
    predictability,
)
from core.text.embed import embedding_text, make_embedder  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = {
    "Magazine_Subscriptions": "amazon2018_5core/Magazine_Subscriptions_5.json.gz",
    "All_Beauty": "amazon2018_5core/All_Beauty_5.json.gz",
    "Gift_Cards": "amazon2018_5core/Gift_Cards_5.json.gz",
    "AMAZON_FASHION": "amazon2018_5core/AMAZON_FASHION_5.json.gz",
    "Appliances": "amazon2018_5core/Appliances_5.json.gz",
    "Subscription_Boxes": "amazon2023_subscription_videogames/processed_Subscription_box.csv.gz",
}
BASE = "Magazine_Subscriptions"  # reference category of the power scenarios
MACHINE_FILE = "fake_reviews_salminen_dev/fake_reviews_dev.csv.gz"  # genuine + GPT-2 reviews, scenario (v)
EMBEDDING_TESTS = ("mmd", "classifier", "novelty", "verdict", "verdict_all_three")
UNIFORM_TESTS = ("mmd", "classifier", "novelty")  # Bonferroni verdicts are conservative by design
PERMUTATION_TESTS = ("mmd", "classifier")  # p-values on the grid k / (B + 1); novelty's are randomised already


@dataclass
class Pool:
    """Reviews of one or more files, deduplicated by embedded text, with embeddings and tabular inputs."""

    frame: pd.DataFrame
    tabular: pd.DataFrame
    embeddings: np.ndarray
    source: np.ndarray  # file name per row


def load_pool(names: list[str], data: Path, dedupe: bool = True) -> Pool:
    embedder = make_embedder()
    frames, embs, sources = [], [], []
    for name in names:
        frame = load_path(data / FILES[name]).frame
        texts = embedding_text(frame)
        if dedupe:
            # 5-core files repeat reviews verbatim (All_Beauty: 5,264 rows, 1,369 distinct texts); repeats
            # would let a review sit in both batches and make every test look better than it is.
            keep = ~pd.Series(texts).duplicated().to_numpy()
            frame = frame.loc[keep].reset_index(drop=True)
            texts = [t for t, k in zip(texts, keep, strict=True) if k]
        embs.append(embedder.encode(texts))
        frames.append(frame)
        sources.append(np.full(len(frame), name))
    frame = pd.concat(frames, ignore_index=True)
    return Pool(frame=frame, tabular=tabular_inputs(frame), embeddings=np.vstack(embs), source=np.concatenate(sources))


FEATURE_PERMUTATIONS = 500


def run_split(pool: Pool, ref: np.ndarray, cur: np.ndarray, n_permutations: int, seed: int) -> dict[str, float]:
    """p-values of every test for one (reference, current) split of `pool`."""
    cur_pool = pool
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    # Per-feature tests get 500 permutations, so that Holm over ~23 tests can still reach 0.05 (23/501).
    ref_tab, cur_tab = pool.tabular.iloc[ref].copy(), cur_pool.tabular.iloc[cur].copy()
    # Predictability is measured against each split's own reference (a word model fitted on it).
    ref_tab[PREDICTABILITY], cur_tab[PREDICTABILITY] = predictability(
        pool.frame["text"].iloc[ref].tolist(), cur_pool.frame["text"].iloc[cur].tolist()
    )
    results, _, _ = feature_tests(reference=ref_tab, current=cur_tab, n_permutations=FEATURE_PERMUTATIONS,
                                  random_state=rng)
    for r in results:
        out[f"{r.name}:{r.feature}"] = r.p_value
    out["any_feature_holm"] = float(min((r.detail["p_value_adjusted"] for r in results), default=1.0))
    e_ref, e_cur = pool.embeddings[ref], cur_pool.embeddings[cur]
    out["mmd"] = mmd_test(reference=e_ref, current=e_cur, n_permutations=n_permutations, random_state=rng).p_value
    out["classifier"] = classifier_test(reference=e_ref, current=e_cur, n_permutations=n_permutations,
                                        random_state=rng).p_value
    scorer = ReviewShiftScorer(random_state=seed).fit(e_ref)
    p_cur = scorer.score(e_cur)
    out["novelty"] = novelty_test(p_values=p_cur, n_calibration=scorer.n_calibration, random_state=rng).p_value
    out["verdict"] = combine_p_values([out[d] for d in DEFAULT_DRIVERS])
    out["verdict_all_three"] = combine_p_values([out["mmd"], out["classifier"], out["novelty"]])
    out["_review_p_share_01"] = float(np.mean(p_cur <= 0.01))
    out["_review_p_share_05"] = float(np.mean(p_cur <= 0.05))
    out["_review_p_one"] = float(p_cur[rng.integers(len(p_cur))])
    return out


def rates(rows: list[dict[str, float]], alpha: float) -> dict[str, float]:
    keys = [k for k in rows[0] if not k.startswith("_")]
    return {k: float(np.mean([r[k] < alpha for r in rows])) for k in keys}


def uniformity(rows: list[dict[str, float]], key: str, grid: float | None = None) -> float:
    """KS p-value of the split p-values of `key` against uniform (large = consistent with uniform).

    A permutation p-value with B permutations lives on the grid k / (B + 1): against the continuous uniform,
    KS sees the grid itself once there are thousands of splits (MMD, B = 200: KS p 0.006 at 1,500 splits; 0.05-0.15
    on fresh seeds; 0.43-0.57 on 6,000 splits with the jitter below). `grid` = 1 / (B + 1) subtracts a uniform
    share of one grid step, which makes an exactly valid permutation p-value exactly uniform.
    """
    p = np.array([r[key] for r in rows], dtype=np.float64)
    if grid:
        p = p - np.random.default_rng(0).uniform(size=p.size) * grid
    return float(stats.kstest(p, "uniform").pvalue)


def false_alarms(pool: Pool, sizes: list[int], splits: int, n_permutations: int, alpha: float,
                 log: Callable[[str], None]) -> dict[str, object]:
    out: dict[str, object] = {}
    for n in sizes:
        t0 = time.perf_counter()
        rng = np.random.default_rng(1000 + n)
        rows = []
        for s in range(splits):
            idx = rng.choice(len(pool.frame), size=2 * n, replace=False)  # disjoint by construction
            rows.append(run_split(pool, idx[:n], idx[n:], n_permutations, seed=s))
        r = rates(rows, alpha)
        features = {k: v for k, v in r.items() if ":" in k}
        out[str(n)] = {
            "rates": r,
            "feature_far_min": min(features.values()) if features else None,
            "feature_far_max": max(features.values()) if features else None,
            "feature_far_mean": float(np.mean(list(features.values()))) if features else None,
            "feature_far_outside": sorted(k for k, v in features.items() if not 0.03 <= v <= 0.07),
            "uniformity_ks_p": {
                k: uniformity(rows, k, grid=1 / (n_permutations + 1) if k in PERMUTATION_TESTS else None)
                for k in UNIFORM_TESTS
            },
            "review_p_share_at_0.01": float(np.mean([x["_review_p_share_01"] for x in rows])),
            "review_p_share_at_0.05": float(np.mean([x["_review_p_share_05"] for x in rows])),
            "review_p_uniformity_ks_p": uniformity(rows, "_review_p_one"),
            "seconds": time.perf_counter() - t0,
        }
        log(f"false alarms n={n}: {splits} splits in {out[str(n)]['seconds']:.0f} s")
    return out


def load_machine_pool(data: Path) -> Pool:
    """Genuine and GPT-2 reviews of the fake-review file; `source` is the file's label."""
    embedder = make_embedder()
    frame = load_path(data / MACHINE_FILE).frame
    texts = embedding_text(frame)
    keep = ~pd.Series(texts).duplicated().to_numpy()
    frame = frame.loc[keep].reset_index(drop=True)
    embeddings = embedder.encode([t for t, k in zip(texts, keep, strict=True) if k])
    return Pool(frame=frame, tabular=tabular_inputs(frame), embeddings=embeddings,
                source=frame["label"].astype(str).to_numpy())


def power(pool: Pool, splits: int, n_permutations: int, alpha: float, log: Callable[[str], None],
          machine: Pool | None = None) -> dict[str, object]:
    base = np.flatnonzero(pool.source == BASE)
    others = [name for name in FILES if name != BASE and np.any(pool.source == name)]
    rng = np.random.default_rng(7)
    scenarios: dict[str, Callable[[int], tuple[np.ndarray, np.ndarray]]] = {}

    def injected(n: int, share: float, n_ref: int | None = None) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
        n_ref = n_ref or n

        def draw(s: int) -> tuple[np.ndarray, np.ndarray]:
            # The new category cycles through the other files, so power is an average over them.
            other = np.flatnonzero(pool.source == others[s % len(others)])
            k = int(round(share * n))
            idx = rng.choice(base, size=n_ref + n - k, replace=False)
            return idx[:n_ref], np.concatenate([idx[n_ref:], rng.choice(other, size=k, replace=False)]).astype(int)
        return draw

    def ratings(n: int) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
        high = pool.tabular["rating"].to_numpy() >= 4

        def draw(s: int) -> tuple[np.ndarray, np.ndarray]:
            ref = rng.choice(len(pool.frame), size=n, replace=False)
            free = np.setdiff1d(np.flatnonzero(high), ref)
            return ref, rng.choice(free, size=n, replace=False)
        return draw

    scenarios["(i) 20% new category, n=200"] = injected(200, 0.20)
    scenarios["(ii) other category, n=50"] = injected(50, 1.0)
    scenarios["(iii) only 4-5 stars, n=1000"] = ratings(1000)
    scenarios["(iv) 10% new category, n=150"] = injected(150, 0.10)
    scenarios["(iv) 10% new category, n=150, reference 1000"] = injected(150, 0.10, n_ref=1000)
    pools = dict.fromkeys(scenarios, pool)
    if machine is not None:
        genuine = np.flatnonzero(machine.source == "original")
        generated = np.flatnonzero(machine.source == "computer_generated")

        def machine_text(s: int, n: int = 200, share: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
            k = int(round(share * n))
            idx = rng.choice(genuine, size=2 * n - k, replace=False)
            return idx[:n], np.concatenate([idx[n:], rng.choice(generated, size=k, replace=False)])

        name = "(v) 20% machine-generated reviews, n=200"
        scenarios[name], pools[name] = machine_text, machine
    out: dict[str, object] = {}
    for name, draw in scenarios.items():
        t0 = time.perf_counter()
        rows = [run_split(pools[name], *draw(s), n_permutations, seed=s) for s in range(splits)]
        r = rates(rows, alpha)
        out[name] = {"rates": r, "any_feature_holm": r["any_feature_holm"],
                     "rating_chi_square": r.get("chi_square:rating"),
                     "predictability_ks": r.get(f"ks:{PREDICTABILITY}"), "seconds": time.perf_counter() - t0}
        log(f"power {name}: {splits} splits in {out[name]['seconds']:.0f} s")
    out["_injected_categories"] = others
    return out


def timings(pool_all: Pool, sizes: list[int], n_permutations: int, log: Callable[[str], None]) -> dict[str, float]:
    out = {}
    rng = np.random.default_rng(3)
    for n in sizes:
        replace = 2 * n > len(pool_all.frame)
        idx = rng.choice(len(pool_all.frame), size=2 * n, replace=replace)
        ref, cur = idx[:n], idx[n:]
        t0 = time.perf_counter()
        report = compare(reference=pool_all.frame.iloc[ref].reset_index(drop=True),
                         current=pool_all.frame.iloc[cur].reset_index(drop=True),
                         reference_embeddings=pool_all.embeddings[ref], current_embeddings=pool_all.embeddings[cur],
                         n_permutations=n_permutations)
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        html = report_to_html(report)
        render = time.perf_counter() - t1
        out[f"2x{n}"] = seconds
        out[f"2x{n}_html_render_s"] = render
        out[f"2x{n}_tests"] = len(report.tests)
        log(f"full report 2x{n}: compare {seconds:.2f} s + HTML {render:.2f} s ({len(html) / 1e6:.1f} MB; "
            f"{len(report.tests)} tests, sampled with replacement: {replace})")
    return out


def markdown(result: dict[str, object], alpha: float) -> str:
    lines = ["| measurement | value | target | pass |", "|---|---|---|---|"]

    def row(name: str, value: float | None, target: str, ok: bool | None) -> None:
        v = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"| {name} | {v} | {target} | {'' if ok is None else ('yes' if ok else 'NO')} |")

    far = result["false_alarms"] or {}
    for n, block in far.items():  # type: ignore[union-attr]
        r = block["rates"]
        for t in EMBEDDING_TESTS:
            row(f"FAR n={n} {t}", r[t], "[0.03, 0.07]", 0.03 <= r[t] <= 0.07)
        row(f"FAR n={n} per-feature tests, min", block["feature_far_min"], "[0.03, 0.07]",
            0.03 <= block["feature_far_min"] <= 0.07)
        row(f"FAR n={n} per-feature tests, max", block["feature_far_max"], "[0.03, 0.07]",
            0.03 <= block["feature_far_max"] <= 0.07)
        row(f"FAR n={n} per-feature tests, mean of {len([k for k in r if ':' in k])}", block["feature_far_mean"],
            "[0.03, 0.07]", 0.03 <= block["feature_far_mean"] <= 0.07)
        row(f"FAR n={n} any feature after Holm", r["any_feature_holm"], f"<= {alpha}", r["any_feature_holm"] <= 0.07)
        # With a small reference the calibration set is tiny (n=50: 15 reviews, smallest p = 1/16), so the
        # per-review rate is judged where the calibration set can resolve the level.
        judged = int(n) >= 200
        row(f"per-review p <= 0.01 share, n={n} ref", block["review_p_share_at_0.01"], "0.01 ± 0.01" if judged else "",
            abs(block["review_p_share_at_0.01"] - 0.01) <= 0.01 if judged else None)
        row(f"per-review p <= 0.05 share, n={n} ref", block["review_p_share_at_0.05"], "0.05 ± 0.01" if judged else "",
            abs(block["review_p_share_at_0.05"] - 0.05) <= 0.01 if judged else None)
        row(f"per-review p uniformity KS p, n={n}", block["review_p_uniformity_ks_p"], "> 0.01" if judged else "",
            block["review_p_uniformity_ks_p"] > 0.01 if judged else None)
        for t, p in block["uniformity_ks_p"].items():
            row(f"uniformity KS p of {t} p-values, n={n}", p, "> 0.01", p > 0.01)
    targets = {"(i)": 0.95, "(ii)": 0.99, "(iii)": 0.95, "(iv)": 0.70}
    for name, block in (result["power"] or {}).items():  # type: ignore[union-attr]
        if name.startswith("_"):
            continue
        target = targets.get(name.split()[0])
        r = block["rates"]
        for t in EMBEDDING_TESTS:
            judged = t == "verdict" and target is not None
            row(f"power {name}: {t}", r[t], f">= {target}" if judged else "", r[t] >= target if judged else None)
        row(f"power {name}: any feature (Holm)", r["any_feature_holm"], "", None)
        if block.get("predictability_ks") is not None:
            row(f"power {name}: {PREDICTABILITY} KS (unadjusted)", block["predictability_ks"], "", None)
        if "chi_square:rating" in r:
            row(f"power {name}: rating chi-square", r["chi_square:rating"],
                f">= {target}" if name.startswith("(iii)") else "",
                r["chi_square:rating"] >= target if name.startswith("(iii)") else None)
    for k, v in result["timings"].items():  # type: ignore[union-attr]
        if k.endswith(("_tests", "_html_render_s")):
            continue
        limit = 5.0 if k == "2x1000" else 30.0
        row(f"full report {k} (s)", v, f"<= {limit:g}", v <= limit)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--splits", type=int, default=300, help="same-distribution splits per sample size")
    parser.add_argument("--power-splits", type=int, default=100, help="splits per power scenario")
    parser.add_argument("--permutations", type=int, default=200,
                        help="permutations per test inside the false-alarm and power loops")
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000], help="batch sizes for false alarms")
    parser.add_argument("--timing-sizes", type=int, nargs="+", default=[1000, 5000],
                        help="batch sizes of the full-report timing (1,000 permutations)")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=0,
                        help="BLAS/OpenMP threads (0 = library default); 1 avoids spin-waiting on a busy machine")
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the shared review data")
    parser.add_argument("--out", type=Path, default=Path("bench/results/shift.json"))
    parser.add_argument("--timing-only", action="store_true", help="only the full-report timings")
    parser.add_argument("--quick", action="store_true",
                        help="60 false-alarm splits, 30 power splits, timing at 2x1,000 only")
    args = parser.parse_args(argv)
    if args.quick:
        args.splits, args.power_splits, args.timing_sizes = 60, 30, [1000]

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    limiter = None
    if args.threads:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(args.threads)
    t0 = time.perf_counter()
    pool = load_pool(list(FILES), args.data)
    log(f"pool: {len(pool.frame)} distinct reviews from {len(FILES)} files, embeddings {pool.embeddings.shape} "
        f"in {time.perf_counter() - t0:.1f} s")
    result: dict[str, object] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "threads": args.threads or "default",
                    "load_average": os.getloadavg()},
        "settings": {"splits": args.splits, "power_splits": args.power_splits,
                     "permutations_in_loops": args.permutations, "alpha": args.alpha, "sizes": args.sizes,
                     "far_pool": "distinct reviews of " + ", ".join(FILES),
                     "power_reference_category": BASE, "drivers": list(DEFAULT_DRIVERS)},
        "pool_size": len(pool.frame),
    }
    result["settings"]["feature_permutations_in_loops"] = FEATURE_PERMUTATIONS  # type: ignore[index]
    if args.timing_only:
        result["false_alarms"], result["power"] = {}, {}
    else:
        result["false_alarms"] = false_alarms(pool, args.sizes, args.splits, args.permutations, args.alpha, log)
        machine = load_machine_pool(args.data) if (args.data / MACHINE_FILE).is_file() else None
        result["power"] = power(pool, args.power_splits, args.permutations, args.alpha, log, machine=machine)
    full = load_pool(list(FILES), args.data, dedupe=False)
    result["timings"] = timings(full, args.timing_sizes, 1000, log)
    result["seconds_total"] = time.perf_counter() - t0
    table = markdown(result, args.alpha)
    result["table"] = table
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    log(f"wrote {args.out} ({result['seconds_total']:.0f} s in all)")
    del limiter
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
