"""Data: upload review files, read the validation report, keep an eye on quarantined rows, pick the batches."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.io.batches import batch_name_from
from core.io.schema import CANONICAL_COLUMNS
from core.spreadsheet import to_safe_csv
from workbench import cached, state
from workbench.ui import errors_shown, ingest_upload, plain

st.title("Data")

with errors_shown():
    ws = cached.workspace()

    # Upload -------------------------------------------------------------------------------------------
    st.subheader("Upload review files")
    st.caption(
        "CSV (comma, semicolon, tab), TSV, JSON, JSONL, Parquet (also .gz) and Excel .xlsx. Amazon, Yelp, Google "
        "Play and other common column names are recognised; only the review text is required. Rows that cannot "
        "be used are quarantined, never dropped silently."
    )
    files = st.file_uploader(
        "Review files", accept_multiple_files=True, key="data.uploader",
        type=["csv", "tsv", "tab", "txt", "json", "jsonl", "ndjson", "parquet", "pq", "xlsx", "gz"],
    )
    names: dict[str, str] = {}
    mappings: dict[str, str] = {}
    for f in files or []:
        left, right = st.columns(2)
        names[f.file_id] = left.text_input(
            f"Batch name for {f.name}", value=batch_name_from(f.name), key=f"data.name.{f.file_id}",
            help="Letters, digits, '.', '_' or '-'. A batch of the same name is replaced once the new one is stored.",
        )
        mappings[f.file_id] = right.text_input(
            f"Column mapping for {f.name} (optional)", key=f"data.map.{f.file_id}", placeholder="rating=Wertung, title=Betreff",
            help="FIELD=COLUMN pairs separated by commas, for columns that are not recognised by name. Fields: "
                 + ", ".join(CANONICAL_COLUMNS) + ". The validation report lists the columns not used.",
        )
    if st.button("Store uploaded files", type="primary", disabled=not files):
        outcomes = []
        with st.status("Reading and validating…", expanded=True) as status:
            for f in files or []:
                status.write(f"{plain(f.name)} → {plain(names[f.file_id])}")
                outcomes.append(ingest_upload(ws, f.getvalue(), f.name, names[f.file_id], mappings[f.file_id]))
            failed = sum(not o.ok for o in outcomes)
            status.update(label="Stored" if not failed else f"{failed} of {len(outcomes)} files refused",
                          state="complete" if not failed else "error", expanded=False)
        state.LAST_INGEST.set(outcomes)

    for outcome in state.LAST_INGEST.get():
        if not outcome.ok:
            st.error(f"**{plain(outcome.filename)}** was not stored: {plain(outcome.message)}", icon="⚠️")
            continue
        st.success(f"**{plain(outcome.filename)}** stored as `{outcome.batch}`: {plain(outcome.message)}", icon="✅")
        # Open when something needs a look: rows set aside, or a choice the loader made (rating scale, date order...)
        noted = any(line.startswith("note:") for line in outcome.report_lines)
        with st.expander(f"Validation report of {outcome.batch}", expanded=outcome.quarantined > 0 or noted):
            for line in outcome.report_lines:
                st.text(line)

    # Stored batches ----------------------------------------------------------------------------------
    st.subheader("Stored batches")
    infos = cached.batches()
    current_state = ws.state()
    if not infos:
        st.info("No batches stored yet: upload a file above, or run `workbench demo` in a terminal.", icon="📥")
    else:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "batch": i.name,
                        "rows": i.rows,
                        "quarantined": i.quarantined,
                        "duplicates": i.duplicates,
                        "from": (i.date_min or "")[:10],
                        "to": (i.date_max or "")[:10],
                        "categories": ", ".join(f"{k} ({v})" for k, v in list(i.categories.items())[:5]),
                        "missing columns": ", ".join(i.missing_columns),
                        "stored": i.created,
                        "source": i.source,
                    }
                    for i in infos
                ]
            ),
            hide_index=True,
            width="stretch",
        )

        names_list = [i.name for i in infos]

        def _index(name: str | None) -> int | None:
            return names_list.index(name) if name in names_list else None

        st.markdown("**Roles** — the reference is what normal looks like; the current batch is what you check.")
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        reference = c1.selectbox("Reference batch", names_list, index=_index(current_state.reference),
                                 key="data.reference", placeholder="choose…")
        current = c2.selectbox("Current batch", names_list, index=_index(current_state.current),
                               key="data.current", placeholder="choose…")
        if c3.button("Save roles", width="stretch"):
            ws.update_state(reference=reference, current=current)
            st.success(f"Reference: `{reference}` · current: `{current}`", icon="✅")

        # Inspect one batch ------------------------------------------------------------------------
        st.subheader("Inspect a batch")
        chosen = st.selectbox("Batch", names_list, index=len(names_list) - 1, key="data.inspect")
        info = next(i for i in infos if i.name == chosen)
        report = ws.batches.report(chosen)
        tab_preview, tab_report, tab_quarantine = st.tabs(
            ["Preview", "Validation report", f"Quarantined rows ({info.quarantined})"]
        )
        with tab_preview:
            st.dataframe(cached.frame(chosen).head(200), hide_index=True, width="stretch")
        with tab_report:
            for line in report.summary_lines():
                st.text(line)
            if info.categories:
                st.bar_chart(pd.Series(info.categories, name="reviews"), horizontal=True)
        with tab_quarantine:
            bad = cached.quarantined(chosen)
            if bad.empty:
                st.write("No row of this batch was quarantined.")
            else:
                st.dataframe(bad.head(500), hide_index=True, width="stretch")
                st.download_button(
                    "Download quarantined rows (CSV)", to_safe_csv(bad).encode(),
                    file_name=f"{chosen}-quarantined.csv", mime="text/csv",
                )
