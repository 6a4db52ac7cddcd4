"""``interp circuits``: circuit discovery from discrete SAE codes, judged against patching.

    interp circuits --task ioi [--model smollm2-135m] [--seeds 5] [--out circuits_out/]
                    [--l1 0.02] [--normalize]
    interp circuits ground-truth --task ioi [--n 40] [--share 0.8] [--mode patch|mean]

(also ``python -m circuits.cli ...``). The first runs the method (node and edge scores, one SAE
per seed), attribution patching and random scores, compares each with the ground truth (the
task's fixture when it was made on the same model, else computed now) and writes
``<out>/<task>.json`` and the layer x head heatmap figure ``<out>/<task>_heatmap.json``
(plotly JSON) beside it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import typer

from circuits.experiment import run_experiment, sae_config_for
from circuits.figures import heatmap_figure
from circuits.ground_truth import fixture_path, ground_truth, save_ground_truth
from circuits.tasks import TASKS
from interp.models import load_model

app = typer.Typer(
    help="Circuit discovery from discrete SAE codes, judged against patching ground truth.",
    invoke_without_command=True,
)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _check_task(task: str) -> None:
    if task not in TASKS:
        _fail(ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}"))


@app.callback()
def run(
    ctx: typer.Context,
    task: str = typer.Option(None, help=f"one of {', '.join(TASKS)}"),
    model: str = typer.Option("smollm2-135m", help="model spec (interp models)"),
    seeds: int = typer.Option(5, help="SAE / training-prompt seeds"),
    n_prompts: int = typer.Option(50, help="positive prompts (each with its negative)"),
    n_train: int = typer.Option(10, help="prompts the SAE is trained on (the paper: 10)"),
    out: Path = typer.Option(Path("circuits_out"), help="output folder"),
    ground_truth_file: Path = typer.Option(
        None, help="ground-truth JSON (default: circuits/fixtures/<task>.json for its model)"
    ),
    l1: float = typer.Option(
        None, help="the SAE's lambda (default: the paper's, 0.02; docstring 0.05)"
    ),
    normalize: bool = typer.Option(
        False,
        help="scale head vectors to mean norm sqrt(d) before the SAE (default: raw, as the paper)",
    ),
) -> None:
    """Run the method on a task and compare it with the patching ground truth."""
    if ctx.invoked_subcommand is not None:
        return
    if task is None:
        _fail(ValueError("--task is required"))
    _check_task(task)
    try:
        m = load_model(model)
        cfg = sae_config_for(task)
        cfg = replace(cfg, l1=cfg.l1 if l1 is None else l1, normalize=normalize)
        result = run_experiment(
            m,
            task,
            model_name=model,
            seeds=seeds,
            n_prompts=n_prompts,
            n_train=n_train,
            ground_truth_file=ground_truth_file or fixture_path(task),
            sae_cfg=cfg,
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{task}.json").write_text(json.dumps(result, indent=1) + "\n")
    heatmap_figure(result).write_json(out / f"{task}_heatmap.json")
    s = result["summary"]
    for name, row in s.items():
        typer.echo(
            f"{name:>12}: AUC {row['auc_mean']:.3f} +/- {row['auc_std']:.3f}  "
            f"F1 {row['f1_mean']:.3f}  {row['seconds_mean']:.1f} s"
        )
    typer.echo(f"wrote {out / f'{task}.json'} and {out / f'{task}_heatmap.json'}")


@app.command("ground-truth")
def ground_truth_cmd(
    task: str = typer.Option(..., help=f"one of {', '.join(TASKS)}"),
    model: str = typer.Option("smollm2-135m", help="model spec"),
    n: int = typer.Option(40, help="positive prompts (each with its negative)"),
    seed: int = typer.Option(0),
    share: float = typer.Option(0.8, help="share of the metric the circuit's joint patch moves"),
    mode: str = typer.Option("patch", help="patch (from the negatives) or mean (ablation)"),
    out: Path = typer.Option(None, help="JSON path (default circuits/fixtures/<task>.json)"),
) -> None:
    """Single-head activation patching and the smallest circuit reaching ``share``."""
    _check_task(task)
    if mode not in ("patch", "mean"):
        _fail(ValueError(f"--mode must be patch or mean, got {mode!r}"))
    try:
        m = load_model(model)
        command = (
            f"python -m circuits.cli ground-truth --task {task} --model {model} --n {n} "
            f"--seed {seed} --share {share} --mode {mode}"
        )
        rec = ground_truth(
            m, task, model_name=model, n=n, seed=seed, share=share, mode=mode, command=command
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    path = out or fixture_path(task)
    save_ground_truth(rec, path)
    typer.echo(
        f"{task}: circuit of {rec['k']} heads (joint effect {rec['joint_effect']:.3f}): "
        f"{', '.join(rec['circuit'])}; {rec['seconds']['total']:.0f} s -> {path}"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
