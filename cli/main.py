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
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.defaults import (
    CHAMPION,
    DEFAULT_DETECTORS,
    DEFAULT_PROJECT,
    DEFAULT_TITLES,
    DEFAULT_USE_LABELS,
    parse_detectors,
)
from core.errors import WorkbenchError
from core.io.schema import parse_mapping
from core.spreadsheet import to_safe_csv

app = typer.Typer(
    help="Review Outlier & Shift Workbench: find reviews that do not belong, measure how batches shift.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# soft_wrap: rich would otherwise break sentences at 80 columns when output goes to a pipe or a file, where the
# reader (grep, a log, a test) expects one line per message.
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn a WorkbenchError into a one-line message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except WorkbenchError as err:
            console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(code=130) from None
        except OSError as err:  # the local disk or a file named on the command line: still one line
            where = f" writing {err.filename}" if err.filename else ""
            console.print(f"[red]error:[/red] {escape((err.strerror or str(err)).lower() + where)}",
                          highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


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


def _counted(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


MapOption = Annotated[
    list[str] | None,
    typer.Option("--map", help="Column mapping for unrecognised layouts, CANONICAL=SOURCE; repeatable."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


@app.command()
@handle_errors
def ingest(
    path: Annotated[Path, typer.Argument(help="Review file: CSV (comma, semicolon, tab or bar separated), TSV, "
                                             "JSON, JSONL (also .gz), Parquet or Excel .xlsx (first sheet).")],
    name: Annotated[str | None, typer.Option(help="Batch name; defaults to the file name.")] = None,
    mapping: MapOption = None,
    encoding: Annotated[str | None, typer.Option(
        help="Text encoding when not UTF-8 (a file that is not UTF-8 is read as Windows-1252 unless given), "
             "e.g. cp1252, latin-1, utf-16.")] = None,
    quarantine_out: Annotated[
        Path | None, typer.Option(help="Also write the quarantined rows (line, reason, raw) to this CSV.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a review file and store it as a batch under WORKBENCH_HOME.

    Malformed rows are quarantined with their line and reason, never dropped; exact duplicates are flagged.
    """
    from core.io.batches import batch_name_from
    from core.pipeline import Workspace

    ws = Workspace.open()
    batch = name or batch_name_from(str(path))
    info, result = ws.ingest_path(path, name=batch, mapping=parse_mapping(mapping), encoding=encoding)
    if quarantine_out:
        to_safe_csv(result.quarantined, quarantine_out)
    report = result.report.model_copy(update={"batch": info.name})
    if as_json:
        payload = report.model_dump(mode="json")
        payload["stored_at"] = ws.describe_storage()
        _print_json(payload)
        return
    for line in report.summary_lines():
        out.print(line, highlight=False, soft_wrap=True, markup=False)
    out.print(f"stored as batch [bold]{info.name}[/bold] in {ws.describe_storage()}", highlight=False)
    if report.rows_quarantined:
        hint = f"written to {quarantine_out}" if quarantine_out else f"see them: workbench quarantine {info.name}"
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
    # Names are what people type next and dates read badly cut: neither is shortened. Role and categories
    # share the name's cell, so the table fits an 80-column terminal.
    table = Table()
    table.add_column("batch", overflow="fold")
    table.add_column("from / to", no_wrap=True)
    for header in ("rows", "quarantined", "duplicates"):
        table.add_column(header, justify="right", no_wrap=True)
    for info in infos:
        role = "reference" if info.name == state.reference else ("current" if info.name == state.current else "")
        cats = escape(", ".join(list(info.categories)[:3]))  # categories come from the files: text, not markup
        label = info.name + (f" [bold]({role})[/bold]" if role else "") + (f"\n[dim]{cats}[/dim]" if cats else "")
        dates = f"{(info.date_min or '')[:10]}\n{(info.date_max or '')[:10]}" if info.date_min else ""
        table.add_row(label, dates, str(info.rows), str(info.quarantined), str(info.duplicates))
    out.print(table)


@app.command()
@handle_errors
def quarantine(
    batch: Annotated[str, typer.Argument(help="Stored batch name (see `workbench batches`).")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write every quarantined row (line, reason, raw) to this CSV.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show the rows of a stored batch that were kept aside at ingest: file line, reason and the raw row."""
    from core.pipeline import Workspace

    ws = Workspace.open()
    rows = ws.batches.quarantined(batch)
    if out_file:
        to_safe_csv(rows, out_file)
    if as_json:
        _print_json({"batch": batch, "quarantined": rows.to_dict(orient="records")})
        return
    if rows.empty:
        out.print(f"no row of {batch} was quarantined")
        return
    table = Table("line", "reason", "raw row (start)")
    for row in rows.head(50).itertuples(index=False):
        raw = str(row.raw)
        table.add_row(str(row.line), escape(str(row.reason)), escape(raw[:120] + ("..." if len(raw) > 120 else "")))
    out.print(table)
    more = f"; {len(rows) - 50} more" if len(rows) > 50 else ""
    where = f"all {len(rows)} written to {out_file}" if out_file else "write them all with --out FILE.csv"
    out.print(f"{len(rows)} quarantined rows of {batch}{more} ({where})", highlight=False)


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

    from core.pipeline import Workspace
    from core.text.embed import embedding_text

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


DETECTOR_HELP = "Detectors, comma-separated: knn, lof, mahalanobis, iforest, autoencoder."


def _stage_progress(update):
    return lambda stage, fraction: update(stage, round(fraction * 100), 100)


@app.command()
@handle_errors
def train(
    reference: Annotated[str, typer.Option(help="Reference batch name or review file the model learns from.")],
    detectors: Annotated[str, typer.Option(help=DETECTOR_HELP)] = ",".join(DEFAULT_DETECTORS),
    contamination: Annotated[float | None, typer.Option(help="Expected outlier share (sets the threshold).")] = None,
    projection: Annotated[bool, typer.Option(
        "--projection/--no-projection", help="Fit the 2-D map; --no-projection is faster.")] = DEFAULT_PROJECT,
    labels: Annotated[bool, typer.Option(
        "--labels/--no-labels", help="Learn from the stored labels; --no-labels ignores them.")] = DEFAULT_USE_LABELS,
    titles: Annotated[bool, typer.Option(
        "--titles/--no-titles", help="Embed title + text; --no-titles embeds the review text alone, for data exported "
        "without titles (a batch without titles scored by a title + text model is otherwise scored by its text-only "
        "twin)."
    )] = DEFAULT_TITLES,
    embedding_backend: Annotated[str | None, typer.Option(
        "--embedding-backend", help="Vectors the model is trained on: torch (fp32, default), onnx (the same "
        "vectors) or onnx-int8 (int8 vectors: faster to serve, but other vectors; compare detection quality with "
        "bench/detect.py --backend onnx-int8). Default: WORKBENCH_EMBEDDING_BACKEND. The API serves every model "
        "with the fastest backend that gives its own vectors.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Fit features, detectors, calibration (and the 2-D map); track the run in MLflow; register a challenger.

    The first model ever registered also becomes champion; later ones wait for `workbench models promote`.
    """
    from core.pipeline import Workspace
    from core.settings import get_settings
    from core.text.embed import BACKENDS

    settings = get_settings()
    if embedding_backend is not None:
        if embedding_backend not in BACKENDS:
            raise WorkbenchError(f"--embedding-backend must be one of {', '.join(BACKENDS)}, got {embedding_backend!r}")
        settings = settings.model_copy(update={"embedding_backend": embedding_backend})
    ws = Workspace.open(settings)
    with progress_bar(not as_json) as update:
        outcome = ws.train(reference, detectors=parse_detectors(detectors), contamination=contamination,
                           project=projection, use_labels=labels, progress=_stage_progress(update), titles=titles,
                           on_wait=lambda message: console.print(message, highlight=False, soft_wrap=True))
    rec = outcome.record
    summary = {"run_id": rec.run_id, "version": rec.version, "aliases": rec.aliases, "model_uri": rec.model_uri,
               "tracking_uri": rec.tracking_uri, "reference": reference, "n_reference": outcome.bundle.meta["n_reference"],
               "detectors": outcome.bundle.meta["detectors"], "signals": outcome.bundle.meta["signals"],
               "seconds": round(outcome.seconds, 1), "labels": outcome.label_note}
    if as_json:
        _print_json(summary)
        return
    out.print(f"trained on {summary['n_reference']} reviews in {summary['seconds']} s; "
              f"registered version {rec.version} ({', '.join(rec.aliases)}), run {rec.run_id}", highlight=False)
    out.print(f"detectors: {', '.join(summary['detectors'])}; signals: {', '.join(summary['signals'])}", highlight=False)
    if outcome.label_note:
        out.print(f"labels: {outcome.label_note}", highlight=False)
    if CHAMPION not in rec.aliases:
        out.print(f"serve it with: workbench models promote {rec.version}", highlight=False)


@app.command()
@handle_errors
def score(
    source: Annotated[str, typer.Argument(help="Review file or stored batch to score; with --engine spark also a "
                                          "folder of part files (Parquet, JSONL, CSV, ...), an s3:// URL (the workspace's "
                                          "MinIO settings) or an s3a:// URL.")],
    out_arg: Annotated[str, typer.Option("--out", help="Output .csv or .parquet; with --engine spark a folder "
                                           "(or s3a:// URL) that becomes a Parquet dataset.")],
    model: Annotated[str, typer.Option(help="Model alias or version (spark: also models:/NAME@ALIAS, "
                                       "models:/NAME/VERSION or a bundle folder).")] = CHAMPION,
    mapping: MapOption = None,
    engine: Annotated[str, typer.Option(help="local: one process, the batch in memory. spark: every row on "
                                        "Apache Spark in two passes (batch evidence over all rows); writes the scores as "
                                        "Parquet part files, _quarantine/ (file, line, reason) and "
                                        "_SUMMARY.json into --out.")] = "local",
    master: Annotated[str | None, typer.Option(help="Spark master URL (local[4], spark://HOST:7077, k8s://..., "
                                               "yarn); default WORKBENCH_SPARK_MASTER, else local[*].")] = None,
    partitions: Annotated[int | None, typer.Option(help="Spark partitions to score in; default ~1 per 5,000 "
                                                   "reviews.", min=1)] = None,
    as_json: JsonOption = False,
) -> None:
    """Score reviews with the champion: one column per detector and signal, score (0-1), is_outlier, reason.

    With --engine spark every row is scored on Spark in two passes, the batch evidence over all rows (docs/scale.md).
    """
    from core.pipeline import Workspace

    if engine not in ("local", "spark"):
        raise WorkbenchError(f"--engine must be local or spark, got {engine!r}")
    if engine == "spark":
        # A str, not a Path: Path("s3a://bucket/x") would lose one of the URL's slashes.
        _score_on_spark(source, out_arg, model, parse_mapping(mapping), master, partitions, as_json)
        return
    if master or partitions:
        raise WorkbenchError("--master and --partitions need --engine spark")
    out_path = Path(out_arg)
    if out_path.suffix.lower() not in (".csv", ".parquet"):
        raise WorkbenchError(f"--out must end in .csv or .parquet, got {out_path.name}")
    ws = Workspace.open()
    resolved = ws.resolve(source, parse_mapping(mapping))
    if not as_json:
        for line in resolved.load_lines():
            out.print(line, highlight=False, markup=False)
    started = datetime.now(UTC)
    with progress_bar(not as_json) as update:
        scores, version = ws.score(resolved.frame, alias=model, progress=_stage_progress(update),
                                   batch=source if resolved.report is None else None)  # stored: recorded
    table = scores.frame
    if "source_line" in resolved.frame and len(resolved.frame) == len(table):
        # the line of the file each review came from: a join key back to the input when ids were generated
        table.insert(1, "source_line", resolved.frame["source_line"].to_numpy())
    if out_path.suffix.lower() == ".csv":
        to_safe_csv(table, out_path)
    else:
        table.to_parquet(out_path, index=False)
    evidence = scores.result.group_evidence
    summary = {"out": str(out_path), "rows": len(table), "flagged": int(table["is_outlier"].sum()),
               "model_version": version.version, "text_only_twin": scores.text_only_twin,
               "missing_columns": scores.missing, "group_evidence": evidence,
               "rows_set_aside": resolved.report.rows_quarantined if resolved.report else 0}
    if as_json:
        _print_json(summary)
        return
    out.print(f"{summary['rows']} reviews scored with version {version.version}; {summary['flagged']} flagged; "
              f"written to {out_path}", highlight=False)
    if any(p < 1.0 for p in evidence.values()):  # a batch large enough for the excess tests
        from core.detect.explain import GROUP_LABELS

        ranked = sorted(evidence.items(), key=lambda kv: kv[1])
        out.print("excess over the reference per kind of anomaly (p-value; small = more of this kind than the "
                  "reference allows): "
                  + "; ".join(f"{GROUP_LABELS.get(g, g)} {p:.2g}" for g, p in ranked), highlight=False)
    if scores.missing:
        out.print(f"not in this batch (signals that need them were left out): {', '.join(scores.missing)}",
                  highlight=False)
    if resolved.report is None:  # a stored batch: recorded in the run history, where alerts may have fired
        _print_alerts(ws, source, started)
    if scores.text_only_twin:
        out.print(f"this batch has no titles and version {version.version} embeds title + text: scored with its "
                  "text-only twin (the same detectors refitted on the same reference, kept under WORKBENCH_HOME/"
                  "text-twins); if the file has titles under another name, map them with --map title=COLUMN",
                  highlight=False)


def _score_on_spark(source: str, out_dir: str, model: str, mapping: dict[str, str] | None, master: str | None,
                    partitions: int | None, as_json: bool) -> None:
    from core.spark import score_dataset

    with progress_bar(not as_json) as update:
        summary = score_dataset(source, out_dir, model=model, master=master, partitions=partitions,
                                mapping=mapping, progress=_stage_progress(update))
    if as_json:
        _print_json(summary.as_dict())
        return
    out.print(f"{summary.rows_scored} reviews scored on {summary.master} with version {summary.model_version or summary.model} "
              f"in {summary.partitions} partitions; {summary.flagged} flagged; {summary.rows_quarantined} row(s) set "
              f"aside; written to {summary.out} (set-aside rows in _quarantine/, counts in _SUMMARY.json)",
              highlight=False)


@app.command()
@handle_errors
def shift(
    reference: Annotated[str, typer.Option(help="Reference batch name or file; with --engine spark also a folder "
                                           "of part files (Parquet, JSONL, CSV, ...) or an s3:// or s3a:// URL.")],
    current: Annotated[str, typer.Option(help="Current batch name or file; with --engine spark also a folder of "
                                         "part files or an s3:// or s3a:// URL.")],
    out_path: Annotated[Path, typer.Option("--out", help="Report file: .html, .json or .csv (per-review scores; "
                                           "local engine only).")],
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    permutations: Annotated[int, typer.Option(help="Permutations per permutation test.")] = 1000,
    mapping: MapOption = None,
    engine: Annotated[str, typer.Option(help="local: both batches in memory on this machine (per-feature tests on up to "
                                        "20,000 rows per batch). "
                                        "spark: per-feature tests over every row (Spark counts), the novelty test "
                                        "over every current review, MMD, the classifier test and topic clusters on "
                                        "a seeded sample of 2,000 reviews per batch; the report says which part "
                                        "used what (docs/scale.md).")] = "local",
    master: Annotated[str | None, typer.Option(help="Spark master URL (local[4], spark://HOST:7077, k8s://..., "
                                               "yarn); default WORKBENCH_SPARK_MASTER, else local[*].")] = None,
    as_json: JsonOption = False,
) -> None:
    """Test whether the current batch differs from the reference; write an HTML, JSON or CSV report.

    With --engine spark the per-feature and novelty tests cover every row; the report says what used a sample.
    """
    from core.pipeline import Workspace
    from core.report import write_report

    if out_path.suffix.lower() not in (".html", ".json", ".csv"):
        raise WorkbenchError(f"--out must end in .html, .json or .csv, got {out_path.name}")
    if engine not in ("local", "spark"):
        raise WorkbenchError(f"--engine must be local or spark, got {engine!r}")
    if engine == "spark":
        _shift_on_spark(reference, current, out_path, alpha, permutations, parse_mapping(mapping), master, as_json)
        return
    if master:
        raise WorkbenchError("--master needs --engine spark")
    ws = Workspace.open()
    sides = {}
    for role, source in (("reference", reference), ("current", current)):
        # --map applies to whichever side is a file (stored batches were mapped at ingest)
        sides[role] = ws.resolve(source, parse_mapping(mapping) if Path(source).exists() else None)
        if not as_json:
            for line in sides[role].load_lines():
                out.print(f"{role}: {line}", highlight=False, markup=False)
    started = datetime.now(UTC)
    with progress_bar(not as_json) as update:
        report = ws.compare(sides["reference"].frame, sides["current"].frame, alpha=alpha,
                            n_permutations=permutations, progress=lambda d, t: update("shift tests", d, t),
                            names=(reference, current))
    write_report(report, out_path)
    summary = {"out": str(out_path), "drift": bool(report.drift), "p_value": float(report.p_value),
               "n_reference": report.n_reference, "n_current": report.n_current,
               "drifted_features": list(report.drifted_features), "skipped_features": dict(report.skipped_features),
               "embedded_fields": list(report.embedded_fields)}
    if as_json:
        _print_json(summary)
        return
    verdict = "SHIFT detected" if report.drift else "no significant shift"
    out.print(f"{verdict} (p = {report.p_value:.3g}, alpha {alpha}); {report.n_reference} reference vs "
              f"{report.n_current} current reviews; report written to {out_path}", highlight=False)
    if report.drifted_features:
        out.print(f"drifted features: {', '.join(report.drifted_features)}", highlight=False)
    if report.skipped_features:
        out.print("not tested: " + "; ".join(f"{k} ({v})" for k, v in report.skipped_features.items()),
                  highlight=False)
    if "title" not in report.embedded_fields:
        out.print("titles left out of the embeddings: only one batch has them", highlight=False)
    if sides["current"].report is None:  # a stored batch: recorded in the run history
        _print_alerts(ws, current, started)


def _shift_on_spark(reference: str, current: str, out_path: Path, alpha: float, permutations: int,
                    mapping: dict[str, str] | None, master: str | None, as_json: bool) -> None:
    from core.pipeline import Workspace
    from core.report import write_report
    from core.spark.shift import shift_datasets

    if out_path.suffix.lower() == ".csv":
        raise WorkbenchError("with --engine spark the report is .html or .json: the per-review scores of every "
                             "current review are counted on Spark, not gathered into one file")
    with progress_bar(not as_json) as update:
        result = shift_datasets(reference, current, alpha=alpha, n_permutations=permutations, master=master,
                                mapping=mapping, progress=_stage_progress(update))
    report = result.report
    write_report(report, out_path)
    ws = Workspace.open()
    batch = ws.stored_batch(current)
    started = datetime.now(UTC)
    if batch:  # a stored batch: recorded in the run history, as the local engine does
        ws.record_shift(batch, report, reference=reference)
    if as_json:
        _print_json({"out": str(out_path), **result.summary()})
        return
    verdict = "SHIFT detected" if report.drift else "no significant shift"
    out.print(f"{verdict} (p = {report.p_value:.3g}, alpha {alpha}); {report.n_reference} reference vs "
              f"{report.n_current} current reviews on {result.master}; report written to {out_path}", highlight=False)
    for part, rows in result.coverage.items():
        out.print(f"{part}: {rows}", highlight=False)
    aside = {k: v for k, v in result.rows_quarantined.items() if v}
    if aside:
        out.print("rows set aside when read (not used): " + ", ".join(f"{k} {v}" for k, v in aside.items()),
                  highlight=False)
    if report.drifted_features:
        out.print(f"drifted features: {', '.join(report.drifted_features)}", highlight=False)
    if report.skipped_features:
        out.print("not tested: " + "; ".join(f"{k} ({v})" for k, v in report.skipped_features.items()),
                  highlight=False)
    if batch:
        _print_alerts(ws, batch, started)


def _print_alerts(ws: Any, batch: str, since: datetime) -> None:
    """The alerts this run raised on a stored batch just scored or compared, and how many it already had."""
    try:
        alerts = [a for a in ws.monitor().alerts() if a.batch == batch]
    except WorkbenchError as err:  # the output is written; the history is reported, not fatal
        console.print(f"run history unavailable: {escape(str(err))}", highlight=False)
        return
    fresh = [a for a in alerts if a.created >= since]
    if len(fresh) < len(alerts):
        out.print(f"{_counted(len(alerts) - len(fresh), 'earlier alert')} on {batch}: see `workbench monitor`",
                  highlight=False, markup=False)
    for a in fresh:
        out.print(f"ALERT on {batch}: {a.kind} ({a.rule} rule, p {a.p_value:.2g} <= {a.level:.2g}); "
                  "see `workbench monitor`", highlight=False, markup=False)


@app.command()
@handle_errors
def monitor(
    deliver: Annotated[bool, typer.Option(
        "--deliver", help="First send alerts not delivered yet to WORKBENCH_ALERT_WEBHOOK_URL.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Run history of stored batches in time order (scores and shift checks) and the alerts raised on them."""
    from core.pipeline import Workspace

    ws = Workspace.open()
    history = ws.monitor_history(deliver=deliver)
    if as_json:
        _print_json(history.as_json())
        return
    table = Table("batch", "from", "to", "rows", "model", "flagged", "smallest excess p", "shift p", "drift")
    for b in history.batches:
        tested = {k: v["p_value"] for k, v in b.kinds.items() if v.get("p_value") is not None}
        lowest = min(tested.items(), key=lambda kv: kv[1]) if tested else None
        table.add_row(escape(b.batch), f"{b.start:%Y-%m-%d}", f"{b.end:%Y-%m-%d}", str(b.rows), b.model_version or "-",
                      "-" if b.flagged_share is None else f"{b.flagged_share:.1%}",
                      f"{lowest[0]} {lowest[1]:.2g}" if lowest else "-",
                      "-" if b.shift_p_value is None else f"{b.shift_p_value:.2g}",
                      "-" if b.drift is None else ("yes" if b.drift else "no"))
    out.print(table)
    out.print(f"{_counted(len(history.batches), 'batch', 'batches')}; {_counted(len(history.alerts), 'alert')} "
              f"at a false-alarm level of {history.level:g} per batch", highlight=False)
    for c in history.champions:
        out.print(f"champion: version {c.version} {c.event} {c.at:%Y-%m-%d %H:%M} UTC", highlight=False, markup=False)
    if history.alerts and not ws.settings.alert_webhook_url:
        out.print("alerts are stored only: set WORKBENCH_ALERT_WEBHOOK_URL to have them POSTed as JSON",
                  highlight=False, markup=False)
    for a in history.alerts:
        sent = "delivered" if a.delivered else (f"not delivered ({a.last_error})" if a.attempts else "not sent")
        out.print(f"ALERT {a.batch}: {a.kind} ({a.rule} rule, p {a.p_value:.2g} <= {a.level:.2g}); {sent}",
                  highlight=False, markup=False)


models_app = typer.Typer(help="Registered model versions: list, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
@handle_errors
def models_list(as_json: JsonOption = False) -> None:
    """List registered versions with aliases, run and metrics."""
    from core.pipeline import Workspace

    registry = Workspace.open().registry()
    versions = registry.versions()
    if as_json:
        _print_json({"name": registry.name, "tracking_uri": registry.uri,
                     "versions": [{k: v for k, v in ver.as_dict().items() if k != "tags"} for ver in versions]})
        return
    if not versions:
        out.print(f"no versions of {registry.name!r} in {registry.uri}; run `workbench train --reference BATCH`")
        return
    table = Table("version", "aliases", "created", "n_reference", "threshold", "run")
    for v in versions:
        table.add_row(v.version, ", ".join(v.aliases), v.created, f"{v.metrics.get('n_reference', float('nan')):.0f}",
                      f"{v.metrics.get('threshold', float('nan')):.3f}", (v.run_id or "")[:12])
    out.print(table)


@models_app.command("promote")
@handle_errors
def models_promote(
    version: Annotated[str | None, typer.Argument(help="Version to serve; default: the challenger.")] = None,
) -> None:
    """Make a version the champion (the one the API and `workbench score` use)."""
    from core.pipeline import Workspace

    promoted = Workspace.open().registry().promote(version)
    out.print(f"version {promoted} is now champion")


@models_app.command("rollback")
@handle_errors
def models_rollback() -> None:
    """Give the champion alias back to the previous champion."""
    from core.pipeline import Workspace

    previous = Workspace.open().registry().rollback()
    out.print(f"rolled back: version {previous} is champion again")


label_app = typer.Typer(help="Analysts' labels (outlier / normal).", no_args_is_help=True)
app.add_typer(label_app, name="label")


@label_app.command("import")
@handle_errors
def label_import(
    path: Annotated[Path, typer.Argument(help="CSV with columns review_id,label (label: outlier or normal).")],
    author: Annotated[str | None, typer.Option(help="Who labelled.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Import labels; all rows are checked first, so a bad row stores none and names its line."""
    from core.pipeline import Workspace

    outcome = Workspace.open().import_labels(path, author=author)
    if as_json:
        _print_json({"imported": outcome.imported, "path": str(path),
                     "labelled_reviews_in_no_batch": outcome.in_no_batch})
    else:
        out.print(outcome.summary(str(path)), highlight=False, soft_wrap=True, markup=False)


@label_app.command("export")
@handle_errors
def label_export(
    path: Annotated[Path, typer.Argument(help="CSV to write (review_id,label,note,author,batch,created_at).")],
    batch: Annotated[str | None, typer.Option(help="Only the labels given in this batch.")] = None,
    history: Annotated[
        bool, typer.Option("--history", help="Every stored label, oldest first, not just the latest per review.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Export labels as CSV; `workbench label import` reads the file back (in this or another workspace)."""
    from core.pipeline import Workspace

    frame = Workspace.open().labels().export(history=history, batch=batch)
    to_safe_csv(frame, path)
    counts = frame["label"].value_counts().to_dict()
    if as_json:
        _print_json({"exported": len(frame), "path": str(path), "labels": counts})
    else:
        kinds = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("outlier", "normal"))
        out.print(f"{len(frame)} labels ({kinds}) written to {path}", highlight=False)


@app.command()
@handle_errors
def doctor(
    repair: Annotated[bool, typer.Option(
        "--repair", help="Remove orphan objects, and the manifest and leftovers of every broken batch.")] = False,
    min_age: Annotated[float | None, typer.Option(
        help="Seconds an unreferenced object must have existed to count as an orphan (default 600); younger ones "
             "may belong to an upload under way and are left alone.", show_default=False)] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the store: batches whose manifest points at missing objects, objects no manifest points at.

    Exits 1 when something is broken or orphaned and --repair was not given.
    """
    from core.pipeline import Workspace

    report = Workspace.open().check_store(repair=repair, min_age=min_age)
    if as_json:
        _print_json(report.as_dict())
    else:
        for line in report.lines():
            out.print(line, highlight=False, markup=False)
    if not report.consistent:
        raise typer.Exit(code=1)


@app.command()
@handle_errors
def ui(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8501).")] = None,
) -> None:
    """Start the analyst workbench (Streamlit) in the browser."""
    from workbench.launch import run_ui

    run_ui(host=host, port=port)


@app.command()
@handle_errors
def api(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 3000).")] = None,
) -> None:
    """Serve the champion model over REST (POST /predict, /predict/batch, /shift; docs at /docs)."""
    from api.cli import serve

    serve(host=host, port=port)


@app.command()
@handle_errors
def stack(
    host: Annotated[str, typer.Option(help="Address every service listens on.")] = "127.0.0.1",
    s3_port: Annotated[int, typer.Option(help="S3 server (MinIO when on PATH, else moto).")] = 9000,
    mlflow_port: Annotated[int, typer.Option(help="MLflow server.")] = 5050,
    api_port: Annotated[int, typer.Option(help="REST API.")] = 3000,
    ui_port: Annotated[int, typer.Option(help="Workbench.")] = 8501,
    s3_server: Annotated[str, typer.Option(help="auto, minio or moto.")] = "auto",
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Skip the workbench.")] = False,
) -> None:
    """Start the full stack natively, without Docker: S3 server, MLflow server, API, workbench. Ctrl+C stops it."""
    from cli.stack import NativeStack, run_stack

    services = ("s3", "mlflow", "api") if no_ui else ("s3", "mlflow", "api", "ui")
    code = run_stack(NativeStack(host=host, s3_port=s3_port, mlflow_port=mlflow_port, api_port=api_port,
                                 ui_port=ui_port, services=services, s3_server=s3_server,
                                 log=lambda m: console.print(m, highlight=False, soft_wrap=True)))
    raise typer.Exit(code)


def _score_demo_batch(ws: Any, current: str | None, progress: Any) -> list[str]:
    """Score the demo's current batch once (not again on later runs), so Monitor has its first point."""
    if not current:
        return []
    try:
        if any(r.batch == current for r in ws.monitor().runs()):
            return []
    except WorkbenchError as err:  # the demo stands without its first score
        return [f"{current} not scored: run history unavailable ({err})"]
    console.print(f"scoring {current} with the champion ...", highlight=False)
    scores, version = ws.score(current, progress=progress)
    flagged = int(scores.frame["is_outlier"].sum())
    return [f"{current} scored with version {version.version}: {flagged} of {len(scores.frame)} reviews flagged; "
            "the first point on Monitor"]


@app.command()
@handle_errors
def demo(
    data: Annotated[
        Path | None,
        typer.Option(help="Folder with review files; defaults to ../shared/data when present."),
    ] = None,
    serve: Annotated[bool, typer.Option(help="Start the workbench afterwards.")] = True,
) -> None:
    """Load demo data (a reference and a current batch), train the first model, and start the workbench."""
    from core.demo import load_demo
    from core.pipeline import Workspace

    ws = Workspace.open()
    with progress_bar() as update:
        summary = load_demo(data, progress=update, log=lambda msg: console.print(msg, highlight=False), workspace=ws)
        state = ws.state()
        if ws.registry().champion_version() is None:
            console.print(f"training the first model on {state.reference} ...")
            outcome = ws.train(state.reference, progress=_stage_progress(update))
            summary.notes.append(f"model version {outcome.record.version} trained and serving (champion)")
        else:
            summary.notes.append(f"champion version {ws.registry().champion_version()} already trained")
        summary.notes.extend(_score_demo_batch(ws, state.current, _stage_progress(update)))
    for line in summary.lines():
        out.print(line, highlight=False)
    if serve:
        from workbench.launch import run_ui

        out.print("starting the workbench at http://127.0.0.1:8501 (Ctrl+C to stop)")
        run_ui()


import cli.campaigns  # noqa: E402,F401  registers `workbench campaigns` on `app`
