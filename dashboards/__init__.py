"""The feature explorer: a Streamlit app over run folders and their feature stores (UI only).

``interp dashboard serve TARGET`` runs ``dashboards/app.py`` with ``INTERP_DASHBOARD_TARGET`` set.
Pages are the modules of :mod:`dashboards.views`, found at start-up (:mod:`dashboards.registry`):
an analysis adds a page by adding one file there. Nothing in the toolkit imports this package;
it reads the toolkit's public API (stores, run folders, figure functions) only.
"""
