"""Monitor: every scored or compared stored batch on one timeline, with the alerts raised on them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from core.monitor import history_frame_rows, kinds_of
from core.spreadsheet import to_safe_csv
from workbench import cached
from workbench.charts import timeline_chart
from workbench.ui import errors_shown, plain

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
    st.vega_lite_chart(spec=timeline_chart(history, kinds, batch_level, family), key="monitor.timeline")

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
