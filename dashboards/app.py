"""The explorer's entry point (``interp dashboard serve TARGET`` runs it with Streamlit).

Navigation is one query parameter, ``?page=KEY`` (a module of :mod:`dashboards.views`), so every
page has a URL that can be shared and opened directly (``?page=feature&feature=12``).
"""

from __future__ import annotations

import streamlit as st

from dashboards.context import Context
from dashboards.registry import pages

st.set_page_config(page_title="interp explorer", layout="wide")

PAGES = pages()
BY_KEY = {p.key: p for p in PAGES}
current = st.query_params.get("page", PAGES[0].key)
if current not in BY_KEY:
    st.warning(f"no page {current!r}; the pages are {', '.join(BY_KEY)}")
    current = PAGES[0].key
ctx = Context.from_env()

with st.sidebar:
    st.markdown("### interp explorer")
    keys = [p.key for p in PAGES]
    choice = st.radio(
        "page", keys, index=keys.index(current), format_func=lambda k: BY_KEY[k].title
    )
    names = [r.name for r in ctx.runs]
    if names:
        now = ctx.run_name if ctx.run_name in names else names[0]
        run = st.selectbox("run", names, index=names.index(now))
        if run != ctx.run_name:
            st.query_params["run"] = run
            st.rerun()
    st.caption(f"root: {ctx.root}")

if choice != current:
    st.query_params.clear()
    st.query_params["page"] = choice
    if ctx.run_name:
        st.query_params["run"] = ctx.run_name
    st.rerun()

BY_KEY[current].render(ctx)
