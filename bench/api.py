"""Benchmark of the prediction API: latency of single requests, throughput under 16 clients, in-process scoring.

Trains (or reuses) a champion in a temporary WORKBENCH_HOME, starts a real uvicorn on loopback and measures

* single sequential requests, warm: distinct texts (each one embedded afresh) and one repeated text (the
  embedding comes from the cache), p50/p99;
* throughput with 16 concurrent clients (httpx async) sending distinct texts, with latency under load;
* the same scoring in-process (``load_records`` + ``bundle.score`` on one review, with the embedder the
  server uses), in the same run.

Run from the repository root::

    .venv/bin/python bench/api.py                       # ~3-5 min on 2 cores
    .venv/bin/python bench/api.py --requests 50 --home /tmp/api-bench-home   # reuse a trained home

Prints a markdown table and writes JSON (machine, command, every number) to ``--out``.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before bench/: this file is also called api.py
DATA = REPO.parent / "shared" / "data" / "amazon2023_subscription_videogames"
WARM_CACHE = Path("/work/bench-home/cache/embeddings.sqlite")
SEED = {"text": "Sample review text", "rating": 5, "verified_purchase": True}


def prepare_home(home: Path, reference_rows: int, detectors: tuple[str, ...]) -> dict[str, object]:
    """A home with a champion: reuse it when there is one, else train on Subscription Boxes reviews."""
    import pandas as pd

    from core.pipeline import Workspace
    from core.settings import Settings

    home.mkdir(parents=True, exist_ok=True)
    cache = home / "cache" / "embeddings.sqlite"
    if WARM_CACHE.is_file() and not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(WARM_CACHE, cache)  # the reference's embeddings are not what this benchmark measures
    ws = Workspace.open(Settings(home=home, tracking_uri=f"sqlite:///{home / 'mlflow.db'}"))
    if ws.registry().champion_version() is None:
        start = time.perf_counter()
        ref = home / "reference.csv"
        pd.read_csv(DATA / "processed_Subscription_box.csv.gz").head(reference_rows).to_csv(ref, index=False)
        ws.ingest_path(ref, name="reference")
        ws.train("reference", detectors=detectors, project=False)
        print(f"trained a champion in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    bundle, version = ws.model()
    return {"workspace": ws, "bundle": bundle, "version": version.version}


def distinct_texts(n: int) -> list[str]:
    """Real video-game review texts made unique, so every request embeds a text the cache has never seen."""
    import pandas as pd

    texts = pd.read_csv(DATA / "processed_VGames.csv.gz", usecols=["text"])["text"].dropna().astype(str)
    texts = texts[texts.str.len().between(40, 600)].head(max(n, 1)).tolist()
    nonce = uuid.uuid4().hex[:8]
    return [f"{texts[i % len(texts)]} (#{nonce}-{i})" for i in range(n)]


def percentiles(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"n": len(ms), "p50_ms": round(q[49], 2), "p99_ms": round(q[98], 2), "mean_ms": round(statistics.fmean(ms), 2)}


def in_process(ctx: dict[str, object], texts: list[str], repeats: int) -> dict[str, dict[str, float]]:
    from core.io.load import load_records

    bundle, embedder = ctx["bundle"], ctx["workspace"].fast_embedder()  # type: ignore[attr-defined]

    def one(body: dict[str, object]) -> None:
        bundle.score(load_records([body]), embedder)  # type: ignore[attr-defined]

    for _ in range(3):
        one(SEED)
    out = {}
    for label, bodies in (("distinct", [{**SEED, "text": t} for t in texts]), ("repeated", [SEED] * repeats)):
        times = []
        for body in bodies:
            start = time.perf_counter()
            one(body)
            times.append(time.perf_counter() - start)
        out[label] = percentiles(times)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen[bytes]:
    import httpx

    env = {**os.environ, "WORKBENCH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=REPO, env=env,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("uvicorn did not become ready in 180 s")


def sequential(url: str, texts: list[str], repeats: int) -> dict[str, dict[str, float]]:
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


async def concurrent(url: str, texts: list[str], clients: int) -> dict[str, float]:
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
            r = await client.post("/predict", json={**SEED, "text": text})
            times.append(time.perf_counter() - start)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {"clients": clients, "requests": len(texts), "errors": errors, "seconds": round(elapsed, 2),
            "req_per_s": round(len(texts) / elapsed, 1), **percentiles(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api.json")
    parser.add_argument("--requests", type=int, default=100, help="sequential requests per kind (distinct, repeated)")
    parser.add_argument("--concurrent-requests", type=int, default=800, help="requests sent by the concurrent clients")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--home", type=Path, default=None, help="WORKBENCH_HOME to reuse (default: a temporary one)")
    parser.add_argument("--reference-rows", type=int, default=300)
    parser.add_argument("--detectors", default="knn,lof,iforest,autoencoder")
    args = parser.parse_args()

    tmp = None if args.home else tempfile.TemporaryDirectory(prefix="api-bench-")
    home = (args.home or Path(tmp.name)).resolve()  # type: ignore[union-attr]
    ctx = prepare_home(home, args.reference_rows, tuple(args.detectors.split(",")))
    texts = distinct_texts(args.requests * 3 + args.concurrent_requests + 4 * args.clients)
    seq_texts, in_texts = texts[: args.requests], texts[args.requests : 2 * args.requests]
    warm_texts = texts[3 * args.requests : 3 * args.requests + 4 * args.clients]
    conc_texts = texts[3 * args.requests + 4 * args.clients :]
    # In-process first, while no server competes for the two cores.
    local = in_process(ctx, in_texts, args.requests)
    port = free_port()
    proc = start_server(home, port)
    try:
        url = f"http://127.0.0.1:{port}"
        http = sequential(url, seq_texts, args.requests)
        asyncio.run(concurrent(url, warm_texts, args.clients))  # warm-up under load, not counted
        load = asyncio.run(concurrent(url, conc_texts, args.clients))
    finally:
        proc.terminate()
        proc.wait(30)
    if tmp is not None:
        tmp.cleanup()

    ratio = {k: round(http[k]["p50_ms"] / local[k]["p50_ms"], 2) for k in ("distinct", "repeated")}
    targets = {
        "single_p50_le_25ms": http["distinct"]["p50_ms"] <= 25,
        "single_p99_le_80ms": http["distinct"]["p99_ms"] <= 80,
        "throughput_ge_80_rps_16_clients": load["req_per_s"] >= 80,
        "http_le_2x_in_process": ratio["distinct"] <= 2,
    }
    rows = [
        ("HTTP /predict, sequential, distinct texts", http["distinct"]),
        ("HTTP /predict, sequential, repeated text", http["repeated"]),
        (f"HTTP /predict, {args.clients} concurrent clients, distinct", load),
        ("in-process bundle.score, distinct texts", local["distinct"]),
        ("in-process bundle.score, repeated text", local["repeated"]),
    ]
    print(f"\nmodel version {ctx['version']}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| path | n | p50 ms | p99 ms | mean ms | req/s |")
    print("|---|---|---|---|---|---|")
    for label, r in rows:
        print(f"| {label} | {r['n']} | {r['p50_ms']} | {r['p99_ms']} | {r['mean_ms']} | {r.get('req_per_s', '')} |")
    print(f"\nHTTP / in-process p50: distinct {ratio['distinct']}x, repeated {ratio['repeated']}x")
    print("targets: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in targets.items()))
    result = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(), "load_average": os.getloadavg()},
        "model_version": ctx["version"], "detectors": args.detectors, "reference_rows": args.reference_rows,
        "http_sequential": http, "http_concurrent": load, "in_process": local,
        "http_over_in_process_p50": ratio, "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
