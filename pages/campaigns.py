"""Campaigns: products ranked by reviewer, product and timing evidence; burst windows; groups of accounts."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core.spreadsheet import to_safe_csv
from workbench import cached
from workbench.ui import errors_shown, plain

st.title("Campaigns")
st.caption("Who wrote each review, about which product and when, read against every stored batch: bursts of "
           "same-rated reviews a product's own rate does not explain, and accounts that review the same products "
           "together.")

with errors_shown():
    ws = cached.workspace()
    names = [b.name for b in cached.batches()]
    if not names:
        st.info("No batch stored yet: upload one on the Data page.", icon="📥")
        st.stop()
    current = ws.state().current
    batch = st.selectbox("Batch", names, index=names.index(current) if current in names else len(names) - 1)
    level = st.select_slider("False-alarm level of the burst test (per product)", [0.001, 0.005, 0.01, 0.05],
                             value=0.01)
    with st.spinner("Reading the review history…"):
        report = ws.campaigns(batch, level=level)
    st.markdown(plain(report.coverage.line()))

    c1, c2, c3 = st.columns(3)
    c1.metric("Products", len(report.products))
    c2.metric("Burst windows", len(report.windows))
    c3.metric("Groups of accounts", len(report.groups))

    if report.products:
        st.subheader("Products by campaign evidence")
        products = pd.DataFrame([{"product": p.product_id, "reviews": p.reviews, "campaign score": p.score,
                                  "burst windows": p.windows, "reviews a day (month around)": p.daily_rate}
                                 for p in report.products])
        st.dataframe(products, hide_index=True, width="stretch")  # cells are shown as text, never interpreted
        if products["campaign score"].isna().all():
            st.caption("No campaign score: the serving model does not read reviewer, product and timing evidence "
                       "(train one on a reference with reviewer ids, products and dates); products are ranked by "
                       "their burst windows.")
        product = st.selectbox("Timeline of product", products["product"].tolist(), key="campaigns.product")
        daily = ws.product_timeline(batch, product)
        figure = go.Figure()
        for rating, rows in daily.groupby("rating"):
            figure.add_bar(x=rows["day"], y=rows["reviews"], name=str(rating))
        for w in (w for w in report.windows if w.product_id == product):
            # A line at the peak as well: a two-day band is a hairline on a timeline of years.
            figure.add_vrect(x0=w.start, x1=w.end, fillcolor="red", opacity=0.15, line_width=0)
            figure.add_vline(x=pd.Timestamp(w.peak).value / 1e6, line_color="red", line_dash="dot")
        figure.update_layout(barmode="stack", height=320, margin={"t": 10, "b": 10},
                             yaxis_title="reviews per day", legend_title="rating")
        st.plotly_chart(figure, width="stretch")

    st.subheader(f"Burst windows ({len(report.windows)})")
    if report.windows:
        windows = pd.DataFrame([{"product": w.product_id, "rating": w.rating, "peak": w.peak,
                                 "reviews in 48 h": w.reviews, "expected": w.expected,
                                 "from accounts with no other review": w.new_accounts, "p-value": w.p_value,
                                 "in this batch": len(w.review_ids)} for w in report.windows])
        st.dataframe(windows, hide_index=True, width="stretch")
        choice = st.selectbox("Window", range(len(report.windows)),
                              format_func=lambda i: report.windows[i].line()[:160], key="campaigns.window")
        chosen = report.windows[choice]
        if st.button(f"Label the {len(chosen.review_ids)} reviews of this window as outliers", key="campaigns.label"):
            stored = ws.labels().add_many([{"review_id": r, "label": "outlier", "batch": batch,
                                            "note": "burst window"} for r in chosen.review_ids])
            st.success(f"{stored} labels stored.")
    else:
        st.write("No burst window at this level.")

    st.subheader(f"Groups of accounts ({len(report.groups)})")
    if report.groups:
        groups = pd.DataFrame([{"accounts": len(g.user_ids), "products": len(g.product_ids), "reviews": g.reviews,
                                "account ids": ", ".join(g.user_ids[:20]), "product ids": ", ".join(g.product_ids[:20])}
                               for g in report.groups])
        st.dataframe(groups, hide_index=True, width="stretch")
        pick = st.selectbox("Group", range(len(report.groups)), format_func=lambda i: report.groups[i].line(),
                            key="campaigns.group")
        if st.button(f"Label the {report.groups[pick].reviews} reviews of this group as outliers",
                     key="campaigns.label_group"):
            stored = ws.labels().add_many([{"review_id": r, "label": "outlier", "batch": batch, "note": "account group"}
                                           for r in report.groups[pick].review_ids])
            st.success(f"{stored} labels stored.")
    else:
        st.write("No group of accounts reviews the same products together more often than chance.")

    data = report.as_json()
    st.download_button("Windows (CSV)", (to_safe_csv(pd.DataFrame(data["windows"])) or "").encode(),
                       file_name=f"{batch}-campaign-windows.csv", mime="text/csv")
