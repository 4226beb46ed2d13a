"""Benchmark the embedding paths and the loader on real reviews; prints a markdown table, writes JSON.

Measured in one run, interleaved and repeated (best of ``--repeats``) because the cores are shared:

* plain ``SentenceTransformer.encode`` (fp32, batch 32): the baseline;
* the project's ``SentenceEmbedder`` with the default ``onnx`` backend (one review per pass) cold, with an empty
  cache, and whether its vectors are the same bits when the texts come in another order (torch's are not);
* the ``torch`` backend cold, then cached (the same texts again);
* the ``onnx-int8`` backend cold, with its one-off export timed apart, and its cosine to the fp32 vectors;
* ``core.io.load.load_path`` on a 100k-row CSV built from the shared reviews.

Run from the repository root::

    .venv/bin/python bench/embed.py            # 2,000 reviews, ~5-10 min on 2 shared cores
    .venv/bin/python bench/embed.py --n 300 --repeats 1 --csv-rows 20000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core.io.load import load_path  # noqa: E402
from core.text.embed import EmbeddingCache, SentenceEmbedder, embedding_text, resolve_model_path  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("WORKBENCH_TEST_DATA", REPO.parent / "shared" / "data"))
EMBED_SOURCES = ("All_Beauty_5.json.gz", "Magazine_Subscriptions_5.json.gz")
CSV_SOURCES = (
    "All_Beauty_5.json.gz",
    "Magazine_Subscriptions_5.json.gz",
    "AMAZON_FASHION_5.json.gz",
    "Appliances_5.json.gz",
    "Gift_Cards_5.json.gz",
)
TARGETS = {
    "embedder_cold_vs_st": 1.0,
    "int8_vs_st": 1.5,
    "int8_mean_cosine": 0.99,
    "cached_vs_cold": 50.0,
    "load_100k_csv_s": 10.0,
}


@dataclass
class Timing:
    """Repeated measurements of one path; throughput uses the best (least disturbed) repeat."""

    name: str
    n: int
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def best_s(self) -> float:
        return min(self.wall_s)

    @property
    def per_s(self) -> float:
        return self.n / self.best_s

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "best_s": round(self.best_s, 4), "reviews_per_s": round(self.per_s, 2)}


def timed(timing: Timing, work: Callable[[], object]) -> object:
    """Run `work` once, appending wall and process CPU seconds (CPU time shows how much contention cost)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = work()
    timing.wall_s.append(time.perf_counter() - wall0)
    timing.cpu_s.append(time.process_time() - cpu0)
    return result


def load_texts(data: Path, n: int, seed: int) -> list[str]:
    """`n` distinct, non-empty review texts sampled from the shared data.

    Distinct, because the Embedder embeds each text once per call: duplicates would flatter it against the
    baseline, which embeds every row.
    """
    texts: list[str] = []
    for name in EMBED_SOURCES:
        texts += embedding_text(load_path(data / "amazon2018_5core" / name).frame)
    unique = sorted({t for t in texts if t.strip()})
    if len(unique) < n:
        raise SystemExit(f"only {len(unique)} distinct reviews in {EMBED_SOURCES}, asked for --n {n}")
    rng = np.random.default_rng(seed)
    return [unique[i] for i in rng.choice(len(unique), size=n, replace=False)]


def build_csv(data: Path, rows: int, folder: Path, seed: int) -> Path:
    """A `rows`-row CSV in the raw 2018 layout, sampled with replacement from five real categories."""
    raw = pd.concat(
        [pd.read_json(data / "amazon2018_5core" / name, lines=True) for name in CSV_SOURCES],
        ignore_index=True,
    )
    sample = raw.sample(n=rows, replace=True, random_state=seed).reset_index(drop=True)
    path = folder / f"reviews_{rows}.csv"
    sample.to_csv(path, index=False)
    return path


def machine_info() -> dict[str, object]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    except (OSError, ValueError, subprocess.CalledProcessError):
        nproc = len(os.sched_getaffinity(0))
    import torch

    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "nproc": nproc,
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": version("onnxruntime"),
        "onnx": version("onnx"),
        "sentence_transformers": version("sentence-transformers"),
        "transformers": version("transformers"),
        "loadavg_start": os.getloadavg(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="distinct reviews to embed (default 2000)")
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "embed.json", help="JSON results file"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="interleaved repeats; best is reported (default 2)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument(
        "--csv-rows", type=int, default=100_000, help="rows of the loader CSV (default 100000)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    from sentence_transformers import SentenceTransformer

    info = machine_info()
    texts = load_texts(args.data, args.n, args.seed)
    model_path = resolve_model_path("all-MiniLM-L6-v2")
    st = SentenceTransformer(model_path, device="cpu")
    tokens = [
        len(ids) for ids in st.tokenizer(texts, truncation=True, max_length=st.max_seq_length)["input_ids"]
    ]
    n = len(texts)
    print(
        f"{n} reviews, mean {np.mean(tokens):.0f} tokens (max {st.max_seq_length}); {info['cpu_model']}, "
        f"{info['nproc']} cores, load {info['loadavg_start']}",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp_name:
        tmp = Path(tmp_name)
        torch_embedder = SentenceEmbedder(backend="torch", batch_size=args.batch_size)
        load_torch = Timing("Embedder load (torch)", 1)
        timed(load_torch, torch_embedder._load)
        int8_embedder = SentenceEmbedder(backend="onnx-int8", batch_size=args.batch_size, onnx_dir=tmp / "onnx")
        load_int8 = Timing("Embedder load + export (onnx-int8)", 1)
        timed(load_int8, int8_embedder._load)
        export_s = float(getattr(int8_embedder._encoder, "export_seconds", float("nan")))
        onnx_embedder = SentenceEmbedder(backend="onnx", batch_size=args.batch_size, onnx_dir=tmp / "onnx")
        onnx_embedder._load()

        baseline = Timing("SentenceTransformer.encode fp32", n)
        cold = Timing("Embedder torch, cold (empty cache)", n)
        cached = Timing("Embedder torch, cached (same texts)", n)
        int8 = Timing("Embedder onnx-int8, cold (empty cache)", n)
        onnx = Timing("Embedder onnx (the default), cold (empty cache)", n)
        reference: np.ndarray | None = None
        int8_vectors: np.ndarray | None = None
        for rep in range(args.repeats):
            # Interleaved, so a burst of someone else's load hits every path rather than one of them.
            reference = timed(
                baseline,
                lambda: st.encode(  # noqa: B023
                    texts,
                    batch_size=args.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                ),
            )
            cache = EmbeddingCache(tmp / f"torch-{rep}" / "embeddings.sqlite")  # empty: a cold run
            torch_embedder.cache = cache
            cold_vectors = timed(cold, lambda: torch_embedder.encode(texts))
            timed(cached, lambda: torch_embedder.encode(texts))
            int8_embedder.cache = EmbeddingCache(tmp / f"int8-{rep}" / "embeddings.sqlite")
            int8_vectors = timed(int8, lambda: int8_embedder.encode(texts))
            onnx_embedder.cache = EmbeddingCache(tmp / f"onnx-{rep}" / "embeddings.sqlite")
            onnx_vectors = timed(onnx, lambda: onnx_embedder.encode(texts))
            print(
                f"repeat {rep + 1}/{args.repeats}: st {n / baseline.wall_s[-1]:.1f}/s, "
                f"cold {n / cold.wall_s[-1]:.1f}/s, cached {n / cached.wall_s[-1]:.0f}/s, "
                f"int8 {n / int8.wall_s[-1]:.1f}/s, onnx {n / onnx.wall_s[-1]:.1f}/s",
                flush=True,
            )
        assert reference is not None and int8_vectors is not None
        torch_cos = np.sum(np.asarray(cold_vectors) * reference, axis=1)
        cos = np.sum(int8_vectors * reference, axis=1)

        # The same texts in reverse order: other batch neighbours for torch, none for onnx (one review per pass).
        order_moves = {name: float(np.abs(enc(texts[::-1])[::-1] - vectors).max()) for name, enc, vectors in
                       (("torch", torch_embedder._encoder, cold_vectors), ("onnx", onnx_embedder._encoder, onnx_vectors))}

        # One review per call, as the API embeds a lone request: torch vs the same fp32 graph in onnxruntime.
        single = {"torch": [], "onnx": []}
        singles = texts[: min(200, n)]
        for text in singles[:5]:
            torch_embedder._encoder([text]), onnx_embedder._encoder([text])
        for text in singles:  # interleaved, one text each
            for name, enc in (("torch", torch_embedder._encoder), ("onnx", onnx_embedder._encoder)):
                start = time.perf_counter()
                enc([text])
                single[name].append(time.perf_counter() - start)
        single_ms = {k: float(np.median(v) * 1000) for k, v in single.items()}
        onnx_max_abs = float(np.abs(onnx_vectors - reference).max())
        print(f"one review: torch {single_ms['torch']:.1f} ms, onnx {single_ms['onnx']:.1f} ms; "
              f"onnx vs torch max |diff| {onnx_max_abs:.1e}", flush=True)

        csv_path = build_csv(args.data, args.csv_rows, tmp, args.seed)
        loading = Timing(f"load_path {args.csv_rows} rows CSV", args.csv_rows)
        result = None
        for _ in range(args.repeats):
            result = timed(loading, lambda: load_path(csv_path))
        assert result is not None
        load_report = {
            "csv_mb": round(csv_path.stat().st_size / 1e6, 1),
            "rows_kept": int(len(result.frame)),
            "rows_quarantined": int(len(result.quarantined)),
        }

    ratios = {
        "embedder_cold_vs_st": cold.per_s / baseline.per_s,
        "onnx_vs_st": onnx.per_s / baseline.per_s,
        "int8_vs_st": int8.per_s / baseline.per_s,
        "cached_vs_cold": cached.per_s / cold.per_s,
    }
    quality = {
        "onnx_fp32_max_abs_diff": onnx_max_abs,
        "reordered_max_abs_diff": order_moves,
        "int8_mean_cosine": float(cos.mean()),
        "int8_min_cosine": float(cos.min()),
        "torch_embedder_min_cosine": float(torch_cos.min()),
    }
    checks = {
        "embedder_cold_vs_st": ratios["embedder_cold_vs_st"] >= TARGETS["embedder_cold_vs_st"],
        "int8_vs_st": ratios["int8_vs_st"] >= TARGETS["int8_vs_st"],
        "int8_mean_cosine": quality["int8_mean_cosine"] >= TARGETS["int8_mean_cosine"],
        "cached_vs_cold": ratios["cached_vs_cold"] >= TARGETS["cached_vs_cold"],
        "load_100k_csv_s": loading.best_s < TARGETS["load_100k_csv_s"],
    }

    def row(t: Timing, ratio: str, note: str) -> str:
        runs = ", ".join(f"{s:.3g}" for s in t.wall_s)
        return f"| {t.name} | {t.per_s:,.1f} | {runs} | {ratio} | {note} |"

    mark = {True: "pass", False: "FAIL"}
    lines = [
        f"| path ({n} reviews, batch {args.batch_size}) | reviews/s (best) | wall s per repeat"
        " | ratio | target |",
        "|---|---|---|---|---|",
        row(baseline, "1.00x", "baseline"),
        row(
            cold,
            f"{ratios['embedder_cold_vs_st']:.2f}x vs ST",
            f">= 1.0x: {mark[checks['embedder_cold_vs_st']]}",
        ),
        row(onnx, f"{ratios['onnx_vs_st']:.2f}x vs ST", "one review per pass"),
        f"| the same texts in reverse order, max abs change of a vector: onnx / torch | "
        f"{order_moves['onnx']:.1e} / {order_moves['torch']:.1e} | | | |",
        row(cached, f"{ratios['cached_vs_cold']:.0f}x vs cold", f">= 50x: {mark[checks['cached_vs_cold']]}"),
        row(int8, f"{ratios['int8_vs_st']:.2f}x vs ST", f">= 1.5x: {mark[checks['int8_vs_st']]}"),
        f"| onnx-int8 cosine to fp32 | mean {quality['int8_mean_cosine']:.4f}, "
        f"min {quality['int8_min_cosine']:.4f}"
        f" | | | mean >= 0.99: {mark[checks['int8_mean_cosine']]} |",
        f"| onnx-int8 one-off export | {export_s:.1f} s | | | not in throughput |",
        f"| one review per call (median of {len(singles)}): torch / onnx fp32 | {single_ms['torch']:.1f} ms / "
        f"{single_ms['onnx']:.1f} ms | | {single_ms['torch'] / single_ms['onnx']:.2f}x | onnx max abs diff to fp32 "
        f"{onnx_max_abs:.1e} |",
        f"| model load: torch / onnx-int8 incl. export | {load_torch.best_s:.1f} s / {load_int8.best_s:.1f} s"
        " | | | |",
        f"| {loading.name} ({load_report['csv_mb']} MB) | {loading.per_s:,.0f} rows/s | "
        f"{', '.join(f'{s:.3g}' for s in loading.wall_s)} | | < 10 s: {mark[checks['load_100k_csv_s']]} |",
    ]
    table = "\n".join(lines)
    print()
    print(table)

    info["loadavg_end"] = os.getloadavg()
    results: dict[str, object] = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "machine": info,
        "n_reviews": n,
        "single_review_ms": single_ms,
        "mean_tokens": float(np.mean(tokens)),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "timings": {
            t.name: t.as_dict() for t in (baseline, cold, cached, int8, onnx, loading, load_torch, load_int8)
        },
        "onnx_export_s": export_s,
        "ratios": ratios,
        "quality": quality,
        "load_csv": load_report,
        "targets": TARGETS,
        "checks": checks,
        "table_markdown": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
