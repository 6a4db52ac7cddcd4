"""Dark matter of SAEs (Engels, Riggs, Tegmark 2024): split any SAE's error e = x - x_hat into the
part a linear map of x predicts and the nonlinear rest, and measure what each costs.

* :mod:`~saes.analysis.dark_matter.linear`: least squares from x to e (streamed X^T X, X^T E in
  float64), R^2 per dimension and of the vector, norm shares, FVU of x_hat + x a*;
* :mod:`~saes.analysis.dark_matter.norms`: a linear probe of ||e||^2 against a constant and ||x||^2;
* :mod:`~saes.analysis.dark_matter.pursuit`: inference-time gradient pursuit over the decoder at
  each token's own L0;
* :mod:`~saes.analysis.dark_matter.downstream`: CE with x_hat, x_hat + e_lin, x_hat + e_nl spliced;
* :mod:`~saes.analysis.dark_matter.error_saes`: caches of e_lin / e_nl and SAEs trained on them;
* :mod:`~saes.analysis.dark_matter.previous_layer`: linear maps from the previous layer to e_nl;
* :mod:`~saes.analysis.dark_matter.scaling`: per-token error norms across widths, FVU power laws;
* :mod:`~saes.analysis.dark_matter.pipeline`: capture, then all of the above for one SAE or a
  family of widths (what the CLI and ``bench/dark_matter.py`` run);
* :mod:`~saes.analysis.dark_matter.figures`: plotly figures of a saved result;
* :mod:`~saes.analysis.dark_matter.cli`: ``interp darkmatter RUN_DIR... [--tokens N]``, which
  :mod:`~saes.analysis.dark_matter.commands` adds to ``interp``.
"""
