"""``interp darkmatter RUN_DIR... [--tokens N]``: the dark-matter report of trained SAEs.

Each argument is a run folder or any SAE folder ``saes.artifacts.load_sae`` opens. The model
(``--model``, else the first SAE's ``model_name``) runs once per split over every hook the SAEs
read: ``--tokens`` fit tokens from the train split, ``--test-tokens`` (default: the same number)
from the validation split. Per SAE: the linear / nonlinear split of its error, the error-norm
probe, the spliced CE and gradient pursuit (``pipeline.analyse_sae``); per hook with several widths:
the width scaling. Writes ``dark_matter.json`` into each run folder, the combined result to
``--out`` (default ``dark_matter.json`` here) and its plotly figures into ``<out stem>_figures/``.

Every fit is repeated on the first half of the fit tokens; where an R^2 moves by more than
``--tolerance`` from there to all of them, the table marks that SAE and a warning says that its
numbers have not converged (``convergence.converged`` false in its JSON): pass more ``--tokens``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from interp.atomic_files import atomic_write_json
from interp.models import load_model
from saes.analysis.dark_matter.figures import all_figures
from saes.analysis.dark_matter.pipeline import (
    DarkMatterConfig,
    analyse_sae,
    capture_rows,
    scaling_report,
    validation_windows,
)
from saes.artifacts import load_sae

app = typer.Typer(
    help="Dark matter of SAEs: how much of each SAE's error is linearly predictable from x, what "
    "the rest costs downstream, and how it scales with width (Engels et al. 2024).",
    invoke_without_command=True,
    no_args_is_help=True,
    # one command as the group's callback: options may follow the run folders
    context_settings={"allow_interspersed_args": True},
)


def _label(sae, folder: Path, taken: set[str]) -> str:
    base = f"{sae.cfg.variant} d_sae={sae.cfg.d_sae}"
    label = base if base not in taken else f"{base} ({folder.name})"
    taken.add(label)
    return label


def convergence_warnings(result: dict) -> list[str]:
    """One line per SAE whose fit moved by more than the tolerance from half the tokens to all."""
    lines = []
    for label, rep in result["saes"].items():
        c = rep.get("convergence") or {}
        if c and not c.get("converged", True):
            moved = ", ".join(f"{k} {c['changes'][k]:+.3f}" for k in c["unconverged"])
            lines.append(
                f"WARNING {label}: not converged: from {c['n_fit_small']:,} to {c['n_fit']:,} fit "
                f"tokens ({c['estimator']}) {moved} (tolerance {c['tolerance']}); these R² are "
                "not the limit: pass more --tokens"
            )
    return lines


def format_table(result: dict) -> str:
    """The headline numbers of each SAE as a plain-text table (``*``: not converged)."""
    cols = (
        "sae",
        "FVU",
        "FVU x_hat+xa*",
        "R2 vec",
        "R2 per-dim",
        "nl share",
        "norm R2",
        "dCE x_hat",
        "dCE +e_lin",
        "dCE +e_nl",
    )
    lines = [" | ".join(cols)]
    for label, rep in result["saes"].items():
        d, n = rep["decomposition"], rep["norms"]["sq_norm"]
        ce = rep.get("downstream", {}).get("ce_increase", {})
        vals = [
            d["fvu_sae"],
            d["fvu_sae_plus_linear"],
            d["r2_vector"],
            d["r2_per_dim"],
            d["nonlinear_norm_share"],
            n["probe"],
            ce.get("x_hat"),
            ce.get("x_hat_plus_e_lin"),
            ce.get("x_hat_plus_e_nl"),
        ]
        mark = "*" if not (rep.get("convergence") or {}).get("converged", True) else ""
        row = [label + mark, *("-" if v is None else f"{v:.4f}" for v in vals)]
        lines.append(" | ".join(row))
    return "\n".join(lines)


@app.callback()
def darkmatter(
    run_dirs: list[Path] = typer.Argument(..., help="run folders / SAE folders"),
    tokens: int = typer.Option(
        150_000, "--tokens", help="fit tokens (train split; R² flattens near 100k-150k on SmolLM2)"
    ),
    test_tokens: int | None = typer.Option(
        None, help="held-out tokens (validation); default: --tokens"
    ),
    model: str | None = typer.Option(None, help="model spec (default: the SAEs' model_name)"),
    model_dtype: str = typer.Option("auto", help="float32, bfloat16 or auto"),
    ce_windows: int = typer.Option(32, help="validation windows for the spliced CE (0: skip)"),
    ce_start: int = typer.Option(32, help="first spliced position of each 128-token window"),
    pursuit_tokens: int = typer.Option(4096, help="test tokens for gradient pursuit (0: skip)"),
    estimator: str = typer.Option(
        "ridge", help="ols (least squares, the paper's) or ridge (penalty chosen on held-out folds)"
    ),
    tolerance: float = typer.Option(
        0.02, help="flag a fit whose R² moves more than this from half the fit tokens to all"
    ),
    out: Path = typer.Option(Path("dark_matter.json"), help="combined result JSON"),
) -> None:
    """Analyse each SAE's dark matter; write JSON and figures."""
    try:
        cfg = DarkMatterConfig(
            fit_tokens=tokens,
            test_tokens=test_tokens or tokens,
            model_dtype=model_dtype,
            ce_windows=ce_windows,
            ce_start=ce_start,
            pursuit_tokens=pursuit_tokens,
            pursuit_fit_tokens=min(4 * pursuit_tokens, tokens),
            estimator=estimator,
            convergence_tolerance=tolerance,
        )
        saes = [(Path(p), load_sae(p)) for p in run_dirs]
        spec = model or saes[0][1].cfg.model_name
        if not spec:
            raise ValueError(f"{run_dirs[0]} names no model (cfg.model_name): pass --model")
        hooks = list(dict.fromkeys(s.cfg.hook_name for _, s in saes))
        if "" in hooks:
            raise ValueError("an SAE names no hook (cfg.hook_name is empty)")
        m = load_model(spec, dtype=cfg.model_dtype)
        fit = capture_rows(m, hooks, "train", cfg.fit_tokens, cfg, progress=True)
        test = capture_rows(m, hooks, "validation", cfg.test_tokens, cfg, progress=True)
        windows = validation_windows(m, cfg) if cfg.ce_windows else None
    except (ValueError, FileNotFoundError, ValidationError) as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    result: dict = {"config": cfg.model_dump(), "model": spec, "saes": {}, "runs": {}}
    by_hook: dict[str, dict[int, tuple[dict, dict]]] = {}
    taken: set[str] = set()
    for folder, sae in saes:
        h = sae.cfg.hook_name
        rep, inter = analyse_sae(sae, fit[h], test[h], cfg, model=m, windows=windows, progress=True)
        label = _label(sae, folder, taken)
        result["saes"][label] = rep
        result["runs"][label] = str(folder)
        if folder.is_dir():
            atomic_write_json(folder / "dark_matter.json", {"config": cfg.model_dump(), **rep})
        by_hook.setdefault(h, {})[sae.cfg.d_sae] = (rep, inter)
    scaling = {
        h: scaling_report({w: v[0] for w, v in d.items()}, {w: v[1] for w, v in d.items()})
        for h, d in by_hook.items()
        if len(d) >= 2
    }
    if scaling:
        result["scaling"] = next(iter(scaling.values())) if len(scaling) == 1 else scaling
    atomic_write_json(out, result)
    fig_dir = out.with_name(f"{out.stem}_figures")
    fig_dir.mkdir(parents=True, exist_ok=True)
    for name, fig in all_figures(result).items():
        fig.write_json(fig_dir / f"{name}.json")
    typer.echo(format_table(result))
    for line in convergence_warnings(result):
        typer.secho(line, fg=typer.colors.YELLOW, err=True)
    typer.echo(f"wrote {out} and figures in {fig_dir}")
