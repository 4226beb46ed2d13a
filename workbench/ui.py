"""Small rendering helpers shared by the pages: errors as one line, progress bars fed by core callbacks, and
review text shown as text.

Review text, titles, categories and anything quoting them are written by strangers: a page passes them through
`plain` before any Markdown element (``st.markdown``, ``st.caption``, ``st.write``, alerts, expander labels)
and through `chart_text` before a plotly label, so they are shown exactly as typed and never interpreted.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from core.errors import WorkbenchError
from core.progress import CountProgress, ProgressCallback

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Every ASCII punctuation character may be backslash-escaped in CommonMark; these start inline Markdown
# (emphasis, links, images, code, tables, maths, Streamlit's :colour[...] and :icon: directives, autolinked
# e-mail addresses). '.', ',', ';', '?', '/', '%' and quotes are left as they are, so a file name reads as it is.
_INLINE = frozenset("\\`*_{}[]()#!|~$:@^")
_BLOCK_START = re.compile(r"^([ \t]*)([-+=]|\d+\.)", re.MULTILINE)  # list items, setext headings, rules
_WWW = re.compile(r"(?i)\bwww\.")  # GFM links www.example.com without any markup


def plain(value: Any) -> str:
    """`value` as Markdown that shows exactly its characters: nothing in it is read as Markdown or HTML.

    For review text, titles, categories, ids and messages that may quote them, wherever a Streamlit element
    renders Markdown. ``<``, ``>`` and ``&`` become HTML entities, Markdown punctuation is backslash-escaped.
    """
    out = []
    for char in str(value):
        if char in _ENTITIES:
            out.append(_ENTITIES[char])
        elif char in _INLINE:
            out.append("\\" + char)
        else:
            out.append(char)
    text = "".join(out)
    text = _BLOCK_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], text)
    return _WWW.sub(lambda m: m.group(0)[:-1] + "\\.", text)


def chart_text(value: Any) -> str:
    """`value` for a plotly label or hover text: plotly reads <b>, <a href> and other tags there."""
    return html.escape(str(value), quote=False)


@contextmanager
def errors_shown() -> Iterator[None]:
    """Show a `WorkbenchError` as its one-line reason (written for the analyst), never as a traceback."""
    try:
        yield
    except WorkbenchError as err:
        st.error(plain(err), icon="⚠️")  # messages may quote a cell of the file


def show_error(err: BaseException) -> None:
    st.error(plain(err), icon="⚠️")


def stage_progress(bar: Any) -> ProgressCallback:
    """A ``progress(stage, fraction)`` callback (the shape `Workspace.train` / `score` call) drawing into `bar`."""

    def update(stage: str, fraction: float) -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        bar.progress(fraction, text=f"{stage} · {fraction:.0%}")

    return update


def count_progress(bar: Any, what: str) -> CountProgress:
    """A ``progress(done, total)`` callback (the shape `Workspace.compare` calls)."""

    def update(done: int, total: int) -> None:
        fraction = 1.0 if total <= 0 else min(done / total, 1.0)
        bar.progress(fraction, text=f"{what} · {done}/{total}")

    return update


def fmt_p(value: float | None) -> str:
    """``p = 0.012`` or ``p < 0.001`` (not "p = < 0.001")."""
    if value is None:
        return "p n/a"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


def flash(key: Any) -> None:
    """Show (once) a success message that a button left for the next rerun."""
    message = key.get()
    if message:
        st.success(message, icon="✅")
        key.clear()


def ingest_upload(ws: Any, data: bytes, filename: str, name: str, mapping: str = "") -> Any:
    """Store one uploaded file through `Workspace.ingest_bytes`; a refused file becomes an outcome, not a crash.

    `mapping`: ``FIELD=COLUMN`` pairs separated by commas, for columns the loader does not recognise.
    """
    from core.io.schema import parse_mapping
    from workbench.state import IngestOutcome

    try:
        info, result = ws.ingest_bytes(data, filename, name, mapping=parse_mapping(mapping.split(",")))
    except WorkbenchError as err:
        return IngestOutcome(filename=filename, batch=name, ok=False, message=str(err))
    report = result.report
    return IngestOutcome(
        filename=filename, batch=info.name, ok=True,
        message=f"{info.rows} rows kept, {info.quarantined} quarantined, {info.duplicates} exact duplicates flagged",
        report_lines=tuple(report.summary_lines()), quarantined=info.quarantined, rows=info.rows,
    )


def review_detail(reasons: Any, row: Any) -> None:
    """One review with its reasons: what it says, the signals that fired, its nearest reference reviews."""
    import pandas as pd

    left, right = st.columns([3, 2])
    with left:
        title = row.get("title") if hasattr(row, "get") else None
        if isinstance(title, str) and title.strip():
            st.markdown(f"**{plain(title)}**")
        st.markdown(plain(row.get("text", "")))
        facts = [f"review {plain(reasons.review_id)}"]
        for column in ("rating", "category", "batch"):
            value = row.get(column)
            if value is not None and str(value) not in ("", "nan", "None"):
                facts.append(f"{column}: {plain(value)}")
        st.caption(" · ".join(facts))
    with right:
        verdict = "flagged as outlier" if reasons.is_outlier else "within normal range"
        st.metric("Ensemble score", f"{reasons.score:.2f}", help="0.97 = more unusual than 97 % of reference reviews")
        st.markdown(f"**{verdict}** ({fmt_p(reasons.p_value)}) — {plain(reasons.summary)}")
    st.markdown("**Why**")
    st.dataframe(
        pd.DataFrame([{"signal": c.label, "score": c.score, "detail": c.detail} for c in reasons.contributions]),
        hide_index=True, width="stretch",
        column_config={"score": st.column_config.ProgressColumn("score", min_value=0.0, max_value=1.0, format="%.2f")},
    )
    scores = {**reasons.detector_scores, **reasons.signal_scores}
    if scores:
        st.caption(" · ".join(f"{k} {v:.2f}" for k, v in scores.items() if v == v))  # NaN: signal not applicable
    st.markdown("**Nearest reference reviews**")
    for n in reasons.neighbours:
        rating = f" · {n.rating:g}★" if n.rating is not None and n.rating == n.rating else ""
        st.markdown(f"- *cosine {n.similarity:.2f}{rating}* — {plain(n.text)}")
