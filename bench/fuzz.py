"""Fuzzing the API as served: schemathesis against a real uvicorn's OpenAPI document, every operation.

Trains (or reuses) a champion in a WORKBENCH_HOME, starts uvicorn on loopback with an API key and sends
generated requests (valid and invalid, schemathesis' positive and negative modes) to every operation, first
with the key, then without one (alternately no key and a wrong key). The checks are the test suite's
(`tests/api/test_api_fuzz.py`): no 5xx; every 4xx is JSON with a `detail`; a 422 names the field; without the key
only the probes answer.

Run from the repository root::

    .venv/bin/python bench/fuzz.py                             # ~1,700 requests, ~3-5 min on 2 cores
    .venv/bin/python bench/fuzz.py --home /tmp/api-home --examples 300 --seed 7
    .venv/bin/python bench/fuzz.py --url http://127.0.0.1:8000 --key "$KEY"   # a server already running

Prints the counts per status class and operation, writes JSON (machine, command, seed, every count, the
problems) to ``--out`` and exits 1 when a target is missed (a problem, or fewer than 1,000 requests).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before bench/: bench/api.py would shadow the API package
KEY = "bench-fuzz-key-0c7d"
MAX_BATCH = 40  # low enough that generated batches can pass it and meet the "at most" refusal


def bench_api():
    """bench/api.py (the shared home and server set-up), loaded by path: `api` is the API package's name."""
    spec = importlib.util.spec_from_file_location("bench_api", REPO / "bench" / "api.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def status_class(code: int) -> str:
    return f"{code // 100}xx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fuzz.json")
    parser.add_argument("--examples", type=int, default=120, help="examples per operation and generation mode")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: a random one, printed)")
    parser.add_argument("--url", default=None, help="fuzz this running server instead of starting one")
    parser.add_argument("--key", default=None, help="the running server's API key (with --url)")
    parser.add_argument("--home", type=Path, default=None, help="WORKBENCH_HOME to reuse (default: a temporary one)")
    parser.add_argument("--reference-rows", type=int, default=300)
    parser.add_argument("--detectors", default="knn,lof,iforest")
    parser.add_argument("--min-requests", type=int, default=1000)
    args = parser.parse_args()

    import schemathesis

    from tests.api.test_api_fuzz import fuzz

    seed = args.seed if args.seed is not None else random.randrange(2**32)
    proc = tmp = None
    key = args.key
    if args.url is None:
        helpers = bench_api()
        tmp = None if args.home else tempfile.TemporaryDirectory(prefix="fuzz-bench-")
        home = (args.home or Path(tmp.name)).resolve()  # type: ignore[union-attr]
        helpers.prepare_home(home, args.reference_rows, tuple(args.detectors.split(",")))
        key = KEY
        os.environ.update({"WORKBENCH_API_KEYS": json.dumps([KEY]), "WORKBENCH_API_MAX_BATCH": str(MAX_BATCH)})
        port = helpers.free_port()
        proc = helpers.start_server(home, port)  # the server inherits this environment
        url = f"http://127.0.0.1:{port}"
    else:
        url = args.url.rstrip("/")
    runs: dict[str, dict[str, object]] = {}
    start = time.perf_counter()
    try:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        for name, sent_key in (("with_key", key), ("without_key", None)):
            if name == "with_key" and key is None:
                print("no --key: skipping the run with a key", file=sys.stderr)
                continue
            began = time.perf_counter()
            counts, problems, seen = fuzz(schema, key=sent_key, max_examples=args.examples, seed=seed)
            runs[name] = {"seconds": round(time.perf_counter() - began, 1), "operations": sorted(seen),
                          "counts": counts, "problems": problems}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if tmp is not None:
            tmp.cleanup()
    elapsed = time.perf_counter() - start

    total: Counter[str] = Counter()
    print(f"\n{url}, seed {seed}, {args.examples} examples per operation and mode, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| run | operation | 2xx | 4xx | 5xx | statuses |")
    print("|---|---|---|---|---|---|")
    for name, run in runs.items():
        counts: Counter[tuple[str, int]] = run["counts"]  # type: ignore[assignment]
        for label in run["operations"]:  # type: ignore[attr-defined]
            statuses = {code: n for (op, code), n in sorted(counts.items()) if op == label}
            classes: Counter[str] = Counter()
            for code, n in statuses.items():
                classes[status_class(code)] += n
            total.update(classes)
            shown = ", ".join(f"{code}: {n}" for code, n in statuses.items())
            print(f"| {name} | {label} | {classes['2xx']} | {classes['4xx']} | {classes['5xx']} | {shown} |")
        run["counts"] = {f"{op} {code}": n for (op, code), n in sorted(counts.items())}
    problems = [p for run in runs.values() for p in run["problems"]]  # type: ignore[attr-defined]
    requests = sum(total.values())
    targets = {"no_server_error": total["5xx"] == 0, "no_problem": not problems,
               f"at_least_{args.min_requests}_requests": requests >= args.min_requests}
    print(f"\n{requests} requests in {elapsed:.0f} s: " + ", ".join(f"{c} {total[c]}" for c in sorted(total)))
    for problem in problems[:20]:
        print(f"PROBLEM {problem}")
    print("targets: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in targets.items()))
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(), "load_average": os.getloadavg()},
        "url": url, "seed": seed, "examples": args.examples, "seconds": round(elapsed, 1),
        "requests": requests, "status_classes": dict(total), "runs": runs, "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    sys.exit(0 if all(targets.values()) else 1)


if __name__ == "__main__":
    main()
