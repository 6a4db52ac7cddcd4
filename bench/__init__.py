"""The benchmarks, one module each: ``python -m bench.NAME`` measures, prints a table and saves
``bench/results/NAME.json`` (with its provenance, ``bench._provenance``); the module's ``render``
turns that JSON into markdown, and ``python -m bench.report`` writes it into the documentation
(``docs/benchmarks/``) and the regions of the README and the pages that quote it."""
