"""Build a feature store in one streaming pass over held-out text (``interp dashboard build``).

The pass reads windows of the validation split in batches of ``batch_windows``; batch b holds
windows ``[b * batch_windows, (b + 1) * batch_windows)``. Each batch: one forward to the hooked
layer (``stop_at_layer``), the SAE's sparse code, the code written to its shard, and the streaming
statistics updated (:mod:`saes.features.accumulate`). Nothing the size of tokens x latents is
ever held: memory is the model, one batch, and the statistics (``coactivation`` adds F^2 int32).

* **Resumable**: every ``checkpoint_every_s`` seconds the statistics and the list of finished
  batches are saved atomically under ``OUT/.build/``; a rerun with the same settings skips them.
  A batch is either in the saved statistics or redone (its shard is rewritten identically).
* **Distributed** (torchrun): rank r takes the batches b with b mod world = r, and rank 0 merges
  the ranks' statistics, which are exactly mergeable, into the same store one process builds.
* **After the pass** (weights only): logit effects of each live latent's decoder row, decoder-
  cosine neighbours, co-activation partners, quantile bands from the sample, head attribution for
  ``hook_z`` SAEs. Dead latents (no nonzero activation in the pass) are skipped and counted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from interp.activations import ActivationCapture
from interp.atomic_files import atomic_write, atomic_write_json, fsync_files
from interp.data import token_windows
from interp.models import dtype_name, load_model
from interp.text import Vocab
from saes.artifacts import load_sae
from saes.features.accumulate import Accumulators
from saes.features.config import StoreConfig
from saes.features.store import FORMAT, SUM_SCALE, VERSION, hist_edges, shard_name
from saes.features.summarize import per_latent_arrays
from saes.rundir import RunDir
from saes.training.config import RunConfig

assert SUM_SCALE == Accumulators.SUM_SCALE  # (the reader's and the writer's fixed point)


def _sae_digest(sae) -> str:
    h = hashlib.sha256()
    for name, p in sorted(sae.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().numpy().tobytes()[: 1 << 16])
        h.update(str(float(p.detach().float().sum())).encode())
    return h.hexdigest()[:16]


def _save_tensors(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict | None = None, sync: bool = True
) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(clean, tmp, metadata=meta), sync=sync)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _load_tensor(path: Path, name: str) -> torch.Tensor:
    """One tensor of a safetensors file, without reading the others (a shard's codes)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as h:
        return h.get_tensor(name)


class _Pass:
    """The state of one rank's pass: statistics, finished batches, where they are saved."""

    def __init__(self, out: Path, settings: dict[str, Any], acc: Accumulators, rank: int) -> None:
        self.path = out / ".build" / f"state.rank{rank}.safetensors"
        self.settings = settings
        self.acc = acc
        self.done: set[int] = set()
        self.unsynced: list[Path] = []  # code shards written since the last save

    def resume(self) -> bool:
        if not self.path.is_file():
            return False
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as h:
            meta = h.metadata() or {}
        if json.loads(meta.get("settings", "null")) != self.settings:
            return False  # another build's state: start over
        self.acc.load(_load_tensors(self.path))
        self.done = set(json.loads(meta["done"]))
        return True

    def save(self) -> None:
        fsync_files(self.unsynced)  # the shards the state will count as done, durable first
        self.unsynced = []
        meta = {"settings": json.dumps(self.settings), "done": json.dumps(sorted(self.done))}
        _save_tensors(self.path, self.acc.state(), meta)


def batches_of(windows: Iterator[torch.Tensor], batch_windows: int, n_windows: int):
    """(batch index, tokens [b, T]) for the first ``n_windows`` windows."""
    buf: list[torch.Tensor] = []
    b = 0
    for i, w in enumerate(windows):
        if i >= n_windows:
            break
        buf.append(w)
        if len(buf) == batch_windows:
            yield b, torch.stack(buf)
            buf, b = [], b + 1
    if buf:
        yield b, torch.stack(buf)


def build_store_for_sae(
    sae,
    model,
    out: str | Path,
    source: str,
    context_size: int,
    seed: int,
    config: StoreConfig | None = None,
    comm=None,
    progress: bool = False,
    describe: dict[str, Any] | None = None,
    stop_after_batches: int | None = None,
) -> Path:
    """Build the store of ``sae`` (reading hook ``sae.cfg.hook_name`` of ``model``) at ``out``.

    ``stop_after_batches`` ends the pass early after that many new batches (and saves its state),
    as a crash would: for tests of resuming.
    """
    cfg = config or StoreConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    hook = sae.cfg.hook_name
    rank, world = (comm.rank, comm.world) if comm is not None else (0, 1)
    T = context_size
    n_windows = -(-cfg.tokens // (T - 1))
    n_batches = -(-n_windows // cfg.batch_windows)
    F = sae.cfg.d_sae
    edges = hist_edges(cfg.hist_lo, cfg.hist_hi, cfg.hist_per_decade)
    coact = cfg.coactivation > 0 and F <= cfg.coact_max_latents
    gemm = encoder_gemm(cfg, model)
    settings = {
        **cfg.model_dump(),
        "source": source,
        "context_size": T,
        "seed": seed,
        "hook": hook,
        "sae": _sae_digest(sae),
        "world": world,
        "state_format": 2,  # the statistics' layout (saes.features.accumulate)
        "encoder_gemm_resolved": gemm,
    }

    def new_acc() -> Accumulators:
        return Accumulators(F, cfg.top_k, cfg.sample, edges.float(), coact, cfg.coact_per_token)

    def manifest(windows: int, complete: bool, extra: dict[str, Any]) -> None:
        described = {"describe": describe or {}, **extra}
        _write_manifest(
            out, cfg, sae, model, source, T, seed, windows, F, edges, complete, described
        )

    acc = new_acc()
    state = _Pass(out, settings, acc, rank)
    resumed = state.resume()
    if comm is None or comm.is_main:
        manifest(n_windows, complete=False, extra={})
    capture = ActivationCapture(model, [hook], drop_bos=False)
    bos = capture.bos_id
    mine = [b for b in range(n_batches) if b % world == rank and b not in state.done]
    bar = _progress(progress, len(mine), f"feature store ({'resumed' if resumed else 'new'})")
    t0, forward_s, new = time.perf_counter(), 0.0, 0
    saved = t0
    gemm_dtype = torch.bfloat16 if gemm == "bfloat16" else None
    windows = token_windows(
        model.tokenizer, source=source, context_size=T, split="validation", seed=seed
    )
    seen = 0  # windows the source gave (fewer than n_windows when it runs out)
    with torch.no_grad():
        for b, tokens in batches_of(windows, cfg.batch_windows, n_windows):
            seen = b * cfg.batch_windows + tokens.shape[0]
            if b % world != rank or b in state.done:
                continue
            tf = time.perf_counter()
            x = capture(tokens).acts[hook]
            forward_s += time.perf_counter() - tf
            state.unsynced.append(
                _one_batch(sae, acc, out, b, tokens, x, cfg.batch_windows, bos, gemm_dtype)
            )
            state.done.add(b)
            new += 1
            bar.update(1)
            if time.perf_counter() - saved >= cfg.checkpoint_every_s:
                state.save()
                saved = time.perf_counter()
            if stop_after_batches is not None and new >= stop_after_batches:
                bar.close()  # a crash: what was saved is what a rerun resumes from
                return out
    bar.close()
    state.save()
    pass_s = time.perf_counter() - t0
    exhausted = seen < n_windows
    if exhausted:  # the held-out split is smaller than asked: the store is what it holds
        warnings.warn(
            f"{source!r} (validation split) holds {seen:,} windows of {T} tokens, fewer than the "
            f"{n_windows:,} that {cfg.tokens:,} tokens need: the store covers {seen:,} windows",
            stacklevel=2,
        )
        n_windows, n_batches = seen, -(-seen // cfg.batch_windows)
    if comm is not None:
        comm.barrier()
    if comm is not None and not comm.is_main:
        comm.barrier()  # until rank 0 has written the store
        return out
    if comm is not None:  # rank 0 merges every rank's statistics (exact)
        for r in range(1, world):
            other = new_acc()
            other.load(_load_tensors(out / ".build" / f"state.rank{r}.safetensors"))
            acc.merge(other)
    t1 = time.perf_counter()
    _save_tensors(out / "features.safetensors", per_latent_arrays(sae, model, acc, cfg))
    tokens = torch.cat([_load_tensor(out / shard_name(b), "tokens") for b in range(n_batches)])
    _save_tensors(out / "tokens.safetensors", {"tokens": tokens[:n_windows]})
    _save_tensors(out / "vocab.safetensors", Vocab.from_tokenizer(model.tokenizer).to_tensors())
    build = {
        "pass_s": pass_s,
        "forward_s": forward_s,
        "finish_s": time.perf_counter() - t1,
        "batches_this_process": new,
        "resumed": resumed,
        "world": world,
        "tokens_requested": cfg.tokens,
        "source_exhausted": exhausted,
    }
    manifest(n_windows, complete=True, extra={"build": build, **_facts(acc, coact, cfg)})
    shutil.rmtree(out / ".build", ignore_errors=True)
    if comm is not None:
        comm.barrier()
    return out


def _one_batch(
    sae,
    acc: Accumulators,
    out: Path,
    b: int,
    tokens: torch.Tensor,
    x: torch.Tensor,
    batch_windows: int,
    bos: int | None,
    gemm_dtype: torch.dtype | None = None,
) -> Path:
    """One batch's codes: into the statistics, and written to its shard (returned; not yet
    fsynced: :meth:`_Pass.save` makes the shards durable before the state counts them).
    A shard's row holds its token's entries in the encoder's order (readers sort)."""
    B, T = tokens.shape
    code = sae.encode_sparse(x.to(sae.device, sae.W_enc.dtype), gemm_dtype=gemm_dtype)
    values, indices = code.values.float().cpu(), code.indices.cpu()
    g = torch.arange(B * T, dtype=torch.int64) + b * batch_windows * T
    scored = torch.ones(B, T, dtype=torch.bool)
    if bos is not None:
        scored[:, 0] = tokens[:, 0] != bos
    rows = torch.where(scored.reshape(-1), g, torch.full_like(g, -1))
    values = torch.where(scored.reshape(-1, 1), values, torch.zeros_like(values))
    acc.update(values, indices, rows, int(scored.sum()))
    keep = values > 0
    indptr = torch.zeros(B * T + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(keep.sum(1), 0)
    path = out / shard_name(b)
    tensors = {
        "indptr": indptr,
        "indices": indices[keep].to(torch.int32),
        "values": values[keep],
        "tokens": tokens.to(torch.int32),
    }
    _save_tensors(path, tensors, sync=False)
    return path


def encoder_gemm(cfg: StoreConfig, model) -> str:
    """The encoder GEMM's dtype for a pass: ``cfg.encoder_gemm``, "auto" resolved by the
    model's dtype (bf16 model: bfloat16)."""
    if cfg.encoder_gemm != "auto":
        return cfg.encoder_gemm
    return "bfloat16" if next(model.parameters()).dtype == torch.bfloat16 else "float32"


def _progress(show: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not show, unit="batch")


def _facts(acc: Accumulators, coact: bool, cfg: StoreConfig) -> dict[str, Any]:
    dead = int((acc.count == 0).sum())
    return {
        "n_tokens": int(acc.n_tokens),
        "dead_latents": dead,
        "alive_latents": acc.n_latents - dead,
        "coactivation": {"counted": coact, "per_token": cfg.coact_per_token}
        if coact
        else {
            "counted": False,
            "why": f"d_sae {acc.n_latents} > coact_max_latents {cfg.coact_max_latents}"
            if cfg.coactivation
            else "coactivation: 0",
        },
    }


def _write_manifest(
    out: Path,
    cfg: StoreConfig,
    sae,
    model,
    source: str,
    T: int,
    seed: int,
    n_windows: int,
    F: int,
    edges: torch.Tensor,
    complete: bool,
    extra: dict[str, Any],
) -> None:
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "complete": complete,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hook": sae.cfg.hook_name,
        "model": sae.cfg.model_name,
        "model_dtype": dtype_name(next(model.parameters()).dtype),
        "encoder_gemm": encoder_gemm(cfg, model),
        "d_sae": F,
        "d_in": sae.cfg.d_in,
        "variant": sae.cfg.variant,
        "source": source,
        "split": "validation",
        "seed": seed,
        "context_size": T,
        "n_windows": n_windows,
        "batch_windows": cfg.batch_windows,
        "radius": cfg.radius,
        "top_k": cfg.top_k,
        "bands": {
            "quantiles": cfg.band_quantiles,
            "examples": cfg.examples_per_band,
            "sample": cfg.sample,
        },
        "hist": {
            "edges": edges.tolist(),
            "lo": cfg.hist_lo,
            "hi": cfg.hist_hi,
            "per_decade": cfg.hist_per_decade,
        },
        "settings": cfg.model_dump(),
        **extra,
    }
    atomic_write_json(out / "manifest.json", manifest)


# ---------------------------------------------------------------------------------------------
# after the pass: the per-latent arrays


# ---------------------------------------------------------------------------------------------
# entry points


def store_dir(path: str | Path) -> Path:
    """Where a run's (or an SAE folder's) store lives: ``PATH/features``."""
    return Path(path) / "features"


def build_store(
    path: str | Path,
    out: str | Path | None = None,
    tokens: int | None = None,
    model=None,
    model_spec: str | None = None,
    config: StoreConfig | None = None,
    comm=None,
    progress: bool = False,
    stop_after_batches: int | None = None,
) -> Path:
    """Build the store of a run folder, or of any SAE folder ``load_sae`` opens (SAELens,
    dictionary_learning, sparsify; then ``model_spec`` or the SAE's own model name says which
    model). Text, window length, seed and model dtype come from the run's config when there is
    one, else from ``config`` (default: the stdlib corpus, 128-token windows, seed 0).
    """

    path = Path(path)
    cfg = config or StoreConfig()
    if tokens is not None:
        cfg = cfg.model_copy(update={"tokens": tokens})
    run = RunDir(path)
    run_cfg = RunConfig.from_saved(run.config(required=True)) if run.config_path.exists() else None
    device = run_cfg.device if run_cfg is not None else None
    sae = load_sae(path, device=device)
    spec = model_spec or (run_cfg.data.model if run_cfg is not None else sae.cfg.model_name)
    if model is None:
        if not spec:
            raise ValueError(
                f"{path}: a feature store needs the model the SAE reads (its contexts and logit "
                "effects): this run has no model (data.model is null); pass --model SPEC"
            )
        dtype = run_cfg.data.model_dtype if run_cfg is not None else "auto"
        model = load_model(spec, device=device, dtype=dtype)
    d = run_cfg.data if run_cfg is not None else None
    source = cfg.source or (d.source if d is not None else "stdlib")
    context = cfg.context_size or (d.context_size if d is not None else 128)
    seed = cfg.seed if cfg.seed is not None else (d.seed if d is not None else 0)
    return build_store_for_sae(
        sae,
        model,
        out if out is not None else store_dir(path),
        source,
        context,
        seed,
        cfg,
        comm=comm,
        progress=progress,
        describe={"from": str(path), "model_spec": spec, "run": run_cfg is not None},
        stop_after_batches=stop_after_batches,
    )
