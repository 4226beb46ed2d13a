"""Benchmark of the Spark engine (`workbench score --engine spark`, `core.spark.score_dataset`).

Reviews are resampled (with replacement, seeded) from the Amazon files in ``../shared/data`` (2018 5-core: five
categories; 2023: Subscription Boxes and Video Games), canonicalised once, and written as the datasets scored:
``--sizes`` rows each (default 20,000 and 100,000); the smallest as one Parquet file (what ``workbench score``
reads), the others as part files of ``--part-rows`` rows. A model is trained
on ``--reference`` reviews of All Beauty (the product's default detectors, no 2-D map) in a scratch workspace
whose embedding cache starts as a copy of ``--cache`` (only training reads it).

Each measured run is a fresh process (a SparkSession's master is fixed for its life, and peak RSS is per process):

* Spark ``local[1]`` and ``local[2]`` on the smallest size, ``local[2]`` on every size: wall time from the session's
  start to ``_SUMMARY.json`` (model loading in every Python worker included), reviews/s, the Python driver's
  peak RSS (``ru_maxrss``) and the JVM's (``VmHWM``; in local mode the JVM is driver and executor at once);
* single-process ``Workspace.score`` (what ``workbench score`` runs) on the smallest size, with an empty
  embedding cache (the default ``onnx`` backend, as the executors embed): wall time and peak RSS;
* the equality check: max |Spark - single| of ``score`` and ``p_value`` over the same rows, and whether
  ``is_outlier`` is identical; and its yardstick, the single process against itself on the same rows in another
  order (a second run, fresh cache).

``--data hotels`` draws distinct hotel reviews instead of the Amazon files, whose 8,033 distinct texts repeat
about three times at 20,000 rows (see ``HOTELS``).

    nice -n 19 .venv/bin/python bench/spark.py                       # 20,000 and 100,000 reviews
    nice -n 19 .venv/bin/python bench/spark.py --sizes 5000,20000     # smaller, on a busy machine

Prints a markdown table and writes JSON (machine, load, command, every number) to ``--out``.

``--shift`` benchmarks ``workbench shift --engine spark`` (`core.spark.shift.shift_datasets`) against the
single-machine ``workbench shift`` (`Workspace.compare`) instead, on real reviews read from ``../shared/data``
(``--shift-rows`` per batch, seeded, written as JSONL slices): All Beauty against Gift Cards (a shift) and two
disjoint halves of All Beauty (none). For each pair: both verdicts and combined p-values, every test's statistic and
p-value side by side, how many p-values differ by more than permutation noise, and both wall times (each engine in
a fresh process; Spark's includes the session start and the workers loading the embedding model). ``--splits K``
adds the verdict's false-alarm rate of both engines over K seeded no-shift splits of All Beauty
(``--split-rows`` per batch)::

    nice -n 19 .venv/bin/python bench/spark.py --shift                       # 2 x 2,000 reviews, two pairs
    nice -n 19 .venv/bin/python bench/spark.py --shift --splits 20 --split-rows 500
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("WORKBENCH_TEST_DATA", REPO.parent / "shared" / "data"))
#: What ``--data`` draws from. The Amazon files hold 8,033 distinct texts in 18,475 rows, so 20,000 rows drawn from
#: them repeat each text about three times, and both engines embed each distinct text once, so the embedding is
#: a third of the work and the fixed costs weigh more. The hotel reviews are 220,000 distinct texts: every row is
#: embedded, as in most real batches.
HOTELS = "opinrank_hotels/reviews.jsonl.gz"
SOURCES = [
    "amazon2018_5core/AMAZON_FASHION_5.json.gz", "amazon2018_5core/All_Beauty_5.json.gz",
    "amazon2018_5core/Appliances_5.json.gz", "amazon2018_5core/Gift_Cards_5.json.gz",
    "amazon2018_5core/Magazine_Subscriptions_5.json.gz",
    "amazon2023_subscription_videogames/processed_Subscription_box.csv.gz",
    "amazon2023_subscription_videogames/processed_VGames.csv.gz",
]
_KEEP = ["text", "title", "rating", "helpful_vote", "verified_purchase", "timestamp", "user_id", "product_id"]


def _jvm_peak_kb() -> int:
    """Peak resident memory (VmHWM) of this process's Java children: Spark's JVM."""
    peak = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            if f"PPid:\t{os.getpid()}" not in status or "java" not in Path(f"/proc/{pid}/comm").read_text():
                continue
            peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError, ValueError):
            continue
    return peak


def run_spark(args: argparse.Namespace) -> dict:
    """One measured Spark run (in its own process)."""
    from core.settings import Settings
    from core.spark import score_dataset, spark_session

    settings = Settings(home=Path(args.home), tracking_uri=f"sqlite:///{Path(args.home) / 'mlflow.db'}")
    start = time.perf_counter()
    spark = spark_session(args.master, settings=settings, conf={"spark.driver.memory": "2g"})
    summary = score_dataset(args.dataset, args.output, spark=spark, settings=settings,
                            partitions=int(args.partitions) if args.partitions else None)
    wall = time.perf_counter() - start
    jvm = _jvm_peak_kb()
    spark.stop()
    return {"wall_s": round(wall, 1), "rows": summary.rows_scored, "reviews_per_s": round(summary.rows_scored / wall, 1),
            "partitions": summary.partitions, "driver_python_peak_rss_mb": round(resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "driver_jvm_peak_rss_mb": round(jvm / 1024, 1),
            "timings_s": summary.timings_s, "flagged": summary.flagged, "group_evidence": summary.group_evidence}


def run_single(args: argparse.Namespace) -> dict:
    """Single-process `Workspace.score` of the same rows, embedding every review (empty cache); with ``--shuffle
    SEED`` in another order."""
    from core.pipeline import Workspace
    from core.settings import Settings

    home = Path(args.home)
    scratch = Path(tempfile.mkdtemp(prefix="single-home-", dir=home.parent))
    shutil.copytree(home, scratch, dirs_exist_ok=True, ignore=shutil.ignore_patterns("cache"))
    settings = Settings(home=scratch, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    start = time.perf_counter()
    ws = Workspace.open(settings)
    (path,) = sorted(Path(args.dataset).glob("*.parquet"))
    if args.shuffle:  # the same rows in another order
        rows = pd.read_parquet(path)
        path = scratch / "reordered.parquet"
        rows.sample(frac=1.0, random_state=int(args.shuffle)).to_parquet(path, index=False)
    scores, _ = ws.score(path)
    wall = time.perf_counter() - start
    table = scores.frame
    table.to_parquet(args.output, index=False)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"wall_s": round(wall, 1), "rows": len(table), "reviews_per_s": round(len(table) / wall, 1),
            "driver_python_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "flagged": int(table["is_outlier"].sum()), "group_evidence": scores.result.group_evidence}


def _pool(data: str, rows: int) -> pd.DataFrame:
    """The reviews ``--data`` draws from: the Amazon files, or the first `rows` hotel reviews plus 10 %."""
    from core.io.load import load_frame, load_path

    if data == "hotels":
        raw = pd.read_json(DATA / HOTELS, lines=True, nrows=int(rows * 1.1))
        frame = load_frame(raw, name=HOTELS).frame.dropna(axis=1, how="all")  # no ratings, votes or purchases
        return frame[[c for c in _KEEP if c in frame.columns]].reset_index(drop=True)
    frames = []
    for name in SOURCES:
        frame = load_path(DATA / name).frame
        frames.append(frame[[c for c in _KEEP if c in frame.columns]])
    return pd.concat(frames, ignore_index=True)


def _write_dataset(pool: pd.DataFrame, rows: int, part_rows: int, folder: Path, seed: int) -> None:
    """`rows` rows of `pool`, without replacement while the pool is large enough."""
    rng = np.random.default_rng(seed)
    sample = pool.iloc[rng.choice(len(pool), size=rows, replace=rows > len(pool))].reset_index(drop=True)
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, rows, part_rows)):
        sample.iloc[start:start + part_rows].to_parquet(folder / f"part-{i:05d}.parquet", index=False)


def _train(home: Path, cache: Path | None, reference: int, data: str, pool: pd.DataFrame) -> str:
    from core.io.load import load_path
    from core.pipeline import Workspace
    from core.settings import Settings

    if cache and cache.is_file():
        (home / "cache").mkdir(parents=True, exist_ok=True)
        shutil.copy(cache, home / "cache" / "embeddings.sqlite")
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ws = Workspace.open(settings)
    if data == "hotels":  # a model of the same kind of reviews
        ref = pool.sample(reference, random_state=1)
    else:
        ref = load_path(DATA / "amazon2018_5core/All_Beauty_5.json.gz").frame.sample(reference, random_state=0)
    path = home / "reference.parquet"
    ref[[c for c in _KEEP if c in ref.columns]].to_parquet(path, index=False)
    outcome = ws.train(str(path), project=False)
    return str(outcome.record.version)


SHIFT_SOURCE, SHIFT_OTHER = "amazon2018_5core/All_Beauty_5.json.gz", "amazon2018_5core/Gift_Cards_5.json.gz"


def _lines(name: str) -> list[str]:
    import gzip

    with gzip.open(DATA / name, "rt", encoding="utf-8") as source:
        return [line for line in source if line.strip()]


def _shift_pairs(folder: Path, rows: int, splits: int, split_rows: int, seed: int) -> list[dict]:
    """The pairs compared: JSONL slices of the real files, seeded; names say whether a shift is planted."""
    rng = np.random.default_rng(seed)
    beauty, gift = _lines(SHIFT_SOURCE), _lines(SHIFT_OTHER)
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, lines: list[str]) -> str:
        path = folder / f"{name}.jsonl"
        path.write_text("".join(lines), encoding="utf-8")
        return str(path)

    order = rng.permutation(len(beauty))
    pairs = [
        {"name": "All Beauty vs Gift Cards", "shift": True,
         "reference": write("beauty", [beauty[i] for i in order[:rows]]),
         "current": write("gift", [gift[i] for i in rng.permutation(len(gift))[:rows]])},
        {"name": "All Beauty, two halves", "shift": False, "reference": write("beauty", [beauty[i] for i in order[:rows]]),
         "current": write("beauty-other-half", [beauty[i] for i in order[rows:2 * rows]])},
    ]
    for k in range(splits):
        split = rng.permutation(len(beauty))
        pairs.append({"name": f"split {k}", "shift": False, "split": True,
                      "reference": write(f"split-{k}-a", [beauty[i] for i in split[:split_rows]]),
                      "current": write(f"split-{k}-b", [beauty[i] for i in split[split_rows:2 * split_rows]])})
    return pairs


def _report_numbers(report: Any) -> dict:
    return {"drift": bool(report.drift), "p_value": float(report.p_value),
            "tests": {f"{t.name}:{t.feature}": {"statistic": float(t.statistic), "p_value": float(t.p_value),
                                                "drift": bool(t.drift),
                                                "p_value_range": (t.detail or {}).get("p_value_range")}
                      for t in report.tests}}


def run_shift(args: argparse.Namespace) -> dict:
    """Every pair of ``--dataset``'s pairs.json with one engine (in its own process)."""
    from core.settings import Settings

    pairs = json.loads((Path(args.dataset) / "pairs.json").read_text(encoding="utf-8"))
    settings = Settings(home=Path(args.home))
    results = []
    start = time.perf_counter()
    if args.master:
        from core.spark import spark_session
        from core.spark.shift import shift_datasets

        spark = spark_session(args.master, settings=settings, conf={"spark.driver.memory": "2g"})
        for pair in pairs:
            result = shift_datasets(pair["reference"], pair["current"], spark=spark, settings=settings)
            now = time.perf_counter()
            results.append({**_report_numbers(result.report), "wall_s": round(now - start, 1),
                            "coverage": result.coverage, "timings_s": result.timings_s})
            start = now
        spark.stop()
    else:
        from core.pipeline import Workspace

        ws = Workspace.open(settings)
        for pair in pairs:
            report = ws.compare(pair["reference"], pair["current"], record_state=False)
            now = time.perf_counter()
            results.append({**_report_numbers(report), "wall_s": round(now - start, 1)})
            start = now
    return {"pairs": results,
            "driver_python_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _noise(p: float, n_permutations: int = 1000) -> float:
    """4.5 standard deviations of the difference of two independent permutation estimates of p, plus their +1s."""
    return 4.5 * float(np.sqrt(2 * p * (1 - p) / n_permutations)) + 3 / (n_permutations + 1)


def _beyond_noise(single: dict, spark: dict) -> bool:
    """Whether one machine's p-value is not an honest draw of the Spark test's: outside the interval Spark's
    tie-split p-value was drawn from (wide for discrete statistics), widened by permutation noise."""
    low, high = spark["p_value_range"] or (spark["p_value"], spark["p_value"])
    return not low - _noise(low) <= single["p_value"] <= high + _noise(high)


def shift_main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-spark-shift-"))
    args.home = str(work / "home")
    load_before = os.getloadavg()
    pairs = _shift_pairs(work / "data", args.shift_rows, args.splits, args.split_rows, args.seed)
    (work / "data" / "pairs.json").write_text(json.dumps(pairs), encoding="utf-8")
    single = _child("shift", args, dataset=str(work / "data"))
    print(f"single machine: {sum(r['wall_s'] for r in single['pairs'])} s", file=sys.stderr, flush=True)
    spark = _child("shift", args, dataset=str(work / "data"), master="local[2]")
    rows = []
    for pair, one, many in zip(pairs, single["pairs"], spark["pairs"], strict=True):
        diffs = {key: abs(many["tests"][key]["p_value"] - test["p_value"]) for key, test in one["tests"].items()}
        beyond = sorted(key for key, test in one["tests"].items() if _beyond_noise(test, many["tests"][key]))
        rows.append({"pair": pair["name"], "planted_shift": pair["shift"], "split": pair.get("split", False),
                     "single": one, "spark": many, "same_verdict": one["drift"] == many["drift"],
                     "max_abs_p_difference": max(diffs.values()), "p_values_beyond_noise": beyond})
    splits = [r for r in rows if r["split"]]
    false_alarms = ({"splits": len(splits), "split_rows": args.split_rows,
                     "single": sum(r["single"]["drift"] for r in splits),
                     "spark": sum(r["spark"]["drift"] for r in splits)} if splits else None)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "rows_per_batch": args.shift_rows, "pairs": rows, "false_alarms": false_alarms,
        "driver_python_peak_rss_mb": {"single": single["driver_python_peak_rss_mb"],
                                      "spark": spark["driver_python_peak_rss_mb"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print("| pair | verdict single | verdict Spark | combined p single | combined p Spark | max abs p diff | "
          "p-values beyond noise | wall s single | wall s Spark |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["split"]:
            continue
        print(f"| {r['pair']} | {r['single']['drift']} | {r['spark']['drift']} | {r['single']['p_value']:.3g} | "
              f"{r['spark']['p_value']:.3g} | {r['max_abs_p_difference']:.3f} | "
              f"{len(r['p_values_beyond_noise'])} of {len(r['single']['tests'])} | {r['single']['wall_s']} | "
              f"{r['spark']['wall_s']} |")
    if false_alarms:
        print(f"false alarms over {false_alarms['splits']} no-shift splits of {args.split_rows} + {args.split_rows}: "
              f"single {false_alarms['single']}, Spark {false_alarms['spark']}")
    print(f"load average before/after: {load_before} / {os.getloadavg()}")
    shutil.rmtree(work, ignore_errors=True)


def _child(kind: str, args: argparse.Namespace, **extra: str) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--home", args.home]
    for key, value in extra.items():
        command += [f"--{key}", value]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compare(spark_out: str, single_out: str) -> dict:
    got = pd.read_parquet(spark_out).set_index("review_id")
    want = pd.read_parquet(single_out).set_index("review_id")
    got = got.loc[want.index]
    numeric = [c for c in want.columns if want[c].dtype.kind == "f" and c in got]
    return {"rows": len(want),
            "max_abs_diff_by_column": {c: float((got[c] - want[c]).abs().max()) for c in numeric},
            "max_abs_diff_score": float((got["score"] - want["score"]).abs().max()),
            "max_abs_diff_p_value": float((got["p_value"] - want["p_value"]).abs().max()),
            "is_outlier_identical": bool((got["is_outlier"] == want["is_outlier"]).all())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20000,100000", help="Dataset sizes, comma-separated (smallest first).")
    parser.add_argument("--part-rows", type=int, default=5000, help="Rows per Parquet part file.")
    parser.add_argument("--reference", type=int, default=1000, help="Reference reviews the model is trained on.")
    parser.add_argument("--cache", type=Path, default=Path("/work/bench-home/cache/embeddings.sqlite"),
                        help="Embedding cache copied into the scratch workspace (training only).")
    parser.add_argument("--data", choices=["amazon", "hotels"], default="amazon",
                        help="amazon: the Amazon files (each text about 3 times at 20,000 rows); hotels: distinct "
                        "hotel reviews (about 4x longer), a model trained on 1,000 of them.")
    parser.add_argument("--skip-single", action="store_true", help="Leave out the single-process run.")
    parser.add_argument("--skip-reordered", action="store_true",
                        help="Leave out the yardstick (the single process again on the rows in another order).")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "spark.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shift", action="store_true", help="Benchmark `workbench shift --engine spark` against "
                        "the single-machine report instead of scoring (see above).")
    parser.add_argument("--shift-rows", type=int, default=2000, help="--shift: reviews per batch of the two pairs.")
    parser.add_argument("--splits", type=int, default=0, help="--shift: no-shift splits for the false-alarm rate.")
    parser.add_argument("--split-rows", type=int, default=500, help="--shift: reviews per batch of each split.")
    parser.add_argument("--child", choices=["spark", "single", "shift"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--shuffle", default="", help=argparse.SUPPRESS)
    parser.add_argument("--master", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--partitions", help="Spark partitions of the smallest size (the equality check's); "
                        "default 8. Larger sizes: the engine's default (~1 per 5,000 reviews).", default="8")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        runs = {"spark": run_spark, "single": run_single, "shift": run_shift}
        print(json.dumps(runs[args.child](args)))
        return
    if args.shift:
        if args.out == parser.get_default("out"):
            args.out = REPO / "bench" / "results" / "spark_shift.json"
        shift_main(args)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    args.home = str(work / "home")
    started = time.perf_counter()
    load_before = os.getloadavg()
    pool = _pool(args.data, max(sizes))
    version = _train(Path(args.home), args.cache, args.reference, args.data, pool)
    runs: list[dict] = []
    for size in sizes:
        # The smallest as one file: `workbench score` reads one file, and review ids are derived per file (a
        # resampled review repeated in two parts would get one id twice).
        _write_dataset(pool, size, size if size == sizes[0] else args.part_rows, work / f"data-{size}", args.seed)
    small = sizes[0]
    plan = [(small, "local[1]"), *[(size, "local[2]") for size in sizes]]
    for size, master in plan:
        out = str(work / f"out-{size}-{master.removeprefix('local[').removesuffix(']')}")
        extra = {"partitions": args.partitions} if size == small else {"partitions": ""}
        result = _child("spark", args, master=master, dataset=str(work / f"data-{size}"), output=out, **extra)
        runs.append({"engine": "spark", "master": master, "size": size, **result, "output": out})
        print(f"spark {master} {size}: {result['wall_s']} s", file=sys.stderr, flush=True)
    equality = None
    if not args.skip_single:
        single_out = str(work / f"single-{small}.parquet")
        result = _child("single", args, dataset=str(work / f"data-{small}"), output=single_out)
        runs.append({"engine": "single process", "master": "-", "size": small, **result})
        two = next(r for r in runs if r["master"] == "local[2]" and r["size"] == small)
        equality = _compare(two["output"], single_out)
    if not args.skip_single and not args.skip_reordered:
        # The yardstick: one machine against itself, the same rows in another order (fresh embedding cache).
        reordered_out = str(work / f"single-{small}-reordered.parquet")
        again = _child("single", args, dataset=str(work / f"data-{small}"), output=reordered_out, shuffle="1")
        runs.append({"engine": "single process, rows reordered", "master": "-", "size": small, **again})
        equality["single_process_against_itself_reordered"] = _compare(reordered_out, single_out)
    by = {(r["master"], r["size"]): r for r in runs if r["engine"] == "spark"}
    single = next((r for r in runs if r["engine"] == "single process"), None)
    one, two = by[("local[1]", small)], by[("local[2]", small)]
    largest = by[("local[2]", sizes[-1])]
    derived = {
        "speedup_local2_over_local1": round(one["wall_s"] / two["wall_s"], 2),
        "spark_local2_over_single_wall": (round(two["wall_s"] / single["wall_s"], 2) if single else None),
        "driver_python_rss_ratio_largest_over_smallest": round(
            largest["driver_python_peak_rss_mb"] / two["driver_python_peak_rss_mb"], 2),
        "driver_jvm_rss_ratio_largest_over_smallest": round(
            largest["driver_jvm_peak_rss_mb"] / two["driver_jvm_peak_rss_mb"], 2),
    }
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "model_version": version, "reference_rows": args.reference, "sizes": sizes, "runs": runs, "data": args.data,
        "distinct_texts": {size: int(pd.read_parquet(work / f"data-{size}")["text"].nunique()) for size in sizes},
        "equality": equality, "derived": derived, "total_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print("| engine | master | reviews | wall s | reviews/s | driver Python peak RSS MB | JVM peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(f"| {r['engine']} | {r['master']} | {r['size']:,} | {r['wall_s']} | {r['reviews_per_s']} | "
              f"{r['driver_python_peak_rss_mb']} | {r.get('driver_jvm_peak_rss_mb', '-')} |")
    print()
    print(f"derived: {json.dumps(derived)}")
    print(f"equality (Spark local[2] vs single process, {small:,} rows): {json.dumps(equality)}")
    print(f"load average before/after: {load_before} / {os.getloadavg()}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
