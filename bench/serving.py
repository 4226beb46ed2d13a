"""Benchmark of the registry's pyfunc model against in-process scoring, in the same run.

Loads the champion through ``mlflow.pyfunc.load_model("models:/NAME@champion")`` (what any MLflow-aware
system would do) and scores one review and 1,000 reviews; then the same with ``bundle.score`` in-process.
Embeddings come from the shared cache for both (warmed first), so the difference is the pyfunc wrapper.

Run from the repository root::

    .venv/bin/python bench/serving.py                        # temporary home, trains a champion
    .venv/bin/python bench/serving.py --home /tmp/api-bench-home

Prints a markdown table and writes JSON to ``--out``. Target: pyfunc adds <= 5 ms per single review.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data" / "amazon2023_subscription_videogames"


def timed(fn, repeats: int) -> dict[str, float]:  # noqa: ANN001
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"n": repeats, "p50_ms": round(statistics.median(times), 2), "min_ms": round(times[0], 2),
            "max_ms": round(times[-1], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serving.json")
    parser.add_argument("--home", type=Path, default=None, help="WORKBENCH_HOME to reuse (default: temporary)")
    parser.add_argument("--single-repeats", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-repeats", type=int, default=3)
    parser.add_argument("--detectors", default="knn,lof,iforest,autoencoder")
    args = parser.parse_args()

    tmp = None if args.home else tempfile.TemporaryDirectory(prefix="serving-bench-")
    home = (args.home or Path(tmp.name)).resolve()  # type: ignore[union-attr]
    os.environ["WORKBENCH_HOME"] = str(home)  # the pyfunc's embedder reads the settings from the environment
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import importlib.util

    # bench/api.py holds the shared set-up; loaded by path because `api` is the API package's name.
    spec = importlib.util.spec_from_file_location("bench_api", REPO / "bench" / "api.py")
    bench_api = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(bench_api)  # type: ignore[union-attr]
    prepare_home = bench_api.prepare_home

    import mlflow.pyfunc
    import pandas as pd

    from core.io.load import load_frame

    ctx = prepare_home(home, 300, tuple(args.detectors.split(",")))
    ws, bundle = ctx["workspace"], ctx["bundle"]
    name = ws.settings.registered_model_name
    mlflow.set_tracking_uri(ws.settings.resolved_tracking_uri)
    mlflow.set_registry_uri(ws.settings.resolved_tracking_uri)
    start = time.perf_counter()
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    load_s = time.perf_counter() - start

    reviews = pd.read_csv(DATA / "processed_VGames.csv.gz").head(args.batch_size)
    one = reviews.head(1)
    embedder = ws.embedder()

    def local(frame: pd.DataFrame) -> None:
        bundle.score(load_frame(frame, name="request", strict=True).frame, embedder)

    local(reviews)  # embeds every text once: both paths then read the same cache
    model.predict(reviews)
    rows = {
        "single, pyfunc": timed(lambda: model.predict(one), args.single_repeats),
        "single, in-process": timed(lambda: local(one), args.single_repeats),
        f"{args.batch_size}, pyfunc": timed(lambda: model.predict(reviews), args.batch_repeats),
        f"{args.batch_size}, in-process": timed(lambda: local(reviews), args.batch_repeats),
    }
    overhead = round(rows["single, pyfunc"]["p50_ms"] - rows["single, in-process"]["p50_ms"], 2)
    print(f"\nmodel version {ctx['version']}, pyfunc load {load_s:.1f} s, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| path | n | p50 ms | min ms | max ms |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['n']} | {r['p50_ms']} | {r['min_ms']} | {r['max_ms']} |")
    print(f"\npyfunc overhead per single review: {overhead} ms (target <= 5 ms: {'PASS' if overhead <= 5 else 'FAIL'})")
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(), "load_average": os.getloadavg()},
        "model_version": ctx["version"], "pyfunc_load_s": round(load_s, 2), "timings": rows,
        "pyfunc_overhead_single_ms": overhead, "target_pass": overhead <= 5,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
