"""``interp circuits``: circuit discovery from discrete SAE codes, judged against patching.

    interp circuits --task ioi [--model smollm2-135m] [--seeds 5] [--out circuits_out/]
                    [--l1 0.02] [--normalize] [--flavour ours|paper]
    interp circuits ground-truth --task ioi [--model M] [--n 40] [--share 0.8]
                    [--mode patch|mean] [--out circuits_out/ground_truth/<task>.json]
                    [--replace-shipped-fixture]

(also ``python -m circuits.cli ...``). The first runs the method (node and edge scores, one SAE
per seed), attribution patching and random scores, compares each with the ground truth and writes
``<out>/<task>.json`` and the layer x head heatmap figure ``<out>/<task>_heatmap.json``
(plotly JSON) beside it. The ground truth is, in this order: ``--ground-truth-file`` (an error if
it was made on another model); ``<out>/ground_truth/<task>.json`` when it exists (same check); the
package's shipped fixture when it was made on ``--model``; else it is computed now and saved to
``<out>/ground_truth/<task>.json``.

The second writes to ``circuits_out/ground_truth/<task>.json`` by default; it refuses to write
into the package's shipped fixtures (``circuits/fixtures/``) unless ``--replace-shipped-fixture``
is given, which (without ``--out``) replaces ``circuits/fixtures/<task>.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from circuits.experiment import run_experiment, sae_config_for
from circuits.figures import heatmap_figure
from circuits.ground_truth import (
    fixture_path,
    ground_truth,
    is_shipped,
    load_ground_truth,
    save_ground_truth,
)
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


def user_ground_truth_path(out: Path, task: str) -> Path:
    """Where ``interp circuits ground-truth`` writes by default (``<out>/ground_truth/<task>.json``)."""
    return out / "ground_truth" / f"{task}.json"


def resolve_ground_truth(
    task: str, model: str, out: Path, ground_truth_file: Path | None
) -> tuple[dict | None, str]:
    """(record or None, where it came from): ``ground_truth_file`` or the user's
    ``<out>/ground_truth/<task>.json`` (either must be for ``model``: else a ValueError naming the
    file and both models), else the shipped fixture when made on ``model``, else None."""
    if ground_truth_file is not None:
        return load_ground_truth(ground_truth_file, model=model), str(ground_truth_file)
    mine = user_ground_truth_path(out, task)
    if mine.is_file():
        return load_ground_truth(mine, model=model), str(mine)
    shipped = fixture_path(task)
    if shipped.is_file() and load_ground_truth(shipped)["model"] == model:
        return load_ground_truth(shipped, model=model), str(shipped)
    return None, f"no ground truth for {model!r} at {mine} or {shipped}"


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
        None,
        help="ground-truth JSON, made on --model (default: <out>/ground_truth/<task>.json, else "
        "the shipped circuits/fixtures/<task>.json when made on --model, else computed now)",
    ),
    l1: float = typer.Option(
        None, help="the SAE's lambda (default: the paper's, 0.02; docstring 0.05)"
    ),
    normalize: bool = typer.Option(
        False,
        help="scale head vectors to mean norm sqrt(d) before the SAE (default: raw, as the paper)",
    ),
    flavour: str = typer.Option(
        "ours",
        help="the code SAE and edge tie-break: 'ours' (our choices) or 'paper' (as close to "
        "charlieoneill11/sae-circuits as its code can be read)",
    ),
) -> None:
    """Run the method on a task and compare it with the patching ground truth."""
    if ctx.invoked_subcommand is not None:
        return
    if task is None:
        _fail(ValueError("--task is required"))
    _check_task(task)
    try:
        cfg = sae_config_for(task, flavour=flavour)
        if l1 is not None or normalize:
            cfg = cfg.with_(l1=cfg.l1 if l1 is None else l1, normalize=normalize)
        gt, source = resolve_ground_truth(task, model, out, ground_truth_file)
        m = load_model(model)
        if gt is None:
            typer.echo(f"{source}: computing the ground truth now")
            gt = ground_truth(m, task, model_name=model)
            save_ground_truth(gt, user_ground_truth_path(out, task))
            source = str(user_ground_truth_path(out, task))
        typer.echo(f"ground truth: {source}")
        result = run_experiment(
            m,
            task,
            model_name=model,
            seeds=seeds,
            n_prompts=n_prompts,
            n_train=n_train,
            gt=gt,
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
    out: Path = typer.Option(
        None,
        help="JSON path (default circuits_out/ground_truth/<task>.json; with "
        "--replace-shipped-fixture, the package's circuits/fixtures/<task>.json)",
    ),
    replace_shipped_fixture: bool = typer.Option(
        False,
        "--replace-shipped-fixture",
        help="allow writing into the package's shipped fixtures (circuits/fixtures/), replacing "
        "the one there",
    ),
) -> None:
    """Single-head activation patching, the joint effect of every prefix of the heads sorted by
    effect, and the smallest circuit reaching ``share``."""
    _check_task(task)
    if mode not in ("patch", "mean"):
        _fail(ValueError(f"--mode must be patch or mean, got {mode!r}"))
    if out is None:
        out = (
            fixture_path(task)
            if replace_shipped_fixture
            else user_ground_truth_path(Path("circuits_out"), task)
        )
    if is_shipped(out) and not replace_shipped_fixture:
        _fail(
            ValueError(
                f"{out} is a fixture shipped with the package; refusing to replace it. Write "
                "elsewhere (--out), or pass --replace-shipped-fixture to replace it on purpose"
            )
        )
    try:
        m = load_model(model)
        command = (
            f"python -m circuits.cli ground-truth --task {task} --model {model} --n {n} "
            f"--seed {seed} --share {share} --mode {mode}"
            + (" --replace-shipped-fixture" if replace_shipped_fixture else "")
        )
        rec = ground_truth(
            m, task, model_name=model, n=n, seed=seed, share=share, mode=mode, command=command
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    path = out
    try:
        save_ground_truth(rec, path, replace_shipped=replace_shipped_fixture)
    except ValueError as e:
        _fail(e)
    typer.echo(
        f"{task}: circuit of {rec['k']} heads (joint effect {rec['joint_effect']:.3f}): "
        f"{', '.join(rec['circuit'])}; {rec['seconds']['total']:.0f} s -> {path}"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
