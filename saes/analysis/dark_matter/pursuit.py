"""Inference-time gradient pursuit over an SAE's decoder, at each token's own L0.

Gradient pursuit (Blumensath & Davies 2008; as used by Smith 2024 and Engels et al. 2024) replaces
the SAE's encoder by an optimisation over the same dictionary. With the decoder rows in the raw
input space, D [F, d] (``sae.unscale_output(W_dec)``), and the decoder bias b (``unscale(b_dec)``),
for each token x with target L0 L (the number of latents the SAE itself fires on that token):

    r = x - b, w = 0 [F]
    repeat L times:
        g = D r                        inner products of every atom with the residual
        S = {i : w_i != 0} ∪ {argmax_i g_i}   greedy selection: the best-aligned atom joins
        g_S = g restricted to S        the gradient of ½||r||² w.r.t. w, on the selected set
        c = g_S D                      its image in the input space
        w = max(0, w + (<c, r> / ||c||²) g_S)   optimal step along g_S, non-negative coefficients
        r = x - b - w D

so at most L coefficients are non-zero. ``refine_steps`` > 0 continues with that many more steps on
the selected set without adding atoms (plain GP stops after L; refining converges to the
non-negative least squares on the support, which recovers exact sparse codes).

Pursuit is not guaranteed to beat the SAE's own code token by token (greedy selection can pick a
worse support). :func:`pursuit_vs_sae` reports both, and also ``best``: per token the better of
the two codes, which by construction never has a larger error than the SAE's code and never uses
more latents than the SAE did on that token.

Batched over tokens with per-token slots [n, L_max] (indices and coefficients), so each step costs
one [n, d] x [d, F] product; tokens are processed in chunks of ``chunk_rows``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from saes.codes import SparseCode

__all__ = ["PursuitComparison", "gradient_pursuit", "pursuit_vs_sae", "sae_dictionary"]


def sae_dictionary(sae) -> tuple[torch.Tensor, torch.Tensor]:
    """(D [F, d], b [d]) in the raw input space: x_hat = w D + b for raw coefficients w."""
    with torch.no_grad():
        D = sae.unscale_output(sae.W_dec.detach().float())
        b = sae.unscale_output(sae.b_dec.detach().float())
    return D, b


def _pursue_chunk(
    x: torch.Tensor, D: torch.Tensor, b: torch.Tensor, l0: torch.Tensor, refine_steps: int
) -> SparseCode:
    n = x.shape[0]
    L = int(l0.max()) if n else 0
    width = max(L, 1)
    idx = torch.zeros(n, width, dtype=torch.long)
    w = torch.zeros(n, width, dtype=x.dtype)
    atoms = torch.zeros(n, width, x.shape[1], dtype=x.dtype)
    used = torch.zeros(n, dtype=torch.long)  # slots filled so far
    rows = torch.arange(n)
    target = x - b
    r = target.clone()
    slot_range = torch.arange(width)
    for step in range(L + refine_steps):
        go = step < l0 if step < L else l0 > 0  # who still selects / who refines
        sel = w != 0
        if step < L:
            g_all = r @ D.T  # [n, F]
            j = g_all.argmax(1)
            # already in a slot? then it is simply (re)selected there; else it takes a new slot
            same = (idx == j[:, None]) & (slot_range < used[:, None])
            has = same.any(1)
            slot = torch.where(has, same.float().argmax(1), used)
            add = go & ~has
            idx[rows[add], slot[add]] = j[add]
            atoms[rows[add], slot[add]] = D[j[add]]
            used = used + add.long()
            sel = sel.clone()
            sel[rows[go], slot[go]] = True
        sel &= go[:, None]
        g = torch.einsum("nd,nsd->ns", r, atoms) * sel
        c = torch.einsum("ns,nsd->nd", g, atoms)
        cc = (c * c).sum(1)
        step_size = torch.where(cc > 0, (c * r).sum(1) / cc.clamp_min(1e-30), 0.0)
        w = (w + step_size[:, None] * g).clamp_min(0)
        r = target - torch.einsum("ns,nsd->nd", w, atoms)
    return SparseCode(w, idx)


def gradient_pursuit(
    sae,
    x: torch.Tensor,
    l0: torch.Tensor | int,
    refine_steps: int = 0,
    chunk_rows: int = 1024,
    progress: bool = False,
) -> SparseCode:
    """Gradient pursuit codes [N, max L0] (raw coefficients, decode with ``sae.decode``) of raw
    inputs x [N, d] over ``sae``'s decoder, token t using at most ``l0[t]`` latents."""
    sae.check_input(x)
    D, b = sae_dictionary(sae)
    x = x.detach().float()
    l0 = torch.as_tensor(l0, dtype=torch.long)
    if l0.ndim == 0:
        l0 = l0.expand(x.shape[0])
    if l0.shape != (x.shape[0],):
        raise ValueError(f"l0 has shape {tuple(l0.shape)}; need one per token ({x.shape[0]})")
    if (l0 < 0).any() or (l0 > D.shape[0]).any():
        raise ValueError(
            f"l0 must lie in [0, d_sae={D.shape[0]}]; got {int(l0.min())}..{int(l0.max())}"
        )
    width = max(1, int(l0.max()) if len(l0) else 1)
    values = torch.zeros(x.shape[0], width)
    indices = torch.zeros(x.shape[0], width, dtype=torch.long)
    starts = range(0, x.shape[0], chunk_rows)
    for i in tqdm(starts, desc="gradient pursuit", disable=not progress):
        code = _pursue_chunk(x[i : i + chunk_rows], D, b, l0[i : i + chunk_rows], refine_steps)
        k = code.values.shape[1]
        values[i : i + chunk_rows, :k] = code.values
        indices[i : i + chunk_rows, :k] = code.indices
    return SparseCode(values, indices)


@dataclass
class PursuitComparison:
    """The SAE's own code against gradient pursuit at the same per-token L0, on the same tokens."""

    n_tokens: int
    refine_steps: int
    l0_sae: float
    l0_pursuit: float
    l0_best: float
    fvu_sae: float
    fvu_pursuit: float
    fvu_best: float
    pursuit_better_fraction: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _sq_err(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    return ((x.double() - x_hat.double()) ** 2).sum(-1)


def pursuit_vs_sae(
    sae,
    xs: Iterable[torch.Tensor],
    refine_steps: int = 0,
    chunk_rows: int = 1024,
    progress: bool = False,
) -> tuple[PursuitComparison, dict[str, list[torch.Tensor]]]:
    """Compare the SAE's code with pursuit at each token's own L0 over activation chunks ``xs``.

    Returns the summary and the reconstructions ``{"x", "sae", "pursuit", "best"}`` (lists of
    chunks, for the linear / nonlinear split of each) with the per-token L0s ``l0_sae``,
    ``l0_best``."""
    out: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("x", "sae", "pursuit", "best", "l0_sae", "l0_best")
    }
    sums = {"sae": 0.0, "pursuit": 0.0, "best": 0.0, "var": 0.0, "better": 0}
    l0s = {"sae": 0.0, "pursuit": 0.0, "best": 0.0}
    n, s_x = 0, None
    for x in xs:
        x = x.detach().float()
        with torch.no_grad():
            code = sae.encode_sparse(x)
            x_sae = sae.decode(code).float()
        l0 = (code.values != 0).sum(1)
        gp = gradient_pursuit(sae, x, l0, refine_steps, chunk_rows, progress)
        with torch.no_grad():
            x_gp = sae.decode(gp).float()
        err_sae, err_gp = _sq_err(x, x_sae), _sq_err(x, x_gp)
        better = err_gp < err_sae
        x_best = torch.where(better[:, None], x_gp, x_sae)
        l0_gp = (gp.values != 0).sum(1)
        sums["sae"] += float(err_sae.sum())
        sums["pursuit"] += float(err_gp.sum())
        sums["best"] += float(torch.where(better, err_gp, err_sae).sum())
        sums["better"] += int(better.sum())
        l0s["sae"] += float(l0.sum())
        l0s["pursuit"] += float(l0_gp.sum())
        l0s["best"] += float(torch.where(better, l0_gp, l0).sum())
        xd = x.double()
        s_x = xd.sum(0) if s_x is None else s_x + xd.sum(0)
        sums["var"] += float((xd * xd).sum())
        n += x.shape[0]
        l0_best = torch.where(better, l0_gp, l0)
        for key, val in (
            ("x", x),
            ("sae", x_sae),
            ("pursuit", x_gp),
            ("best", x_best),
            ("l0_sae", l0),
            ("l0_best", l0_best),
        ):
            out[key].append(val)
    if n < 2:
        raise ValueError(f"need at least 2 tokens, got {n}")
    total = sums["var"] - float((s_x**2).sum()) / n  # type: ignore[operator]
    return (
        PursuitComparison(
            n_tokens=n,
            refine_steps=refine_steps,
            l0_sae=l0s["sae"] / n,
            l0_pursuit=l0s["pursuit"] / n,
            l0_best=l0s["best"] / n,
            fvu_sae=sums["sae"] / total,
            fvu_pursuit=sums["pursuit"] / total,
            fvu_best=sums["best"] / total,
            pursuit_better_fraction=sums["better"] / n,
        ),
        out,
    )
