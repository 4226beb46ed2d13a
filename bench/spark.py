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
  embedding cache (torch, as ``workbench score`` embeds by default): wall time and peak RSS;
* the equality check: max |Spark - single| of ``score`` and ``p_value`` over the same rows, and whether
  ``is_outlier`` is identical.

    nice -n 19 .venv/bin/python bench/spark.py                       # 20,000 and 100,000 reviews
    nice -n 19 .venv/bin/python bench/spark.py --sizes 5000,20000     # smaller, on a busy machine

Prints a markdown table and writes JSON (machine, load, command, every number) to ``--out``.
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

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("WORKBENCH_TEST_DATA", REPO.parent / "shared" / "data"))
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
    """Single-process `Workspace.score` of the same rows, embedding every review (empty cache)."""
    from core.pipeline import Workspace
    from core.settings import Settings

    home = Path(args.home)
    scratch = Path(tempfile.mkdtemp(prefix="single-home-", dir=home.parent))
    shutil.copytree(home, scratch, dirs_exist_ok=True, ignore=shutil.ignore_patterns("cache"))
    settings = Settings(home=scratch, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    start = time.perf_counter()
    ws = Workspace.open(settings)
    (path,) = sorted(Path(args.dataset).glob("*.parquet"))
    scores, _ = ws.score(path)
    wall = time.perf_counter() - start
    table = scores.frame
    table.to_parquet(args.output, index=False)
    shutil.rmtree(scratch, ignore_errors=True)
    return {"wall_s": round(wall, 1), "rows": len(table), "reviews_per_s": round(len(table) / wall, 1),
            "driver_python_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "flagged": int(table["is_outlier"].sum()), "group_evidence": scores.result.group_evidence}


def _pool() -> pd.DataFrame:
    from core.io.load import load_path

    frames = []
    for name in SOURCES:
        frame = load_path(DATA / name).frame
        frames.append(frame[[c for c in _KEEP if c in frame.columns]])
    return pd.concat(frames, ignore_index=True)


def _write_dataset(pool: pd.DataFrame, rows: int, part_rows: int, folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sample = pool.iloc[rng.integers(0, len(pool), size=rows)].reset_index(drop=True)
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, rows, part_rows)):
        sample.iloc[start:start + part_rows].to_parquet(folder / f"part-{i:05d}.parquet", index=False)


def _train(home: Path, cache: Path | None, reference: int) -> str:
    from core.io.load import load_path
    from core.pipeline import Workspace
    from core.settings import Settings

    if cache and cache.is_file():
        (home / "cache").mkdir(parents=True, exist_ok=True)
        shutil.copy(cache, home / "cache" / "embeddings.sqlite")
    settings = Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    ws = Workspace.open(settings)
    ref = load_path(DATA / "amazon2018_5core/All_Beauty_5.json.gz").frame.sample(reference, random_state=0)
    path = home / "reference.parquet"
    ref[[c for c in _KEEP if c in ref.columns]].to_parquet(path, index=False)
    outcome = ws.train(str(path), project=False)
    return str(outcome.record.version)


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
    parser.add_argument("--skip-single", action="store_true", help="Leave out the single-process run.")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "spark.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=["spark", "single"], help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--master", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    parser.add_argument("--partitions", help="Spark partitions of the smallest size (the equality check's); "
                        "default 8. Larger sizes: the engine's default (~1 per 5,000 reviews).", default="8")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.child:
        print(json.dumps(run_spark(args) if args.child == "spark" else run_single(args)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-spark-"))
    args.home = str(work / "home")
    started = time.perf_counter()
    load_before = os.getloadavg()
    version = _train(Path(args.home), args.cache, args.reference)
    pool = _pool()
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
    by = {(r["master"], r["size"]): r for r in runs}
    one, two = by[("local[1]", small)], by[("local[2]", small)]
    largest = by[("local[2]", sizes[-1])]
    derived = {
        "speedup_local2_over_local1": round(one["wall_s"] / two["wall_s"], 2),
        "spark_local2_over_single_wall": (round(two["wall_s"] / by[("-", small)]["wall_s"], 2)
                                          if ("-", small) in by else None),
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
        "model_version": version, "reference_rows": args.reference, "sizes": sizes, "runs": runs,
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
