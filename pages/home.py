"""Home: what is loaded, which model serves, the last shift verdict, and what to do next."""

from __future__ import annotations

import streamlit as st

from workbench import cached
from workbench.ui import errors_shown, fmt_p

st.title("Review Outlier & Shift Workbench")
st.caption("Find reviews that do not belong, and measure how a new batch differs from the reference.")

with errors_shown():
    ws = cached.workspace()
    state = ws.state()
    batches = cached.batches()
    champion = cached.champion()

    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Stored batches", len(batches))
    c2.metric("Reference", state.reference or "—")
    c3.metric("Current", state.current or "—")
    c4.metric("Champion model", f"v{champion.version}" if champion else "none")
    st.caption(f"Workspace: `{ws.describe_storage()}`")

    if not batches:
        st.info(
            "**The workbench is empty.** Upload review files on the **Data** page "
            "(CSV, TSV, JSON, JSONL, Parquet, also .gz), or load demo data and a first model from a terminal "
            "with `workbench demo`.",
            icon="👋",
        )
    else:
        st.subheader("Loaded batches")
        st.dataframe(
            [
                {"batch": b.name, "rows": b.rows, "quarantined": b.quarantined,
                 "from": (b.date_min or "")[:10], "to": (b.date_max or "")[:10],
                 "role": " / ".join(r for r, n in (("reference", state.reference), ("current", state.current))
                                    if n == b.name)}
                for b in batches
            ],
            hide_index=True,
            width="stretch",
        )

    st.subheader("Model")
    if champion:
        trained_on = champion.tags.get("workbench.reference_batch") or ""
        st.write(
            f"Champion **v{champion.version}** registered {champion.created}"
            + (f", run `{champion.run_id}`" if champion.run_id else "")
            + (f", aliases: {', '.join(champion.aliases)}" if champion.aliases else "")
            + (f", trained on {trained_on}" if trained_on else "")
        )
    else:
        st.write("No model yet.")

    st.subheader("Last shift check")
    last = state.last_shift
    if last:
        verdict = "shift detected" if last.get("drift") else "no significant shift"
        box = st.warning if last.get("drift") else st.success
        box(
            f"**{verdict}**: `{last.get('current')}` against `{last.get('reference')}`, "
            f"{fmt_p(float(last.get('p_value', 1.0)))} ({last.get('created', '')})"
        )
    else:
        st.write("No shift report yet.")

    st.subheader("Next steps")
    steps = []
    if not batches:
        steps.append("Upload a reference batch (reviews you consider normal) and a current batch on **Data**.")
    elif not state.reference:
        steps.append("Mark a reference batch on **Data**.")
    if batches and not champion:
        steps.append("Train a first model on the reference batch on **Train**.")
    if champion:
        steps.append("Look at the most unusual reviews on **Explore** and label them on **Label**.")
    if batches and state.current and not last:
        steps.append("Compare the current batch with the reference on **Shift**.")
    if champion:
        steps.append("Follow every scored batch and its alerts over time on **Monitor**: a batch joins the timeline "
                     "when it is scored (on **Explore**, by `workbench score` or by the pipeline) or shift-checked.")
    if champion and len(cached.versions()) > 1:
        steps.append("Compare model versions and promote or roll back on **Models**.")
    for step in steps:
        st.markdown(f"- {step}")
