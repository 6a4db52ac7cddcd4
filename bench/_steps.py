"""The training steps the benchmarks run besides our trainer, on activations handed in: a
kernel-only step (``bench.sae_step`` times its phases), SAELens's ``SAETrainer`` step and
sparsify's ``Trainer`` step (timed by ``bench.sae_step``, trained with by ``bench.sae_quality``),
and what no setting of the peers makes the same as ours."""

from __future__ import annotations

import contextlib
import io
import time

import torch

from saes import kernels
from saes.kernels import sparse_decode, topk_encode


# ------------------------------------------------------------------------------------------------
# kernel-only: a minimal step built only from the kernels (not the trainer)
# ------------------------------------------------------------------------------------------------
class KernelStep:
    """Kernel-only TopK SAE step: saes.kernels + plain MSE + torch Adam (fused by default).

    Not saes.training.step.TrainStep: no FVU normalisation, no AuxK, no input scaling, no SAE module.
    Its phases are timed one by one when ``timer`` is a dict (``_mark``).
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        lr: float,
        adam: str = "fused",
        dtype: torch.dtype | None = None,
        select: str = "auto",
        seed: int = 0,
    ) -> None:
        g = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_sae, d_in, generator=g)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = W_dec.requires_grad_()
        # The encoder weight is stored latent-major, W_enc_t [d_sae, d_in] (like nn.Linear), and
        # the kernels get the [d_in, d_sae] view W_enc_t.t(): the encoder gradient and the
        # augmented GEMM copy then need no transposition, and Adam sees contiguous tensors.
        self.W_enc_t = W_dec.detach().clone().requires_grad_()
        self.b_enc = torch.zeros(d_sae, requires_grad=True)
        self.b_dec = torch.zeros(d_in, requires_grad=True)
        self.k, self.dtype, self.select = k, dtype, select
        params = [self.W_enc_t, self.b_enc, self.W_dec, self.b_dec]
        self.opt = torch.optim.Adam(
            params, lr=lr, **{adam: True} if adam in ("fused", "foreach") else {}
        )
        self.tokens_since_fired = torch.zeros(d_sae, dtype=torch.long)
        self.timer: dict[str, list[float]] | None = None

    def _mark(self, name: str, t0: float) -> float:
        t1 = time.perf_counter()
        if self.timer is not None:
            self.timer.setdefault(name, []).append(t1 - t0)
        return t1

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        values, indices = topk_encode(
            x,
            self.W_enc_t.t(),
            self.b_enc,
            self.k,
            b_dec=self.b_dec,
            dtype=self.dtype,
            select=self.select,
        )
        t = self._mark("encode fwd (GEMM+select)", t)
        x_hat = sparse_decode(values, indices, self.W_dec, self.b_dec)
        loss = torch.nn.functional.mse_loss(x_hat, x, reduction="sum") / x.shape[0]
        t = self._mark("decode fwd + loss", t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        t = self._mark("backward", t)
        with torch.no_grad():
            kernels.remove_parallel_grad_(self.W_dec)
            t = self._mark("grad projection", t)
            self.opt.step()
            t = self._mark("adam", t)
            kernels.normalize_rows_(self.W_dec)
            t = self._mark("renorm", t)
            self.tokens_since_fired += x.shape[0]
            fired = torch.bincount(
                indices.view(-1),
                weights=values.detach().view(-1),
                minlength=len(self.tokens_since_fired),
            )
            self.tokens_since_fired.masked_fill_(fired > 0, 0)
            self._mark("bookkeeping", t)
        return loss.detach()


# ------------------------------------------------------------------------------------------------
# SAELens: its own SAETrainer
# ------------------------------------------------------------------------------------------------
def saelens_trainer(
    d_in: int,
    d_sae: int,
    k: int,
    batch: int,
    total_steps: int,
    seed: int = 0,
    sae_kwargs: dict | None = None,
    **runner_kwargs,
):
    """SAELens's SAETrainer around a TopKTrainingSAE.

    The trainer config comes from ``LanguageModelSAERunnerConfig(...).to_sae_trainer_config()``,
    so every field not given in ``runner_kwargs`` (lr, scheduler, warm-up, decay, dead window,
    norm-estimate batches, ...) is SAELens's own default, and ``sae_kwargs`` override
    ``TopKTrainingSAEConfig``'s defaults (normalize_activations, decoder_init_norm, ...). The
    activation source is handed in step by step (``saelens_step``), so no model is loaded.
    """
    from sae_lens.config import LanguageModelSAERunnerConfig, LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae_cfg = TopKTrainingSAEConfig(
        d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu", **(sae_kwargs or {})
    )
    runner = LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        training_tokens=total_steps * batch,
        train_batch_size_tokens=batch,
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        verbose=False,
        **runner_kwargs,
    )
    torch.manual_seed(seed)  # SAELens initialises from the global generator
    sae = TopKTrainingSAE(sae_cfg)
    return SAETrainer(runner.to_sae_trainer_config(), sae, data_provider=iter(()))


def saelens_step(trainer):
    """One iteration of SAETrainer.fit's loop (no wandb logging, no checkpoints) on a raw batch."""

    def step(x: torch.Tensor) -> torch.Tensor:
        trainer.maybe_reset_sparsity()
        out = trainer.step(
            x
        )  # scaler, training_forward_pass, firing stats, backward, clip, Adam, lr
        trainer.n_training_steps += 1
        return out.loss.detach()

    step.trainer = trainer
    step.sae = trainer.sae
    return step


# ------------------------------------------------------------------------------------------------
# EleutherAI sparsify: its Trainer's step on given activations
# ------------------------------------------------------------------------------------------------
def _sparsify():
    with contextlib.redirect_stdout(io.StringIO()):  # "Triton not installed" notice
        import sparsify
        from sparsify import SparseCoder, SparseCoderConfig
        from sparsify.config import TrainConfig
    return sparsify, SparseCoder, SparseCoderConfig, TrainConfig


class SparsifyStep:
    """What ``sparsify.trainer.Trainer.fit`` does per batch for ``loss_fn="fvu"``.

    One hookpoint, no DDP, ``grad_acc_steps = micro_acc_steps = 1``, on activations handed in
    (sparsify's Trainer captures them itself from a Hugging Face model through forward hooks).
    Settings come from sparsify's ``TrainConfig`` (its defaults unless given in ``train_kwargs``);
    the optimiser, its lr default and schedule are built as ``Trainer.__init__`` builds them.

    Outside sparsify (for rows matched to ours): ``input_scale`` multiplies every batch (sparsify
    has no input normalisation), ``b_dec`` replaces its first-batch-mean initialisation, and
    ``lr_lambda`` replaces its schedule (a torch LambdaLR).
    """

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        num_batches: int,
        seed: int = 0,
        input_scale: float | None = None,
        b_dec: torch.Tensor | None = None,
        lr_lambda=None,
        transcode: bool = False,
        output_scale: float | None = None,
        **train_kwargs,
    ) -> None:
        _, SparseCoder, SparseCoderConfig, TrainConfig = _sparsify()
        self.output_scale = output_scale
        self.cfg = TrainConfig(
            sae=SparseCoderConfig(num_latents=d_sae, k=k, transcode=transcode),
            loss_fn="fvu",
            log_to_wandb=False,
            **train_kwargs,
        )
        torch.manual_seed(seed)  # as Trainer.__init__, per init seed
        self.sae = SparseCoder(d_in, self.cfg.sae, "cpu", dtype=torch.float32)
        self.input_scale = input_scale
        self.b_dec_given = b_dec is not None
        if b_dec is not None:
            self.sae.b_dec.data = b_dec.detach().clone().float()
        n = self.sae.num_latents
        self.scheduler = None
        if self.cfg.optimizer == "adam":
            try:
                from bitsandbytes.optim import Adam8bit as Adam  # what sparsify prefers

                self.adam = "bitsandbytes Adam8bit"
            except ImportError:
                from torch.optim import Adam

                self.adam = "torch.optim.Adam"
            self.lr = self.cfg.lr or 2e-4 / (n / 2**14) ** 0.5
            self.optimizer = Adam([dict(params=self.sae.parameters(), lr=self.lr)])
            if lr_lambda is not None:
                self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
            else:
                with contextlib.redirect_stdout(io.StringIO()):
                    from transformers import get_linear_schedule_with_warmup
                self.scheduler = get_linear_schedule_with_warmup(
                    self.optimizer, self.cfg.lr_warmup_steps, num_batches
                )
        elif self.cfg.optimizer == "signum":
            from schedulefree import ScheduleFreeWrapper
            from sparsify.sign_sgd import SignSGD

            self.lr = self.cfg.lr or 5e-3 / (n / 2**14) ** 0.5
            self.optimizer = ScheduleFreeWrapper(
                SignSGD([dict(params=self.sae.parameters(), lr=self.lr)]), momentum=0.95
            )
            self.optimizer.train()
            if lr_lambda is not None:
                raise ValueError("sparsify's signum optimiser has no lr schedule")
        else:
            raise ValueError(f"optimizer {self.cfg.optimizer!r} is not mirrored here")
        self.since_fired = torch.zeros(n, dtype=torch.long)
        self.did_fire = torch.zeros(n, dtype=torch.bool)
        self.global_step = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """One step on x (a transcoder: predicting y; sparsify's Trainer hands it the hooked
        module's input and output)."""
        cfg, sae = self.cfg, self.sae
        transcode = cfg.sae.transcode
        if self.input_scale:
            x = x * self.input_scale
        if y is None:
            y = x
        elif self.output_scale:
            y = y * self.output_scale
        if self.global_step == 0 and transcode:
            # Trainer.fit at step 0 for transcoders: encoder bias -mean(x) W_enc^T, b_dec mean(y)
            sae.encoder.bias.data = -x.mean(0).to(sae.dtype) @ sae.encoder.weight.data.T
            sae.b_dec.data = y.mean(0).to(sae.dtype)
        elif self.global_step == 0 and not self.b_dec_given:
            sae.b_dec.data = x.mean(0).to(sae.dtype)  # its init: the first batch's mean
        normalize = cfg.sae.normalize_decoder and not transcode  # as Trainer.fit
        if normalize:
            sae.set_decoder_norm_to_unit_norm()
        dead_mask = self.since_fired > cfg.dead_feature_threshold if cfg.auxk_alpha > 0 else None
        total_variance = (y - y.mean(0)).pow(2).sum()
        out = sae(x=x, y=y, dead_mask=dead_mask, total_variance=total_variance)
        self.did_fire[out.latent_indices.flatten()] = True
        loss = out.fvu + cfg.auxk_alpha * out.auxk_loss + out.multi_topk_fvu / 8
        loss.backward()
        if normalize:
            sae.remove_gradient_parallel_to_decoder_directions()
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.scheduler is not None:
            self.scheduler.step()
        with torch.no_grad():
            self.since_fired += x.shape[0]
            self.since_fired[self.did_fire] = 0
            self.did_fire.zero_()
        self.global_step += 1
        return loss.detach()

    def eval_mode(self) -> None:
        """The weights sparsify saves: schedule-free optimisers switch to their averaged point."""
        if hasattr(self.optimizer, "eval"):
            self.optimizer.eval()

    @property
    def current_lr(self) -> float:
        groups = (
            self.optimizer.param_groups
            if hasattr(self.optimizer, "param_groups")
            else self.optimizer.base.param_groups
        )
        return groups[0]["lr"]


# implementation differences that no setting of the peer changes
SAELENS_ALWAYS = [
    "loss: squared error summed over d_in, mean over tokens (MSE); ours: FVU (squared error / the batch's "
    "total variance), the same up to a per-batch factor, which Adam largely cancels",
    "AuxK: weight aux_loss_coefficient (1.0, its default) x min(n_dead / k_aux, 1) on the raw squared error "
    "of the residual, aux codes not ReLU'd; ours: 1/32 x the residual's FVU (normalised by the residual's "
    "variance), ReLU'd aux codes, no min(n_dead / k_aux, 1) factor. No constant coefficient makes the two "
    "equal (their ratio moves with the FVU); k_aux = min(d_in / 2, n_dead) in both",
    "decoder: SAELens leaves W_dec free and divides the activations by its row norms "
    "(rescale_acts_by_decoder_norm=True, its default); ours keeps unit-norm rows (gradient projection and "
    "renormalisation after every Adam step)",
    "gradients clipped to norm 1.0 (hard-coded in SAETrainer._train_step); ours: no clipping",
    "W_dec initialised kaiming-uniform, then rows rescaled to decoder_init_norm; ours: Gaussian rows of unit "
    "norm; W_enc = W_dec^T and b_enc = 0 in both",
    "optimiser: torch.optim.Adam (betas 0.9/0.999, eps 1e-8); ours: fused Adam with the same hyper-parameters",
    "selection: torch.topk over the dense [batch, d_sae] pre-activations (ReLU after top-k); ours: top-k of "
    "the ReLU'd pre-activations (C++/tree top-k): the same latents up to ties",
]
SPARSIFY_ALWAYS = [
    "AuxK (when on): auxk_alpha x min(n_dead / k_aux, 1) x the residual's squared error / the batch's total "
    "variance of x, aux codes not ReLU'd; ours: 1/32 x the residual's FVU (normalised by the residual's "
    "variance), ReLU'd aux codes, no min(n_dead / k_aux, 1) factor, so at the same weight ours is about "
    "1/FVU times stronger; k_aux = min(d_in / 2, n_dead) in both",
    "decoder rows renormalised before every forward (ours: after every Adam step); the same gradient "
    "projection",
    "encoder initialised by nn.Linear (kaiming-uniform rows, norm ~0.58), W_dec = its copy renormalised to unit "
    "rows; ours: W_enc = W_dec^T, both with unit-norm rows",
    "torch.set_float32_matmul_precision('high'), which sparsify's Trainer.fit sets, is not set: it selects tf32 "
    "in oneDNN, which has no effect on this AVX2 CPU (bit-identical GEMM results)",
    "selection: torch.topk over the dense ReLU'd pre-activations; ours: C++/tree top-k (same latents up to ties)",
]
