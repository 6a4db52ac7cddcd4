"""Benchmark: TopK SAE quality on SmolLM2 activations, ours vs SAELens vs sparsify, each peer twice.

Captures ``--tokens`` training activations at blocks.L.hook_resid_post (train split of the stdlib
corpus) and ``--eval-tokens`` held-out ones (validation split) once, and caches them in a
safetensors file under runs/bench_cache/ keyed on the arguments (``--no-cache`` to recapture).
Then trains, on the same batches in the same order (one step of every row per batch, rows
rotated, so load from other processes on a shared machine hits them alike):

  ours               saes.training.step.TrainStep with the project's defaults (RunConfig: lr default_lr,
                     warm-up 50 steps, linear decay over the last 20%, dead after
                     min(10M, train_tokens/10) tokens, input scaled to E||x|| = sqrt(d_in),
                     b_dec = geometric median of the first 4,096 tokens), as `interp train` runs it
  saelens_defaults   SAELens's own SAETrainer + TopKTrainingSAE, every setting its default
                     (LanguageModelSAERunnerConfig / TopKTrainingSAEConfig) except k and d_sae
  saelens_matched    the same trainer with its own options set to ours where it has them: lr,
                     normalize_activations="expected_average_only_in", dead_feature_window in
                     steps = our dead window in tokens, its lr scheduler with our warm-up and
                     decay, decoder_init_norm 1; b_dec set outside it (it has no b_dec init option)
  sparsify_defaults  sparsify's Trainer step (bench/_steps.py's SparsifyStep) with its
                     TrainConfig defaults (signum optimiser, its lr, auxk_alpha 0)
  sparsify_matched   the same with its optimizer="adam", our lr, auxk_alpha 1/32 and our dead
                     window; our input scale, lr schedule and b_dec applied outside it (it has
                     no options for them)

and reports held-out FVU, L0, dead fraction (never firing on the held-out tokens), cosine and
training tokens/s for each. The JSON records, per row, the exact settings, what was applied
outside the library, and the differences that remain versus ours; plus provenance (commit,
dirty files, date, machine, command). Prints and saves bench/results/sae_quality.json.

    python -m bench.sae_quality [--tokens 409600] [--d-sae 4608] [--k 32] [--rows ours,saelens_matched]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

from bench._steps import (
    SAELENS_ALWAYS,
    SPARSIFY_ALWAYS,
    SparsifyStep,
    saelens_step,
    saelens_trainer,
)
from bench.sae_quality_render import render  # noqa: F401  (its renderer)

TITLE = "Quality against SAELens and sparsify"  # its name in the docs (python -m bench.report)

ROOT = Path(__file__).resolve().parents[1]

ROWS = ("ours", "saelens_defaults", "saelens_matched", "sparsify_defaults", "sparsify_matched")
CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------------
# activations (captured once, cached)
# ------------------------------------------------------------------------------------------------
def capture(model, hook: str, split: str, tokens: int, context: int, source: str) -> torch.Tensor:
    from interp.activations import ActivationCapture, capture_stream
    from interp.data import token_batches

    cap = ActivationCapture(model, [hook])
    batches = token_batches(
        model.tokenizer, source=source, context_size=context, split=split, seed=0, batch_size=16
    )
    return torch.cat([b.acts[hook] for b in capture_stream(cap, batches, max_tokens=tokens)])


def activations(args, hook: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(train [N, d_in], eval [M, d_in], info): from the cache file when it exists."""
    from safetensors.torch import load_file, save_file

    key = {
        "v": CACHE_VERSION,
        "model": args.model,
        "hook": hook,
        "source": args.source,
        "context": args.context,
        "train_tokens": args.tokens,
        "eval_tokens": args.eval_tokens,
        "torch": torch.__version__,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(args.cache_dir) / f"sae_quality_{digest}.safetensors"
    if path.exists() and not args.no_cache:
        t = load_file(str(path))
        meta = json.loads((path.with_suffix(".json")).read_text())
        print(
            f"activations from the cache {path} (captured {meta['created']}, {meta['capture_s']:.0f} s)"
        )
        return t["train"], t["eval"], {**meta, "from_cache": True, "cache_file": str(path)}
    from interp.models import load_model

    model = load_model(args.model)
    t0 = time.perf_counter()
    train_x = capture(model, hook, "train", args.tokens, args.context, args.source)
    eval_x = capture(model, hook, "validation", args.eval_tokens, args.context, args.source)
    meta = {
        "key": key,
        "capture_s": time.perf_counter() - t0,
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    del model
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"train": train_x.contiguous(), "eval": eval_x.contiguous()}, str(tmp))
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    print(
        f"captured {train_x.shape[0]:,} + {eval_x.shape[0]:,} tokens in {meta['capture_s']:.0f} s; cached in {path}"
    )
    return train_x, eval_x, {**meta, "from_cache": False, "cache_file": str(path)}


# ------------------------------------------------------------------------------------------------
# the rows
# ------------------------------------------------------------------------------------------------
class _Evaluable:
    """What saes.evaluation.evaluate.reconstruction_metrics needs: sae(x) -> (x_hat, dense z), cfg.d_sae, device, W_enc."""

    def __init__(self, fn, d_sae: int) -> None:
        self.fn, self.cfg = fn, SimpleNamespace(d_sae=d_sae)
        self.device, self.W_enc = torch.device("cpu"), torch.empty(0)

    def __call__(self, x, g=None):  # noqa: ARG002
        return self.fn(x)


@dataclasses.dataclass
class Row:
    name: str
    label: str
    step: object  # callable on a raw batch
    evaluable: object  # built after training by finish()
    settings: dict
    outside: list[str]  # settings applied outside the library (the library has no option for them)
    differences: list[str]  # what still differs from ours
    lr_of: object = None  # () -> the lr of the next step
    finish: object = None
    summary: list[str] = dataclasses.field(default_factory=list)  # the settings in a few words


def _lr_of_optimizer(opt):
    return lambda: opt.param_groups[0]["lr"]


def make_ours(d_in: int, args, n_steps: int, sample: torch.Tensor) -> Row:
    from saes import kernels
    from saes.sae import SAE
    from saes.training.config import RunConfig
    from saes.training.loop import TrainStep, initial_statistics

    cfg = RunConfig(
        data={"batch_tokens": args.batch, "train_tokens": n_steps * args.batch, "seed": 0},
        sae={"d_sae": args.d_sae, "k": args.k},
        optim={"lr": args.lr},
    )
    sae = SAE(cfg.sae_config(d_in), seed=cfg.data.seed)
    scale, median = initial_statistics(sample[: cfg.data.init_sample_tokens], cfg)
    sae.cfg.input_scale = scale
    with torch.no_grad():
        sae.b_dec.copy_(median)
    step = TrainStep(
        sae,
        lr=cfg.optim.lr,
        total_steps=n_steps,
        warmup_steps=cfg.optim.warmup_steps,
        decay_fraction=cfg.optim.decay_fraction,
        dead_tokens=cfg.resolved_dead_tokens,
    )
    settings = {
        "trainer": "saes.training.step.TrainStep, set up as saes.training.loop.train_runs does",
        "lr": step.lr,
        "warmup_steps": cfg.optim.warmup_steps,
        "decay_fraction": cfg.optim.decay_fraction,
        "lr_schedule": "linear warm-up, constant, linear decay to 0 over the last decay_fraction of steps",
        "dead_tokens": cfg.resolved_dead_tokens,
        "aux_k": sae.cfg.k_aux,
        "aux_k_coef": sae.cfg.aux_k_coef,
        "normalize_input": cfg.optim.normalize_input,
        "input_scale": scale,
        "b_dec_init": f"geometric median of the first {cfg.data.init_sample_tokens} training tokens (scaled)",
        "init_sample_tokens": cfg.data.init_sample_tokens,
        "seed": cfg.data.seed,
        "loss": "FVU + AuxK",
        "optimizer": "saes.training.optim.SAEAdam (fused Adam), betas (0.9, 0.999), eps 1e-8",
        "selection_kernel": kernels.selection_kernel(),
    }
    from saes.training.loop import lr_factor

    # the lr TrainStep sets for its next step (it writes the param group inside the step)
    def lr_of() -> float:
        return step.lr * lr_factor(
            step.step_index, step.total_steps, step.warmup_steps, step.decay_fraction
        )

    summary = [
        "saes.training.step.TrainStep with the RunConfig defaults, as `interp train` sets it up",
        f"Adam, lr {step.lr:.3g} (default_lr), warm-up {cfg.optim.warmup_steps} steps, linear decay to 0 over the last "
        f"{cfg.optim.decay_fraction:.0%} of steps",
        f"inputs scaled to E||x|| = sqrt(d_in) (x {scale:.4g})",
        f"b_dec = geometric median of the first {cfg.data.init_sample_tokens:,} training tokens",
        f"AuxK (1/32, k_aux {sae.cfg.k_aux}) on latents that did not fire for {cfg.resolved_dead_tokens:,} tokens",
    ]
    return Row(
        "ours",
        "interp TopK (TrainStep, defaults)",
        step,
        sae,
        settings,
        [],
        [],
        lr_of=lr_of,
        summary=summary,
    )


def _saelens_settings(trainer) -> dict:
    tc = {
        f.name: getattr(trainer.cfg, f.name)
        for f in dataclasses.fields(trainer.cfg)
        if f.name != "logger"
    }
    sc = trainer.sae.cfg.to_dict()
    sc.pop("metadata", None)
    return {
        "trainer": "sae_lens.training.sae_trainer.SAETrainer (step / maybe_reset_sparsity, as fit() loops)",
        "sae": "sae_lens TopKTrainingSAE",
        "trainer_config": tc,
        "sae_config": sc,
        "clip_grad_norm": 1.0,
    }


def make_saelens(
    d_in: int, args, n_steps: int, sample: torch.Tensor, ours: Row, matched: bool
) -> Row:
    from saes.training.geometric_median import geometric_median

    if not matched:
        trainer = saelens_trainer(d_in, args.d_sae, args.k, args.batch, n_steps, seed=0)
        outside: list[str] = []
        diffs = [
            f"lr {trainer.cfg.lr:g} (its default); ours {ours.settings['lr']:.3g}",
            "lr constant (lr_scheduler_name 'constant', no warm-up or decay: its defaults); ours: warm-up "
            f"{ours.settings['warmup_steps']} steps and linear decay over the last "
            f"{ours.settings['decay_fraction']:.0%}",
            "no input normalisation (normalize_activations 'none', its default); ours scales inputs to "
            "E||x|| = sqrt(d_in)",
            f"dead window {trainer.cfg.dead_feature_window} steps (its default: dead after "
            f"{(trainer.cfg.dead_feature_window + 1) * args.batch:,} tokens without firing), longer than this run "
            f"({n_steps} steps), so AuxK never turns on; ours: {ours.settings['dead_tokens']:,} tokens",
            "b_dec initialised to 0 (SAELens has no other b_dec init); ours: geometric median",
            f"decoder_init_norm {trainer.sae.cfg.decoder_init_norm} (its default, W_enc = W_dec^T at that norm); "
            "ours: unit-norm rows",
        ]
    else:
        dead_steps = max(0, math.ceil(ours.settings["dead_tokens"] / args.batch) - 1)
        trainer = saelens_trainer(
            d_in,
            args.d_sae,
            args.k,
            args.batch,
            n_steps,
            seed=0,
            sae_kwargs={
                "normalize_activations": "expected_average_only_in",
                "decoder_init_norm": 1.0,
            },
            lr=ours.settings["lr"],
            lr_scheduler_name="constant",
            lr_warm_up_steps=ours.settings["warmup_steps"],
            lr_decay_steps=int(n_steps * ours.settings["decay_fraction"]),
            dead_feature_window=dead_steps,
            n_batches_for_norm_estimate=1,
        )
        # what SAETrainer.fit does before its loop: the scaling factor sqrt(d_in) / E||x||, here
        # from the same first 4,096 tokens ours uses (as 1 batch; its default is 1000 batches,
        # more than this run has)
        trainer.activation_scaler.estimate_scaling_factor(
            d_in=d_in,
            data_provider=iter([sample]),
            n_batches_for_norm_estimate=trainer.cfg.n_batches_for_norm_estimate,
        )
        with torch.no_grad():
            trainer.sae.b_dec.copy_(
                geometric_median(sample * trainer.activation_scaler.scaling_factor)
            )
        outside = [
            "b_dec initialised to the geometric median of the first 4,096 training tokens (scaled), as ours: "
            "SAELens v6 has no b_dec initialisation option (it starts at 0)"
        ]
        diffs = [
            f"dead window {dead_steps} steps: SAELens counts a latent dead after more than dead_feature_window "
            f"steps without firing, so {dead_steps} steps = ours {ours.settings['dead_tokens']:,} tokens exactly",
            "input scale estimated by SAELens's ActivationScaler from 1 batch (the same 4,096 tokens as ours) "
            "instead of its default 1000 batches (more than this run has)",
        ]
        if trainer.cfg.lr_warm_up_steps + trainer.cfg.lr_decay_steps > n_steps:
            diffs.append(
                "this run is shorter than warm-up + decay: SAELens's scheduler (SequentialLR) then does "
                "not follow our schedule (see lr_schedule_max_rel_diff_vs_ours)"
            )
    tc, sc = trainer.cfg, trainer.sae.cfg
    summary = [
        "SAELens's SAETrainer + TopKTrainingSAE, "
        + (
            "every setting its default except k and d_sae"
            if not matched
            else "its own options set to ours"
        ),
        f"Adam, lr {tc.lr:.3g}, scheduler '{tc.lr_scheduler_name}', lr_warm_up_steps {tc.lr_warm_up_steps}, "
        f"lr_decay_steps {tc.lr_decay_steps}",
        f"normalize_activations '{sc.normalize_activations}'",
        f"dead_feature_window {tc.dead_feature_window} steps ({(tc.dead_feature_window + 1) * args.batch:,} tokens "
        "without firing)",
        f"decoder_init_norm {sc.decoder_init_norm}, rescale_acts_by_decoder_norm {sc.rescale_acts_by_decoder_norm}, "
        f"aux_loss_coefficient {sc.aux_loss_coefficient}",
        "b_dec = geometric median (set outside SAELens)" if matched else "b_dec = 0",
    ]
    row = Row(
        "",
        "",
        saelens_step(trainer),
        None,
        _saelens_settings(trainer),
        outside,
        diffs + SAELENS_ALWAYS,
        lr_of=_lr_of_optimizer(trainer.optimizer),
        summary=summary,
    )
    if matched:
        row.settings["activation_scaler_scaling_factor"] = trainer.activation_scaler.scaling_factor

    def finish():
        # the end of SAETrainer.fit: fold the scaling factor into the weights (raw inputs after this)
        sf = trainer.activation_scaler.scaling_factor
        if sf is not None:
            trainer.sae.fold_activation_norm_scaling_factor(sf)
            trainer.activation_scaler.scaling_factor = None
        sae = trainer.sae
        sae.eval()

        def fwd(x):
            z = sae.encode(x)
            return sae.decode(z), z

        return _Evaluable(fwd, args.d_sae)

    row.finish = finish
    return row


def make_sparsify(
    d_in: int, args, n_steps: int, sample: torch.Tensor, ours: Row, matched: bool
) -> Row:
    from saes.training.geometric_median import geometric_median
    from saes.training.loop import lr_factor

    if not matched:
        step = SparsifyStep(d_in, args.d_sae, args.k, n_steps, seed=0)
        outside: list[str] = []
        diffs = [
            f"optimiser signum (SignSGD inside schedulefree's ScheduleFreeWrapper, momentum 0.95; its default) at "
            f"lr {step.lr:.3g} (its default 5e-3 / sqrt(d_sae / 2^14)); ours: Adam at {ours.settings['lr']:.3g}. "
            "Evaluated at the schedule-free averaged weights (optimizer.eval(), as sparsify does before saving)",
            "no lr schedule (signum has none in sparsify); ours: warm-up and linear decay",
            "AuxK off (auxk_alpha 0, its default); ours: AuxK after "
            f"{ours.settings['dead_tokens']:,} tokens without firing",
            "no input normalisation (sparsify has none; its FVU loss is scale-free, but Adam/signum steps are not)",
            "b_dec initialised to the first batch's mean (its init); ours: geometric median of the same tokens",
        ]
    else:
        scale = ours.settings["input_scale"]
        median = geometric_median(sample * scale)
        total, warm, dec = n_steps, ours.settings["warmup_steps"], ours.settings["decay_fraction"]
        step = SparsifyStep(
            d_in,
            args.d_sae,
            args.k,
            n_steps,
            seed=0,
            input_scale=scale,
            b_dec=median,
            lr_lambda=lambda s: lr_factor(s, total, warm, dec),
            optimizer="adam",
            lr=ours.settings["lr"],
            auxk_alpha=1 / 32,
            dead_feature_threshold=ours.settings["dead_tokens"] - 1,
        )
        outside = [
            f"inputs multiplied by our input scale {scale:.5g} (E||x|| = sqrt(d_in)); sparsify has no input "
            "normalisation. Evaluated on x_hat / scale against raw x",
            "lr schedule: ours (warm-up, constant, linear decay over the last 20%) via torch LambdaLR over "
            "saes.training.step.lr_factor; sparsify's only Adam schedule is transformers' linear warm-up then linear "
            "decay to 0 over the whole run (no constant phase)",
            "b_dec initialised to the geometric median of the first 4,096 training tokens (scaled), as ours; "
            "sparsify's init is the first batch's mean",
        ]
        diffs = [
            "dead after more than dead_feature_threshold tokens without firing: threshold = ours - 1, the same window",
            f"optimiser {step.adam} (sparsify's fallback without bitsandbytes)",
        ]
    settings = {
        "trainer": "bench/_steps.py SparsifyStep: sparsify.trainer.Trainer.fit's step for loss_fn='fvu'",
        "sae": "sparsify.SparseCoder",
        "train_config": step.cfg.to_dict(),
        "lr": step.lr,
        "optimizer_class": type(step.optimizer).__name__,
        "scheduler": None if step.scheduler is None else type(step.scheduler).__name__,
        "input_scale": step.input_scale,
        "b_dec_init": "given (geometric median)" if step.b_dec_given else "first batch's mean",
    }
    c = step.cfg
    if c.optimizer == "signum":
        opt = (
            f"signum (SignSGD in ScheduleFreeWrapper, momentum 0.95), lr {step.lr:.3g}, no schedule; evaluated "
            "at the schedule-free average"
        )
    else:
        opt = f"Adam, lr {step.lr:.3g}, " + (
            "our schedule (LambdaLR, set outside sparsify)"
            if matched
            else f"linear warm-up {c.lr_warmup_steps} steps, then linear decay"
        )
    summary = [
        "sparsify's SparseCoder and its Trainer's step, "
        + (
            "its TrainConfig defaults except k and num_latents"
            if not matched
            else "its own options set to ours"
        ),
        opt,
        (
            f"AuxK auxk_alpha {c.auxk_alpha:g} on latents that did not fire for {c.dead_feature_threshold + 1:,} "
            f"tokens (dead_feature_threshold {c.dead_feature_threshold:,})"
        )
        if c.auxk_alpha > 0
        else "auxk_alpha 0: no AuxK",
        f"inputs x {step.input_scale:.4g} (set outside sparsify)"
        if step.input_scale
        else "raw inputs",
        "b_dec = geometric median (set outside sparsify)"
        if step.b_dec_given
        else "b_dec = the first batch's mean",
    ]
    row = Row(
        "",
        "",
        step,
        None,
        settings,
        outside,
        diffs + SPARSIFY_ALWAYS,
        lr_of=lambda: step.current_lr,
        summary=summary,
    )

    def finish():
        step.eval_mode()
        sae, s = step.sae, step.input_scale or 1.0

        def fwd(x):
            out = sae(x * s)
            z = torch.zeros(x.shape[0], args.d_sae).scatter_(
                1, out.latent_indices, out.latent_acts.float()
            )
            return out.sae_out / s, z

        return _Evaluable(fwd, args.d_sae)

    row.finish = finish
    return row


LABELS = {
    "ours": "interp TopK (TrainStep, defaults)",
    "saelens_defaults": "SAELens TopKTrainingSAE, its defaults",
    "saelens_matched": "SAELens TopKTrainingSAE, matched to ours",
    "sparsify_defaults": "sparsify SparseCoder, its defaults",
    "sparsify_matched": "sparsify SparseCoder, matched to ours",
}


def main(argv: list[str] | None = None) -> dict:
    from bench._provenance import provenance
    from saes.evaluation.evaluate import reconstruction_metrics

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokens", type=int, default=409_600)
    ap.add_argument("--eval-tokens", type=int, default=32_768)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--source", default="stdlib")
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument(
        "--lr", type=float, default=None, help="default: ours (saes.training.step.default_lr)"
    )
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--cache-dir", default=str(ROOT / "runs" / "bench_cache"))
    ap.add_argument("--no-cache", action="store_true", help="recapture the activations")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "sae_quality.json"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    rows_wanted = [r for r in args.rows.split(",") if r]
    unknown = set(rows_wanted) - set(ROWS)
    if unknown:
        raise SystemExit(f"unknown rows {sorted(unknown)}; valid: {', '.join(ROWS)}")
    t_start = time.perf_counter()
    prov = provenance(sys.argv if argv is None else [sys.argv[0], *argv])

    hook = f"blocks.{args.layer}.hook_resid_post"
    train_x, eval_x, data_info = activations(args, hook)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(train_x.shape[0], generator=g)
    train_x = train_x[order]  # the training order, shared by every row
    n_steps = train_x.shape[0] // args.batch
    d_in = train_x.shape[1]
    sample = train_x[
        :4096
    ]  # ours' init_sample_tokens (RunConfig default): the first training tokens

    ours = make_ours(d_in, args, n_steps, sample)
    rows: list[Row] = []
    for name in rows_wanted:
        if name == "ours":
            row = ours
        elif name.startswith("saelens"):
            row = make_saelens(d_in, args, n_steps, sample, ours, matched=name.endswith("matched"))
        else:
            row = make_sparsify(d_in, args, n_steps, sample, ours, matched=name.endswith("matched"))
        row.name, row.label = name, LABELS[name]
        rows.append(row)

    timings = {r.name: 0.0 for r in rows}
    lrs: dict[str, list[float]] = {r.name: [] for r in rows}
    losses_first_last: dict[str, list[float]] = {r.name: [] for r in rows}
    t_train = time.perf_counter()
    for i in range(n_steps):
        x = train_x[i * args.batch : (i + 1) * args.batch]
        for j in range(len(rows)):  # rotated: no row always runs first after the batch is sliced
            row = rows[(i + j) % len(rows)]
            if row.lr_of is not None:
                lrs[row.name].append(float(row.lr_of()))
            t = time.perf_counter()
            out = row.step(x)
            timings[row.name] += time.perf_counter() - t
            if i in (0, n_steps - 1):
                losses_first_last[row.name].append(
                    float(out["loss"] if isinstance(out, dict) else out)
                )
        if (i + 1) % max(1, n_steps // 10) == 0:
            print(
                f"  step {i + 1}/{n_steps}  "
                + "  ".join(f"{r.name} {timings[r.name]:.0f}s" for r in rows),
                flush=True,
            )
    train_s = time.perf_counter() - t_train

    results = {}
    for row in rows:
        model = row.finish() if row.finish is not None else row.step.sae
        m = reconstruction_metrics(model, eval_x.split(4096))
        lr_ours = lrs.get("ours") or []
        lr_diff = (
            max(abs(a - b) for a, b in zip(lrs[row.name], lr_ours)) / max(lr_ours)
            if lr_ours and len(lrs[row.name]) == len(lr_ours)
            else None
        )
        results[row.name] = {
            "label": row.label,
            "fvu": m["fvu"],
            "l0_mean": m["l0_mean"],
            "dead_fraction": m["dead_fraction"],
            "cosine_mean": m["cosine_mean"],
            "explained_variance": m["explained_variance"],
            "underused_fraction": m["underused_fraction"],
            "dense_fraction": m["dense_fraction"],
            "train_tokens_per_s": n_steps * args.batch / timings[row.name],
            "train_s": timings[row.name],
            "train_loss_first_last": losses_first_last[row.name],
            "lr_first_mid_last": [
                lrs[row.name][0],
                lrs[row.name][len(lrs[row.name]) // 2],
                lrs[row.name][-1],
            ]
            if lrs[row.name]
            else None,
            "lr_schedule_max_rel_diff_vs_ours": lr_diff,
            "settings_summary": row.summary,
            "settings": row.settings,
            "applied_outside_library": row.outside,
            "differences_vs_ours": row.differences,
        }
    versions = {}
    for name in ("sae_lens", "eai-sparsify", "schedulefree", "transformers"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001
            versions[name] = None
    out = {
        "provenance": prov,
        "model": args.model,
        "hook": hook,
        "d_in": d_in,
        "train_tokens": n_steps * args.batch,
        "steps": n_steps,
        "eval_tokens": eval_x.shape[0],
        "d_sae": args.d_sae,
        "k": args.k,
        "batch": args.batch,
        "lr": ours.settings["lr"],
        "data": {
            "source": args.source,
            "train_split": "train",
            "eval_split": "validation",
            "context_size": args.context,
            "bos_dropped": True,
            "order": "torch.randperm(seed 0) of the captured training tokens, the same batches in the same "
            "order for every row",
            "raw_mean_norm": sample.norm(dim=-1).mean().item(),
            **{k: data_info[k] for k in ("capture_s", "created", "from_cache", "cache_file")},
        },
        "same_for_every_row": [
            "tokens and their order",
            "batch",
            "k",
            "d_sae",
            "held-out evaluation (saes.evaluation.evaluate.reconstruction_metrics on the same tokens)",
            "init seed 0",
        ],
        "metrics": "held-out FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2; L0 = mean nonzero latents per "
        "token; dead = fraction of latents that never fire on the held-out tokens; cosine = mean "
        "cos(x, x_hat); training tok/s = tokens / time inside each row's step calls (rows interleaved "
        "step by step on the same machine)",
        "row_order": [r.name for r in rows],
        "row_fields": {
            "settings_summary": "the row's settings in a few words (for a README)",
            "settings": "the exact configuration used (the library's own config objects, dumped)",
            "applied_outside_library": "settings of ours that the library has no option for, applied around it",
            "differences_vs_ours": "what still differs from ours (strings a README can print beside the table)",
            "lr_schedule_max_rel_diff_vs_ours": "max over steps of |lr - lr_ours| / max lr_ours",
        },
        "results": results,
        "versions": versions,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "train_wall_s": train_s,
        "wall_s": time.perf_counter() - t_start,
    }
    if "ours" in results:
        out["fvu_minus_ours"] = {
            n: r["fvu"] - results["ours"]["fvu"] for n, r in results.items() if n != "ours"
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str))
    tmp.replace(args.out)
    print(
        f"\n{hook}, {n_steps * args.batch:,} training tokens ({n_steps} steps of {args.batch}), "
        f"{eval_x.shape[0]:,} held-out, d_sae {args.d_sae}, k {args.k}"
    )
    print(f"{'row':18s} {'FVU':>7} {'L0':>6} {'dead':>7} {'cosine':>7} {'train tok/s':>12}")
    for name, r in results.items():
        print(
            f"{name:18s} {r['fvu']:7.4f} {r['l0_mean']:6.1f} {r['dead_fraction']:7.1%} {r['cosine_mean']:7.4f} "
            f"{r['train_tokens_per_s']:12,.0f}"
        )
    print(f"saved {args.out} ({out['wall_s'] / 60:.1f} min)")
    return out


if __name__ == "__main__":
    main()
