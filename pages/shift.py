"""Shift: is the current batch different from the reference, how much, where, and is it statistically real?"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.report import report_to_csv, report_to_html, report_to_json, scores_frame
from core.shift.registry import STATISTICS
from workbench import cached
from workbench.ui import chart_text, count_progress, errors_shown, fmt_p, plain

REFERENCE_COLOR, CURRENT_COLOR = "#4C78A8", "#F58518"

st.title("Shift")

with errors_shown():
    ws = cached.workspace()
    infos = cached.batches()
    if len(infos) < 1:
        st.info("A shift check needs two stored batches: upload them on **Data** (or run `workbench demo`).",
                icon="📈")
        st.stop()
    names = [i.name for i in infos]
    saved = ws.state()
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1], vertical_alignment="bottom")
    reference = c1.selectbox("Reference", names, index=names.index(saved.reference) if saved.reference in names else 0,
                             key="shift.reference")
    current = c2.selectbox("Current", names,
                           index=names.index(saved.current) if saved.current in names else len(names) - 1,
                           key="shift.current")
    alpha = c3.select_slider("alpha", [0.01, 0.05, 0.1], value=0.05, key="shift.alpha")
    n_permutations = c4.select_slider("permutations", [200, 500, 1000, 2000], value=1000, key="shift.permutations",
                                      help="More permutations give finer p-values and take longer.")
    if reference == current:
        st.warning("Choose two different batches.")
        st.stop()

    reports = cached.shift_reports()
    key = cached.shift_key(reference, current)
    if st.button("Run shift check", type="primary"):
        with st.status(f"Comparing `{current}` with `{reference}`…", expanded=True) as status:
            bar = st.progress(0.0, text="embedding and testing")
            reports[key] = ws.compare(reference=reference, current=current, alpha=alpha,
                                      n_permutations=n_permutations, progress=count_progress(bar, "tests"))
            status.update(label="Shift check done", state="complete", expanded=False)

    report = reports.get(key)
    if report is None:
        last = saved.last_shift
        if last and last.get("reference") == reference and last.get("current") == current:
            st.caption(f"Last verdict stored for this pair ({last.get('created')}): "
                       f"{'shift' if last.get('drift') else 'no shift'}, {fmt_p(float(last.get('p_value', 1)))}. "
                       "Run the check to see the details.")
        st.stop()

    # Verdict --------------------------------------------------------------------------------------------
    box = st.error if report.drift else st.success
    box(f"**{'Shift detected' if report.drift else 'No significant shift'}** — combined {fmt_p(report.p_value)} "
        f"(alpha {report.alpha:g}; {report.n_reference:,} reference vs {report.n_current:,} current reviews)",
        icon="📈" if report.drift else "✅")
    st.markdown(plain(report.explanation))  # names topic clusters by their terms, words from the reviews
    st.caption(f"Computed {report.created:%Y-%m-%d %H:%M} UTC with {report.n_permutations} permutations, "
               f"{report.correction} correction for the per-feature tests.")

    d1, d2, d3 = st.columns(3)
    d1.download_button("Report (HTML)", report_to_html(report, title=f"Shift: {current} vs {reference}").encode(),
                       file_name=f"shift-{current}-vs-{reference}.html", mime="text/html", width="stretch")
    d2.download_button("Report (JSON)", report_to_json(report).encode(), file_name=f"shift-{current}-vs-{reference}.json",
                       mime="application/json", width="stretch")
    d3.download_button("Per-review scores (CSV)", report_to_csv(report).encode(),
                       file_name=f"shift-{current}-vs-{reference}-scores.csv", mime="text/csv", width="stretch")

    # p-values reach 1e-220 against a large reference: without a format the grid prints them as 0.000...0.
    TEST_COLUMNS = {  # noqa: N806
        "statistic": st.column_config.NumberColumn(format="%.4g"),
        "p-value": st.column_config.NumberColumn(format="%.3g"),
        "adjusted p": st.column_config.NumberColumn(format="%.3g", help="Holm/BH-adjusted across the feature tests"),
        "effect": st.column_config.NumberColumn(format="%.4g"),
    }

    def tests_table(tests: list) -> pd.DataFrame:
        table = pd.DataFrame([
            {"feature": t.feature, "test": STATISTICS[t.name].title if t.name in STATISTICS else t.name,
             "statistic": t.statistic, "p-value": t.p_value,
             "adjusted p": (t.detail or {}).get("p_value_adjusted"), "effect": t.effect_size,
             "effect measure": t.effect_name, "shift": t.drift}
            for t in tests
        ])
        # Only the per-feature tests are adjusted for multiplicity; the embedding tests feed the verdict.
        return table.dropna(axis=1, how="all")

    tab_emb, tab_feat, tab_clusters, tab_reviews = st.tabs(
        ["Embedding tests", f"Features ({len(report.drifted_features)} shifted)", "Clusters", "Per-review scores"]
    )
    with tab_emb:
        st.dataframe(tests_table([t for t in report.tests if t.feature == "embedding"]), hide_index=True,
                     width="stretch", column_config=TEST_COLUMNS)
        st.caption(f"The verdict combines {', '.join(report.drivers)} (Bonferroni). "
                   f"Sample sizes: {', '.join(f'{k} {v:,}' for k, v in report.sample_sizes.items())}.")
    with tab_feat:
        feature_tests = [t for t in report.tests if t.feature != "embedding"]
        if feature_tests:
            st.dataframe(tests_table(feature_tests), hide_index=True, width="stretch", column_config=TEST_COLUMNS)
        for feature, reason in report.skipped_features.items():
            st.caption(f"{plain(feature)} not tested: {plain(reason)}")
        if report.distributions:
            drifted = set(report.drifted_features)
            ordered = sorted(report.distributions, key=lambda d: (d.feature not in drifted, d.feature))
            feature = st.selectbox("Distribution of", [d.feature for d in ordered], key="shift.feature",
                                   format_func=lambda f: f + (" (shifted)" if f in drifted else ""))
            dist = next(d for d in ordered if d.feature == feature)
            ref_total, cur_total = max(sum(dist.reference), 1), max(sum(dist.current), 1)
            bins = [chart_text(b) for b in dist.bins]  # categories come from the review files
            fig = go.Figure()
            fig.add_bar(x=bins, y=[v / ref_total for v in dist.reference], name=f"reference ({reference})",
                        marker_color=REFERENCE_COLOR, opacity=0.75)
            fig.add_bar(x=bins, y=[v / cur_total for v in dist.current], name=f"current ({current})",
                        marker_color=CURRENT_COLOR, opacity=0.75)
            fig.update_layout(barmode="overlay" if dist.kind == "numeric" else "group", height=360,
                              template="plotly_white", margin={"l": 40, "r": 10, "t": 20, "b": 40},
                              legend={"orientation": "h", "y": 1.1}, yaxis_tickformat=".0%")
            st.plotly_chart(fig, key="shift.distribution")
    with tab_clusters:
        if not report.clusters:
            st.write("No clusters were computed.")
        for c in report.clusters:
            title = f"Cluster {c.id} · {c.status} · {c.share_reference:.1%} → {c.share_current:.1%} · " + plain(
                ", ".join(c.top_terms[:5]))
            with st.expander(title, expanded=c.status in ("new", "grew") and c.p_value < report.alpha):
                st.caption(f"{c.size_reference:,} reference and {c.size_current:,} current reviews · "
                           f"change {c.change:+.1%} · {fmt_p(c.p_value)}")
                for example in c.examples:
                    st.markdown(f"- {plain(example)}")
    with tab_reviews:
        st.caption("One row per current review, most novel first: a small shift p-value means the reference "
                   "has few reviews like it.")
        st.dataframe(scores_frame(report).head(1000), hide_index=True, width="stretch")
