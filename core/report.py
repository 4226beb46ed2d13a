"""Render a `core.shift.ShiftReport`: JSON for machines, a self-contained HTML page for people, CSV of scores.

Nothing here computes statistics; it only lays out what `core.shift.compare` found. The HTML inlines
plotly.js, so the page opens offline and can be mailed as one file; a print stylesheet keeps it readable on
paper (figures do not split across pages, the tables keep their headers).

Review text is written by strangers and is never interpreted. The template escapes every value; the only
markup trusted as it is comes from here (the plotly.js bundle and the figures built below). JSON inside a
figure's ``<script>`` has ``<``, ``>`` and ``&`` as JSON unicode escapes, so no string can end the element;
labels inside figures are HTML-escaped, because plotly reads a subset of HTML in them. The CSV is
spreadsheet-safe (`core.spreadsheet`).
"""

from __future__ import annotations

import html
import json
import math
import uuid
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup

from core.errors import ParameterError
from core.shift import STATISTICS, ShiftReport
from core.spreadsheet import to_safe_csv

TEMPLATES = Path(__file__).resolve().parent / "templates"
REFERENCE_COLOR = "#4C78A8"
CURRENT_COLOR = "#F58518"
FIGURE_CONFIG = {"displaylogo": False, "responsive": True}


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, datetimes -> ISO strings."""
    if is_dataclass(value) and not isinstance(value, type):
        return _clean(asdict(value))
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def report_to_dict(report: ShiftReport, include_scores: bool = False) -> dict[str, Any]:
    """The report as plain JSON-ready data; per-review scores only when `include_scores`."""
    out: dict[str, Any] = {
        "drift": bool(report.drift),
        "p_value": float(report.p_value),
        "alpha": report.alpha,
        "drivers": list(report.drivers),
        "explanation": report.explanation,
        "n_reference": report.n_reference,
        "n_current": report.n_current,
        "sample_sizes": report.sample_sizes,
        "n_permutations": report.n_permutations,
        "correction": report.correction,
        "drifted_features": report.drifted_features,
        "share_drifted_features": report.share_drifted_features,
        "skipped_features": report.skipped_features,
        "embedded_fields": list(report.embedded_fields),
        "tests": [asdict(t) for t in report.tests],
        "clusters": [asdict(c) if is_dataclass(c) else c for c in report.clusters],
        "distributions": [asdict(d) for d in report.distributions],
        "created": report.created.isoformat(),
    }
    if include_scores:
        out["scores"] = report.scores.to_dict(orient="records")
    return _clean(out)


def report_to_json(report: ShiftReport, include_scores: bool = False, indent: int | None = 2) -> str:
    """The report as JSON text (top-level ``drift``, ``p_value``, ``tests``, ``clusters``, sizes, ...)."""
    return json.dumps(report_to_dict(report, include_scores=include_scores), indent=indent, allow_nan=False)


def report_to_csv(report: ShiftReport) -> str:
    """Per-review scores of the current batch as spreadsheet-safe CSV (`core.spreadsheet`), most novel first."""
    return to_safe_csv(report.scores.sort_values("shift_p_value", kind="stable")) or ""


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------


def _script_json(value: Any) -> str:
    """JSON to place inside a ``<script>`` element: no string in it can end the element or open a comment."""
    from plotly.io.json import to_json_plotly

    text = to_json_plotly(value)
    # Outside strings JSON has none of these characters, and inside a string the \u escape reads the same.
    for char, code in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                       ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, code)
    return text


def _figure_html(fig: Any) -> Markup:
    """A plotly figure as a ``<div>`` and the ``<script>`` that draws it (plotly.js is inlined once per page)."""
    spec = fig.to_plotly_json()
    div_id = f"figure-{uuid.uuid4().hex[:12]}"
    height = int(spec.get("layout", {}).get("height") or 300)
    return Markup(
        f'<div id="{div_id}" class="plotly-graph-div" style="height:{height}px; width:100%;"></div>'
        f'<script>Plotly.newPlot("{div_id}", {_script_json(spec.get("data", []))}, '
        f'{_script_json(spec.get("layout", {}))}, {_script_json(FIGURE_CONFIG)});</script>'
    )


def _label(value: Any) -> str:
    """Text for a figure label: plotly reads <b>, <a href> and other tags in labels; these show as typed."""
    return html.escape(str(value), quote=False)


def _layout(fig: Any, title: str, height: int = 300) -> Any:
    fig.update_layout(title=title, height=height, margin={"l": 50, "r": 20, "t": 50, "b": 50},
                      template="plotly_white", legend={"orientation": "h", "y": -0.25}, barmode="group")
    return fig


def _distribution_figures(report: ShiftReport) -> list[dict[str, Any]]:
    import plotly.graph_objects as go

    by_feature: dict[str, list[Any]] = {}
    for t in report.tests:
        by_feature.setdefault(t.feature, []).append(t)
    out = []
    for d in report.distributions:
        ref = np.asarray(d.reference, dtype=float)
        cur = np.asarray(d.current, dtype=float)
        fig = go.Figure()
        bins = [_label(b) for b in d.bins]  # categories come from the review files
        fig.add_bar(x=bins, y=ref / max(ref.sum(), 1), name="reference", marker_color=REFERENCE_COLOR)
        fig.add_bar(x=bins, y=cur / max(cur.sum(), 1), name="current", marker_color=CURRENT_COLOR)
        tests = by_feature.get(d.feature, [])
        summary = "; ".join(f"{STATISTICS[t.name].title} p={t.p_value:.3g}" for t in tests)
        _layout(fig, _label(d.feature), height=280)
        fig.update_yaxes(title="share", tickformat=".0%")
        out.append({"feature": d.feature, "html": _figure_html(fig), "summary": summary,
                    "drift": any(t.drift for t in tests)})
    # Drifted features first: that is where the reader should look.
    out.sort(key=lambda f: (not f["drift"], f["feature"]))
    return out


def _p_value_figure(report: ShiftReport) -> str:
    import plotly.graph_objects as go

    tests = report.tests
    labels = [_label(f"{t.name} · {t.feature}") for t in tests]
    values = [max(t.p_value, 1e-4) for t in tests]
    colors = [CURRENT_COLOR if t.drift else REFERENCE_COLOR for t in tests]
    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h", marker_color=colors))
    fig.add_vline(x=report.alpha, line_dash="dash", annotation_text=f"alpha {report.alpha:g}")
    _layout(fig, "p-value of every test (log scale; orange = drift)", height=max(300, 22 * len(tests) + 80))
    fig.update_xaxes(type="log", title="p-value")
    fig.update_yaxes(autorange="reversed")
    return _figure_html(fig)


def _cluster_figure(report: ShiftReport) -> str | None:
    import plotly.graph_objects as go

    if not report.clusters:
        return None
    labels = [_label(f"{c.id}: {', '.join(c.top_terms[:3])}") for c in report.clusters]
    fig = go.Figure()
    fig.add_bar(y=labels, x=[c.share_reference for c in report.clusters], name="reference", orientation="h",
                marker_color=REFERENCE_COLOR)
    fig.add_bar(y=labels, x=[c.share_current for c in report.clusters], name="current", orientation="h",
                marker_color=CURRENT_COLOR)
    _layout(fig, "Share of each batch per topic cluster", height=max(300, 45 * len(labels) + 100))
    fig.update_xaxes(tickformat=".0%")
    fig.update_yaxes(autorange="reversed")
    return _figure_html(fig)


def _score_figure(report: ShiftReport) -> str:
    import plotly.graph_objects as go

    fig = go.Figure(go.Histogram(x=report.scores["shift_p_value"], xbins={"start": 0, "end": 1, "size": 0.05},
                                 marker_color=CURRENT_COLOR, name="current reviews"))
    fig.add_hline(y=len(report.scores) * 0.05, line_dash="dash", annotation_text="expected without shift")
    _layout(fig, "Per-review shift p-values of the current batch (uniform without shift)")
    fig.update_xaxes(title="shift p-value (small = more novel than the reference allows)", range=[0, 1])
    fig.update_yaxes(title="reviews")
    return _figure_html(fig)


def _format_p(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _p_is(value: float | None) -> str:
    """`_format_p` after "p": "< 0.001" as it is, anything else as "= 0.123"."""
    text = _format_p(value)
    return text if text.startswith("<") else f"= {text}"


def report_to_html(report: ShiftReport, title: str = "Shift report", top_reviews: int = 20) -> str:
    """A self-contained HTML page: verdict, test table, distributions, clusters, most novel reviews.

    plotly.js is inlined (no CDN), so the file opens offline. Every value from the report is HTML-escaped.
    """
    import jinja2
    from plotly.offline import get_plotlyjs

    # autoescape=True whatever the template's name: select_autoescape() goes by extension and skips ".j2".
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    env.filters["p"] = _format_p
    env.filters["p_is"] = _p_is
    env.filters["num"] = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
    env.filters["pct"] = lambda v: f"{v:.1%}"
    template = env.get_template("shift_report.html.j2")
    scores = report.scores.sort_values("shift_p_value", kind="stable").head(top_reviews)
    return template.render(
        title=title, report=report, statistics=STATISTICS,
        embedding_tests=[t for t in report.tests if t.feature == "embedding"],
        feature_tests=[t for t in report.tests if t.feature != "embedding"],
        distributions=_distribution_figures(report), p_value_figure=_p_value_figure(report),
        cluster_figure=_cluster_figure(report), score_figure=_score_figure(report),
        top_scores=scores.to_dict(orient="records"), plotly_js=Markup(get_plotlyjs()),  # the bundle, as shipped
        created=report.created.strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_report(report: ShiftReport, path: str | Path) -> Path:
    """Write the report in the format its suffix names: ``.html``, ``.json`` or ``.csv`` (per-review scores)."""
    path = Path(path)
    suffix = path.suffix.lower()
    writers: dict[str, Callable[[ShiftReport], str]] = {".html": report_to_html, ".htm": report_to_html, ".json": report_to_json, ".csv": report_to_csv}
    if suffix not in writers:
        raise ParameterError(f"report file must end in .html, .json or .csv, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(writers[suffix](report), encoding="utf-8")
    return path


def scores_frame(report: ShiftReport) -> pd.DataFrame:
    """Per-review scores, most novel first (for tables in the workbench)."""
    return report.scores.sort_values("shift_p_value", kind="stable").reset_index(drop=True)
