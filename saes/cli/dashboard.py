"""``interp dashboard build`` and ``interp dashboard serve``: a run's feature store
(:mod:`saes.features`) and the explorer over it. The explorer (``dashboards``) is UI only and
nothing imports it: ``serve`` finds its ``app.py`` and runs Streamlit on it in this process's place
(``python -m dashboards.serve``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from interp.commands import fail

app = typer.Typer(
    no_args_is_help=True, help="The feature explorer: build a run's feature store, serve the app."
)


@app.command("build")
def dashboard_build_cmd(
    run_dir: Path = typer.Argument(..., help="a run folder, or any SAE folder load_sae opens"),
    tokens: int = typer.Option(200_000, help="held-out tokens to read (rounded up to windows)"),
    model: str = typer.Option(None, help="model spec, for an SAE folder that is not a run"),
    out: Path = typer.Option(None, help="store folder (default RUN_DIR/features)"),
    set_: list[str] = typer.Option([], "--set", help="a store setting, e.g. --set top_k=30"),
) -> None:
    """Build (or resume) the feature store of RUN_DIR in one streaming pass; torchrun splits it."""
    from saes.features import StoreConfig, build_store
    from saes.training.distributed import init_from_env

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
        fail(e)
    if comm is None or comm.is_main:
        m = json.loads((path / "manifest.json").read_text())
        typer.echo(
            f"feature store: {path} ({m['n_tokens']:,} tokens, {m['alive_latents']:,} live latents, "
            f"{m['dead_latents']:,} dead, skipped)"
        )
        typer.echo(f"open it with: interp dashboard serve {run_dir}")


@app.command("serve")
def dashboard_serve_cmd(
    target: Path = typer.Argument(Path("runs"), help="a run folder, or a folder of runs"),
    port: int = typer.Option(8501, help="port"),
    host: str = typer.Option("127.0.0.1", help="address to bind (default: this machine only)"),
) -> None:
    """Serve the explorer (Streamlit) over TARGET at http://HOST:PORT."""
    import importlib.util

    spec = importlib.util.find_spec("dashboards")
    if spec is None or not spec.submodule_search_locations:
        fail(RuntimeError("the dashboards package is not installed (pip install -e .)"))
    app_py = Path(list(spec.submodule_search_locations)[0]) / "app.py"
    if not target.exists():
        fail(FileNotFoundError(f"{target} does not exist: pass a run folder or a folder of runs"))
    env = {**os.environ, "INTERP_DASHBOARD_TARGET": str(target.resolve())}
    # dashboards.serve imports every page before Streamlit's server starts in its process
    cmd = [sys.executable, "-m", "dashboards.serve", str(app_py), "--server.port", str(port),
           "--server.address", host, "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"]  # fmt: skip
    typer.echo(f"serving {target} at http://{host}:{port}", err=True)
    sys.stdout.flush()
    os.execve(sys.executable, cmd, env)  # streamlit replaces this process (signals reach it)
