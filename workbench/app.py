"""Entry script of the analyst workbench: page config and the router over the top-level ``pages/`` folder.

Run with ``workbench ui`` (or ``streamlit run workbench/app.py`` from the repository root).
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `streamlit run` puts workbench/ on the path, not the repository root
    sys.path.insert(0, str(REPO))

PAGES = REPO / "pages"

st.set_page_config(page_title="Review Outlier & Shift Workbench", page_icon="🔎", layout="wide")

navigation = st.navigation(
    [
        st.Page(str(PAGES / "home.py"), title="Home", icon="🏠", default=True),
        st.Page(str(PAGES / "data.py"), title="Data", icon="📥", url_path="data"),
        st.Page(str(PAGES / "train.py"), title="Train", icon="🏋️", url_path="train"),
        st.Page(str(PAGES / "explore.py"), title="Explore", icon="🗺️", url_path="explore"),
        st.Page(str(PAGES / "label.py"), title="Label", icon="🏷️", url_path="label"),
        st.Page(str(PAGES / "campaigns.py"), title="Campaigns", icon="🕸️", url_path="campaigns"),
        st.Page(str(PAGES / "shift.py"), title="Shift", icon="📈", url_path="shift"),
        st.Page(str(PAGES / "monitor.py"), title="Monitor", icon="🛰️", url_path="monitor"),
        st.Page(str(PAGES / "models.py"), title="Models", icon="📦", url_path="models"),
    ]
)
navigation.run()
