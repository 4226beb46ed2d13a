"""Label: the most unusual unlabelled reviews of the current batch, one at a time; retrain with the labels."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.defaults import TrainParameters
from core.detect.kinds import KIND_LABELS, kinds_in
from core.detect.supervised import score_metrics
from core.label_queue import build_label_queue
from core.labels import QUEUE_ORDERS, as_binary, as_export
from core.spreadsheet import to_safe_csv
from workbench import cached, state
from workbench.ui import errors_shown, flash, plain, stage_progress

st.title("Label")
flash(state.LABEL_FLASH)

with errors_shown():
    ws = cached.workspace()
    champion = cached.champion()
    infos = cached.batches()
    if not champion or not infos:
        st.info("Labelling needs a stored batch and a trained model: see **Data** and **Train** "
                "(or run `workbench demo`).", icon="🏷️")
        st.stop()
    names = [i.name for i in infos]
    saved = ws.state().current
    batch = st.selectbox("Batch to label", names, index=names.index(saved) if saved in names else len(names) - 1,
                         key="label.batch")
    data = cached.map_frame([batch], champion.version)
    latest = cached.labels()
    label_of = dict(zip(latest["review_id"].astype(str), latest["label"], strict=True))
    ids = data["review_id"].astype(str)
    labelled = ids.isin(label_of.keys())
    skipped = state.SKIPPED.get()
    o1, o2 = st.columns([2, 1])
    order = o1.radio(
        "Order", list(QUEUE_ORDERS), horizontal=True, key="label.order",
        help="Most unusual first finds outliers fastest. A random sample measures the model without bias "
             "(the metrics below) and is what lets a label-aware model take over from the ensemble on retraining.",
    )
    kinds = kinds_in(data.columns)
    hunted = o2.selectbox("Most unusual by", ["all kinds", *kinds], key="label.kind",
                          disabled=order != QUEUE_ORDERS[0],
                          format_func=lambda k: "the headline (all kinds)" if k == "all kinds" else KIND_LABELS[k],
                          help="Hunt one kind of anomaly at a time: the queue follows that kind's own calibrated "
                               "score instead of the headline.")
    def give_label(review_id: str, label: str, note: str | None, batch: str, verb: str) -> None:
        """Store a label, remember it for the correction button, say so after the rerun."""
        ws.labels().add(review_id, label, note=note, batch=batch)
        state.LAST_LABEL.set((review_id, label, note, batch))
        state.LABEL_FLASH.set(f"{plain(review_id)} {verb} {label}")
        st.rerun()

    waiting = build_label_queue(data, labelled=label_of.keys(), skipped=skipped, order=order,
                                kind=None if hunted == "all kinds" or order != QUEUE_ORDERS[0] else hunted)
    queue = waiting.reviews

    c1, c2, c3 = st.columns(3)
    c1.metric("Labelled in this batch", f"{waiting.labelled} / {waiting.total}")
    c2.metric("Flagged by the model", waiting.flagged)
    c3.metric("Left in the queue", len(queue))
    st.progress(waiting.flagged_done,
                text=f"{waiting.flagged_labelled} of {waiting.flagged} flagged reviews labelled")

    if queue.empty:
        st.success("Nothing left to label in this batch.", icon="🎉")
    else:
        row = queue.iloc[0]
        review_id = str(row["review_id"])
        with st.container(border=True):
            st.caption(f"score {row['score']:.2f} · {'flagged' if row['is_outlier'] else 'not flagged'} · "
                       f"review {plain(review_id)}"
                       + "".join(f" · {c}: {plain(row[c])}" for c in ("rating", "category")
                                 if c in row and not pd.isna(row[c])))
            if isinstance(row.get("title"), str) and row["title"].strip():
                st.markdown(f"**{plain(row['title'])}**")
            st.markdown(plain(row.get("text", "")))
            st.caption(f"Why: {plain(row['reason'])}")
            note = st.text_input("Note (optional)", key=f"label.note.{review_id}")
            b1, b2, b3 = st.columns(3)
            for column, label, kind in ((b1, "outlier", "primary"), (b2, "normal", "secondary")):
                if column.button(label.capitalize(), type=kind, width="stretch", key=f"label.{label}"):
                    give_label(review_id, label, note or None, batch, "labelled")
            if b3.button("Skip", width="stretch", key="label.skip"):
                skipped.add(review_id)
                st.rerun()

    last = state.LAST_LABEL.get()
    if last:  # a mis-click is corrected by a new label: the store keeps every label it was given
        last_id, last_label, last_note, last_batch = last
        other = "normal" if last_label == "outlier" else "outlier"
        c_last, c_fix = st.columns([3, 1], vertical_alignment="center")
        c_last.caption(f"Last label from this tab: {plain(last_id)} → {last_label}")
        if c_fix.button(f"Change it to {other}", key="label.correct", width="stretch"):
            give_label(last_id, other, last_note, last_batch, "relabelled")

    # Metrics of the current model on what has been labelled ---------------------------------------------
    st.subheader("How the champion ranks the labelled reviews")
    mine = data[labelled]
    if mine.empty:
        st.write("No labelled review in this batch yet.")
    else:
        y = as_binary(mine["review_id"].astype(str).map(label_of))
        metrics = score_metrics(mine["score"].to_numpy(dtype=float), y)
        m1, m2, m3 = st.columns(3)
        m1.metric("AUROC", "n/a" if metrics.auroc is None else f"{metrics.auroc:.3f}")
        m2.metric("Average precision", "n/a" if metrics.average_precision is None else f"{metrics.average_precision:.3f}")
        m3.metric(f"Precision@{metrics.k}", "n/a" if metrics.precision_at_k is None else f"{metrics.precision_at_k:.3f}")
        st.caption(f"{int(y.sum())} outlier and {int((y == 0).sum())} normal labels"
                   + ("" if metrics.auroc is not None else " · AUROC needs both kinds of label"))
        with st.expander("Labels of this batch"):
            st.dataframe(latest[latest["review_id"].astype(str).isin(set(ids))], hide_index=True, width="stretch")
    if not latest.empty:  # the labels this page already read, not a second query on every rerun
        st.download_button(
            f"Download labels (CSV, {len(latest)} review{'s' if len(latest) != 1 else ''})",
            to_safe_csv(as_export(latest)).encode(), file_name="labels.csv", mime="text/csv", key="label.download",
            help="The latest label of every review, in the layout `workbench label import` reads back.",
        )
    # Open while a file is chosen: the rerun that follows an upload would otherwise fold it shut.
    with st.expander("Import labels (CSV)", expanded=st.session_state.get("label.import") is not None):
        upload = st.file_uploader("CSV with columns review_id,label (outlier or normal); optional note, author, batch",
                                  type=["csv"], key="label.import")
        if st.button("Import labels", disabled=upload is None, key="label.import.go") and upload is not None:
            imported = ws.import_labels(upload.getvalue(), filename=upload.name)
            state.LABEL_FLASH.set(imported.summary(plain(upload.name)))
            st.rerun()

    st.subheader("Retrain with the labels")
    bundle = cached.model(champion.version)
    reference = bundle.meta.get("reference_batch") or ws.state().reference
    params = TrainParameters.of_model(bundle.meta, use_labels=True)
    st.caption(f"Same reference (`{reference}`), detectors ({', '.join(params.detectors)}) and settings as champion "
               f"v{champion.version}; all {len(latest)} stored labels are used. The new version becomes the challenger.")
    if st.button("Retrain with labels", disabled=latest.empty or not reference):
        with st.status("Retraining…", expanded=True) as status:
            bar = st.progress(0.0, text="starting")
            outcome = ws.train(reference, **params.as_kwargs(), progress=stage_progress(bar))
            status.update(label=f"v{outcome.record.version} trained in {outcome.seconds:.0f} s", state="complete",
                          expanded=False)
        cached.refresh_registry()
        state.LABEL_FLASH.set(f"v{outcome.record.version} registered as challenger"
                              + (f" ({outcome.label_note})" if outcome.label_note else "")
                              + "; compare and promote it on **Models**")
        st.rerun()
