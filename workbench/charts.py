"""Vega-Lite charts of the workbench.

The Monitor timeline is drawn with Vega-Lite rather than plotly: the browser parses Streamlit's Vega bundle
(about 0.8 MB) much faster than its plotly bundle (4.6 MB). In headless Chromium on the 2-core machine a bare page
with the same 52-week chart drew in a median 2.41 s with Vega-Lite against 3.65 s with plotly
(`bench/monitor_ui.py --compare-charts`, load average 3). Vega renders text as text: batch names and kinds are
never read as markup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pandas as pd

from core.monitor import History

ALL = "flagged: all"
SHIFT = "shift p-value"
_RED, _ORANGE, _GREY = "#E45756", "#F58518", "#888888"
_SMALLEST_P = 1e-12  # alerts beyond it are drawn at it (a log axis has no 0)
_SINGLE_DAY_PAD = timedelta(days=3)  # either side of a history that spans less than a day
VEGA_LITE_SCHEMA = "https://vega.github.io/schema/vega-lite/v6.4.1.json"  # the version Streamlit draws


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


def _values(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON values; times as ISO strings, which Vega-Lite parses for a temporal field."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].map(lambda t: t.isoformat())
    return out.astype(object).where(out.notna(), None).to_dict("records")


def _layer(frame: pd.DataFrame, mark: dict[str, Any], encoding: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"values": _values(frame)}, "mark": mark, "encoding": encoding}


def timeline_chart(history: History, kinds: Sequence[str], batch_level: float, family: int) -> dict[str, Any]:
    """Flagged share per kind and overall (left axis), the shift p-value, the alert levels and the alerts (right,
    log axis), and a dotted line where the scoring model changes, labelled with its promotion.

    A Vega-Lite spec as a plain dict (`st.vega_lite_chart`): building and validating the same chart as Altair
    objects took about 0.4 s of every page run; tests validate this spec against Vega-Lite's schema instead.
    """
    data = timeline_frames(history, kinds, batch_level, family)
    x: dict[str, Any] = {"field": "time", "type": "temporal", "title": "batch time (review dates, else ingest time)"}
    starts = [p.start for p in history.batches]
    if starts and max(starts) - min(starts) < timedelta(days=1):
        # One batch (or several from the same day) would get an axis a few seconds wide, ticked in seconds.
        x["scale"] = {"domain": [(min(starts) - _SINGLE_DAY_PAD).isoformat(), (max(starts) + _SINGLE_DAY_PAD).isoformat()]}
    lowest = min([_SMALLEST_P if data["p_values"].empty else float(data["p_values"]["p"].min()),
                  float(data["levels"]["p"].min()) / 10,
                  *([] if data["alerts"].empty else [float(data["alerts"]["p"].min())])])
    log_p = {"type": "log", "domain": [10 ** math.floor(math.log10(max(lowest, _SMALLEST_P))), 1.0]}
    y_p = {"field": "p", "type": "quantitative", "scale": log_p, "title": "p-value (log)",
           "axis": {"orient": "right", "format": "~e", "grid": False}}

    series = [f"flagged: {k}" for k in kinds] + [ALL, SHIFT]
    colours = ["#4C78A8", "#54A24B", "#B279A2", "#72B7B2", "#9D755D", "#EECA3B"][: len(kinds)] + ["#333333", _ORANGE]
    colour = {"field": "series", "type": "nominal", "title": None, "scale": {"domain": series, "range": colours},
              "legend": {"orient": "bottom", "columns": 4}}
    shares = _layer(data["shares"], {"type": "line", "point": True}, {
        "x": x, "y": {"field": "value", "type": "quantitative", "title": "flagged share", "axis": {"format": "%"}},
        "color": colour,
        "strokeWidth": {"condition": {"test": f"datum.series === {ALL!r}", "value": 3}, "value": 1.5},
        "tooltip": [{"field": "batch", "type": "nominal"}, {"field": "series", "type": "nominal"},
                    {"field": "value", "type": "quantitative", "format": ".1%", "title": "flagged"}]})
    changes = _layer(data["changes"], {"type": "rule", "strokeDash": [2, 3], "color": _GREY}, {"x": x})
    change_labels = _layer(data["changes"], {"type": "text", "align": "left", "dx": 3, "y": 6, "color": _GREY,
                                             "fontSize": 11}, {"x": x, "text": {"field": "label", "type": "nominal"}})
    left = {"layer": [shares, changes, change_labels]}

    shift = _layer(data["p_values"], {"type": "line", "point": True, "strokeDash": [3, 3]}, {
        "x": x, "y": y_p, "color": colour,
        "tooltip": [{"field": "batch", "type": "nominal"},
                    {"field": "p", "type": "quantitative", "format": ".2g", "title": "shift p"}]})
    levels = data["levels"]
    lines = _layer(levels, {"type": "rule", "strokeDash": [6, 4], "color": _RED}, {"y": y_p})
    # Labels at the left edge, one above its line and one below: the two levels sit close on a log axis.
    text = {"field": "name", "type": "nominal"}
    above = _layer(levels[levels["above"]], {"type": "text", "align": "left", "baseline": "bottom", "x": 4, "dy": -2,
                                             "color": _RED, "fontSize": 11}, {"y": y_p, "text": text})
    below = _layer(levels[~levels["above"]], {"type": "text", "align": "left", "baseline": "top", "x": 4, "dy": 2,
                                              "color": _RED, "fontSize": 11}, {"y": y_p, "text": text})
    alerts = _layer(data["alerts"], {"type": "point", "shape": "cross", "size": 160, "filled": True, "color": _RED},
                    {"x": x, "y": y_p, "tooltip": [{"field": "alert", "type": "nominal"},
                                                   {"field": "p", "type": "quantitative", "format": ".2g"}]})
    right = {"layer": [shift, lines, above, below, alerts]}
    return {"$schema": VEGA_LITE_SCHEMA, "height": 430, "layer": [left, right],
            "resolve": {"scale": {"y": "independent"}}}
