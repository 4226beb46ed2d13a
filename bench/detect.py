"""Outlier-detection benchmark on real review data with planted anomalies.

Four labelled benchmarks are built from ../shared/data (read in place) for every seed, each with a reference
batch and a disjoint evaluation batch holding 3-6 % planted anomalies:

a. category   reviews of other categories mixed into one category's batch
b. rating     ratings of negative reviews (1-2 stars) set to 5 and of 5-star reviews set to 1
c. duplicate  exact copies of reference reviews, copies within the batch, light edits and word-swapped templates
d. machine    GPT-2 generated reviews mixed into genuine ones (fake_reviews_salminen_dev)

Every pool is de-duplicated by normalised text first (the 5-core files repeat reviews across product
variants), so the only duplicates in (c) are the planted ones. The model is fitted on the reference and
scores the evaluation batch; AUROC and average precision are reported per detector, per signal, for the
ensemble (max, mean, Fisher) and for the label-aware scorer with 1 % and 5 % of the batch labelled
(random rows, and the top of the ranking as the label queue shows it; the whole batch is scored and only the
unlabelled rows count, for it and for the unsupervised ensemble alike).

Run:  WORKBENCH_HOME=/work/bench-home .venv/bin/python bench/detect.py --seeds 5
      # The same models on int8 vectors (what `onnx-int8` serves), to compare detection quality with fp32:
      WORKBENCH_HOME=/tmp/int8-home .venv/bin/python bench/detect.py --seeds 5 --no-timing --backend onnx-int8 \
          --out bench/results/detect-int8.json
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
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.detect.calibration import combine  # noqa: E402
from core.detect.model import OutlierModel  # noqa: E402
from core.detect.signals import normalise_text  # noqa: E402
from core.io.load import load_path  # noqa: E402

CATEGORY_FILES = {
    "fashion": "amazon2018_5core/AMAZON_FASHION_5.json.gz",
    "beauty": "amazon2018_5core/All_Beauty_5.json.gz",
    "appliances": "amazon2018_5core/Appliances_5.json.gz",
    "gift_cards": "amazon2018_5core/Gift_Cards_5.json.gz",
    "magazines": "amazon2018_5core/Magazine_Subscriptions_5.json.gz",
    "subscription_boxes": "amazon2023_subscription_videogames/processed_Subscription_box.csv.gz",
    "video_games": "amazon2023_subscription_videogames/processed_VGames.csv.gz",
}
FAKE_FILE = "fake_reviews_salminen_dev/fake_reviews_dev.csv.gz"
BENCHMARKS = ("category", "rating", "duplicate", "machine")
REFERENCE_SIZE = 800
BATCH_SIZE = 1000
COMBOS = ("max", "mean", "fisher")


# -- data --------------------------------------------------------------------------------------------
def _dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    norm = frame["text"].fillna("").map(normalise_text)
    keep = (norm.str.len() > 0) & ~norm.duplicated()
    return frame[keep.to_numpy()].reset_index(drop=True)


def load_pools(data_dir: Path) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    pools = {}
    for name, rel in CATEGORY_FILES.items():
        frame = load_path(data_dir / rel).frame
        frame["category"] = name
        pools[name] = _dedupe(frame)
    fake = _dedupe(load_path(data_dir / FAKE_FILE).frame)
    return pools, fake


def _split(pool: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = rng.permutation(len(pool))
    n_ref = min(REFERENCE_SIZE, int(0.45 * len(pool)))
    return pool.iloc[order[:n_ref]].reset_index(drop=True), pool.iloc[order[n_ref:]].reset_index(drop=True)


def _mix(
    normal: pd.DataFrame, anomalies: pd.DataFrame, rng: np.random.Generator, prefix: str = "b"
) -> tuple[pd.DataFrame, np.ndarray]:
    batch = pd.concat([normal, anomalies], ignore_index=True)
    y = np.r_[np.zeros(len(normal), dtype=int), np.ones(len(anomalies), dtype=int)]
    order = rng.permutation(len(batch))
    batch = batch.iloc[order].reset_index(drop=True)
    batch["review_id"] = [f"{prefix}{i}" for i in range(len(batch))]
    return batch, y[order]


def _n_anomalies(n_normal: int, share: float) -> int:
    return max(5, int(round(share * n_normal / (1 - share))))


def build_category(pools, target, rng, share):
    ref, rest = _split(pools[target], rng)
    normal = rest.iloc[:BATCH_SIZE]
    others = pd.concat([p for n, p in pools.items() if n != target], ignore_index=True)
    anomalies = others.iloc[rng.choice(len(others), _n_anomalies(len(normal), share), replace=False)]
    return ref, *_mix(normal, anomalies, rng)


def build_rating(pools, target, rng, share):
    ref, rest = _split(pools[target], rng)
    n_anom = _n_anomalies(min(len(rest), BATCH_SIZE), share)
    rating = pd.to_numeric(rest["rating"], errors="coerce")
    neg = rest.index[rating <= 2].to_numpy()
    pos = rest.index[rating == 5].to_numpy()
    n_neg = min(len(neg), n_anom // 2)
    flip_neg = rng.choice(neg, n_neg, replace=False)
    flip_pos = rng.choice(pos, n_anom - n_neg, replace=False)
    anomalies = rest.loc[np.r_[flip_neg, flip_pos]].copy()
    anomalies["rating"] = np.r_[np.full(n_neg, 5.0), np.full(n_anom - n_neg, 1.0)]
    normal = rest.drop(index=np.r_[flip_neg, flip_pos]).iloc[:BATCH_SIZE]
    return ref, *_mix(normal, anomalies, rng)


def _swap_words(text: str, donors: list[str], n: int, rng: np.random.Generator) -> str:
    words = text.split()
    for _ in range(n):
        words[rng.integers(len(words))] = donors[rng.integers(len(donors))]
    return " ".join(words)


def build_duplicate(pools, target, rng, share):
    ref, rest = _split(pools[target], rng)
    normal = rest.iloc[:BATCH_SIZE].copy()
    spare = rest.iloc[BATCH_SIZE:]
    n_anom = _n_anomalies(len(normal), share)
    long_ref = ref[ref["text"].str.split().str.len() >= 8]
    long_pool = pd.concat([spare, normal])
    long_pool = long_pool[long_pool["text"].str.split().str.len() >= 8]
    donors = " ".join(
        pools[target]["text"].sample(200, random_state=int(rng.integers(1 << 30))).tolist()
    ).split()
    rows = []
    kinds = ("copy of reference", "copies in batch", "light edit", "template")
    while len(rows) < n_anom:
        kind = kinds[len(rows) % len(kinds)]
        if kind == "copy of reference":
            rows.append(long_ref.iloc[rng.integers(len(long_ref))].copy())
            continue
        src = long_pool.iloc[rng.integers(len(long_pool))].copy()
        for j in range(2 if kind != "template" else 3):
            row = src.copy()
            if kind == "light edit" and j:
                row["text"] = row["text"].upper() if j % 2 else row["text"].rstrip(".!") + "!!"
            elif kind == "template":
                row["text"] = _swap_words(src["text"], donors, 2, rng)
            rows.append(row)
    anomalies = pd.DataFrame(rows[:n_anom])
    # A planted copy's original may sit among the normal rows: it is then a duplicate too.
    normal_norm = normal["text"].map(normalise_text)
    planted = set(anomalies["text"].map(normalise_text))
    moved = normal[normal_norm.isin(planted).to_numpy()]
    normal = normal[~normal_norm.isin(planted).to_numpy()]
    return ref, *_mix(normal, pd.concat([anomalies, moved]), rng)


def build_machine(fake, rng, share):
    genuine = fake[fake["label"] == "original"].reset_index(drop=True)
    generated = fake[fake["label"] == "computer_generated"].reset_index(drop=True)
    ref, rest = _split(genuine, rng)
    normal = rest.iloc[:BATCH_SIZE]
    anomalies = generated.iloc[rng.choice(len(generated), _n_anomalies(len(normal), share), replace=False)]
    return ref, *_mix(normal, anomalies, rng)


# -- evaluation --------------------------------------------------------------------------------------
def _metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float] | None:
    s = np.nan_to_num(np.asarray(s, dtype=np.float64), nan=0.0, posinf=1e300)
    if y.min() == y.max() or np.all(s == s[0]):
        return None
    return {"auroc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s))}


def evaluate(
    model: OutlierModel,
    batch: pd.DataFrame,
    y: np.ndarray,
    embedder,
    rng: np.random.Generator,
    label_fracs: tuple[float, ...],
) -> dict[str, dict]:
    result = model.score(batch, embedder)
    # Every unsupervised ranking: members, combinations, the two main groups alone, the headline.
    unsupervised = {name: result.scores[name].to_numpy() for name in (*model.detector_names_, *model.signal_names_)}
    surprises = {c: result.surprises[c].to_numpy() for c in result.surprises.columns}
    for combo in COMBOS:
        unsupervised[f"ensemble_{combo}"] = combine(surprises, model.groups_, combo)
    unsupervised["novelty_group"] = combine(surprises, {"n": model.groups_["novelty"]}, "max")
    if "text_form" in model.groups_:
        unsupervised["text_form_group"] = combine(surprises, {"t": model.groups_["text_form"]}, "max")
    headline = result.scores["score"].to_numpy()
    unsupervised["headline"] = headline
    out: dict[str, dict] = {}
    for name, s in unsupervised.items():
        m = _metrics(y, s)
        if m:
            out[name] = m
    out["active_groups"] = {"groups": list(result.active_groups)}
    # Two ways analysts come by labels: a random sample (the protocol), and the label queue, which
    # shows the highest-scoring reviews first (what the Label page does), so labelled outliers are enriched.
    for frac, protocol in [(f, p) for f in label_fracs for p in ("random", "queue")]:
        n_lab = max(2, int(round(frac * len(batch))))
        if protocol == "random":
            lab = rng.choice(len(batch), n_lab, replace=False)
        else:
            lab = np.argsort(-headline, kind="stable")[:n_lab]
        rest = np.setdiff1d(np.arange(len(batch)), lab)
        labels = pd.Series(
            np.where(y[lab] == 1, "outlier", "normal"), index=batch["review_id"].iloc[lab].to_numpy()
        )
        base = _metrics(y[rest], result.scores["score"].to_numpy()[rest])
        key = f"labels_{int(round(frac * 100))}pct" + ("" if protocol == "random" else "_queue")
        entry: dict = {
            "n_labelled": int(n_lab),
            "n_labelled_outliers": int(y[lab].sum()),
            "unsupervised_same_rows": base,
            # The bar the label-aware scorer must clear: every unsupervised ranking on the same rows.
            "each_unsupervised_same_rows": {
                name: m["auroc"] for name, s in unsupervised.items() if (m := _metrics(y[rest], s[rest]))
            },
        }
        metrics = model.fit_labels(batch, labels, embedder)
        entry["chosen_label_scorer"] = metrics.uses_label_scorer
        # The whole batch is scored, as for the unsupervised baseline, and only unlabelled rows count.
        # (Scoring the unlabelled rows alone would change the batch: without the queue's top 5 % no group
        # is in excess any more, and that, not the labels, moved the headline.)
        entry["headline"] = _metrics(y[rest], model.score(batch, embedder).scores["score"].to_numpy()[rest])
        if metrics.label_aware is not None:
            model.fit_labels(batch, labels, embedder, force=True)
            entry["forced"] = _metrics(y[rest], model.score(batch, embedder).scores["score"].to_numpy()[rest])
        model.label_scorer_ = None
        out[key] = entry
    return out


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def aggregate(runs: list[dict]) -> dict[str, dict[str, float | None]]:
    keys = sorted({k for r in runs for k in r})
    agg: dict[str, dict] = {}
    for k in keys:
        rows = [r.get(k) for r in runs if r.get(k)]
        if not rows or k == "active_groups":
            continue
        if "auroc" in rows[0]:
            agg[k] = {
                "auroc": _mean([r["auroc"] for r in rows]),
                "auroc_std": float(np.std([r["auroc"] for r in rows])),
                "ap": _mean([r["ap"] for r in rows]),
                "n_seeds": len(rows),
            }
        else:
            agg[k] = {
                "n_labelled": _mean([r["n_labelled"] for r in rows]),
                "n_labelled_outliers": _mean([r["n_labelled_outliers"] for r in rows]),
                "chosen_share": _mean([float(r["chosen_label_scorer"]) for r in rows]),
                "headline_auroc": _mean([r["headline"]["auroc"] for r in rows if r.get("headline")]),
                "headline_ap": _mean([r["headline"]["ap"] for r in rows if r.get("headline")]),
                "forced_auroc": _mean([r["forced"]["auroc"] for r in rows if r.get("forced")]),
                "forced_ap": _mean([r["forced"]["ap"] for r in rows if r.get("forced")]),
                "unsupervised_auroc": _mean(
                    [r["unsupervised_same_rows"]["auroc"] for r in rows if r.get("unsupervised_same_rows")]
                ),
                "unsupervised_ap": _mean(
                    [r["unsupervised_same_rows"]["ap"] for r in rows if r.get("unsupervised_same_rows")]
                ),
                "best_unsupervised_auroc": _best_mean([r["each_unsupervised_same_rows"] for r in rows]),
                "n_seeds": len(rows),
            }
    return agg


def _best_mean(per_seed: list[dict[str, float]]) -> float | None:
    """The best unsupervised ranking by AUROC averaged over seeds (as for the scorer rows of the table)."""
    names = {n for d in per_seed for n in d}
    return max((v for n in names if (v := _mean([d.get(n) for d in per_seed])) is not None), default=None)


def timing(pools, fake, embedder, seed: int) -> dict[str, float]:
    every = pd.concat([*pools.values(), fake.drop(columns=["label"])], ignore_index=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(every))
    n_fit = min(10_000, len(every) - 1000)
    fit_frame, score_frame = every.iloc[order[:n_fit]], every.iloc[order[n_fit : n_fit + 1000]]
    embedder.encode(
        __import__("core.text.embed", fromlist=["embedding_text"]).embedding_text(every, ("title", "text"))
    )
    model = OutlierModel(random_state=seed)
    t0 = time.perf_counter()
    model.fit(fit_frame, embedder)
    fit_s = time.perf_counter() - t0
    model.score(score_frame.iloc[:10], embedder)
    t0 = time.perf_counter()
    model.score(score_frame, embedder)
    score_s = time.perf_counter() - t0
    return {
        "n_fit": int(n_fit),
        "fit_s": round(fit_s, 2),
        "n_score": 1000,
        "score_s": round(score_s, 2),
        "fit_breakdown_s": model.timings_,
    }


# -- report ------------------------------------------------------------------------------------------
def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def markdown(summary: dict[str, dict]) -> str:
    rows = sorted({k for s in summary.values() for k in s if not k.startswith("labels_")})
    lines = [
        "| scorer | " + " | ".join(f"{b} AUROC | {b} AP" for b in summary) + " |",
        "|---|" + "---|---|" * len(summary),
    ]
    for r in rows:
        cells = []
        for b in summary:
            m = summary[b].get(r)
            cells += [_fmt(m and m["auroc"]), _fmt(m and m["ap"])]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    for frac in ("labels_1pct", "labels_5pct", "labels_1pct_queue", "labels_5pct_queue"):
        for kind in ("headline", "forced", "unsupervised"):
            cells = []
            for b in summary:
                m = summary[b].get(frac)
                cells += [_fmt(m and m[f"{kind}_auroc"]), _fmt(m and m[f"{kind}_ap"])]
            label = {
                "headline": "label-aware (as chosen)",
                "forced": "label-aware (forced)",
                "unsupervised": "ensemble, same rows",
            }[kind]
            lines.append(f"| {frac}: {label} | " + " | ".join(cells) + " |")
        cells = []
        for b in summary:
            m = summary[b].get(frac)
            cells += [_fmt(m and m.get("best_unsupervised_auroc")), "–"]
        lines.append(f"| {frac}: best unsupervised, same rows | " + " | ".join(cells) + " |")
        cells = []
        for b in summary:
            m = summary[b].get(frac)
            cells += [_fmt(m and m["n_labelled_outliers"]), _fmt(m and m["chosen_share"])]
        lines.append(f"| {frac}: labelled outliers / share chosen | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checks(summary: dict[str, dict]) -> dict[str, bool | None]:
    def get(b, k, m="auroc"):
        return (summary.get(b, {}).get(k) or {}).get(m)

    out: dict[str, bool | None] = {}
    out["a_auroc>=0.90"] = (get("category", "headline") or 0) >= 0.90
    out["a_ap>=0.50"] = (get("category", "headline", "ap") or 0) >= 0.50
    out["b_auroc>=0.85"] = (get("rating", "headline") or 0) >= 0.85
    out["c_auroc>=0.95"] = (get("duplicate", "headline") or 0) >= 0.95
    for b, s in summary.items():
        members = [
            v["auroc"]
            for k, v in s.items()
            if not k.startswith(("labels_", "ensemble_", "headline", "novelty", "text_form"))  # members only
        ]
        out[f"{b}_ensemble_within_0.02_of_best_member"] = (get(b, "headline") or 0) >= max(members) - 0.02
    for b in ("category", "machine"):
        queue = summary.get(b, {}).get("labels_5pct_queue") or {}
        # Information, not the target: the same comparison on the rows left after the queue.
        out[f"info_{b}_labels5pct_queue_beats_ensemble_same_rows"] = (queue.get("headline_auroc") or 0) > (
            queue.get("unsupervised_auroc") or 1
        )
        lab = summary.get(b, {}).get("labels_5pct") or {}
        # On the unlabelled rows, like the scorer: on all rows the bar moves with which rows were labelled.
        best = lab.get("best_unsupervised_auroc") or 1.0
        out[f"{b}_labels5pct_beats_best_unsupervised"] = (lab.get("headline_auroc") or 0) > best
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument(
        "--first-seed", type=int, default=0,
        help="seeds run from this one on (default 0): a confirmation on seeds no earlier run has seen",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "detect.json", help="JSON results path"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("WORKBENCH_TEST_DATA", REPO.parent / "shared" / "data")),
    )
    parser.add_argument(
        "--model-seed-offset", type=int, default=0,
        help="fit each model with random_state seed + this (default 0), the data unchanged: a run with another "
        "offset shows how much the headline moves with the model's own random splits alone",
    )
    parser.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS)
    parser.add_argument("--no-timing", action="store_true", help="skip the fit-10k / score-1k timing")
    parser.add_argument(
        "--backend", choices=("torch", "onnx", "onnx-int8"), default=None,
        help="embedding backend the models are fitted and scored with (default: WORKBENCH_EMBEDDING_BACKEND); "
        "onnx-int8 gives int8 vectors, for comparing detection quality with torch's fp32 ones",
    )
    args = parser.parse_args(argv)

    from core.settings import get_settings
    from core.text.embed import make_embedder

    settings = get_settings()
    if args.backend is not None:
        settings = settings.model_copy(update={"embedding_backend": args.backend})
    embedder = make_embedder(settings)
    started = time.perf_counter()
    pools, fake = load_pools(args.data)
    targets = {
        "category": ["gift_cards", "magazines", "subscription_boxes", "beauty"],
        "rating": ["beauty", "magazines", "subscription_boxes", "gift_cards"],
        "duplicate": ["gift_cards", "magazines", "subscription_boxes", "beauty"],
    }
    runs: dict[str, list[dict]] = {b: [] for b in args.benchmarks}
    per_run: list[dict] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for bench in args.benchmarks:
            rng = np.random.default_rng(1000 * seed + BENCHMARKS.index(bench))
            share = float(rng.uniform(0.03, 0.06))
            t0 = time.perf_counter()
            if bench == "machine":
                target = "fake_reviews"
                ref, batch, y = build_machine(fake, rng, share)
                fields = ("text",)
            else:
                target = targets[bench][seed % len(targets[bench])]
                builder = {"category": build_category, "rating": build_rating, "duplicate": build_duplicate}[
                    bench
                ]
                ref, batch, y = builder(pools, target, rng, share)
                fields = ("title", "text")
            model = OutlierModel(embed_fields=fields, random_state=seed + args.model_seed_offset).fit(ref, embedder)
            fit_s = time.perf_counter() - t0
            result = evaluate(model, batch, y, embedder, rng, (0.01, 0.05))
            runs[bench].append(result)
            per_run.append(
                {
                    "seed": seed,
                    "benchmark": bench,
                    "target": target,
                    "share": round(share, 4),
                    "n_reference": len(ref),
                    "n_batch": len(batch),
                    "n_anomalies": int(y.sum()),
                    "seconds": round(time.perf_counter() - t0, 2),
                    "fit_seconds": round(fit_s, 2),
                    "results": result,
                }
            )
            print(
                f"seed {seed} {bench:9s} {target:18s} ref={len(ref)} batch={len(batch)} anomalies={int(y.sum())} "
                f"headline AUROC={result['headline']['auroc']:.3f} AP={result['headline']['ap']:.3f} "
                f"({time.perf_counter() - t0:.1f}s)",
                flush=True,
            )
    summary = {b: aggregate(r) for b, r in runs.items()}
    table = markdown(summary)
    print("\n" + table + "\n")
    verdict = checks(summary) if set(args.benchmarks) == set(BENCHMARKS) else {}
    for k, v in verdict.items():
        print(f"{'PASS' if v else 'FAIL'}  {k}")
    timings = None if args.no_timing else timing(pools, fake, embedder, 0)
    if timings:
        print(
            f"\ntiming: fit {timings['n_fit']} reviews {timings['fit_s']} s, score 1000 reviews {timings['score_s']} s "
            f"(embeddings cached) {timings['fit_breakdown_s']}"
        )
    payload = {
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
        },
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "model_seed_offset": args.model_seed_offset,
        "embedding_backend": settings.embedding_backend,
        "embedding_vectors": embedder.model_key,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "checks": verdict,
        "timing": timings,
        "runs": per_run,
        "table_markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
