"""The ``workbench`` command: one entry point, a subcommand per analyst task.

Every subcommand has ``--help``; ``--json`` prints one machine-readable object; bad input exits non-zero with
a one-line reason on stderr (no traceback).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.errors import WorkbenchError

app = typer.Typer(
    help="Review Outlier & Shift Workbench: find reviews that do not belong, measure how batches shift.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn a WorkbenchError into a one-line message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except WorkbenchError as err:
            console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _parse_mapping(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    mapping = {}
    for item in items:
        if "=" not in item:
            raise WorkbenchError(f"--map expects CANONICAL=SOURCE (for example text=body), got {item!r}")
        key, value = item.split("=", 1)
        mapping[key.strip()] = value.strip()
    return mapping


@contextmanager
def progress_bar(enabled: bool = True):
    """A rich progress bar on stderr; yields ``update(stage, done, total)``."""
    if not enabled or not console.is_terminal:
        yield lambda stage, done, total: None
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: float, total: float) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


MapOption = Annotated[
    list[str] | None,
    typer.Option("--map", help="Column mapping for unrecognised layouts, CANONICAL=SOURCE; repeatable."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


@app.command()
@handle_errors
def ingest(
    path: Annotated[Path, typer.Argument(help="Review file: CSV, TSV, JSON, JSONL (also .gz) or Parquet.")],
    name: Annotated[str | None, typer.Option(help="Batch name; defaults to the file name.")] = None,
    mapping: MapOption = None,
    encoding: Annotated[str | None, typer.Option(help="Text encoding when not UTF-8, e.g. latin-1.")] = None,
    quarantine_out: Annotated[
        Path | None, typer.Option(help="Also write the quarantined rows (line, reason, raw) to this CSV.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a review file and store it as a batch under WORKBENCH_HOME.

    Malformed rows are quarantined with their line and reason, never dropped; exact duplicates are flagged.
    """
    from core.batches import batch_name_from
    from core.pipeline import Workspace

    ws = Workspace.open()
    batch = name or batch_name_from(str(path))
    info, result = ws.ingest_path(path, name=batch, mapping=_parse_mapping(mapping), encoding=encoding)
    if quarantine_out:
        result.quarantined.to_csv(quarantine_out, index=False)
    report = result.report.model_copy(update={"batch": info.name})
    if as_json:
        payload = report.model_dump(mode="json")
        payload["stored_at"] = ws.describe_storage()
        _print_json(payload)
        return
    for line in report.summary_lines():
        out.print(line, highlight=False, soft_wrap=True)
    out.print(f"stored as batch [bold]{info.name}[/bold] in {ws.describe_storage()}", highlight=False)
    if report.rows_quarantined:
        hint = f"written to {quarantine_out}" if quarantine_out else "export them with --quarantine-out FILE.csv"
        out.print(f"{report.rows_quarantined} quarantined rows kept aside ({hint})", highlight=False)


@app.command()
@handle_errors
def batches(as_json: JsonOption = False) -> None:
    """List the stored batches with rows, date range and categories."""
    from core.pipeline import Workspace

    ws = Workspace.open()
    infos = ws.batches.list()
    state = ws.state()
    if as_json:
        _print_json({"batches": [i.model_dump() for i in infos], **state.model_dump()})
        return
    if not infos:
        out.print("no batches yet: run `workbench ingest PATH` or `workbench demo`")
        return
    table = Table("batch", "rows", "quarantined", "duplicates", "from", "to", "categories", "role")
    for info in infos:
        role = "reference" if info.name == state.reference else ("current" if info.name == state.current else "")
        cats = ", ".join(list(info.categories)[:3])
        table.add_row(info.name, str(info.rows), str(info.quarantined), str(info.duplicates),
                      (info.date_min or "")[:10], (info.date_max or "")[:10], cats, role)
    out.print(table)


@app.command()
@handle_errors
def embed(
    source: Annotated[str, typer.Argument(help="A stored batch name or a review file.")],
    fields: Annotated[str, typer.Option(help="Columns joined into the embedded text, comma-separated.")] = "title,text",
    out_path: Annotated[Path | None, typer.Option("--out", help="Write the embeddings to this .npy file.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Embed a batch's reviews with the configured model (cached under WORKBENCH_HOME) and report speed."""
    import numpy as np

    from core.embed import embedding_text
    from core.pipeline import Workspace

    ws = Workspace.open()
    frame = ws.resolve_frame(source)
    texts = embedding_text(frame, tuple(f.strip() for f in fields.split(",") if f.strip()))
    embedder = ws.embedder()
    before = embedder.cache.count(embedder.model_key) if embedder.cache else 0
    start = time.perf_counter()
    with progress_bar(not as_json) as update:
        vectors = embedder.encode(texts, progress=lambda d, t: update("embedding", d, t))
    seconds = time.perf_counter() - start
    computed = (embedder.cache.count(embedder.model_key) - before) if embedder.cache else len(texts)
    if out_path:
        np.save(out_path, vectors)
    summary = {
        "source": source,
        "reviews": len(texts),
        "dimensions": int(vectors.shape[1]),
        "computed": int(computed),
        "from_cache": len(texts) - int(computed),
        "seconds": round(seconds, 3),
        "reviews_per_second": round(len(texts) / seconds, 1) if seconds > 0 else None,
        "model": embedder.model_key,
        "out": str(out_path) if out_path else None,
    }
    if as_json:
        _print_json(summary)
    else:
        out.print(
            f"{summary['reviews']} reviews -> {summary['dimensions']}-d vectors in {summary['seconds']} s "
            f"({summary['computed']} computed, {summary['from_cache']} from cache; model {summary['model']})",
            highlight=False,
        )


def main() -> None:  # pragma: no cover - console script entry
    app()


@app.command()
@handle_errors
def demo(
    data: Annotated[
        Path | None,
        typer.Option(help="Folder with review files; defaults to ../shared/data when present."),
    ] = None,
    serve: Annotated[bool, typer.Option(help="Start the workbench afterwards.")] = True,
) -> None:
    """Load the demo data (a reference and a current batch), embed it, and start the workbench."""
    from core.demo import load_demo

    with progress_bar() as update:
        summary = load_demo(data, progress=update, log=lambda msg: console.print(msg, highlight=False))
    for line in summary.lines():
        out.print(line, highlight=False)
