"""The explorer's pages, one module each (see :mod:`dashboards.registry` for the contract)."""
