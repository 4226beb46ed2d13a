"""Soak test of the prediction API: 16 clients on /predict and /predict/batch for ten minutes on loopback.

Trains (or reuses) a champion in a WORKBENCH_HOME (bench/api.py's set-up), starts a real uvicorn and runs
`--clients` asyncio clients (httpx) for `--minutes` after a short warm-up: every `--batch-every`-th request
is a `/predict/batch` of `--batch-size` reviews, the others `/predict` of one review; every text is a real
video-game review made unique, so each one is embedded afresh. Prints per minute the requests, errors and
p50/p99 latency, and the server's resident memory (VmRSS) after the warm-up and at the end.

Run from the repository root::

    .venv/bin/python bench/soak.py                          # 10 min + set-up
    .venv/bin/python bench/soak.py --minutes 1 --home /tmp/api-home
    .venv/bin/python bench/soak.py --url http://127.0.0.1:8000 --pid "$(pgrep -n uvicorn)"   # a running server

Writes JSON (machine, command, every minute, RSS, targets) to ``--out`` and exits 1 when a target is
missed: 0 errors; the last minute's p99 within 1.5x of the first minute's; RSS growth under 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # before bench/: bench/api.py would shadow the API package


def bench_api():
    """bench/api.py (the shared home, server and percentile helpers), loaded by path: `api` is the API package."""
    spec = importlib.util.spec_from_file_location("bench_api", REPO / "bench" / "api.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def rss_mib(pid: int | None) -> float | None:
    """Resident memory of process `pid` in MiB (VmRSS from /proc), None when it cannot be read."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


@dataclass
class Minute:
    """What the clients saw during one minute (requests counted by when they finished)."""

    single: list[float] = field(default_factory=list)
    batch: list[float] = field(default_factory=list)
    errors: int = 0


@dataclass
class Load:
    texts: list[str]
    batch_every: int
    batch_size: int
    minutes_planned: float
    start: float = 0.0
    sent: int = 0
    used: int = 0
    minutes: dict[int, Minute] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    def next_request(self) -> tuple[str, str, dict[str, object]]:
        """(kind, path, body) of the next request; the texts never repeat within a run of this length."""
        n = self.sent
        self.sent += 1
        if n % self.batch_every == self.batch_every - 1:
            reviews = [{"text": self.text(), "rating": 1 + (n + i) % 5}
                       for i in range(self.batch_size)]
            return "batch", "/predict/batch", {"reviews": reviews}
        return "single", "/predict", {"text": self.text(), "rating": 1 + n % 5, "verified_purchase": n % 3 > 0}

    def text(self) -> str:
        self.used += 1
        return f"{self.texts[self.used % len(self.texts)]} (#{self.used})"


async def client(load: Load, until: float, record: bool, http) -> None:
    last = max(1, math.ceil(load.minutes_planned)) - 1
    while time.monotonic() < until:
        kind, path, body = load.next_request()
        began = time.monotonic()
        try:
            response = await http.post(path, json=body)
            ok = response.status_code == 200
            why = f"{path} -> {response.status_code} {response.text[:200]}"
        except Exception as err:  # a timeout or a dropped connection is an error of the soak, not a crash
            ok, why = False, f"{path} -> {type(err).__name__}: {err}"
        done = time.monotonic()
        if not record:
            continue
        # By when it finished; one still in flight at the end counts in the last minute.
        minute = load.minutes.setdefault(min(int((done - load.start) // 60), last), Minute())
        if ok:
            (minute.batch if kind == "batch" else minute.single).append(done - began)
        else:
            minute.errors += 1
            if len(load.error_samples) < 20:
                load.error_samples.append(why)


async def soak(url: str, load: Load, clients: int, warmup_s: float, pid: int | None, headers: dict[str, str],
               report: Callable[[int, Minute, dict[str, object]], None]) -> dict[str, object]:
    import httpx

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=headers) as http:
        warm_until = time.monotonic() + warmup_s
        await asyncio.gather(*(client(load, warm_until, False, http) for _ in range(clients)))
        rss_start = rss_mib(pid)
        load.start = time.monotonic()
        until = load.start + load.minutes_planned * 60
        tasks = [asyncio.create_task(client(load, until, True, http)) for _ in range(clients)]
        samples = []
        n_minutes = max(1, math.ceil(load.minutes_planned))
        for index in range(n_minutes):
            if index < n_minutes - 1:
                await asyncio.sleep(max(0.0, load.start + (index + 1) * 60 - time.monotonic()))
            else:
                await asyncio.gather(*tasks)  # the last minute ends when the last request has come back
            sample = {"minute": index + 1, "rss_mib": rss_mib(pid), "load_average": os.getloadavg()[0]}
            samples.append(sample)
            report(index, load.minutes.get(index, Minute()), sample)
    return {"rss_start_mib": rss_start, "rss_end_mib": rss_mib(pid), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--batch-every", type=int, default=10, help="every n-th request is a batch")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--warmup", type=float, default=30, help="seconds of load before measuring")
    parser.add_argument("--url", default=None, help="load this running server instead of starting one")
    parser.add_argument("--key", default=None, help="X-API-Key for --url")
    parser.add_argument("--pid", type=int, default=None, help="the --url server's process id, for its RSS")
    parser.add_argument("--home", type=Path, default=None, help="WORKBENCH_HOME to reuse (default: a temporary one)")
    parser.add_argument("--reference-rows", type=int, default=300)
    parser.add_argument("--detectors", default="knn,lof,iforest,autoencoder")
    args = parser.parse_args()

    helpers = bench_api()
    load = Load(texts=helpers.distinct_texts(2000), batch_every=args.batch_every, batch_size=args.batch_size,
                minutes_planned=args.minutes)
    proc = tmp = None
    pid = args.pid
    version = None
    if args.url is None:
        tmp = None if args.home else tempfile.TemporaryDirectory(prefix="soak-bench-")
        home = (args.home or Path(tmp.name)).resolve()  # type: ignore[union-attr]
        version = helpers.prepare_home(home, args.reference_rows, tuple(args.detectors.split(",")))["version"]
        port = helpers.free_port()
        proc = helpers.start_server(home, port)
        url, pid = f"http://127.0.0.1:{port}", proc.pid
    else:
        url = args.url.rstrip("/")
    headers = {"X-API-Key": args.key} if args.key else {}

    header = "| minute | requests (single + batch) | errors | p50 ms | p99 ms | single p99 ms | batch p99 ms | RSS MiB | load avg |"
    print(f"\n{url}, {args.clients} clients, 1 in {args.batch_every} a batch of {args.batch_size}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n\n{header}\n" + "|---" * 9 + "|", flush=True)
    rows: list[dict[str, object]] = []

    def report(index: int, minute: Minute, sample: dict[str, object]) -> None:
        both = helpers.percentiles(minute.single + minute.batch) if minute.single or minute.batch else {}
        single = helpers.percentiles(minute.single) if minute.single else {}
        batch = helpers.percentiles(minute.batch) if minute.batch else {}
        row = {"minute": index + 1, "requests": len(minute.single) + len(minute.batch), "single": len(minute.single),
               "batch": len(minute.batch), "errors": minute.errors, "p50_ms": both.get("p50_ms"),
               "p99_ms": both.get("p99_ms"), "single_p99_ms": single.get("p99_ms"),
               "batch_p99_ms": batch.get("p99_ms"), "rss_mib": sample["rss_mib"],
               "load_average": round(float(sample["load_average"]), 2)}  # type: ignore[arg-type]
        rows.append(row)
        print(f"| {row['minute']} | {row['requests']} ({row['single']} + {row['batch']}) | {row['errors']} | "
              f"{row['p50_ms']} | {row['p99_ms']} | {row['single_p99_ms']} | {row['batch_p99_ms']} | "
              f"{row['rss_mib']} | {row['load_average']} |", flush=True)

    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        memory = asyncio.run(soak(url, load, args.clients, args.warmup, pid, headers, report))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        if tmp is not None:
            tmp.cleanup()

    first, last = rows[0], rows[-1]
    errors = sum(int(r["errors"]) for r in rows)  # type: ignore[arg-type]
    rss_start, rss_end = memory["rss_start_mib"], memory["rss_end_mib"]
    growth = (rss_end / rss_start - 1) if rss_start and rss_end else None  # type: ignore[operator]
    ratio = round(last["p99_ms"] / first["p99_ms"], 2) if first["p99_ms"] and last["p99_ms"] else None  # type: ignore[operator]
    targets = {"no_errors": errors == 0, "last_p99_le_1.5x_first": ratio is not None and ratio <= 1.5,
               "rss_growth_lt_10pct": growth is not None and growth < 0.10}
    requests = sum(int(r["requests"]) for r in rows)  # type: ignore[arg-type]
    print(f"\n{requests} requests, {errors} errors; p99 last/first minute {ratio}x; RSS {rss_start} -> {rss_end} MiB"
          + (f" ({growth:+.1%})" if growth is not None else " (not measured: pass --pid)"))
    for sample in load.error_samples[:5]:
        print(f"ERROR {sample}")
    print("targets: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in targets.items()))
    result = {
        "command": shlex.join([sys.executable, *sys.argv]), "started": started,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(), "load_average_end": os.getloadavg()},
        "url": url, "model_version": version, "detectors": args.detectors, "clients": args.clients,
        "batch_every": args.batch_every, "batch_size": args.batch_size, "minutes": args.minutes,
        "warmup_s": args.warmup, "requests": requests, "errors": errors, "error_samples": load.error_samples,
        "per_minute": rows, "rss_start_mib": rss_start, "rss_end_mib": rss_end,
        "rss_growth": None if growth is None else round(growth, 4), "p99_last_over_first": ratio,
        "memory_samples": memory["samples"], "targets": targets,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    sys.exit(0 if all(targets.values()) else 1)


if __name__ == "__main__":
    main()
