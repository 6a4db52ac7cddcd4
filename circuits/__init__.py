"""Circuit discovery from discrete SAE codes, judged against patching ground truth.

Modules: ``discrete_codes`` (the method), ``planted`` (a model with a known circuit), ``tasks``
(IOI, greater-than, docstring prompts), ``patching`` (activation / attribution patching),
``ground_truth`` (the JSON fixtures), ``experiment`` (every method on one task), ``figures``
(plotly), ``cli`` (``interp circuits``, which ``commands`` adds to ``interp``).
"""
