"""Evaluation of SAEs: ``evaluate`` (held-out rows, the SAE spliced into the model, a run folder's
``metrics.json``: :func:`~saes.evaluation.evaluate.evaluate_sae`,
:func:`~saes.evaluation.evaluate.evaluate_run`) and ``metrics`` (the formulas, streamed and exact).

Nothing is imported here; ``from saes import evaluate_run, evaluate_sae`` is the short way.
"""
