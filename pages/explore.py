"""Explore: the batches on the model's 2-D map, coloured by score or anything else; select, inspect, label, export."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core.detect.kinds import KIND_LABELS, kind_column, kinds_in
from core.spreadsheet import to_safe_csv
from workbench import cached, state
from workbench.ui import chart_text, errors_shown, flash, review_detail

st.title("Explore")
flash(state.EXPLORE_FLASH)

PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC",
           "#EECA3B", "#2E7D32", "#6A1B9A"]
LABEL_COLORS = {"outlier": "#d62728", "normal": "#2ca02c", "unlabelled": "#c7c7c7"}
COLUMN_NAMES = {"score": "ensemble score", **{kind_column(k): f"kind: {label}" for k, label in KIND_LABELS.items()}}

with errors_shown():
    ws = cached.workspace()
    champion = cached.champion()
    infos = cached.batches()
    if not champion or not infos:
        st.info("Explore needs stored batches and a trained model: upload data on **Data** and train on **Train** "
                "(or run `workbench demo`).", icon="🗺️")
        st.stop()
    bundle = cached.model(champion.version)
    if bundle.reference_coords() is None:
        st.warning(f"Model v{champion.version} was trained without a 2-D map; retrain it on **Train**.")
        st.stop()

    names = [i.name for i in infos]
    saved = ws.state()
    default = [n for n in (saved.reference, saved.current) if n in names] or names[-1:]
    chosen = st.multiselect("Batches", names, default=default, key="explore.batches")
    if not chosen:
        st.info("Choose at least one batch.")
        st.stop()

    data = cached.map_frame(chosen, champion.version)
    for name in chosen:
        batch_scores = cached.scores(name, champion.version)
        if batch_scores.text_only_twin:
            st.info(f"`{name}` has no review titles and model v{champion.version} embeds title + text, so it was "
                    "scored by the model's text-only twin (same detectors, same reference, text alone) and placed "
                    "on the map by its text. If the file has titles under another name, re-upload it with the title "
                    "column mapped on **Data**.", icon="ℹ️")
        if batch_scores.missing:
            st.caption(f"`{name}` has no {', '.join(batch_scores.missing)}: the signals that need them are left out.")
    latest = cached.labels()
    label_of = dict(zip(latest["review_id"].astype(str), latest["label"], strict=True))
    data = data.assign(label=[label_of.get(r, "unlabelled") for r in data["review_id"].astype(str)])

    detectors = list(bundle.meta.get("detectors", []))
    signals = [s for s in bundle.meta.get("signals", []) if s in data.columns]
    kinds = kinds_in(data.columns)
    numeric = ["score", *(kind_column(k) for k in kinds), *detectors, *signals, "shift_p_value"]
    categorical = ["batch", "label", *(c for c in ("category", "rating") if c in data.columns)]
    c1, c2 = st.columns([1, 2])
    color_by = c1.selectbox("Colour by", numeric + categorical, key="explore.color",
                            format_func=lambda c: COLUMN_NAMES.get(c, c))
    low, high = c2.slider("Ensemble score between", 0.0, 1.0, (0.0, 1.0), 0.01, key="explore.score_range")
    view = data[(data["score"] >= low) & (data["score"] <= high)]
    st.caption(f"{len(view):,} of {len(data):,} reviews shown · model v{champion.version} · "
               f"{int(view['is_outlier'].sum()):,} flagged · draw a lasso or a box to select")

    # The figure -----------------------------------------------------------------------------------------
    hover = (view["text"].astype(str).str.slice(0, 90) if "text" in view.columns else view["review_id"].astype(str)
             ).map(chart_text)  # plotly reads tags in hover text: a review's <a href> would be a link
    rows = view.index.to_numpy()
    fig = go.Figure()
    if color_by in numeric:
        values = view[color_by].to_numpy(dtype=float)
        fig.add_trace(go.Scattergl(
            x=view["x"], y=view["y"], mode="markers", customdata=rows, hovertext=hover,
            hovertemplate="%{hovertext}<br>" + color_by + " %{marker.color:.2f}<extra></extra>",
            marker={"size": 5, "color": values, "colorscale": "Viridis_r" if color_by == "shift_p_value" else "YlOrRd",
                    "cmin": 0, "cmax": 1, "colorbar": {"title": color_by, "thickness": 12},
                    "line": {"width": 0}},
            showlegend=False,
        ))
    else:
        levels = view[color_by].astype(str)
        top = levels.value_counts().index[:11].tolist()
        levels = levels.where(levels.isin(top), "other")
        for i, level in enumerate(sorted(levels.unique(), key=lambda v: (v == "other", v))):
            mask = (levels == level).to_numpy()
            fig.add_trace(go.Scattergl(
                x=view["x"].to_numpy()[mask], y=view["y"].to_numpy()[mask], mode="markers", name=level,
                customdata=rows[mask], hovertext=hover.to_numpy()[mask], hovertemplate="%{hovertext}<extra></extra>",
                marker={"size": 5, "color": LABEL_COLORS.get(level, PALETTE[i % len(PALETTE)]), "line": {"width": 0}},
            ))
    fig.update_layout(height=560, margin={"l": 10, "r": 10, "t": 10, "b": 10}, dragmode="lasso",
                      template="plotly_white", legend={"orientation": "h", "y": -0.05}, uirevision="explore")
    fig.update_xaxes(showticklabels=False, title=None)
    fig.update_yaxes(showticklabels=False, title=None)
    event = st.plotly_chart(fig, on_select="rerun", selection_mode=("lasso", "box"), key="explore.map",
                            config={"displaylogo": False})

    # Selection ------------------------------------------------------------------------------------------
    picked: list[int] = []
    selection = getattr(event, "selection", None) or {}
    for point in selection.get("points", []) if isinstance(selection, dict) else []:
        value = point.get("customdata")
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            picked.append(int(value))
    rank_by = st.selectbox("Rank the list by", ["score", *(kind_column(k) for k in kinds)], key="explore.rank_by",
                           format_func=lambda c: COLUMN_NAMES.get(c, c),
                           help="The headline ranks every kind of anomaly together; a kind's own calibrated score "
                                "(share of reference reviews less unusual in that respect) ranks that kind alone.")
    if picked:
        listed = data.loc[[r for r in dict.fromkeys(picked) if r in data.index]]
        listed = listed.sort_values(rank_by, ascending=False, na_position="last")
        st.subheader(f"Selected reviews ({len(listed):,})")
    else:
        listed = view.sort_values(rank_by, ascending=False, na_position="last").head(50)
        st.subheader("Most unusual reviews in view" + ("" if rank_by == "score" else f": {COLUMN_NAMES[rank_by]}"))
        st.caption("Nothing selected on the map: listing the 50 highest-ranked reviews in view instead.")

    columns = [c for c in ("batch", "review_id", "score", *([rank_by] if rank_by != "score" else []), "is_outlier",
                           "label", "reason", "rating", "category", "text") if c in listed.columns]
    bars = {c: st.column_config.ProgressColumn(COLUMN_NAMES.get(c, c), min_value=0.0, max_value=1.0, format="%.2f")
            for c in ("score", rank_by)}
    st.dataframe(listed[columns], hide_index=True, width="stretch", height=300, column_config=bars)

    c1, c2, c3, c4 = st.columns([1, 2, 1, 1], vertical_alignment="bottom")
    bulk_label = c1.radio("Label as", ["outlier", "normal"], horizontal=True, key="explore.bulk_label")
    bulk_note = c2.text_input("Note (optional)", key="explore.bulk_note")
    if c3.button(f"Label {len(listed)} listed", type="primary", disabled=listed.empty, width="stretch"):
        stored = ws.labels().add_many(
            [{"review_id": r, "label": bulk_label, "note": bulk_note or None, "batch": b}
             for r, b in zip(listed["review_id"].astype(str), listed["batch"], strict=True)]
        )
        state.EXPLORE_FLASH.set(f"{stored} reviews labelled {bulk_label}")
        st.rerun()
    c4.download_button("Download CSV", to_safe_csv(listed.drop(columns=["pos"])).encode(),
                       file_name="selected-reviews.csv", mime="text/csv", width="stretch", disabled=listed.empty)

    # Detail -----------------------------------------------------------------------------------------------
    if not listed.empty:
        st.subheader("Review detail")
        options = listed.index.tolist()[:500]
        row = st.selectbox(
            "Review", options, key="explore.detail",
            format_func=lambda r: f"{data.at[r, 'score']:.2f} · {data.at[r, 'batch']} · "
                                  f"{str(data.at[r, 'text'])[:80] if 'text' in data.columns else data.at[r, 'review_id']}",
        )
        if row is not None:
            scored = cached.scores(str(data.at[row, "batch"]), champion.version)
            review_detail(scored.result.reasons(int(data.at[row, "pos"])), data.loc[row])
