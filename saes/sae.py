"""The SAE module: parameters, encode/decode, and the one interface every analysis uses.

Any SAE, whatever its variant, is used through::

    z = sae.encode(x)            # dense codes [..., d_sae] (what analyses and dashboards read)
    x_hat = sae.decode(z)        # reconstruction [..., d_in]
    x_hat, z = sae(x)
    code = sae.encode_sparse(x)  # SparseCode(values, indices) [N, k] for the fast paths
    sae.encode(x, grad=g)        # gradient-aware variants (g-SAE) select with dL/dx

Inputs are raw model activations; ``cfg.input_scale`` (if set) is applied inside, and
``fold_input_scale`` bakes it into the weights for export.
"""

from __future__ import annotations

import torch
from torch import nn

from saes.codes import Code, SparseCode, to_dense
from saes.config import SAEConfig
from saes.kernels import normalize_rows_, remove_parallel_grad_, sparse_decode
from saes.variants import get_variant

__all__ = ["SAE", "Code", "SparseCode", "to_dense"]


class SAE(nn.Module):
    """A sparse autoencoder with SAELens's parameter layout (W_enc [d_in, d_sae], W_dec [d_sae, d_in]).

    ``W_enc``'s memory is latent-major (``W_enc.t()`` is contiguous); saving writes the usual
    contiguous [d_in, d_sae] tensor and loading copies into the existing layout.
    """

    def __init__(self, cfg: SAEConfig, seed: int | None = 0) -> None:
        super().__init__()
        if cfg.d_in is None:
            raise ValueError("SAEConfig.d_in is None: set it to the hook's activation width")
        self.cfg = cfg
        self.variant = get_variant(cfg)
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        W_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        W_dec /= W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        # tied init (OpenAI, sparsify). W_enc is [d_in, d_sae] but stored latent-major (a transposed
        # view of a contiguous [d_sae, d_in] tensor, like nn.Linear): the sparse encoder gradient
        # is built latent by latent, so it then needs no transposed copy (~4% of a CPU step).
        self.W_enc = nn.Parameter(W_dec.clone().t())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        self.variant.init_module(self)  # variant state as buffers (e.g. choice SAEs' thresholds)

    # ---- inputs -------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"d_in mismatch: the SAE expects d_in={self.cfg.d_in}, the input has {x.shape[-1]}"
            )

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype)
        return x * self.cfg.input_scale if self.cfg.input_scale else x

    def unscale_output(self, x_hat: torch.Tensor) -> torch.Tensor:
        return x_hat / self.cfg.input_scale if self.cfg.input_scale else x_hat

    # ---- the public interface -----------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations (x - b_dec) @ W_enc + b_enc for raw inputs x [N, d_in]."""
        self.check_input(x)
        return torch.addmm(self.b_enc, self.scale_input(x) - self.b_dec, self.W_enc)

    def encode_code(
        self,
        x: torch.Tensor,
        grad: torch.Tensor | None = None,
        gemm_dtype: torch.dtype | None = None,
    ) -> Code:
        """The variant's native code for raw inputs [N, d_in]: sparse (values, indices) or dense.

        Gradient-aware variants use ``grad`` = dL/dx when given; the others ignore it.
        ``gemm_dtype`` (inference only, e.g. bf16): the variant selects with its encoder GEMM in
        that dtype where it can recompute the kept values exactly (:meth:`Variant.encode_in`).
        """
        self.check_input(x)
        x_in = self.scale_input(x) - self.b_dec
        if gemm_dtype is not None and grad is None and gemm_dtype != self.W_enc.dtype:
            return self.variant.encode_in(self, x_in, gemm_dtype)
        return self.variant.encode(self, x_in, grad)

    def encode_sparse(
        self,
        x: torch.Tensor,
        grad: torch.Tensor | None = None,
        gemm_dtype: torch.dtype | None = None,
    ) -> SparseCode:
        """Sparse code of raw inputs; dense-coded variants are converted (k = max L0 of the batch).
        ``gemm_dtype``: see :meth:`encode_code`."""
        code = self.encode_code(x, grad, gemm_dtype)
        if isinstance(code, SparseCode):
            return code
        k = max(1, int((code != 0).sum(-1).max()))
        values, indices = code.topk(k, dim=-1)
        return SparseCode(values, indices)

    def encode(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        """Dense codes [..., d_sae] of raw inputs [..., d_in]."""
        lead = x.shape[:-1]
        g = None if grad is None else grad.reshape(-1, grad.shape[-1])
        z = to_dense(self.encode_code(x.reshape(-1, x.shape[-1]), g), self.cfg.d_sae)
        return z.reshape(*lead, self.cfg.d_sae)

    def decode_scaled(self, code: Code) -> torch.Tensor:
        """Reconstruction in the scaled input space (what the training loss compares)."""
        if isinstance(code, SparseCode):
            # flat COO codes (choice SAEs' training codes) carry their rows
            return sparse_decode(
                code.values,
                code.indices,
                self.W_dec,
                self.b_dec,
                rows=code.rows,
                n_rows=code.n_rows,
            )
        return torch.addmm(self.b_dec, code.to(self.W_dec.dtype), self.W_dec)

    def decode(self, z: Code) -> torch.Tensor:
        """Reconstruction in the raw input space from dense codes [..., d_sae] or a SparseCode."""
        if isinstance(z, SparseCode):
            return self.unscale_output(self.decode_scaled(z))
        lead = z.shape[:-1]
        out = self.unscale_output(self.decode_scaled(z.reshape(-1, z.shape[-1])))
        return out.reshape(*lead, self.cfg.d_in)

    def forward(
        self, x: torch.Tensor, grad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_hat, dense z) for raw inputs of any leading shape."""
        lead = x.shape[:-1]
        g = None if grad is None else grad.reshape(-1, grad.shape[-1])
        code = self.encode_code(x.reshape(-1, x.shape[-1]), g)
        x_hat = self.unscale_output(self.decode_scaled(code))
        return x_hat.reshape(*lead, -1), to_dense(code, self.cfg.d_sae).reshape(
            *lead, self.cfg.d_sae
        )

    # ---- maintenance --------------------------------------------------------------------------
    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        normalize_rows_(self.W_dec)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder(self) -> None:
        """Project out of W_dec.grad the component along each (unit) decoder row."""
        remove_parallel_grad_(self.W_dec)

    @torch.no_grad()
    def fold_input_scale(self) -> None:
        """Bake ``input_scale`` s into the weights so the SAE takes raw inputs with no scaling.

        (s x - b) W_enc + c = (x - b/s)(s W_enc) + c and (z W_dec + b)/s = z (W_dec/s) + b/s.
        """
        s = self.cfg.input_scale
        if not s:
            return
        self.W_enc.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)
        self.cfg.input_scale = None

    @property
    def device(self) -> torch.device:
        return self.W_enc.device
