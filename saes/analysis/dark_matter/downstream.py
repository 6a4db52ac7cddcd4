"""What each part of the error costs downstream: cross-entropy with pieces of the error spliced out.

At the SAE's hook, from position ``start`` of each window onward (earlier positions keep their
clean activations; the paper starts at 200 of 1,024-token contexts, our windows are 128 tokens and
the default start is 32), the activation x is replaced through ``interp.interventions`` by

* ``x_hat``: the SAE's reconstruction (both error parts missing);
* ``x_hat + e_lin``: x_hat + x a* (+ b), the linearly predicted error added back: only the
  nonlinear error e_nl is missing;
* ``x_hat + e_nl``: x - e_lin, the nonlinear error added back: only the linear part is missing.

The next-token cross-entropy is averaged over the predictions made at positions ``start`` ..
T - 2 (every prediction the splice can change) and compared with the clean forward:
``ce_increase[name] = ce[name] - ce_clean``. The paper reports that e_nl accounts for a share of
the CE increase proportional to (or larger than) its share of the error norm.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from interp.interventions import Intervention, replace_with, run_with_interventions
from saes.analysis.dark_matter.linear import LinearMap

SPLICES = ("x_hat", "x_hat_plus_e_lin", "x_hat_plus_e_nl")

__all__ = ["SPLICES", "spliced_ce", "splice_functions"]


def splice_functions(sae, lmap: LinearMap) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Per-token replacements of rows x [N, d] for each splice."""

    def x_hat(x: torch.Tensor) -> torch.Tensor:
        return sae(x.float())[0]

    def plus_lin(x: torch.Tensor) -> torch.Tensor:
        return sae(x.float())[0] + lmap(x.float())

    def plus_nl(x: torch.Tensor) -> torch.Tensor:
        return x.float() - lmap(x.float())

    return {"x_hat": x_hat, "x_hat_plus_e_lin": plus_lin, "x_hat_plus_e_nl": plus_nl}


def _ce(logits: torch.Tensor, tokens: torch.Tensor, start: int) -> torch.Tensor:
    """Summed next-token CE of the predictions at positions start .. T-2."""
    lg = logits[:, start:-1].float()
    return F.cross_entropy(
        lg.reshape(-1, lg.shape[-1]), tokens[:, start + 1 :].reshape(-1), reduction="sum"
    )


def spliced_ce(
    model,
    sae,
    lmap: LinearMap,
    windows: torch.Tensor,
    start: int = 32,
    batch_windows: int = 8,
    hook: str | None = None,
    progress: bool = False,
) -> dict[str, object]:
    """Clean and spliced CE on ``windows`` [B, T] (see the module doc); ``hook`` defaults to the
    SAE's ``cfg.hook_name``."""
    hook = hook or sae.cfg.hook_name
    if not hook:
        raise ValueError("the SAE names no hook (cfg.hook_name is empty): pass hook=")
    if windows.ndim != 2:
        raise ValueError(f"windows must be [batch, positions], got {tuple(windows.shape)}")
    T = windows.shape[1]
    if not 0 <= start <= T - 2:
        raise ValueError(
            f"start={start} leaves no prediction in windows of {T} tokens (need 0 <= start <= {T - 2})"
        )
    mask = torch.arange(T) >= start
    fns = splice_functions(sae, lmap)
    sums = {"clean": 0.0, **{k: 0.0 for k in SPLICES}}
    n = 0
    device = next(model.parameters()).device
    for i in tqdm(
        range(0, windows.shape[0], batch_windows), desc="spliced CE", disable=not progress
    ):
        tokens = windows[i : i + batch_windows].to(device)
        with torch.no_grad():
            sums["clean"] += float(_ce(model(tokens), tokens, start))
            for name, fn in fns.items():
                iv = Intervention(hook, replace_with(fn), positions=mask)
                sums[name] += float(_ce(run_with_interventions(model, tokens, iv), tokens, start))
        n += tokens.shape[0] * (T - 1 - start)
    ce = {k: v / n for k, v in sums.items()}
    return {
        "hook": hook,
        "start": start,
        "context_size": T,
        "n_windows": int(windows.shape[0]),
        "n_predictions": n,
        "ce_clean": ce["clean"],
        "ce": {k: ce[k] for k in SPLICES},
        "ce_increase": {k: ce[k] - ce["clean"] for k in SPLICES},
    }
