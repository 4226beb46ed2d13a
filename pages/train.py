"""Train: fit the detectors on a reference batch, track the run in MLflow, register it, promote it."""

from __future__ import annotations

import streamlit as st

from core.defaults import DEFAULT_DETECTORS, DEFAULT_TITLES, DEFAULT_USE_LABELS
from core.detect.detectors import DETECTORS
from workbench import cached, state
from workbench.state import TrainSummary
from workbench.ui import errors_shown, flash, stage_progress

st.title("Train")
flash(state.MODELS_FLASH)

HELP = {
    "knn": "distance to the k-th nearest reference review (strong on sentence embeddings)",
    "lof": "local outlier factor (strong on sentence embeddings)",
    "mahalanobis": "distance under a shrunk covariance of the reference (strong on sentence embeddings)",
    "iforest": "isolation forest (weak on raw embeddings; cheap)",
    "autoencoder": "reconstruction error of a small autoencoder (slowest)",
}

with errors_shown():
    ws = cached.workspace()
    infos = cached.batches()
    if not infos:
        st.info("Nothing to train on yet: upload a reference batch on **Data** (or run `workbench demo`).", icon="📥")
        st.stop()
    names = [i.name for i in infos]
    saved = ws.state().reference
    reference = st.selectbox("Reference batch (what normal looks like)", names,
                             index=names.index(saved) if saved in names else 0, key="train.reference")
    detectors = st.multiselect("Detectors", list(DETECTORS), default=list(DEFAULT_DETECTORS), key="train.detectors",
                               format_func=lambda d: f"{d} — {HELP.get(d, '')}")
    contamination = st.slider("Expected share of outliers (sets the flag threshold)", 0.01, 0.25,
                              float(ws.settings.contamination), 0.01, key="train.contamination")
    n_labels = len(cached.labels())
    use_labels = st.checkbox(f"Learn from the {n_labels} stored labels", value=DEFAULT_USE_LABELS and n_labels > 0,
                             disabled=n_labels == 0, key="train.use_labels")

    titles = st.checkbox("Embed review titles with the text", value=DEFAULT_TITLES, key="train.titles",
                         help="Off: the model reads the review text alone. Choose that when your data comes "
                              "without titles. A batch without titles scored by a title + text model is scored by "
                              "the model's text-only twin instead, fitted on first use.")

    if st.button("Train and register", type="primary", disabled=not detectors):
        with st.status(f"Training on `{reference}`…", expanded=True) as status:
            bar = st.progress(0.0, text="starting")
            outcome = ws.train(reference, detectors=tuple(detectors), contamination=contamination,
                               use_labels=use_labels, progress=stage_progress(bar), titles=titles)
            status.update(label=f"Trained in {outcome.seconds:.0f} s", state="complete", expanded=False)
        record = outcome.record
        state.LAST_TRAIN.set(TrainSummary(run_id=record.run_id, version=record.version, aliases=tuple(record.aliases),
                                          seconds=outcome.seconds, reference=reference, label_note=outcome.label_note))
        cached.refresh_registry()

    summary = state.LAST_TRAIN.get()
    if summary:
        st.subheader("Last training")
        c1, c2, c3 = st.columns(3)
        c1.metric("Model version", f"v{summary.version}")
        c2.metric("Aliases", ", ".join(summary.aliases) or "—")
        c3.metric("Took", f"{summary.seconds:.0f} s")
        st.write(f"MLflow run `{summary.run_id}` · reference `{summary.reference}`")
        if summary.label_note:
            st.caption(summary.label_note)

    champion, challenger = cached.champion(), cached.challenger()
    st.subheader("Champion and challenger")
    st.write(
        f"Champion: **{'v' + champion.version if champion else 'none'}** · "
        f"challenger: **{'v' + challenger.version if challenger else 'none'}**"
    )
    if challenger and (not champion or challenger.version != champion.version):
        if st.button(f"Promote challenger v{challenger.version} to champion"):
            version = ws.registry().promote()
            cached.refresh_registry()
            state.MODELS_FLASH.set(f"v{version} is now the champion")
            st.rerun()
    elif champion:
        st.caption("The challenger is already the champion. Compare versions on **Models**.")
