"""Benchmark of the prediction API: the fp32 path against the int8 path, in the same run, alternating.

Two champions are trained (or reused) on the same Subscription Boxes reviews: one on torch's fp32 vectors
(served with ``onnx``, the same vectors) and one on ``onnx-int8`` vectors (served with ``onnx-int8``). Each is
served by its own uvicorn on loopback, both started before the first measurement, and each round measures both
paths, in alternating order (fp32 first in odd rounds, int8 first in even ones), so drifting load on a shared
machine hits both alike:

* HTTP ``/predict``, sequential and warm: distinct texts (each embedded afresh) and one repeated text (the
  embedding comes from the cache), p50/p99;
* HTTP throughput with 1, 4 and 16 concurrent clients sending distinct texts: requests/s, p50/p99, errors;
* the same in-process (`core.serving.score_requests` with the embedder the server picks for the model, no HTTP):
  sequential distinct/repeated p50/p99, and throughput when 1, 4 or 16 requests are scored per micro-batch (what
  the server's batcher does when that many clients wait).

Every number is the median of the rounds with its spread (min-max); ratios are int8 over fp32 medians of the
same run. Run from the repository root, niced on a shared machine::

    nice .venv/bin/python bench/api.py                         # 5 rounds, ~8-12 min on 2 cores
    nice .venv/bin/python bench/api.py --rounds 1 --requests 20 --home /tmp/api-bench   # a smoke run

Prints a markdown table and writes JSON (machine, command, load averages, every round) to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before bench/: this file is also called api.py
DATA = REPO.parent / "shared" / "data" / "amazon2023_subscription_videogames"
WARM_CACHE = Path("/work/bench-home/cache/embeddings.sqlite")
SEED = {"text": "Sample review text", "rating": 5, "verified_purchase": True}
#: The two paths compared: name -> the embedding backend the champion is trained with.
PATHS = {"fp32": "torch", "int8": "onnx-int8"}
CLIENTS = (1, 4, 16)


def _settings(home: Path, backend: str = "torch") -> Any:
    from core.settings import Settings

    return Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}", embedding_backend=backend)


def prepare_home(home: Path, reference_rows: int, detectors: tuple[str, ...], backend: str = "torch") -> dict[str, Any]:
    """A home with a champion trained on `backend`'s vectors: reused when there is one, else trained on
    Subscription Boxes reviews. The returned workspace has the default settings, as a server would."""
    import pandas as pd

    from core.pipeline import Workspace

    home.mkdir(parents=True, exist_ok=True)
    cache = home / "cache" / "embeddings.sqlite"
    if WARM_CACHE.is_file() and not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(WARM_CACHE, cache)  # the reference's embeddings are not what this benchmark measures
    trainer = Workspace.open(_settings(home, backend))
    if trainer.registry().champion_version() is None:
        start = time.perf_counter()
        ref = home / "reference.csv"
        pd.read_csv(DATA / "processed_Subscription_box.csv.gz").head(reference_rows).to_csv(ref, index=False)
        trainer.ingest_path(ref, name="reference")
        trainer.train("reference", detectors=detectors, project=False)
        print(f"trained a champion on {backend} vectors in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    ws = Workspace.open(_settings(home))
    bundle, version = ws.model()
    return {"workspace": ws, "bundle": bundle, "version": version.version, "home": home}


class Texts:
    """Real video-game review texts, each handed out once with a unique suffix, so the cache never has it."""

    def __init__(self) -> None:
        import pandas as pd

        texts = pd.read_csv(DATA / "processed_VGames.csv.gz", usecols=["text"])["text"].dropna().astype(str)
        self.base = texts[texts.str.len().between(40, 600)].tolist()
        self.nonce = uuid.uuid4().hex[:8]
        self.used = 0

    def take(self, n: int, offset: int = 0) -> list[str]:
        """`n` texts never handed out before; the same `offset` gives the same base texts to both paths."""
        self.used += n
        return [f"{self.base[(offset + i) % len(self.base)]} (#{self.nonce}-{self.used - n + i})" for i in range(n)]


def percentiles(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"n": len(ms), "p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "mean_ms": round(statistics.fmean(ms), 2)}


# In-process --------------------------------------------------------------------------------------------------
def served(ctx: dict[str, Any]) -> Any:
    """The model as the server loads it (`api.serving.ServedModel`): with the embedder it picks for it."""
    from api.serving import ServedModel

    loaded = ServedModel(ctx["workspace"]).refresh()
    if loaded is None:
        raise SystemExit(f"the champion in {ctx['home']} is not served")
    return loaded


def in_process(loaded: Any, texts: list[str], repeats: int, batch_texts: dict[int, list[str]]) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # as the server runs (api.main's lifespan)
        return _in_process(loaded, texts, repeats, batch_texts)


def _in_process(loaded: Any, texts: list[str], repeats: int, batch_texts: dict[int, list[str]]) -> dict[str, Any]:
    from core.serving import score_requests

    def score(bodies: list[dict[str, object]]) -> None:
        for outcome in score_requests(loaded.bundle, loaded.embedder, [[b] for b in bodies]):
            if isinstance(outcome, Exception):
                raise outcome

    for _ in range(3):
        score([SEED])
    out: dict[str, Any] = {}
    for label, bodies in (("distinct", [{**SEED, "text": t} for t in texts]), ("repeated", [SEED] * repeats)):
        times = []
        for body in bodies:
            start = time.perf_counter()
            score([body])
            times.append(time.perf_counter() - start)
        out[label] = percentiles(times)
    for clients, chunk_texts in batch_texts.items():
        bodies = [{**SEED, "text": t} for t in chunk_texts]
        start = time.perf_counter()
        for i in range(0, len(bodies), clients):
            score(bodies[i : i + clients])
        elapsed = time.perf_counter() - start
        out[f"batched_{clients}"] = {"clients": clients, "requests": len(bodies),
                                     "req_per_s": round(len(bodies) / elapsed, 1)}
    return out


# HTTP --------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    for name in ("MLFLOW_TRACKING_URI", "WORKBENCH_EMBEDDING_BACKEND", "WORKBENCH_TRACKING_URI"):
        env.pop(name, None)  # the server picks the backend from the model, as in production
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=REPO, env=env,
    )


def wait_ready(proc: subprocess.Popen[bytes], url: str) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return httpx.get(f"{url}/model", timeout=10).json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("uvicorn did not become ready in 240 s")


def sequential(url: str, texts: list[str], repeats: int) -> dict[str, Any]:
    import httpx

    out = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(5):
            client.post("/predict", json=SEED).raise_for_status()
        for label, bodies in (("distinct", [{**SEED, "text": t} for t in texts]), ("repeated", [SEED] * repeats)):
            times = []
            for body in bodies:
                start = time.perf_counter()
                client.post("/predict", json=body).raise_for_status()
                times.append(time.perf_counter() - start)
            out[label] = percentiles(times)
    return out


async def concurrent(url: str, texts: list[str], clients: int) -> dict[str, Any]:
    import httpx

    queue: asyncio.Queue[str] = asyncio.Queue()
    for t in texts:
        queue.put_nowait(t)
    times: list[float] = []
    errors = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            text = queue.get_nowait()
            start = time.perf_counter()
            try:
                r = await client.post("/predict", json={**SEED, "text": text})
                errors += r.status_code != 200
            except httpx.HTTPError:
                errors += 1
            times.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {"clients": clients, "requests": len(texts), "errors": errors, "seconds": round(elapsed, 2),
            "req_per_s": round(len(texts) / elapsed, 1), **percentiles(times)}


# One round of one path ---------------------------------------------------------------------------------------
def measure(loaded: Any, url: str, texts: Texts, args: argparse.Namespace, offset: int) -> dict[str, Any]:
    """Every measurement of one path in one round; `offset` picks the base texts (equal for both paths)."""
    n = args.requests
    batch_texts = {c: texts.take(args.concurrent_requests * c // max(CLIENTS), offset + 2 * n + 1000 * c)
                   for c in CLIENTS}
    local = in_process(loaded, texts.take(n, offset), n, batch_texts)
    http = sequential(url, texts.take(n, offset + n), n)
    load: dict[str, Any] = {}
    for clients in CLIENTS:
        asyncio.run(concurrent(url, texts.take(2 * clients, offset + 5000), clients))  # warm-up, not counted
        count = max(args.concurrent_requests * clients // max(CLIENTS), 4 * clients)
        load[str(clients)] = asyncio.run(concurrent(url, texts.take(count, offset + 6000 + 1000 * clients), clients))
    return {"in_process": local, "http_sequential": http, "http_concurrent": load,
            "load_average": os.getloadavg()[0]}


# Summary -----------------------------------------------------------------------------------------------------
#: (label, path into a round's result, which number, better when higher)
METRICS: list[tuple[str, tuple[str, ...], str, bool]] = [
    ("HTTP /predict sequential, distinct: p50 ms", ("http_sequential", "distinct"), "p50_ms", False),
    ("HTTP /predict sequential, distinct: p99 ms", ("http_sequential", "distinct"), "p99_ms", False),
    ("HTTP /predict sequential, repeated: p50 ms", ("http_sequential", "repeated"), "p50_ms", False),
    ("HTTP /predict sequential, repeated: p99 ms", ("http_sequential", "repeated"), "p99_ms", False),
    *[(f"HTTP {c} client{'s' if c > 1 else ''}: req/s", ("http_concurrent", str(c)), "req_per_s", True)
      for c in CLIENTS],
    *[(f"HTTP {c} client{'s' if c > 1 else ''}: p50 ms", ("http_concurrent", str(c)), "p50_ms", False)
      for c in CLIENTS],
    *[(f"HTTP {c} client{'s' if c > 1 else ''}: p99 ms", ("http_concurrent", str(c)), "p99_ms", False)
      for c in CLIENTS],
    *[(f"HTTP {c} client{'s' if c > 1 else ''}: errors", ("http_concurrent", str(c)), "errors", False)
      for c in CLIENTS],
    ("in-process, distinct: p50 ms", ("in_process", "distinct"), "p50_ms", False),
    ("in-process, distinct: p99 ms", ("in_process", "distinct"), "p99_ms", False),
    ("in-process, repeated: p50 ms", ("in_process", "repeated"), "p50_ms", False),
    ("in-process, repeated: p99 ms", ("in_process", "repeated"), "p99_ms", False),
    *[(f"in-process, {c} per micro-batch: req/s", ("in_process", f"batched_{c}"), "req_per_s", True)
      for c in CLIENTS],
]


def _value(result: dict[str, Any], where: tuple[str, ...], key: str) -> float:
    for part in where:
        result = result[part]
    return float(result[key])


def summarise(rounds: list[dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for label, where, key, higher in METRICS:
        row: dict[str, Any] = {"metric": label, "higher_is_better": higher}
        for path in PATHS:
            values = [_value(r[path], where, key) for r in rounds]
            row[path] = {"median": round(statistics.median(values), 2), "min": min(values), "max": max(values),
                         "runs": values}
        base = row["fp32"]["median"]
        row["int8_over_fp32"] = round(row["int8"]["median"] / base, 3) if base else None
        rows.append(row)
    return rows


def _cell(stats: dict[str, Any]) -> str:
    def fmt(v: float) -> str:
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}"

    return f"{fmt(stats['median'])} ({fmt(stats['min'])}-{fmt(stats['max'])})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api.json")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (each measures both paths)")
    parser.add_argument("--requests", type=int, default=60, help="sequential requests per kind (distinct, repeated)")
    parser.add_argument("--concurrent-requests", type=int, default=240,
                        help="requests sent by 16 clients (4 clients send a quarter, 1 client a sixteenth)")
    parser.add_argument("--home", type=Path, default=None,
                        help="folder holding the two homes (fp32/, int8/) to reuse (default: a temporary one)")
    parser.add_argument("--reference-rows", type=int, default=300)
    parser.add_argument("--detectors", default="knn,lof,iforest,autoencoder")
    args = parser.parse_args()

    tmp = None if args.home else tempfile.TemporaryDirectory(prefix="api-bench-")
    root = (args.home or Path(tmp.name)).resolve()  # type: ignore[union-attr]
    load_before = os.getloadavg()
    detectors = tuple(args.detectors.split(","))
    contexts = {path: prepare_home(root / path, args.reference_rows, detectors, backend)
                for path, backend in PATHS.items()}
    loaded = {path: served(ctx) for path, ctx in contexts.items()}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    urls = {}
    texts = Texts()
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        for path, ctx in contexts.items():
            port = free_port()
            urls[path] = f"http://127.0.0.1:{port}"
            procs[path] = start_server(ctx["home"], port)
        models = {path: wait_ready(procs[path], urls[path]) for path in PATHS}
        for path, info in models.items():
            print(f"{path}: model trained on {info['embedding_model']}, served with {info['embedding_backend']}; "
                  f"in-process {getattr(loaded[path].embedder, 'backend', '?')}", file=sys.stderr)
        for i in range(args.rounds):
            order = list(PATHS) if i % 2 == 0 else list(reversed(PATHS))
            result = {}
            offset = i * 10_000
            for path in order:
                result[path] = measure(loaded[path], urls[path], texts, args, offset)
            result["order"] = order  # type: ignore[assignment]
            rounds.append(result)
            print(f"round {i + 1}/{args.rounds} ({' then '.join(order)}): /predict p50 "
                  + ", ".join(f"{p} {result[p]['http_sequential']['distinct']['p50_ms']} ms" for p in PATHS)
                  + "; 16 clients " + ", ".join(f"{p} {result[p]['http_concurrent']['16']['req_per_s']} req/s"
                                                for p in PATHS)
                  + f"; load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(30)
    load_after = os.getloadavg()
    if tmp is not None:
        tmp.cleanup()

    table = summarise(rounds)
    fast = {row["metric"]: row["int8"]["median"] for row in table}
    targets = {
        "int8_single_distinct_p50_le_15ms": fast["HTTP /predict sequential, distinct: p50 ms"] <= 15,
        "int8_single_distinct_p99_le_40ms": fast["HTTP /predict sequential, distinct: p99 ms"] <= 40,
        "int8_16_clients_ge_120_rps": fast["HTTP 16 clients: req/s"] >= 120,
        "int8_16_clients_0_errors": all(r["int8"]["http_concurrent"]["16"]["errors"] == 0 for r in rounds),
    }
    print(f"\n{args.rounds} alternating rounds, {os.cpu_count()} CPUs, load average (1 min) {load_before[0]:.2f} "
          f"before, {load_after[0]:.2f} after; median (min-max); ratio = int8 median / fp32 median\n")
    print("| metric | fp32 (onnx, torch's vectors) | int8 (onnx-int8 vectors) | int8 / fp32 |")
    print("|---|---|---|---|")
    for row in table:
        print(f"| {row['metric']} | {_cell(row['fp32'])} | {_cell(row['int8'])} | {row['int8_over_fp32']} |")
    print("\ntargets (int8 path, median of rounds): "
          + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in targets.items()))
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(), "nice": os.nice(0),
                    "load_average_before": load_before, "load_average_after": load_after},
        "paths": {path: {"trained_on": models[path]["embedding_model"], "served_with": models[path]["embedding_backend"],
                         "model_version": contexts[path]["version"]} for path in PATHS},
        "detectors": args.detectors, "reference_rows": args.reference_rows, "rounds": rounds, "summary": table,
        "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
