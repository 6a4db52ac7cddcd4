"""``interp sparsity``: measure a model's activation sparsity, fit the sparsity laws, run the
training-dynamics experiment. Every command writes a result JSON and plotly figures (``*.fig.json``,
``fig.write_json``) into its output folder."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from interp.models import load_model
from interp.sparsity.dynamics import DynamicsConfig, collect, run_experiment
from interp.sparsity.figures import layers_figure, linearised_figure, profile_figure, series_figure
from interp.sparsity.laws import (
    PAPER_CONSTANTS,
    default_published_dir,
    fit_series,
    load_published,
    load_series,
)
from interp.sparsity.measure import MeasureConfig, lazy_metrics, ppl_sparsity, search_and_heldout

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Activation sparsity: measure, fit laws, dynamics.",
)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _write(out: Path, name: str, result: dict, figures: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1))
    for fig_name, fig in figures.items():
        fig.write_json(out / f"{fig_name}.fig.json")
    typer.echo(f"wrote {out / f'{name}.json'} and {len(figures)} figure(s)")


def _fit_figures(fits: dict, prefix: str) -> dict:
    figs = {
        f"{prefix}_series": series_figure(fits),
        f"{prefix}_linearised": linearised_figure(fits),
    }
    if any("profile" in r for r in fits.values()):
        figs[f"{prefix}_profile"] = profile_figure(fits)
    return figs


@app.command("measure")
def measure_cmd(
    model: str = typer.Option("smollm2-135m", help="model spec (see `interp models`)"),
    out: Path = typer.Option(Path("runs/sparsity"), help="output folder"),
    dtype: str = typer.Option("auto", help="float32 / bfloat16 / auto (bf16 where the CPU has it)"),
    n_tokens: int = typer.Option(100_000, help="tokens to measure on"),
    ppl_increase: float = typer.Option(0.01, help="p of PPL-p% (0.01 = 1%)"),
    source: str = typer.Option("stdlib", help="text source"),
    split: str = typer.Option("validation", help="split of the source"),
    context_size: int = typer.Option(256, help="tokens per window"),
    batch_size: int = typer.Option(8, help="windows per forward"),
    calib_tokens: int = typer.Option(2048, help="tokens calibrating the per-layer thresholds"),
    search_tokens: int = typer.Option(0, help="tokens for the global CETT search (0: all)"),
    heldout_tokens: int = typer.Option(
        0, help="tokens of the next windows on which the thresholds are measured again (0: none)"
    ),
    lazy: bool = typer.Option(True, help="also the lazy-neuron metrics (one more pass)"),
) -> None:
    """PPL-p% activation ratio per layer (thresholds saved) and the lazy-neuron metrics."""
    try:
        cfg = MeasureConfig(
            source=source,
            split=split,
            context_size=context_size,
            n_tokens=n_tokens,
            batch_size=batch_size,
            calib_tokens=calib_tokens,
            search_tokens=search_tokens or None,
            heldout_tokens=heldout_tokens,
            ppl_increase=ppl_increase,
        )
        t0 = time.perf_counter()
        m = load_model(model, dtype=dtype)
        tokens, heldout = search_and_heldout(m, cfg)
        result = ppl_sparsity(m, cfg, tokens, heldout=heldout)
        if lazy:
            result["lazy"] = lazy_metrics(m, tokens, cfg, progress=True)
        result["model_spec"] = model
        result["total_s"] = time.perf_counter() - t0
    except (ValueError, RuntimeError) as e:
        _fail(e)
    _write(out, "measure", result, {"measure_layers": layers_figure(result)})
    typer.echo(
        f"PPL-{100 * ppl_increase:g}%: activation ratio {result['activation_ratio']:.4f} at CETT "
        f"{result['cett']:.4f}; PPL {result['ppl_dense']:.4f} -> {result['ppl_sparse']:.4f} "
        f"(+{100 * result['ppl_increase']:.3f}%) in {result['total_s']:.0f} s"
    )
    if "heldout" in result:
        h = result["heldout"]
        typer.echo(
            f"held out ({h['tokens']} tokens): activation ratio {h['activation_ratio']:.4f}; PPL "
            f"{h['ppl_dense']:.4f} -> {h['ppl_sparse']:.4f} ({100 * h['ppl_increase']:+.3f}% "
            f"± {100 * h['log_increase_se']:.3f}%)"
        )


@app.command("fit")
def fit_cmd(
    paths: list[Path] = typer.Argument(
        None,
        help="series files {token_passed, activation_ratio} (law from the name) or a dynamics.json",
    ),
    out: Path = typer.Option(Path("runs/sparsity"), help="output folder"),
    published: bool = typer.Option(False, help="fit the 11 published Sparsing Law series"),
    data_dir: Path = typer.Option(
        None,
        help="folder of the published series (default: the copy shipped in the package, "
        "interp/sparsity/published/)",
    ),
    profile_points: int = typer.Option(41, help="A0 profile grid points (0: no profile)"),
) -> None:
    """Fit the ReLU / SiLU laws (MAE-polished and least squares) and the log baseline; MAE, MSE,
    alpha and c against the paper's, the A0 profile; figures."""
    try:
        series: dict = {}
        laws: dict = {}
        if published or not paths:
            series |= load_published(data_dir or default_published_dir())
        for p in paths or []:
            if p.suffix == ".json" and "runs" in json.loads(p.read_text()):
                for meta in json.loads(p.read_text())["runs"]:
                    recs = [r for r in meta["records"] if "activation_ratio" in r]
                    series[meta["run"]["name"]] = (
                        [r["tokens"] / 1e6 for r in recs],
                        [r["activation_ratio"] for r in recs],
                    )
                    laws[meta["run"]["name"]] = meta["run"]["act_fn"]
            else:
                series[p.stem] = load_series(p)
        fits = fit_series(series, laws, PAPER_CONSTANTS, profile_n=profile_points)
    except (ValueError, RuntimeError, OSError) as e:
        _fail(e)
    _write(out, "fit", {"series": fits}, _fit_figures(fits, "fit"))
    for name, r in fits.items():
        f, q = r["fit"], r["lsq_fit"]
        paper = (
            f" | paper: MAE {r['paper']['mae']:.2e} MSE {r['paper']['mse']:.2e} alpha "
            f"{r['paper']['params']['alpha']:.3g} A0 {r['paper']['params']['A0']:.4f}"
            if "paper" in r
            else ""
        )
        typer.echo(
            f"{name:12s} {r['law']}: MAE fit: MAE {f['mae']:.2e} MSE {f['mse']:.2e} alpha "
            f"{f['params']['alpha']:.3g} A0 {f['params']['A0']:.4f} | least squares: MSE "
            f"{q['mse']:.2e} alpha {q['params']['alpha']:.3g}{paper}"
        )


@app.command("dynamics")
def dynamics_cmd(
    out: Path = typer.Option(
        Path("runs/sparsity_dynamics"), help="output folder (resumes what is there)"
    ),
    config: Path = typer.Option(
        None, help="a JSON DynamicsConfig (default: the built-in experiment)"
    ),
    steps: int = typer.Option(0, help="override the training steps per run (0: the config's)"),
) -> None:
    """Train small ReLU/SiLU models, record the PPL-1% activation ratio at checkpoints, fit the
    laws. Resumable: rerun the same command to continue."""
    try:
        raw = json.loads(config.read_text()) if config else {}
        if steps:
            raw["steps"] = steps
        cfg = DynamicsConfig(**raw)
        result = run_experiment(cfg, out)
    except (ValueError, RuntimeError, OSError) as e:
        _fail(e)
    figs = _fit_figures(result["fits"], "dynamics") if result["fits"] else {}
    _write(out, "dynamics", result, figs)
    for row in result["summary"]:
        typer.echo(
            f"{row['run']:16s} width/depth {row['width_depth']:6.1f}: ratio {row['first_ratio']:.3f} -> "
            f"{row['final_ratio']:.3f} over {row['tokens'] / 1e6:.2f}M tokens"
        )


__all__ = ["app", "collect"]
