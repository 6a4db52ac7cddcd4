"""``interp steer`` and ``interp induction``: the command lines of the steering
(:mod:`saes.analysis.steering`) and induction-feature (:mod:`saes.analysis.induction`) analyses.
Registered on ``interp`` through the ``interp.commands`` entry points; the analyses are imported
when a command runs."""

from __future__ import annotations

from pathlib import Path

import typer

from interp.commands import fail


def steer_cmd(
    sae_dir: Path = typer.Argument(
        ..., help="an SAE folder (run folder or cfg.json + sae_weights.safetensors)"
    ),
    latent: list[int] = typer.Option(
        [], "--latent", "-l", help="latent index (repeatable); default: the 8 most active"
    ),
    alpha: list[float] = typer.Option(
        [0.25, 0.5, 1.0],
        "--alpha",
        "-a",
        help="steering strength, in units of the mean activation norm at the hook",
    ),
    model: str | None = typer.Option(None, help="model spec (default: the SAE's model_name)"),
    hook: str | None = typer.Option(None, help="hook (default: the SAE's hook_name)"),
    source: str = typer.Option(
        "stdlib", help="prompt text: stdlib, a file/glob, or hf:NAME (validation split)"
    ),
    n_prompts: int = typer.Option(8, help="number of prompt windows"),
    context_size: int = typer.Option(64),
    n_targets: int = typer.Option(
        10, help="target tokens: the top tokens of the direction's direct logit effect"
    ),
    json_out: Path | None = typer.Option(None, "--json", help="write the results here"),
) -> None:
    """Steer with SAE latents: add alpha * d_i at the hook; report KL from clean and target-token log-prob change."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from interp.data import token_windows
    from interp.models import load_model
    from saes.analysis.steering import mean_activation_norm, steer_latents
    from saes.artifacts import load_sae

    try:
        sae = load_sae(sae_dir)
        hook = hook or sae.cfg.hook_name
        m = load_model(model or sae.cfg.model_name or "smollm2-135m")
        windows = token_windows(
            m.tokenizer, source=source, context_size=context_size, split="validation"
        )
        tokens = torch.stack([w for _, w in zip(range(n_prompts), windows)])
        unit = mean_activation_norm(m, hook, tokens)
        latents = list(latent)
        if not latents:
            from interp.activations import ActivationCapture

            acts = ActivationCapture(m, [hook])(tokens).acts[hook]
            latents = (sae.encode(acts) > 0).sum(0).topk(min(8, sae.cfg.d_sae)).indices.tolist()
        results = steer_latents(
            m,
            sae,
            latents,
            [a * unit for a in alpha],
            tokens,
            hook=hook,
            n_targets=n_targets,
            progress=True,
        )
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    table = Table(title=f"steering {sae_dir} at {hook} (alpha unit = mean ||x|| = {unit:.3g})")
    for col in (
        "latent",
        "targets",
        *(f"KL @{a:g}" for a in alpha),
        *(f"d logp @{a:g}" for a in alpha),
        "effect/KL",
    ):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            str(r.latent),
            " ".join(repr(s) for s in r.target_strings[:3]),
            *(f"{v:.4f}" for v in r.kl),
            *(f"{v:+.4f}" for v in r.target_logprob_change),
            f"{r.effect_per_kl:.3g}",
        )
    Console().print(table)
    if json_out is not None:
        from interp.atomic_files import atomic_write_json

        atomic_write_json(
            json_out,
            {
                "sae": str(sae_dir),
                "hook": hook,
                "alpha_unit": unit,
                "alphas": list(alpha),
                "latents": [r.to_dict() for r in results],
            },
        )


def induction_cmd(
    sae_dir: Path = typer.Argument(..., help="an attention SAE folder (hook blocks.L.attn.hook_z)"),
    model: str | None = typer.Option(None, help="model spec (default: the SAE's model_name)"),
    n_sequences: int = typer.Option(32, help="repeated random token sequences"),
    seq_len: int = typer.Option(48, help="length of the random segment (repeated once)"),
    prefix_length: list[int] = typer.Option(
        [1, 2, 3, 4, 8],
        "--prefix-length",
        help="matching-prefix lengths probed for short/long-prefix induction",
    ),
    seed: int = typer.Option(0),
    json_out: Path | None = typer.Option(None, "--json", help="write the full report here"),
) -> None:
    """Find induction features of an attention-output SAE, the heads behind them, short vs long prefix."""
    from interp.hooks import hook_z_layer
    from interp.models import load_model
    from saes.analysis.induction import (
        InductionSearchConfig,
        find_induction_features,
        format_induction_report,
        save_report,
    )
    from saes.artifacts import load_sae

    try:
        sae = load_sae(sae_dir)
        hook_z_layer(sae.cfg.hook_name)  # bad input fails before the model loads
        cfg = InductionSearchConfig(
            n_sequences=n_sequences, seq_len=seq_len, prefix_lengths=list(prefix_length), seed=seed
        )
        m = load_model(model or sae.cfg.model_name or "smollm2-135m")
        report = find_induction_features(m, sae, cfg, progress=True)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    typer.echo(format_induction_report(report))
    if json_out is not None:
        save_report(report, json_out)


def register(app: typer.Typer) -> None:
    """Add ``steer`` and ``induction`` to the ``interp`` app (entry point ``interp.commands``)."""
    app.command("steer")(steer_cmd)
    app.command("induction")(induction_cmd)
