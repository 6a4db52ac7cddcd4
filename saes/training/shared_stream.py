"""Many SAEs per forward pass: expand a job (hook patterns x per-SAE overrides) into runs, and serve
them their activations (one capture or cache read for all, sliced or gathered across ranks).

A job is a :class:`~saes.training.config.RunConfig` with ``data.hooks`` (names or glob patterns such
as ``blocks.*.hook_resid_post``) and/or ``saes`` (a list of per-SAE sae/optim sections, e.g.
``[{sae: {k: 16}}, {sae: {k: 32, d_sae: 8192}, optim: {lr: 1e-3}}]``). Every (hook, SAE) pair
becomes an ordinary run config with its own run folder ``log.out_dir/<hook>`` (one SAE per hook)
or ``log.out_dir/<hook>/<name>``. Everything outside ``sae`` and ``optim`` is shared by all of a
job's SAEs: they read the same batches.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from interp.activations import ActivationBatch, shuffled_batches
from interp.hooks import hook_layer, hook_template
from saes.config import check_contiguous_layers
from saes.rundir import job_run_dir
from saes.training.config import RunConfig, SAEOverride

# Per-SAE overrides may change only the ``sae`` and ``optim`` sections: everything else (the
# ``data`` stream, logging, evaluation, the device) is one value per job, by construction.
# Runs trained together from one stream must agree on the stream and on when it is checkpointed:
STREAM_FIELDS = (("data", None), ("device", None), ("log", "checkpoint_every_tokens"))
# fields of the data section that may differ between runs of one stream (the hook is per run)
PER_RUN_DATA = frozenset({"hook", "hooks", "shard_hooks"})


def is_job(cfg: RunConfig) -> bool:
    return cfg.is_job


def resolve_hooks(
    patterns: Sequence[str], available: Sequence[str], where: str = "the model"
) -> list[str]:
    """Hook names for names/glob patterns, in the order ``available`` lists them (exact names kept
    as given: the capture validates them with suggestions). A pattern matching nothing is an error."""
    out: list[str] = []
    for pat in patterns:
        if any(c in pat for c in "*?["):
            hits = [h for h in available if fnmatch.fnmatchcase(h, pat)]
            if not hits:
                raise ValueError(f"hook pattern {pat!r} matches no hook of {where}")
            out.extend(hits)
        else:
            out.append(pat)
    return list(dict.fromkeys(out))


def spec_name(spec: SAEOverride | dict[str, Any]) -> str:
    """A folder name for one SAE's overrides: its ``name``, or ``k16-d_sae8192``-style (the field
    names without their section, in the order given)."""
    if isinstance(spec, SAEOverride):
        if spec.name is not None:
            return spec.name
        fields = {**spec.sae, **spec.optim}
    else:
        if "name" in spec:
            return str(spec["name"])
        fields = {k.rsplit(".", 1)[-1]: v for k, v in spec.items()}
    if not fields:
        return "default"
    return "-".join(f"{k}{v}" for k, v in fields.items()).replace("/", "_")


def expand_job(
    cfg: RunConfig, available_hooks: Sequence[str], where: str = "the model"
) -> list[RunConfig]:
    """One run config per (hook, SAE) of a job, each with its own ``log.out_dir``."""
    hooks = resolve_hooks(cfg.data.hooks or [cfg.data.hook], available_hooks, where)
    specs = list(cfg.saes or [SAEOverride()])
    names = [spec_name(s) for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"the job's SAEs need distinct names; got {names} (add a 'name' to each)")
    if cfg.is_clt:
        return _expand_clt(cfg, hooks, specs, names)
    out = []
    for hook in hooks:
        for spec, name in zip(specs, names):
            folder = job_run_dir(cfg.log.out_dir, hook, None if len(specs) == 1 else name)
            try:
                out.append(
                    cfg.with_overrides(
                        spec,
                        data={"hook": hook, "hooks": None, "shard_hooks": False},
                        log={"out_dir": folder},
                    )
                )
            except ValueError as e:
                raise ValueError(f"SAE {name!r} on {hook}: {e}") from None
    return out


def _expand_clt(
    cfg: RunConfig, hooks: list[str], specs: list[SAEOverride], names: list[str]
) -> list[RunConfig]:
    """A CLT is one run over all of the job's hooks (one per layer, contiguous, in layer order),
    with its folder ``log.out_dir`` (several SAE entries: ``log.out_dir/<name>``)."""
    layers = [hook_layer(h) for h in hooks]
    if any(layer is None or layer < 0 for layer in layers):
        bad = [h for h, layer in zip(hooks, layers) if layer is None or layer < 0]
        raise ValueError(f"a CLT reads one hook per block (blocks.L.<hook>); {bad} are not")
    order = sorted(range(len(hooks)), key=lambda i: layers[i])
    hooks = [hooks[i] for i in order]
    check_contiguous_layers([layers[i] for i in order], f"the CLT's layers (from {cfg.data.hooks})")
    hook_template(hooks)  # one hook at each layer
    out = []
    for spec, name in zip(specs, names):
        folder = cfg.log.out_dir if len(specs) == 1 else str(Path(cfg.log.out_dir) / name)
        out.append(
            cfg.with_overrides(
                spec,
                data={"hook": hooks[0], "hooks": hooks, "shard_hooks": False},
                log={"out_dir": folder},
            )
        )
    return out


def _stream_value(cfg: RunConfig, section: str, field: str | None) -> Any:
    value = getattr(cfg, section)
    if field is not None:
        return getattr(value, field)
    if section == "data":
        return value.model_dump(exclude=PER_RUN_DATA)
    return value


def check_shared(cfgs: Sequence[RunConfig]) -> None:
    """Runs trained from one stream must agree on the stream's settings (error names the key)."""
    first = cfgs[0]
    for c in cfgs[1:]:
        for section, field in STREAM_FIELDS:
            a, b = _stream_value(first, section, field), _stream_value(c, section, field)
            if a == b:
                continue
            if isinstance(a, dict):  # name the first differing data field
                key = next(k for k in a if a[k] != b[k])
                where, a, b = f"data.{key}", a[key], b[key]
            else:
                where = section if field is None else f"{section}.{field}"
            raise ValueError(
                f"runs trained together must share {where!r}: {first.log.out_dir} has "
                f"{a!r}, {c.log.out_dir} has {b!r}"
            )
    dirs = [c.log.out_dir for c in cfgs]
    if len(set(dirs)) != len(dirs):
        raise ValueError(f"runs trained together need distinct out_dir; got {dirs}")


def hook_owners(hooks: Sequence[str], world: int) -> dict[str, int]:
    """Hook sharding: hook i belongs to rank i % world."""
    if len(hooks) < world:
        raise ValueError(
            f"shard_hooks needs at least as many hooks as ranks: {len(hooks)} hooks, {world} ranks"
        )
    return {h: i % world for i, h in enumerate(hooks)}


def _empty_batch(dims: dict[str, int], dtype: torch.dtype, with_grads: bool) -> ActivationBatch:
    acts = {h: torch.zeros(0, d, dtype=dtype) for h, d in dims.items()}
    return ActivationBatch(
        acts=acts,
        grads={h: a.clone() for h, a in acts.items()} if with_grads else None,
        tokens=torch.zeros(0, dtype=torch.long),
    )


def rank_live_blocks(
    source, comm, start_block: int = 0, owners: dict[str, int] | None = None
) -> Iterator[ActivationBatch]:
    """Live capture across ranks: each rank runs the model on its own share of every block's windows
    (whole ``batch_windows`` chunks, so the activations are the ones one process would compute), then
    the rows are exchanged: all-gathered (data parallel: every rank gets the whole block), or gathered
    on each hook's owner (hook sharding: a rank gets only its hooks). Blocks come out in the
    single-process order, so shuffling and resume work unchanged."""
    cfg = source.cfg
    W, bw = cfg.data.windows_per_block, cfg.data.batch_windows
    it = iter(source.windows())
    for _ in range(start_block * W):
        if next(it, None) is None:
            return
    capture = source.capture
    while True:
        block_windows = [w for _, w in zip(range(W), it)]
        if not block_windows:
            return
        chunks = [block_windows[i : i + bw] for i in range(0, len(block_windows), bw)]
        mine = chunks[comm.row_slice(len(chunks))]
        parts = [capture(torch.stack(c)) for c in mine]
        local = (
            ActivationBatch.concat(parts)
            if parts
            else _empty_batch(source.dims, capture.dtype, capture.with_grads)
        )
        if owners is None:
            yield ActivationBatch(
                acts={h: comm.all_gather_rows(a) for h, a in local.acts.items()},
                grads=None
                if local.grads is None
                else {h: comm.all_gather_rows(g) for h, g in local.grads.items()},
                tokens=comm.all_gather_rows(local.tokens),
            )
            continue
        acts, grads = {}, {} if local.grads is not None else None
        tokens = None
        for h, a in local.acts.items():
            got = comm.gather_rows(a, owners[h])
            if got is not None:
                acts[h] = got
            if grads is not None:
                g = comm.gather_rows(local.grads[h], owners[h])  # type: ignore[index]
                if g is not None:
                    grads[h] = g
        tokens = comm.all_gather_rows(local.tokens)
        yield ActivationBatch(acts=acts, grads=grads, tokens=tokens)


def job_batches(
    source,
    cfg: RunConfig,
    comm=None,
    data_parallel: bool = False,
    owners: dict[str, int] | None = None,
    start_block: int = 0,
    skip_batches: int = 0,
) -> Iterator[tuple[int, int, ActivationBatch]]:
    """(block, batch index, batch) for a job: the global shuffled batches, this rank's slice of
    each under data parallel, or the whole batches of this rank's hooks under hook sharding."""
    live = source.live
    if comm is not None and live:
        blocks = rank_live_blocks(source, comm, start_block, owners)
    else:
        blocks = source.blocks(start_block)
    for b, i, batch in shuffled_batches(
        blocks, cfg.data.batch_tokens, cfg.data.seed, start_block, skip_batches
    ):
        if data_parallel and comm is not None:
            batch = batch.select(comm.row_slice(len(batch)))
        yield b, i, batch
