"""How much of an SAE's nonlinear error a linear map from the previous layer removes.

With x this layer's activation, e = x - x_hat the SAE's error and z a previous-layer source (the
previous layer's residual stream, or the previous layer's SAE reconstruction), least squares fits
e from x alone (the nonlinear error e_nl is what it leaves) and from [x, z] jointly, both with the
same intercept choice, on the fit tokens; on held-out tokens

    removed = 1 - sum ||e - ê_[x, z]||^2 / sum ||e - ê_x||^2

is the fraction of the nonlinear error's squared norm that z's linear information removes (fitting
[x, z] jointly rather than z -> e_nl alone, because x and z are correlated). The paper (Engels et
al. 2024) reports this as "larger" than what gradient pursuit achieves, without numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from saes.analysis.dark_matter.linear import LinearStats, R2Stats

Triples = Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

__all__ = ["nonlinear_error_removed"]


def nonlinear_error_removed(
    fit: Triples, test: Triples, intercept: bool = False
) -> dict[str, float]:
    """Fit on (x, z, e) triples ``fit``, score on ``test`` (see the module doc)."""
    base, joint = LinearStats(intercept), LinearStats(intercept)
    for x, z, e in fit:
        base.update(x, e)
        joint.update(torch.cat([x.float(), z.float()], 1), e)
    base_map, joint_map = base.solve(), joint.solve()
    s_base, s_joint = R2Stats(), R2Stats()
    for x, z, e in test:
        s_base.update(e, base_map(x.float()))
        s_joint.update(e, joint_map(torch.cat([x.float(), z.float()], 1)))
    nl, nl_joint = s_base.residual_sq, s_joint.residual_sq
    return {
        "n_fit": base.n,
        "n_test": s_base.n,
        "error_sq_mean": s_base.target_sq / s_base.n,
        "nonlinear_sq_mean": nl / s_base.n,
        "remaining_sq_mean": nl_joint / s_base.n,
        "nonlinear_removed": 1.0 - nl_joint / nl,
        "r2_vector_x": s_base.r2_vector(),
        "r2_vector_x_and_source": s_joint.r2_vector(),
    }
