"""The explorer's server: ``interp dashboard serve`` runs ``python -m dashboards.serve APP [flags]``.

Every page's module (and so torch, plotly and the analyses they use) is imported here, before
Streamlit's server starts in this same process: the first session then finds them imported, and
its first page opens at the cost of its own work rather than of the imports. The server answers
its health check only after this warm-up, so a page opened once the server is up never pays it.
"""

from __future__ import annotations

import sys

import plotly.graph_objects as go
from streamlit.web import cli as streamlit_cli

from dashboards.registry import import_all


def warm_up() -> None:
    """Import every page, and draw one figure of each trace type the pages use (plotly loads a
    trace type's validators on its first use: ~0.1 s of a first page otherwise)."""
    import_all()
    traces = [go.Bar(x=[1], y=[1]), go.Heatmap(z=[[1]]), go.Scatter(x=[1], y=[1])]
    traces += [go.Histogram(x=[1])]
    for trace in traces:
        go.Figure(trace).to_json()


def main(argv: list[str] | None = None) -> None:
    warm_up()
    sys.argv = ["streamlit", "run", *(sys.argv[1:] if argv is None else argv)]
    streamlit_cli.main()


if __name__ == "__main__":
    main()
