"""Benchmark: train + register on 5,000 real reviews with cached embeddings, on the embedded default.

Measures, in the same run, the whole `Workspace.train` (features, detectors, calibration, the UMAP map, MLflow
run and registered version in a SQLite store) and the plain `OutlierModel.fit` on the same reviews, so the
ratio shows what tracking, the map and registration add. Embeddings come from a copy of an existing cache
(`--cache`, e.g. the one `bench/embed.py` or the demo filled) or are computed once before timing.

    .venv/bin/python bench/train.py --cache /work/bench-home/cache/embeddings.sqlite

Prints a markdown table and writes JSON. Target: train + register on 5k reviews <= 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FILES = ("All_Beauty_5.json.gz", "AMAZON_FASHION_5.json.gz", "Magazine_Subscriptions_5.json.gz",
         "Gift_Cards_5.json.gz", "Appliances_5.json.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "amazon2018_5core")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache to copy in (optional)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        home = Path(tmp) / "home"
        (home / "cache").mkdir(parents=True)
        if args.cache and args.cache.exists():
            shutil.copy(args.cache, home / "cache" / "embeddings.sqlite")
        os.environ["WORKBENCH_HOME"] = str(home)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        import pandas as pd

        from core.detect.model import OutlierModel
        from core.io.load import load_path
        from core.pipeline import Workspace
        from core.text.embed import embedding_text

        frames = [load_path(args.data / name).frame for name in FILES]
        reviews = pd.concat(frames, ignore_index=True).drop_duplicates("text").head(args.rows)
        source = Path(tmp) / "reference.parquet"
        reviews.drop(columns=["is_duplicate", "source_line"]).to_parquet(source, index=False)
        ws = Workspace.open()
        ws.ingest_path(source, name="reference")
        embedder = ws.embedder()
        start = time.perf_counter()
        embedder.encode(embedding_text(reviews))  # cached: a lookup when --cache holds them
        embed_s = time.perf_counter() - start

        start = time.perf_counter()
        OutlierModel().fit(ws.batches.frame("reference"), embedder)
        fit_s = time.perf_counter() - start
        stages: dict[str, float] = {}
        last = [time.perf_counter(), ""]

        def progress(stage: str, fraction: float) -> None:
            now = time.perf_counter()
            if last[1]:
                stages[last[1]] = stages.get(last[1], 0.0) + now - last[0]
            last[0], last[1] = now, stage

        start = time.perf_counter()
        outcome = ws.train("reference", progress=progress)
        train_s = time.perf_counter() - start
        progress("end", 1.0)

    rows = [
        ("embeddings (cache lookup)" if args.cache else "embeddings (computed)", embed_s),
        ("OutlierModel.fit only (baseline)", fit_s),
        ("Workspace.train: fit + UMAP map + MLflow run + registered version", train_s),
    ]
    print(f"\n{len(reviews)} reviews, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| step | seconds |")
    print("|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} |")
    print(f"\ntrain + register / fit only: {train_s / fit_s:.2f}x; target <= 60 s: "
          f"{'PASS' if train_s <= 60 else 'FAIL'}")
    top = sorted(stages.items(), key=lambda kv: -kv[1])[:6]
    print("slowest stages: " + ", ".join(f"{k} {v:.1f} s" for k, v in top))
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "rows": len(reviews), "embed_s": round(embed_s, 2), "fit_only_s": round(fit_s, 2),
        "train_register_s": round(train_s, 2), "ratio": round(train_s / fit_s, 2),
        "stages_s": {k: round(v, 2) for k, v in stages.items()}, "version": outcome.record.version,
        "target_pass": train_s <= 60,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
