"""Vega-Lite (Altair) charts of the workbench.

The Monitor timeline is drawn with Vega-Lite rather than plotly: the browser parses Streamlit's Vega bundle
(about 0.8 MB) much faster than its plotly bundle (4.6 MB). In headless Chromium on the 2-core machine a bare page
with the same 52-week chart drew in a median 2.41 s with Vega-Lite against 3.65 s with plotly
(`bench/monitor_ui.py --compare-charts`, load average 3). Vega renders text as text: batch names and kinds are
never read as markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import altair as alt
import pandas as pd

from core.monitor import History

ALL = "flagged: all"
SHIFT = "shift p-value"
_RED, _ORANGE, _GREY = "#E45756", "#F58518", "#888888"
_SMALLEST_P = 1e-12  # alerts beyond it are drawn at it (a log axis has no 0)


def timeline_frames(history: History, kinds: Sequence[str], batch_level: float,
                    family: int) -> dict[str, pd.DataFrame]:
    """The long-format tables the timeline draws: flagged shares, shift p-values, level lines, alerts, model
    changes. One row per mark, so tests can check what reaches the chart without a browser."""
    shares, p_values = [], []
    for p in history.batches:
        name = f"{p.batch} (model v{p.model_version})" if p.model_version else p.batch
        for kind in kinds:
            value = p.kinds.get(kind, {}).get("flagged_share")
            shares.append({"time": p.start, "batch": name, "series": f"flagged: {kind}", "value": value})
        shares.append({"time": p.start, "batch": name, "series": ALL, "value": p.flagged_share})
        if p.shift_p_value is not None:
            p_values.append({"time": p.start, "batch": name, "series": SHIFT,
                             "p": max(float(p.shift_p_value), _SMALLEST_P)})
    when = {p.batch: p.start for p in history.batches}
    alerts = [{"time": when[a.batch], "p": max(float(a.p_value), _SMALLEST_P),
               "alert": f"{a.batch}: {a.kind} ({a.rule} rule)"} for a in history.alerts if a.batch in when]
    levels = [{"p": batch_level / family, "name": f"first Holm step {batch_level / family:.2g}", "above": False},
              {"p": batch_level, "name": f"per-batch level {batch_level:.2g}", "above": True}]
    changes = [{"time": point.start,
                "label": f"v{point.model_version}" + (f" {c.event} {c.at:%Y-%m-%d %H:%M}" if c else "")}
               for point, c in history.version_changes()]
    return {"shares": pd.DataFrame(shares, columns=["time", "batch", "series", "value"]),
            "p_values": pd.DataFrame(p_values, columns=["time", "batch", "series", "p"]),
            "levels": pd.DataFrame(levels), "alerts": pd.DataFrame(alerts, columns=["time", "p", "alert"]),
            "changes": pd.DataFrame(changes, columns=["time", "label"])}


def timeline_chart(history: History, kinds: Sequence[str], batch_level: float, family: int) -> alt.LayerChart:
    """Flagged share per kind and overall (left axis), the shift p-value, the alert levels and the alerts (right,
    log axis), and a dotted line where the scoring model changes, labelled with its promotion."""
    data = timeline_frames(history, kinds, batch_level, family)
    x = alt.X("time:T", title="batch time (review dates, else ingest time)")
    lowest = min([_SMALLEST_P if data["p_values"].empty else float(data["p_values"]["p"].min()),
                  float(data["levels"]["p"].min()) / 10,
                  *([] if data["alerts"].empty else [float(data["alerts"]["p"].min())])])
    log_p = alt.Scale(type="log", domain=[10 ** math.floor(math.log10(max(lowest, _SMALLEST_P))), 1.0])
    y_p = alt.Y("p:Q", scale=log_p, title="p-value (log)", axis=alt.Axis(orient="right", format="~e", grid=False))

    series = [f"flagged: {k}" for k in kinds] + [ALL, SHIFT]
    colours = ["#4C78A8", "#54A24B", "#B279A2", "#72B7B2", "#9D755D", "#EECA3B"][: len(kinds)] + ["#333333", _ORANGE]
    colour = alt.Color("series:N", scale=alt.Scale(domain=series, range=colours), title=None,
                       legend=alt.Legend(orient="bottom", columns=4))
    shares = alt.Chart(data["shares"]).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title="flagged share", axis=alt.Axis(format="%")), color=colour,
        strokeWidth=alt.condition(alt.datum.series == ALL, alt.value(3), alt.value(1.5)),
        tooltip=["batch:N", "series:N", alt.Tooltip("value:Q", format=".1%", title="flagged")])
    changes = alt.Chart(data["changes"]).mark_rule(strokeDash=[2, 3], color=_GREY).encode(x=x)
    change_labels = alt.Chart(data["changes"]).mark_text(align="left", dx=3, y=6, color=_GREY, fontSize=11).encode(
        x=x, text="label:N")
    left = alt.layer(shares, changes, change_labels)

    shift = alt.Chart(data["p_values"]).mark_line(point=True, strokeDash=[3, 3]).encode(
        x=x, y=y_p, color=colour, tooltip=["batch:N", alt.Tooltip("p:Q", format=".2g", title="shift p")])
    lines = alt.Chart(data["levels"]).mark_rule(strokeDash=[6, 4], color=_RED).encode(y=y_p)
    # Labels at the left edge, one above its line and one below: the two levels sit close on a log axis.
    above = alt.Chart(data["levels"][data["levels"]["above"]]).mark_text(
        align="left", baseline="bottom", x=4, dy=-2, color=_RED, fontSize=11).encode(y=y_p, text="name:N")
    below = alt.Chart(data["levels"][~data["levels"]["above"]]).mark_text(
        align="left", baseline="top", x=4, dy=2, color=_RED, fontSize=11).encode(y=y_p, text="name:N")
    alerts = alt.Chart(data["alerts"]).mark_point(shape="cross", size=160, filled=True, color=_RED).encode(
        x=x, y=y_p, tooltip=["alert:N", alt.Tooltip("p:Q", format=".2g")])
    right = alt.layer(shift, lines, above, below, alerts)
    return alt.layer(left, right).resolve_scale(y="independent").properties(height=430)
