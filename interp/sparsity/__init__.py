"""Activation sparsity of a model's MLPs: the sparsity laws of "Sparsing Law" (Luo, Song et al.,
2024) and their fits (:mod:`interp.sparsity.laws`), the lazy-neuron / CETT / PPL-p% measurements
(:mod:`interp.sparsity.measure`), thresholds vs top-k at the same kept fraction
(:mod:`interp.sparsity.budgets`), small training runs that record the activation ratio
(:mod:`interp.sparsity.dynamics`), plotly figures (:mod:`interp.sparsity.figures`) and the
``interp sparsity`` CLI (:mod:`interp.sparsity.cli`, which :mod:`interp.sparsity.commands` adds to
``interp``)."""
