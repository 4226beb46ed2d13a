"""Monitor: every scored or compared stored batch on one timeline, with the alerts raised on them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.monitor import history_frame_rows, kinds_of
from core.spreadsheet import to_safe_csv
from workbench import cached
from workbench.ui import chart_text, errors_shown, plain

HERE = Path(__file__).resolve().parent  # the pages folder: switch_page takes the registered page's path

st.title("Monitor")

with errors_shown():
    ws = cached.workspace()
    history = ws.monitor_history()
    if not history.batches:
        st.info("No batch recorded yet: every score or shift check of a stored batch (Explore, Shift, "
                "`workbench score BATCH`, the pipeline) adds one here.", icon="🛰️")
        st.stop()

    level = history.level
    sequential = ws.settings.alert_sequential
    batch_level = level / 2 if sequential else level
    kinds = kinds_of(history.batches)
    family = len(kinds) + 1  # every kind and the shift test
    st.caption(f"Alerts promise at most {level:g} false alarms per batch under no change: Holm across the "
               f"{family} tests of a batch at {batch_level:g}"
               + (f", and a sequential rule across batches at {level / 2:g}" if sequential else "")
               + " (docs/monitoring.md).")

    points = history.batches
    x = [p.start for p in points]
    labels = [chart_text(f"{p.batch} (model v{p.model_version})" if p.model_version else p.batch) for p in points]
    fig = go.Figure()
    for kind in kinds:
        fig.add_trace(go.Scatter(
            x=x, y=[p.kinds.get(kind, {}).get("flagged_share") for p in points], mode="lines+markers",
            name=f"flagged: {chart_text(kind)}", text=labels, hovertemplate="%{text}<br>%{y:.1%}<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=x, y=[p.flagged_share for p in points], mode="lines+markers", name="flagged: all",
        line={"width": 3, "color": "#333"}, text=labels, hovertemplate="%{text}<br>%{y:.1%}<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=x, y=[p.shift_p_value for p in points], mode="lines+markers", name="shift p-value", yaxis="y2",
        line={"dash": "dot", "color": "#F58518"}, text=labels, hovertemplate="%{text}<br>p = %{y:.2g}<extra></extra>"))
    # The two levels sit close on a log axis: their labels go to opposite ends so they do not overlap. The
    # labels are annotations of their own: on a log axis plotly places an annotation at 10 ** y (a line's label
    # from add_hline would sit near p = 1, far above its line).
    for threshold, name, side, below in ((batch_level / family, "first Holm step", 0.0, True),
                                         (batch_level, "per-batch level", 1.0, False)):
        fig.add_hline(y=threshold, yref="y2", line_dash="dash", line_color="#E45756")
        fig.add_annotation(x=side, xref="paper", y=math.log10(threshold), yref="y2", showarrow=False,
                           text=f"{name} {threshold:.2g}", xanchor="left" if side == 0.0 else "right",
                           yanchor="top" if below else "bottom", font={"color": "#E45756"})
    when = {p.batch: p.start for p in points}
    shown = [a for a in history.alerts if a.batch in when]
    if shown:
        fig.add_trace(go.Scatter(
            x=[when[a.batch] for a in shown], y=[max(a.p_value, 1e-12) for a in shown], mode="markers",
            yaxis="y2", name="alert", marker={"symbol": "x", "size": 14, "color": "#E45756"},
            text=[chart_text(f"{a.batch}: {a.kind} ({a.rule} rule)") for a in shown],
            hovertemplate="%{text}<br>p = %{y:.2g}<extra></extra>"))
    # Model versions: a dotted line at the first batch a new model scored, labelled with its promotion if recorded.
    for point, change in history.version_changes():
        fig.add_vline(x=point.start, line_dash="dot", line_color="#888")
        label = f"v{point.model_version}" + (f" {change.event} {change.at:%Y-%m-%d %H:%M}" if change else "")
        fig.add_annotation(x=point.start, y=1.0, yref="paper", showarrow=False, xanchor="left", yanchor="bottom",
                           text=chart_text(label), font={"color": "#666", "size": 11})
    fig.update_layout(
        height=460, margin={"t": 30, "b": 10}, hovermode="closest", legend={"orientation": "h", "y": -0.15},
        yaxis={"title": "flagged share", "tickformat": ".0%", "rangemode": "tozero"},
        yaxis2={"title": "p-value (log)", "type": "log", "overlaying": "y", "side": "right", "showgrid": False,
                "exponentformat": "power", "showexponent": "all", "dtick": 2},
        xaxis={"title": "batch time (review dates, else ingest time)"},
    )
    st.plotly_chart(fig, key="monitor.timeline")

    st.subheader(f"Alerts ({len(history.alerts)})")
    if history.alerts:
        for a in reversed(history.alerts[-10:]):
            sent = "delivered" if a.delivered else (f"not delivered: {a.last_error}" if a.attempts else "not sent")
            st.markdown(plain(f"{a.created:%Y-%m-%d %H:%M} — {a.batch}: {a.kind} ({a.rule} rule), "
                              f"p {a.p_value:.2g} ≤ {a.level:.2g}; {sent}"))
    else:
        st.write("No alert so far.")

    if history.champions:
        with st.expander(f"Champion changes ({len(history.champions)})"):
            st.dataframe(pd.DataFrame([c.as_json() for c in history.champions]), hide_index=True, width="stretch")

    st.subheader("Batches")
    table = pd.DataFrame(history_frame_rows(history))
    st.dataframe(table, hide_index=True, width="stretch")  # cells are shown as text, never interpreted
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button("History (CSV)", (to_safe_csv(table) or "").encode(), file_name="monitor.csv",
                       mime="text/csv", width="stretch")
    d2.download_button("History (JSON)", json.dumps(history.as_json(), indent=2).encode(), file_name="monitor.json",
                       mime="application/json", width="stretch")

    st.subheader("Open a batch")
    names = list(dict.fromkeys(p.batch for p in reversed(points)))
    stored = {i.name for i in cached.batches()}
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    choice = c1.selectbox("Batch", names, key="monitor.batch", format_func=str)
    if choice not in stored:
        st.caption(plain(f"{choice} is no longer stored."))
    else:
        if c2.button("Explore", width="stretch"):
            ws.update_state(current=choice)
            st.switch_page(str(HERE / "explore.py"))
        if c3.button("Shift", width="stretch"):
            ws.update_state(current=choice)
            st.switch_page(str(HERE / "shift.py"))
