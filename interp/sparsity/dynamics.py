"""Training dynamics of activation sparsity at a scale a 2-core CPU allows: train small
TransformerLens models (byte-level, gated MLPs with ReLU or SiLU, several width/depth ratios) on a
text source and record the PPL-p% activation ratio (:func:`measure.ppl_sparsity`) at checkpoints,
to test the directions "Sparsing Law" reports: the ReLU ratio falls with data, the SiLU ratio rises
and converges, and the ratio grows with width/depth up to a bottleneck.

Training: AdamW (lr with linear warmup, then constant), next-token cross-entropy on windows of the
source's train split in a fixed, seeded order; the measurement uses fixed windows of the
validation split. Every run lives in ``out/<run name>/``: ``model.safetensors``,
``optim.safetensors`` + ``optim.json`` (AdamW state, no pickle) and ``run.json`` (config, step,
records), all written atomically at each checkpoint. A run restarts from its last checkpoint and
skips the windows it has already seen, so an interrupted experiment resumes where it stopped and
finished runs are not redone.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from interp.data import token_windows
from interp.models import load_model
from interp.sparsity.laws import fit_series
from interp.sparsity.measure import MeasureConfig, ppl_sparsity, windows_for

__all__ = ["DynamicsConfig", "RunSpec", "collect", "direction", "run_experiment", "train_run"]

# the direction rule: the mean of the last ENDS checkpoints against the mean of the first ENDS,
# significant when beyond Z standard errors of that difference
ENDS = 3
Z = 2.0


class RunSpec(BaseModel):
    """One model of the experiment."""

    model_config = ConfigDict(extra="forbid")

    act_fn: Literal["relu", "silu"]
    """The MLP activation (the MLP is gated: act(x W_gate) * (x W_in))."""
    n_layers: int = Field(ge=1)
    """Depth."""
    d_model: int = Field(ge=8)
    """Width; heads are d_model // 16 of size 16 and d_mlp = mlp_ratio * d_model."""

    @property
    def name(self) -> str:
        return f"{self.act_fn}_L{self.n_layers}_d{self.d_model}"


class DynamicsConfig(BaseModel):
    """The experiment: which models, how long, when to measure."""

    model_config = ConfigDict(extra="forbid")

    runs: list[RunSpec] = [
        RunSpec(act_fn=a, n_layers=L, d_model=d)
        for a in ("relu", "silu")
        for L, d in ((1, 96), (2, 64), (4, 48), (8, 32))
    ]
    """The models to train: width/depth 96, 32, 12 and 4 at about 110k non-embedding parameters
    (13 d_model^2 per layer with a gated d_mlp = 3 d_model)."""
    mlp_ratio: int = Field(3, ge=1)
    """d_mlp = mlp_ratio * d_model."""
    source: str = "stdlib"
    """Text source of the training and measurement windows."""
    context_size: int = Field(128, ge=8)
    """Tokens per window."""
    batch_size: int = Field(16, ge=1)
    """Windows per training step."""
    steps: int = Field(3000, ge=1)
    """Training steps per run."""
    checkpoints: list[int] = [100, 200, 300, 450, 600, 800, 1000, 1300, 1600, 2000, 2500, 3000]
    """Steps after which the activation ratio is measured (and the run saved)."""
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate after warmup."""
    warmup: int = Field(100, ge=0)
    """Linear warmup steps."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    eval_tokens: int = Field(8192, ge=16)
    """Validation tokens of each PPL-p% measurement."""
    calib_tokens: int = Field(2048, ge=16)
    """Of those, the tokens that calibrate the per-layer thresholds."""
    ppl_increase: float = Field(0.01, gt=0)
    """p of PPL-p%."""
    max_search_steps: int = Field(10, ge=1)
    """At most this many perplexity evaluations per PPL-p% measurement."""
    seed: int = 0
    """Seed of the weights and the data order."""
    max_run_minutes: float = Field(15.0, gt=0)
    """A run that has trained this long stops at its next checkpoint (and says so)."""


def _spec(cfg: DynamicsConfig, run: RunSpec) -> str:
    heads = max(1, run.d_model // 16)
    return (
        f"tiny:n_layers={run.n_layers},d_model={run.d_model},n_heads={heads},d_head={run.d_model // heads},"
        f"d_mlp={cfg.mlp_ratio * run.d_model},act_fn={run.act_fn},gated_mlp=true,n_ctx={cfg.context_size},"
        f"seed={cfg.seed}"
    )


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _save(run_dir: Path, model, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    sd = opt.state_dict()
    tensors = {
        f"{i}.{k}": v.detach().clone().contiguous()
        for i, st in sd["state"].items()
        for k, v in st.items()
    }
    _atomic(
        run_dir / "model.safetensors",
        lambda p: save_file({k: v.contiguous() for k, v in model.state_dict().items()}, p),
    )
    _atomic(run_dir / "optim.safetensors", lambda p: save_file(tensors, p))
    _atomic(
        run_dir / "optim.json",
        lambda p: p.write_text(json.dumps({"param_groups": sd["param_groups"]})),
    )
    _atomic(run_dir / "run.json", lambda p: p.write_text(json.dumps(meta, indent=1)))


def _load(run_dir: Path, model, opt: torch.optim.Optimizer) -> None:
    model.load_state_dict(load_file(run_dir / "model.safetensors"))
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in load_file(run_dir / "optim.safetensors").items():
        i, _, k = key.partition(".")
        state.setdefault(int(i), {})[k] = v
    groups = json.loads((run_dir / "optim.json").read_text())["param_groups"]
    opt.load_state_dict({"state": state, "param_groups": groups})


def _measure(model, cfg: DynamicsConfig, eval_tokens: torch.Tensor) -> dict[str, Any]:
    mcfg = MeasureConfig(
        source=cfg.source,
        context_size=cfg.context_size,
        n_tokens=eval_tokens.numel(),
        calib_tokens=cfg.calib_tokens,
        ppl_increase=cfg.ppl_increase,
        max_search_steps=cfg.max_search_steps,
        batch_size=16,
    )
    try:
        r = ppl_sparsity(model, mcfg, eval_tokens, progress=False)
    except RuntimeError as exc:  # e.g. perplexity does not rise by p at any threshold
        return {"error": str(exc)}
    keys = ("activation_ratio", "cett", "converged", "ppl_dense", "ppl_sparse", "ppl_increase")
    return {k: r[k] for k in keys} | {"layer_ratios": [x["activation_ratio"] for x in r["layers"]]}


def train_run(
    cfg: DynamicsConfig,
    run: RunSpec,
    out: str | Path,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train (or resume, or just read back when finished) one run; returns its run.json dict.
    ``stop_after``: leave after the first checkpoint at or past this step, unfinished (as an
    interruption would; the next call resumes)."""
    run_dir = Path(out) / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = load_model(_spec(cfg, run), device="cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    meta: dict[str, Any] = {
        "run": run.model_dump() | {"name": run.name},
        "config": cfg.model_dump(exclude={"runs"}),
        "params": sum(p.numel() for p in model.parameters()),
        "non_embedding_params": sum(
            p.numel() for n, p in model.named_parameters() if "embed" not in n
        ),
        "step": 0,
        "tokens": 0,
        "train_s": 0.0,
        "records": [],
        "done": False,
    }
    if (run_dir / "run.json").exists():
        saved = json.loads((run_dir / "run.json").read_text())
        if saved["config"] != meta["config"]:
            raise ValueError(
                f"{run_dir / 'run.json'} was written with another config; use a new output folder "
                f"(differs in: {sorted(k for k in meta['config'] if saved['config'].get(k) != meta['config'][k])})"
            )
        meta = saved
        if meta["done"]:
            return meta
        if meta["step"]:
            _load(run_dir, model, opt)
    eval_tokens = windows_for(
        model,
        MeasureConfig(source=cfg.source, context_size=cfg.context_size, n_tokens=cfg.eval_tokens),
    )
    windows = token_windows(
        model.tokenizer, cfg.source, cfg.context_size, split="train", seed=cfg.seed
    )
    for _ in range(meta["step"] * cfg.batch_size):  # the windows already trained on
        next(windows)
    checkpoints = sorted(c for c in set(cfg.checkpoints) if c <= cfg.steps) or [cfg.steps]
    bar = tqdm(total=cfg.steps, initial=meta["step"], desc=run.name, disable=not progress)
    t_start = time.perf_counter() - meta["train_s"]
    while meta["step"] < cfg.steps:
        batch = [next(windows, None) for _ in range(cfg.batch_size)]
        if any(b is None for b in batch):
            raise ValueError(
                f"source {cfg.source!r} ran out of windows at step {meta['step']} "
                f"({cfg.steps} steps x {cfg.batch_size} windows requested)"
            )
        for g in opt.param_groups:
            g["lr"] = cfg.lr * min(1.0, (meta["step"] + 1) / max(1, cfg.warmup))
        loss = model(torch.stack(batch), return_type="loss")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        meta["step"] += 1
        meta["tokens"] += cfg.batch_size * cfg.context_size
        bar.update(1)
        loss_value = float(loss.detach())
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if meta["step"] in checkpoints or meta["step"] == cfg.steps:
            meta["train_s"] = time.perf_counter() - t_start
            rec = {"step": meta["step"], "tokens": meta["tokens"], "train_loss": loss_value}
            meta["records"].append(rec | _measure(model, cfg, eval_tokens))
            over = meta["train_s"] > 60 * cfg.max_run_minutes
            meta["done"] = meta["step"] >= cfg.steps or over
            meta["stopped_early"] = over and meta["step"] < cfg.steps
            meta["wall_s"] = time.perf_counter() - t_start
            _save(run_dir, model, opt, meta)
            if over or (stop_after is not None and meta["step"] >= stop_after):
                break
    bar.close()
    return meta


def direction(a: list[float] | np.ndarray, ends: int = ENDS, z: float = Z) -> dict[str, Any]:
    """Whether a run's series rises, falls or stays flat, by one rule for every activation:
    ``change`` = mean of the last ``ends`` values - mean of the first ``ends``; the run's noise
    ``sigma`` (one checkpoint's scatter) = sd of successive differences (ddof=1) / sqrt(2), so the
    standard error of ``change`` is sigma * sqrt(2 / ends); "rises" when change > z * se, "falls"
    when change < -z * se, else "flat" (within the noise). Needs 2 * ends values, at least 3."""
    a = np.asarray(a, dtype=float)
    if a.size < max(3, 2 * ends):
        raise ValueError(f"the direction rule needs >= {max(3, 2 * ends)} values, got {a.size}")
    change = float(a[-ends:].mean() - a[:ends].mean())
    sigma = float(np.std(np.diff(a), ddof=1) / np.sqrt(2))
    se = sigma * float(np.sqrt(2 / ends))
    verdict = "rises" if change > z * se else "falls" if change < -z * se else "flat"
    return {"change": change, "sigma": sigma, "se": se, "z": z, "ends": ends, "verdict": verdict}


def collect(runs: list[dict[str, Any]], profile_n: int = 0) -> dict[str, Any]:
    """Fit the laws to every run's series (D in millions of tokens; the ReLU law to ReLU runs, the
    SiLU law to SiLU runs) and summarise the paper's three directions."""
    series, laws = {}, {}
    for meta in runs:
        recs = [r for r in meta["records"] if "activation_ratio" in r]
        if len(recs) >= 5:
            series[meta["run"]["name"]] = (
                [r["tokens"] / 1e6 for r in recs],
                [r["activation_ratio"] for r in recs],
            )
            laws[meta["run"]["name"]] = meta["run"]["act_fn"]
    fits = fit_series(series, laws, profile_n=profile_n)
    summary = []
    for meta in runs:
        recs = [r for r in meta["records"] if "activation_ratio" in r]
        if not recs:
            continue
        a = [r["activation_ratio"] for r in recs]
        half = len(a) // 2
        summary.append(
            {
                "run": meta["run"]["name"],
                "act_fn": meta["run"]["act_fn"],
                "width_depth": meta["run"]["d_model"] / meta["run"]["n_layers"],
                "non_embedding_params": meta["non_embedding_params"],
                "tokens": recs[-1]["tokens"],
                "first_ratio": a[0],
                "final_ratio": a[-1],
                "trend": a[-1] - a[0],
                # converging: the second half moves less than the first half
                "first_half_change": a[half] - a[0],
                "second_half_change": a[-1] - a[half],
                # rank correlation of the ratio with tokens (robust to the checkpoint noise)
                "spearman": float(spearmanr(range(len(a)), a)[0]) if len(a) >= 3 else None,
                "late_mean_ratio": float(np.mean(a[-3:])),
                "direction": direction(a) if len(a) >= max(3, 2 * ENDS) else None,
                "final_ppl": recs[-1]["ppl_dense"],
                "train_s": meta["train_s"],
            }
        )
    return {
        "fits": fits,
        "summary": summary,
        "directions": _directions(summary),
        "units": {"D": "millions of tokens"},
    }


def _directions(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's three directions on our runs: how many runs of each activation rise, fall or
    stay flat with data by :func:`direction`'s rule (one rule for both), how many SiLU runs move
    less in their second half than in the first (converging), and per activation the rank
    correlation of the late ratio (mean of the last 3 checkpoints) with width/depth."""
    out: dict[str, Any] = {"rule": {"ends": ENDS, "z": Z}}
    for act in ("relu", "silu"):
        rows = [r for r in summary if r["act_fn"] == act and r.get("direction")]
        out[f"{act}_runs"] = len(rows)
        for verdict, key in (("falls", "falling"), ("rises", "rising"), ("flat", "flat")):
            out[f"{act}_{key}"] = sum(r["direction"]["verdict"] == verdict for r in rows)
        if act == "silu":
            out["silu_converging"] = sum(
                abs(r["second_half_change"]) < abs(r["first_half_change"]) for r in rows
            )
        if len(rows) >= 3:
            rho = spearmanr([r["width_depth"] for r in rows], [r["late_mean_ratio"] for r in rows])[
                0
            ]
            out[f"{act}_ratio_vs_width_depth_spearman"] = float(rho)
    return out


def run_experiment(cfg: DynamicsConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train/resume every run of ``cfg`` into ``out`` and return :func:`collect` of them."""
    metas = [train_run(cfg, run, out, progress) for run in cfg.runs]
    return collect(metas) | {"config": cfg.model_dump(), "runs": metas}
