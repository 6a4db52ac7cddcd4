"""The ``interp`` command line: models, cache, train, eval, demo.

The CLI is the one place that wires the rooms together; it imports ``saes`` lazily inside the
commands so that the ``interp`` core never depends on it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="interp: capture activations, train and evaluate SAEs.",
)


def _fail(e: Exception) -> None:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command("models")
def models_cmd() -> None:
    """List the models that can be loaded here and where from."""
    from rich.console import Console

    from interp.models import format_models_table

    Console().print(format_models_table())


@app.command("kernels")
def kernels_cmd(
    build: bool = typer.Option(
        False, "--build", help="compile the C++ top-k kernel now (once; cached by torch)"
    ),
) -> None:
    """Which top-k selection kernel SAE training uses on CPU; --build compiles the C++ one."""
    from saes import kernels

    if build:
        typer.echo("building the C++ top-k kernel (once, 30-60 s) ...")
        kernels.enable_native(True)
    status = kernels.native_status()
    typer.echo(json.dumps(status, indent=2))
    typer.echo(f"CPU top-k selection: {kernels.selection_kernel()}")
    if build and not status["built"]:
        if status["compiler"] is None:  # the one accepted reason; said loudly, exit 0
            typer.echo(
                "="
                * 78
                + "\nNO C++ COMPILER on this machine ($CXX / c++ not found): the C++ top-k cannot "
                "be built.\nTraining uses the pure-torch selection (about half the selection speed), and "
                "the C++ kernel tests are skipped.\n" + "=" * 78,
                err=True,
            )
            return
        typer.echo(
            f"error: the C++ top-k failed to build with {status['compiler']}: {status['error']}",
            err=True,
        )
        raise typer.Exit(1)


@app.command("cache")
def cache_cmd(
    out: Path = typer.Argument(..., help="cache folder (created, or resumed if it exists)"),
    model: str = typer.Option("smollm2-135m", help="model spec"),
    hook: list[str] = typer.Option(["blocks.15.hook_resid_post"], help="hook name (repeatable)"),
    source: str = typer.Option("stdlib", help="text source: stdlib, a file/glob, or hf:NAME"),
    split: str = typer.Option("train"),
    context_size: int = typer.Option(128),
    batch_windows: int = typer.Option(16, help="windows per model forward"),
    windows_per_shard: int = typer.Option(256),
    tokens: int = typer.Option(1_000_000, help="approximate number of tokens to cache"),
    grads: bool = typer.Option(False, help="also store dL/dx (for gradient SAEs)"),
    dtype: str = typer.Option("float32", help="stored dtype: float32, bfloat16 or float16"),
    model_dtype: str = typer.Option(
        "float32", help="dtype the model runs in: float32, bfloat16, or auto (bf16 where native)"
    ),
    skip_positions: int = typer.Option(0, help="positions left out after each window's BOS"),
    max_norm_ratio: float | None = typer.Option(
        None, help="leave out rows whose norm exceeds this multiple of the batch median"
    ),
    seed: int = typer.Option(0),
) -> None:
    """Write (or resume) an on-disk activation cache: safetensors shards + manifest.json."""
    from interp.activations import ActivationCapture
    from interp.cache import CacheWriter
    from interp.data import token_windows
    from interp.models import dtype_name, load_model

    try:
        m = load_model(model, dtype=model_dtype)
        capture = ActivationCapture(
            m,
            hook,
            with_grads=grads,
            dtype=dtype,
            skip_positions=skip_positions,
            max_norm_ratio=max_norm_ratio,
        )
        if windows_per_shard % batch_windows:
            raise ValueError(
                f"windows_per_shard ({windows_per_shard}) must be a multiple of batch_windows ({batch_windows})"
            )
        meta = {
            "model": model,
            "model_dtype": dtype_name(next(m.parameters()).dtype),
            "source": source,
            "split": split,
            "seed": seed,
            "context_size": context_size,
        }
        writer = CacheWriter(out, capture, meta, windows_per_shard)
        windows = token_windows(
            m.tokenizer, source=source, context_size=context_size, split=split, seed=seed
        )
        max_windows = -(-tokens // (context_size - 1))
        manifest = writer.write(windows, batch_windows, max_windows=max_windows)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(
        f"cache {out}: {manifest.total_tokens:,} tokens in {len(manifest.shards)} shards, hooks {manifest.hooks}"
    )


@app.command("config")
def config_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="show this config resolved"),
    set_: list[str] = typer.Option([], "--set", help="override by dotted key (repeatable)"),
    variants: bool = typer.Option(
        False, "--variants", help="list the registered selection rules (sae.variant) and stop"
    ),
) -> None:
    """Every run-config field with its default and docstring (or, with --config/--set, the
    resolved config as JSON; with --variants, the selection rules). The text comes from the code
    (pydantic attribute docstrings, each variant's class docstring)."""
    from saes.train_config import describe_fields, load_run_config

    if variants:
        from saes.variants import variant_class, variant_names

        for name in variant_names():
            cls = variant_class(name)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
            typer.echo(f"{name:<16} {doc[0] if doc else ''}")
        return
    if config is not None or set_:
        try:
            typer.echo(load_run_config(config, set_).model_dump_json(indent=2))
        except (ValueError, FileNotFoundError) as e:
            _fail(e)
        return
    section = None
    for key, default, doc in describe_fields():
        head = key.split(".", 1)[0] if "." in key else "top level"
        if head != section:
            section = head
            typer.echo(f"\n[{section}]")
        typer.echo(f"  {key} = {default}")
        for line in (doc or "").splitlines():
            typer.echo(f"      {line.strip()}")


@app.command("train")
def train_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="JSON or YAML run config"),
    set_: list[str] = typer.Option(
        [], "--set", help="override by dotted key: sae.k=64, optim.lr=1e-3 (repeatable)"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue from the last good checkpoint"),
    no_eval: bool = typer.Option(False, "--no-eval", help="skip evaluation at the end"),
    plan: bool = typer.Option(
        False, "--plan", help="print the memory plan (what fits at which batch size) and stop"
    ),
) -> None:
    """Train an SAE (any variant) from a config file; with hooks/saes, many SAEs from one forward pass.
    Under torchrun: data parallel (or shard_hooks=true)."""
    from saes.train import TrainingDiverged, train
    from saes.train_config import load_run_config

    try:
        cfg = load_run_config(config, set_)
        run_dir = train(cfg, resume=resume, evaluate=not no_eval, plan_only=plan)
    except (ValueError, FileNotFoundError, FileExistsError, TrainingDiverged) as e:
        _fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if plan or os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    if cfg.is_job:
        from saes.rundir import CONFIG_FILE, RunDir
        from saes.sweep import summarize
        from saes.train_config import RunConfig

        runs = sorted(p.parent for p in Path(run_dir).rglob(CONFIG_FILE))
        summarize([RunConfig.from_saved(RunDir(r).config(required=True)) for r in runs], run_dir)
        return
    _print_metrics(run_dir)


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Option(
        ..., "--config", "-c", help="sweep config (YAML/JSON): base, grid, mode, out_dir"
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="override a top-level key: key=value (repeatable)"
    ),
    resume: bool = typer.Option(
        False, "--resume", help="continue unfinished runs from their checkpoints"
    ),
) -> None:
    """Train a grid of SAEs (together, sequentially or in parallel processes sharing one activation
    cache); writes summary.json/.csv and an FVU-vs-L0 frontier figure (frontier.html)."""
    from saes.memory import MemoryPlanError
    from saes.sweep import load_sweep_config, run_sweep
    from saes.train import TrainingDiverged

    try:
        sweep = load_sweep_config(config, set_)
        run_sweep(sweep, resume=resume)
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        TrainingDiverged,
        MemoryPlanError,
        RuntimeError,
    ) as e:
        _fail(e)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(
        f"summary: {Path(sweep.out_dir) / 'summary.csv'}, figure: {Path(sweep.out_dir) / 'frontier.html'}"
    )


@app.command("eval")
def eval_cmd(
    run_dir: Path = typer.Argument(..., help="a run folder written by `interp train`"),
    no_model: bool = typer.Option(
        False, "--no-model", help="do not load the run's model: cached held-out rows only, no CE/KL"
    ),
    eval_cache: Path | None = typer.Option(
        None, "--eval-cache", help="a cache of held-out activations for FVU, L0, ... (eval.cache)"
    ),
) -> None:
    """Evaluate a trained SAE on held-out tokens (and spliced into the model); writes metrics.json."""
    from saes.evals import evaluate_run

    try:
        evaluate_run(run_dir, use_model=not no_model, eval_cache=eval_cache)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    _print_metrics(run_dir)


@app.command("runs")
def runs_cmd(
    root: Path = typer.Argument(
        Path("runs"), help="folder holding run folders (searched recursively)"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="print JSON (one object per run) instead of a table"
    ),
    verify: bool = typer.Option(
        False, "--verify", help="also check every newest checkpoint's sha256 (slower)"
    ),
    stale_after: float = typer.Option(
        30.0, help="minutes without a status update before a live run is 'stalled'"
    ),
) -> None:
    """List run folders: status (running, finished, failed, interrupted/crashed (resumable)), tokens, metrics."""
    from saes.runs import list_runs, runs_table

    try:
        runs = list_runs(root, verify=verify, stale_after_s=stale_after * 60)
    except (FileNotFoundError, NotADirectoryError) as e:
        _fail(e)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    from rich.console import Console

    Console().print(
        runs_table(runs, title=f"runs under {root}") if runs else f"no run folders under {root}"
    )


# the metrics table after training or evaluation: the headline metrics (saes.headline), then these
DETAIL_METRICS = (
    "explained_variance",
    "dense_fraction",
    "cosine_mean",
    "ce_clean",
    "ce_spliced",
    "ce_zero_ablated",
    "kl_div",
    "train_tokens_per_s",
)


def _print_metrics(run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from saes.headline import HEADLINE_NAMES
    from saes.rundir import METRICS_FILE, RunDir

    metrics = RunDir(run_dir).metrics()
    if metrics is None:
        typer.echo(f"trained: {run_dir} (no {METRICS_FILE})")
        return
    table = Table(title=f"{run_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (*HEADLINE_NAMES, *DETAIL_METRICS):
        if metrics.get(key) is not None:
            v = metrics[key]
            name = key
            if key == "dead_fraction" and metrics.get("n_tokens"):  # a dead count needs its window
                name = f"dead_fraction (never fired in {metrics['n_tokens']:,} eval tokens)"
            table.add_row(name, f"{v:,.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
    rows = metrics.get("eval_rows")
    if rows:
        typer.echo(f"evaluated on rows {rows['rows'][0]}..{rows['rows'][1] - 1} of {rows['cache']}")
    sl = metrics.get("saelens")
    if sl:
        typer.echo(
            f"SAELens convention: ce_loss_score {sl['ce_loss_score']:.4f}, "
            f"kl_div_score {sl['kl_div_score']:.4f}"
        )
    reasons: dict[str, list[str]] = {}
    for key, why in (metrics.get("skipped") or {}).items():
        reasons.setdefault(why, []).append(key)
    for why, keys in reasons.items():
        typer.echo(f"skipped {', '.join(keys)}: {why}")


def dead_latents_line(manifest: dict, metrics: dict) -> str:
    """Dead latents (never fired) in a feature store's window and in the evaluation's, each with
    its window, so the two figures read as what they are rather than as a contradiction."""
    m = manifest
    line = (
        f"dead latents (never fired): {m['dead_latents'] / m['d_sae']:.2%} "
        f"({m['dead_latents']:,} of {m['d_sae']:,}) in the store's {m['n_tokens']:,} held-out tokens"
    )
    if metrics.get("dead_fraction") is not None and metrics.get("n_tokens"):
        line += (
            f", {metrics['dead_fraction']:.2%} in the evaluation's {metrics['n_tokens']:,}: a "
            "larger window finds fewer dead latents; the explorer shows the store's"
        )
    return line


@app.command("demo")
def demo_cmd(
    out_dir: Path = typer.Option(Path("runs/demo-topk"), help="run folder"),
    train_tokens: int = typer.Option(
        400_000, help="training tokens (bench/results/demo.json records how long the default takes)"
    ),
    store_tokens: int = typer.Option(
        200_000, help="held-out tokens of the feature store built after training (0: none)"
    ),
) -> None:
    """The main job on the embedded defaults: TopK SAE (k=32, d_sae=4608) on SmolLM2 layer 15 over
    stdlib, evaluated, then its feature store for the explorer."""
    from saes.features import build_store
    from saes.rundir import RunDir
    from saes.train import train
    from saes.train_config import load_run_config

    cfg_path = Path(__file__).resolve().parent.parent / "configs" / "demo_topk.json"
    cfg = load_run_config(
        cfg_path if cfg_path.exists() else None,
        [f"log.out_dir={json.dumps(str(out_dir))}", f"data.train_tokens={train_tokens}"],
    )
    folder = RunDir(out_dir)
    resume = folder.checkpoints_dir.exists()
    if resume and folder.metrics_path.exists():
        import shutil

        shutil.rmtree(out_dir)  # a finished demo is rerun from scratch
        resume = False
    run_dir = train(cfg, resume=resume)
    _print_metrics(run_dir)
    if store_tokens > 0:
        typer.echo(f"building the feature store over {store_tokens:,} held-out tokens ...")
        store = build_store(run_dir, tokens=store_tokens, progress=True)
        m = json.loads((store / "manifest.json").read_text())
        typer.echo(
            f"feature store: {store} ({m['alive_latents']:,} live latents, "
            f"{m['dead_latents']:,} dead)"
        )
        typer.echo(dead_latents_line(m, RunDir(run_dir).metrics() or {}))
        typer.echo(f"open the explorer: interp dashboard serve {run_dir}")


@app.command("steer")
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
        _fail(e)
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
        from interp.io import atomic_write_json

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


@app.command("induction")
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
        _fail(e)
    typer.echo(format_induction_report(report))
    if json_out is not None:
        save_report(report, json_out)


def main() -> None:  # pragma: no cover
    app()


# ---------------------------------------------------------------------------------------------
# the feature explorer

dashboard_app = typer.Typer(
    no_args_is_help=True, help="The feature explorer: build a run's feature store, serve the app."
)
app.add_typer(dashboard_app, name="dashboard")


@dashboard_app.command("build")
def dashboard_build_cmd(
    run_dir: Path = typer.Argument(..., help="a run folder, or any SAE folder load_sae opens"),
    tokens: int = typer.Option(200_000, help="held-out tokens to read (rounded up to windows)"),
    model: str = typer.Option(None, help="model spec, for an SAE folder that is not a run"),
    out: Path = typer.Option(None, help="store folder (default RUN_DIR/features)"),
    set_: list[str] = typer.Option([], "--set", help="a store setting, e.g. --set top_k=30"),
) -> None:
    """Build (or resume) the feature store of RUN_DIR in one streaming pass; torchrun splits it."""
    from saes.distributed import init_from_env
    from saes.features import StoreConfig, build_store

    try:
        fields = {}
        for kv in set_:
            key, sep, value = kv.partition("=")
            if not sep:
                raise ValueError(f"--set {kv!r}: expected KEY=VALUE (keys: `interp config`)")
            try:
                fields[key] = json.loads(value)
            except json.JSONDecodeError:
                fields[key] = value  # a plain string, e.g. --set source=docs/*.md
        cfg = StoreConfig(**fields)
        comm = init_from_env()
        path = build_store(
            run_dir, out=out, tokens=tokens, model_spec=model, config=cfg, comm=comm, progress=True
        )
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    if comm is None or comm.is_main:
        m = json.loads((path / "manifest.json").read_text())
        typer.echo(
            f"feature store: {path} ({m['n_tokens']:,} tokens, {m['alive_latents']:,} live latents, "
            f"{m['dead_latents']:,} dead, skipped)"
        )
        typer.echo(f"open it with: interp dashboard serve {run_dir}")


@dashboard_app.command("serve")
def dashboard_serve_cmd(
    target: Path = typer.Argument(Path("runs"), help="a run folder, or a folder of runs"),
    port: int = typer.Option(8501, help="port"),
    host: str = typer.Option("127.0.0.1", help="address to bind (default: this machine only)"),
) -> None:
    """Serve the explorer (Streamlit) over TARGET at http://HOST:PORT."""
    import importlib.util

    spec = importlib.util.find_spec("dashboards")
    if spec is None or not spec.submodule_search_locations:
        _fail(RuntimeError("the dashboards package is not installed (pip install -e .)"))
    app_py = Path(list(spec.submodule_search_locations)[0]) / "app.py"
    if not target.exists():
        _fail(FileNotFoundError(f"{target} does not exist: pass a run folder or a folder of runs"))
    env = {**os.environ, "INTERP_DASHBOARD_TARGET": str(target.resolve())}
    # dashboards.serve imports every page before Streamlit's server starts in its process
    cmd = [sys.executable, "-m", "dashboards.serve", str(app_py), "--server.port", str(port),
           "--server.address", host, "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]  # fmt: skip
    typer.echo(f"serving {target} at http://{host}:{port}", err=True)
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)  # streamlit replaces this process (signals reach it)


# ---------------------------------------------------------------------------------------------
# analyses with their own command groups: forwarded, so `interp --help` imports none of them

ANALYSES = {
    "darkmatter": (
        "saes.analysis.dark_matter.cli",
        "Split SAE errors into linear and nonlinear dark matter.",
    ),
    "circuits": ("circuits.cli", "Circuit discovery from discrete SAE codes, against patching."),
    "sparsity": (
        "interp.sparsity.cli",
        "Activation sparsity: measure (CETT, PPL-p%), fit the laws.",
    ),
}


def _forward(name: str, module: str, help_text: str) -> None:
    @app.command(
        name,
        help=f"{help_text} (`interp {name} --help` for its options)",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def forwarded(ctx: typer.Context) -> None:
        import importlib

        sub = importlib.import_module(module).app
        sub(args=list(ctx.args), prog_name=f"interp {name}")


for _name, (_module, _help) in ANALYSES.items():
    _forward(_name, _module, _help)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
