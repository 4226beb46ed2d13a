"""Models: every training run and registered version side by side; promote or roll back the champion."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench import cached, state
from workbench.ui import errors_shown, flash

st.title("Models")
flash(state.MODELS_FLASH)

with errors_shown():
    ws = cached.workspace()
    versions = cached.versions()
    if not versions:
        st.info("No model registered yet: train one on **Train** (or run `workbench demo`).", icon="📦")
        st.stop()

    st.subheader("Registered versions")
    rows = []
    for v in versions:
        row = {"version": v.version, "aliases": ", ".join(v.aliases), "created": v.created,
               "reference": v.tags.get("workbench.reference_batch", ""), "run": v.run_id}
        row.update({k: v.metrics[k] for k in sorted(v.metrics) if not k.startswith("fit_seconds")})
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    choice = c1.selectbox("Version", [v.version for v in versions], key="models.version",
                          format_func=lambda x: f"v{x} ({', '.join(next(v.aliases for v in versions if v.version == x)) or 'no alias'})")
    if c2.button("Promote to champion", type="primary", width="stretch"):
        promoted = ws.registry().promote(choice)
        cached.refresh_registry()
        state.MODELS_FLASH.set(f"v{promoted} is now the champion")
        st.rerun()
    if c3.button("Roll back champion", width="stretch"):
        previous = ws.registry().rollback()
        cached.refresh_registry()
        state.MODELS_FLASH.set(f"rolled back: v{previous} is the champion again")
        st.rerun()

    st.subheader("Training runs (MLflow)")
    runs = cached.runs()
    if runs.empty:
        st.write("No runs tracked yet.")
    else:
        keep = ["run_id", "tags.mlflow.runName", "start_time", "status", "params.reference_batch", "params.detectors",
                "params.contamination"]
        metric_cols = sorted(c for c in runs.columns if c.startswith("metrics.") and "fit_seconds" not in c)
        shown = runs[[c for c in keep if c in runs.columns] + metric_cols]
        st.dataframe(shown.rename(columns=lambda c: c.split(".", 1)[-1]), hide_index=True, width="stretch")
        st.caption(f"Tracking store: `{ws.registry().uri}`")
