"""The SAE module: parameters, encode/decode, and the one interface every analysis uses.

Any SAE, whatever its variant, is used through::

    z = sae.encode(x)            # dense codes [..., d_sae] (what analyses and dashboards read)
    x_hat = sae.decode(z)        # reconstruction [..., d_in]
    x_hat, z = sae(x)
    code = sae.encode_sparse(x)  # SparseCode(values, indices) [N, k] for the fast paths
    sae.encode(x, grad=g)        # gradient-aware variants (g-SAE) select with dL/dx

Inputs are raw model activations; ``cfg.input_scale`` (if set) is applied inside, and
``fold_input_scale`` bakes it into the weights for export.

A **transcoder** (``cfg.kind`` "transcoder" / "skip_transcoder") is the same module predicting
another hook: ``W_dec`` is [d_sae, d_out] and ``b_dec`` [d_out] belong to the output, so the input
is not centred by b_dec (``input_bias`` is None)::

    z     = rule(x W_enc + b_enc)
    y_hat = z W_dec + b_dec (+ x W_skip^T for a skip transcoder)

``decode(z)`` is the sparse part alone (what a latent writes); ``sae(x)`` and
:meth:`SAE.predict` include the skip. Its targets are scaled by ``cfg.output_scale`` in training,
folded on export like the input scale.
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
        if cfg.kind == "clt":
            raise ValueError("a CLT is saes.transcoders.CrossLayerTranscoder, not an SAE")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        d_out = cfg.width_out
        W_dec = torch.randn(cfg.d_sae, d_out, generator=gen)
        W_dec /= W_dec.norm(dim=-1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        # tied init (OpenAI, sparsify). W_enc is [d_in, d_sae] but stored latent-major (a transposed
        # view of a contiguous [d_sae, d_in] tensor, like nn.Linear): the sparse encoder gradient
        # is built latent by latent, so it then needs no transposed copy (~4% of a CPU step).
        if d_out == cfg.d_in:
            W_enc = W_dec.clone()
        else:
            W_enc = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
            W_enc /= W_enc.norm(dim=-1, keepdim=True)
        self.W_enc = nn.Parameter(W_enc.t())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        if cfg.kind == "skip_transcoder":
            self.W_skip = nn.Parameter(torch.zeros(d_out, cfg.d_in))  # sparsify's: starts at 0
        else:
            self.W_skip = None
        self.variant.init_module(self)  # variant state as buffers (e.g. choice SAEs' thresholds)

    # ---- what kind of map ---------------------------------------------------------------------
    @property
    def is_transcoder(self) -> bool:
        return self.cfg.is_transcoder

    @property
    def input_bias(self) -> torch.Tensor | None:
        """What the encoder subtracts from its (scaled) input: b_dec for an SAE, None for a
        transcoder (whose b_dec is the output's)."""
        return None if self.cfg.is_transcoder else self.b_dec

    @property
    def n_latents(self) -> int:
        return self.cfg.d_sae

    @property
    def keeps_unit_decoder(self) -> bool:
        """Whether training keeps decoder rows at unit norm: the rule's choice, except for a
        transcoder started the sparsify way (W_dec = 0, left free)."""
        if self.cfg.is_transcoder and self.cfg.transcoder_init == "sparsify":
            return False
        return self.variant.unit_norm_decoder

    def set_scales(self, input_scale, output_scale) -> None:
        """The training scales of inputs and (a transcoder's) targets (None: unscaled)."""
        self.cfg.input_scale = input_scale
        self.cfg.output_scale = output_scale

    @torch.no_grad()
    def init_biases(self, x_scaled: torch.Tensor, y_scaled: torch.Tensor) -> None:
        """A transcoder's start (sparsify's): b_dec = mean(y), b_enc = -mean(x) W_enc, and
        W_dec = 0 when ``transcoder_init`` is "sparsify"."""
        self.b_dec.copy_(y_scaled.float().mean(0).to(self.b_dec.dtype))
        self.b_enc.copy_(-(x_scaled.float().mean(0).to(self.W_enc.dtype) @ self.W_enc))
        if self.cfg.transcoder_init == "sparsify":
            self.W_dec.zero_()

    def add_skip(self, y_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """y_hat + x W_skip^T for a skip transcoder (x in the same space as y_hat's input)."""
        if self.W_skip is None:
            return y_hat
        return torch.addmm(y_hat, x.to(self.W_skip.dtype), self.W_skip.t())

    def train_forward(self, x, grad=None, dead_mask=None, comm=None, target=None):
        """The rule's training forward on scaled inputs (``target``: a transcoder's scaled output)."""
        if target is None:
            return self.variant.train_forward(self, x, grad, dead_mask, comm)
        return self.variant.train_forward(self, x, grad, dead_mask, comm, target=target)

    # ---- inputs -------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.cfg.d_in:
            raise ValueError(
                f"d_in mismatch: the SAE expects d_in={self.cfg.d_in}, the input has {x.shape[-1]}"
            )

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.W_enc.dtype)
        return x * self.cfg.input_scale if self.cfg.input_scale else x

    def scale_target(self, y: torch.Tensor) -> torch.Tensor:
        """A transcoder's raw target in the scaled output space its loss compares."""
        y = y.to(self.W_dec.dtype)
        return y * self.cfg.output_scale if self.cfg.output_scale else y

    def unscale_output(self, x_hat: torch.Tensor) -> torch.Tensor:
        scale = self.cfg.output_scale if self.cfg.is_transcoder else self.cfg.input_scale
        return x_hat / scale if scale else x_hat

    # ---- the public interface -----------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations (x - b_dec) @ W_enc + b_enc for raw inputs x [N, d_in] (a
        transcoder: x @ W_enc + b_enc)."""
        self.check_input(x)
        return torch.addmm(self.b_enc, self.centred(self.scale_input(x)), self.W_enc)

    def centred(self, x_scaled: torch.Tensor) -> torch.Tensor:
        bias = self.input_bias
        return x_scaled if bias is None else x_scaled - bias

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
        x_in = self.centred(self.scale_input(x))
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
        return out.reshape(*lead, self.cfg.width_out)

    def forward(
        self, x: torch.Tensor, grad: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_hat, dense z) for raw inputs of any leading shape."""
        lead = x.shape[:-1]
        g = None if grad is None else grad.reshape(-1, grad.shape[-1])
        rows = x.reshape(-1, x.shape[-1])
        code = self.encode_code(rows, g)
        x_hat = self.output_of(code, rows)
        return x_hat.reshape(*lead, -1), to_dense(code, self.cfg.d_sae).reshape(
            *lead, self.cfg.d_sae
        )

    def predict(self, x: torch.Tensor, gemm_dtype: torch.dtype | None = None) -> torch.Tensor:
        """The output (reconstruction, or a transcoder's prediction with its skip) of raw inputs
        of any leading shape, through the sparse code (no dense [N, d_sae] array)."""
        lead = x.shape[:-1]
        rows = x.reshape(-1, x.shape[-1])
        code = self.encode_code(rows, gemm_dtype=gemm_dtype)
        return self.output_of(code, rows).reshape(*lead, -1)

    def output_of(self, code: Code, x: torch.Tensor) -> torch.Tensor:
        """The raw output of a code of raw input rows x [N, d_in]: the decoded code, plus a skip
        transcoder's x W_skip^T."""
        return self.unscale_output(self.add_skip(self.decode_scaled(code), self.scale_input(x)))

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
        A transcoder with output scale t: (s x) W_enc + c, and (z W_dec + b + s x W_skip^T)/t =
        z (W_dec/t) + b/t + x (s/t W_skip)^T.
        """
        if self.cfg.is_transcoder:
            s, t = self.cfg.input_scale or 1.0, self.cfg.output_scale or 1.0
            self.W_enc.mul_(s)
            self.W_dec.div_(t)
            self.b_dec.div_(t)
            if self.W_skip is not None:
                self.W_skip.mul_(s / t)
            self.cfg.input_scale = None
            self.cfg.output_scale = None
            return
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
