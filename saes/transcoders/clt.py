"""The cross-layer transcoder (CLT): layer l's latents read layer l's MLP input and write to the MLP
outputs of every layer >= l.

Steps, for inputs x_l and targets y_l at the L layers of ``cfg.layers`` (scaled per layer in
training, E||x_l|| = sqrt(d_in), E||y_l|| = sqrt(d_out)):

1. encode each layer with the rule (TopK or ReLU): a_l = rule(x_l W_enc^l + b_enc^l), F latents
   per layer (``cfg.d_sae``), k per layer for TopK;
2. decode into every later layer: y_hat_l = b_dec^l + sum_{l' <= l} a_{l'} W_dec^{l' -> l};
3. loss: the mean over layers of each layer's FVU, sum ||y_l - y_hat_l||^2 / sum ||y_l -
   mean(y_l)||^2 (AuxK for TopK: layer l's dead latents reconstruct layer l's residual error
   through W_dec^{l->l}; L1 for ReLU weights a_l by the norm of its whole decoder row
   [W_dec^{l->l}, ..., W_dec^{l->L-1}]).

Paper: Ameisen et al. 2025, "Circuit Tracing: Revealing Computational Graphs in Language Models"
(transformer-circuits.pub), whose CLT is trained on the sum over layers of the per-layer MSE with a
tanh-L1 penalty on JumpReLU latents. Departures, stated: the per-layer FVU is the per-layer MSE
divided by that layer's variance (our targets are scaled so the two differ by the layer's variance,
about equal across layers after scaling); the rules are ours (TopK with AuxK, ReLU with the
decoder-norm L1), not JumpReLU; and the start is sparsify's (W_dec = 0, b_dec = mean(y), b_enc =
-mean(x) W_enc).

Layout: ``W_enc`` one [d_in, F] matrix per layer (stored latent-major, as the SAE's), ``b_enc``
[L, F], ``W_dec`` one [j + 1, F, d_out] tensor per *target* layer j (``W_dec[j][i]`` is
W_dec^{i -> j}), ``b_dec`` [L, d_out]; the training scales are buffers ``input_scales`` /
``output_scales`` [L], folded into the weights on export. Grouping the decoder by target lets a
step decode each layer's output in one sparse pass over the codes of layers <= j (no [batch, L,
d] scatter); circuit-tracer groups by source (``W_dec_i`` [F, L - i, d_out]), and
:meth:`CrossLayerTranscoder.source_decoder` / the format's reader convert.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from saes.codes import SparseCode, TrainOutput, to_dense
from saes.config import SAEConfig, check_contiguous_layers
from saes.kernels import sparse_decode, topk_encode_with_aux
from saes.training.distributed import Comm, loss_mean, row_mean_of_data
from saes.training.losses import aux_k_loss, fvu_loss
from saes.variants import get_variant

#: rules a CLT trains with (others, e.g. jumprelu, open from files only)
CLT_RULES = ("topk", "relu_l1")


class CrossLayerTranscoder(nn.Module):
    """A CLT over ``cfg.layers`` with ``cfg.d_sae`` latents per layer (see the module docstring).

    Inputs and targets are [N, L, d]: row n's activations at every layer, in ``cfg.layers`` order.
    """

    def __init__(self, cfg: SAEConfig, seed: int | None = 0) -> None:
        super().__init__()
        if cfg.kind != "clt":
            raise ValueError(f"CrossLayerTranscoder needs sae.kind 'clt', got {cfg.kind!r}")
        if cfg.d_in is None or not cfg.layers:
            raise ValueError("a CLT config needs d_in and layers (filled in by the trainer)")
        check_contiguous_layers(cfg.layers)
        if cfg.transcoder_init != "sparsify":
            raise ValueError(
                "a CLT starts the sparsify way only (W_dec = 0): transcoder_init 'tied' has no "
                "single decoder row to tie per latent"
            )
        self.cfg = cfg
        self.variant = get_variant(cfg)
        L, F, d_in, d_out = len(cfg.layers), cfg.d_sae, cfg.d_in, cfg.width_out
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        enc = []
        for _ in range(L):
            w = torch.randn(F, d_in, generator=gen)
            w /= w.norm(dim=-1, keepdim=True)
            enc.append(nn.Parameter(w.t()))  # [d_in, F], latent-major storage
        self.W_enc = nn.ParameterList(enc)
        self.b_enc = nn.Parameter(torch.zeros(L, F))
        self.W_dec = nn.ParameterList(
            [nn.Parameter(torch.zeros(j + 1, F, d_out)) for j in range(L)]
        )
        self.b_dec = nn.Parameter(torch.zeros(L, d_out))
        self.register_buffer("input_scales", torch.ones(L))
        self.register_buffer("output_scales", torch.ones(L))
        if cfg.variant == "jumprelu":  # opened from circuit-tracer's JumpReLU CLTs
            self.register_buffer("threshold", torch.zeros(L, F))

    # ---- shape -------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.cfg.layers)

    @property
    def n_latents(self) -> int:
        """Latents over all layers (latent f of layer i is number i * d_sae + f)."""
        return self.n_layers * self.cfg.d_sae

    @property
    def is_transcoder(self) -> bool:
        return True

    @property
    def keeps_unit_decoder(self) -> bool:
        return False

    @property
    def device(self) -> torch.device:
        return self.b_enc.device

    def input_hooks(self) -> list[str]:
        return [self.cfg.hook_name.format(layer=layer) for layer in self.cfg.layers]

    def output_hooks(self) -> list[str]:
        return [self.cfg.output_hook_name.format(layer=layer) for layer in self.cfg.layers]

    def check_input(self, x: torch.Tensor) -> None:
        want = (self.n_layers, self.cfg.d_in)
        if x.dim() < 2 or tuple(x.shape[-2:]) != want:
            raise ValueError(
                f"a CLT over layers {self.cfg.layers} takes inputs [..., {want[0]}, {want[1]}] "
                f"(layers, d_in); got {tuple(x.shape)}"
            )

    # ---- scales ------------------------------------------------------------------------------
    def set_scales(self, input_scales, output_scales) -> None:
        with torch.no_grad():
            self.input_scales.copy_(torch.as_tensor(input_scales or 1.0, dtype=torch.float32))
            self.output_scales.copy_(torch.as_tensor(output_scales or 1.0, dtype=torch.float32))

    def scale_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.b_enc.dtype) * self.input_scales[:, None].to(x.device)

    def scale_target(self, y: torch.Tensor) -> torch.Tensor:
        return y.to(self.b_dec.dtype) * self.output_scales[:, None].to(y.device)

    def unscale_output(self, y_hat: torch.Tensor) -> torch.Tensor:
        return y_hat / self.output_scales[:, None].to(y_hat.device)

    @torch.no_grad()
    def init_biases(self, x_scaled: torch.Tensor, y_scaled: torch.Tensor) -> None:
        """sparsify's start per layer: b_dec^l = mean(y_l), b_enc^l = -mean(x_l) W_enc^l; W_dec = 0."""
        x_mean, y_mean = x_scaled.float().mean(0), y_scaled.float().mean(0)
        self.b_dec.copy_(y_mean)
        for i, w in enumerate(self.W_enc):
            self.b_enc[i].copy_(-(x_mean[i] @ w))
        for w in self.W_dec:
            w.zero_()

    @torch.no_grad()
    def fold_scales(self) -> None:
        """Bake the per-layer scales into the weights (the exported CLT takes raw activations):
        (s_i x) W_enc^i = x (s_i W_enc^i), and layer j's output / t_j."""
        t = self.output_scales
        for i, w in enumerate(self.W_enc):
            w.mul_(self.input_scales[i])
        for j, w in enumerate(self.W_dec):
            w.div_(t[j])
        self.b_dec.div_(t[:, None])
        self.input_scales.fill_(1.0)
        self.output_scales.fill_(1.0)

    # ---- inference ---------------------------------------------------------------------------
    def _layer(self, i: int) -> SimpleNamespace:
        """What a rule's ``encode`` reads of layer i (its W_enc, b_enc, threshold)."""
        ns = SimpleNamespace(W_enc=self.W_enc[i], b_enc=self.b_enc[i])
        if hasattr(self, "threshold"):
            ns.threshold = self.threshold[i]
        return ns

    def encode_layer(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Dense codes [..., F] of layer index i (``cfg.layers[i]``) from its raw input [..., d_in]."""
        lead = x.shape[:-1]
        rows = x.reshape(-1, x.shape[-1]).to(self.b_enc.dtype) * self.input_scales[i]
        code = to_dense(self.variant.encode(self._layer(i), rows), self.cfg.d_sae)
        return code.reshape(*lead, self.cfg.d_sae)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense codes [..., L, F] of raw inputs [..., L, d_in]."""
        self.check_input(x)
        return torch.stack([self.encode_layer(x[..., i, :], i) for i in range(self.n_layers)], -2)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Outputs [..., L, d_out] (raw) from dense codes [..., L, F]."""
        lead = z.shape[:-2]
        z = z.reshape(-1, self.n_layers * self.cfg.d_sae)
        outs = [
            torch.addmm(self.b_dec[j], z[:, : (j + 1) * self.cfg.d_sae], w.reshape(-1, w.shape[-1]))
            for j, w in enumerate(self.W_dec)
        ]
        return self.unscale_output(torch.stack(outs, 1)).reshape(*lead, self.n_layers, -1)

    def decode_layer(self, z: torch.Tensor, source: int, target: int) -> torch.Tensor:
        """What layer index ``source``'s codes [..., F] write to layer index ``target`` (raw, no
        bias): z W_dec^{source -> target}."""
        if not source <= target < self.n_layers:
            raise ValueError(
                f"layer {source}'s latents write to layers {source}..{self.n_layers - 1}"
            )
        w = self.W_dec[target][source]
        return (z.to(w.dtype) @ w) / self.output_scales[target]

    def source_decoder(self, i: int) -> torch.Tensor:
        """Layer index i's writes to every later layer, [F, L - i, d_out] (circuit-tracer's
        ``W_dec_i``)."""
        return torch.stack([self.W_dec[j][i] for j in range(i, self.n_layers)], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs [..., L, d_out], dense codes [..., L, F]) of raw inputs [..., L, d_in]."""
        z = self.encode(x)
        return self.decode(z), z

    def predict(self, x: torch.Tensor, gemm_dtype=None) -> torch.Tensor:  # noqa: ARG002
        return self.forward(x)[0]

    # ---- training ----------------------------------------------------------------------------
    def train_forward(self, x, grad=None, dead_mask=None, comm: Comm | None = None, target=None):
        """Training forward on scaled inputs and targets [B, L, d] (see the module docstring).

        Each layer is encoded once; each target layer j is then decoded in one sparse pass over the
        codes of layers 0..j (their indices offset by i * F into ``W_dec[j]`` viewed as
        [(j + 1) F, d_out]), so no [B, L, d_out] output is scattered into."""
        if target is None:
            raise ValueError("a CLT trains on targets (the MLP outputs): target is None")
        B, L, F = x.shape[0], self.n_layers, self.cfg.d_sae
        rule = self.cfg.variant
        if rule not in CLT_RULES:
            raise ValueError(f"a CLT trains with the rules {CLT_RULES}, not {rule!r}")
        codes, aux, l1 = [], [], []
        for i in range(L):
            x_i = x[:, i].contiguous()
            if rule == "topk":
                dead_i = None if dead_mask is None else dead_mask[i * F : (i + 1) * F]
                if self.cfg.aux_k_coef == 0 or (dead_i is not None and not bool(dead_i.any())):
                    dead_i = None
                v, idx, av, ai = topk_encode_with_aux(
                    x_i,
                    self.W_enc[i],
                    self.b_enc[i],
                    self.cfg.k,
                    dead_i,
                    self.cfg.k_aux,
                    dtype=self.variant.gemm_dtype,  # encoder_dtype bfloat16: select in bf16
                )
                codes.append((v, idx + i * F))
                if av is not None:
                    aux.append((i, av, ai))
            else:
                z = torch.relu(torch.addmm(self.b_enc[i], x_i, self.W_enc[i]))
                codes.append(z)
                norms = torch.stack([self.W_dec[j][i].norm(dim=-1) for j in range(i, L)])
                l1.append((z * norms.pow(2).sum(0).sqrt()).sum(-1))
        if rule == "topk":
            values = torch.cat([v for v, _ in codes], 1)
            indices = torch.cat([ix for _, ix in codes], 1)
            k = self.cfg.k
            outs = [
                sparse_decode(
                    values[:, : (j + 1) * k].contiguous(),
                    indices[:, : (j + 1) * k].contiguous(),
                    w.reshape(-1, w.shape[-1]),
                    self.b_dec[j],
                )
                for j, w in enumerate(self.W_dec)
            ]
            code = SparseCode(values, indices)
        else:
            z_all = torch.cat(codes, 1)
            outs = [
                torch.addmm(self.b_dec[j], z_all[:, : (j + 1) * F], w.reshape(-1, w.shape[-1]))
                for j, w in enumerate(self.W_dec)
            ]
            code = z_all
        per_layer = torch.stack(
            [fvu_loss(target[:, j], outs[j], comm) for j in range(L)]  # each layer's own variance
        )
        losses = {"fvu": per_layer.mean()}
        if aux:
            terms = [
                aux_k_loss(target[:, i], outs[i], av, ai, self.W_dec[i][i], comm)
                for i, av, ai in aux
            ]
            losses["aux_k"] = self.cfg.aux_k_coef * torch.stack(terms).sum() / L
        if l1:
            y_flat = target.reshape(B, -1)
            scale = (
                row_mean_of_data(
                    (y_flat - row_mean_of_data(y_flat, comm)).norm(dim=-1, keepdim=True), comm
                )
                .squeeze()
                .clamp_min(1e-12)
            )
            losses["l1"] = self.cfg.l1_coefficient * loss_mean(torch.stack(l1).sum(0), comm) / scale
        return TrainOutput(torch.stack(outs, 1), code, losses)
