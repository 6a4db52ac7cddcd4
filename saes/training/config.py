"""The run configuration of a training job: a nested, validated model with a docstring per field.

A config file (JSON or YAML) is a mapping of sections::

    data:  {model, hook, hooks, source, cache, context_size, ..., train_tokens, batch_tokens, seed}
    sae:   {variant, d_sae, k, ...}        # the SAE's own config (saes.config.SAEConfig)
    optim: {lr, warmup_steps, decay_fraction, dead_tokens, normalize_input}
    log:   {out_dir, checkpoint_every_tokens, keep_checkpoints, log_every, wandb, ...}
    eval:  {tokens, ce_windows, cache, holdout_tokens}
    device: cpu
    saes:  [{name, sae: {...}, optim: {...}}, ...]   # multi-SAE jobs: per-SAE sections

``--set sae.k=64`` sets one field by its dotted path. ``data`` is the activation stream, shared by
every SAE of a job; per-SAE overrides can only change ``sae`` and ``optim``. A key of the old flat
layout (``k``, ``lr``, ...) is an error that names the section it belongs in (``'k' belongs in
section 'sae' (sae.k)``); only :meth:`RunConfig.from_saved`, the reader of run folders' saved
configs, still converts the old layout (run folders written before the sections existed).
``interp config`` prints every field with its default and docstring (read from this file by
pydantic, so they cannot drift).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from interp.hooks import hook_layer, hook_template, output_hook_for
from interp.models.dtypes import ModelDtype
from saes.config import SAEConfig
from saes.variants import knob_owners, variant_class, variant_names

SECTION_CONFIG = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class DataConfig(BaseModel):
    """Where activations come from: the model, hook(s), text and batching. One stream per job."""

    model_config = SECTION_CONFIG

    model: str | None = "smollm2-135m"
    """Model spec: a name (``interp models`` lists them), "tiny", a GGUF file or an HF folder.
    null (also when absent while ``cache`` is set): no model; the run trains from ``cache`` and is
    evaluated on held-out cached rows only (``eval.cache`` or ``eval.holdout_tokens``; CE/KL
    skipped)."""
    hook: str = "blocks.15.hook_resid_post"
    """The TransformerLens hook the SAE reads."""
    hooks: list[str] | None = None
    """Many SAEs per forward pass: hook names or glob patterns ("blocks.*.hook_resid_post"); each
    (hook, SAE) pair gets its own run folder under ``log.out_dir``."""
    output_hook: str | None = None
    """The hook a transcoder (``sae.kind`` other than "sae") predicts: a name, or a template whose
    ``{layer}`` is the input hook's block number (the pairing rule of a job glob). None: for a
    transcoder ``blocks.{layer}.hook_mlp_out``. An SAE reconstructs its own hook: leave it None."""
    shard_hooks: bool = False
    """Under torchrun, each rank owns some of the job's SAEs (instead of data parallelism)."""
    source: str = "stdlib"
    """Text: "stdlib" (the Python standard library), a file, folder or glob, or hf:NAME."""
    cache: str | None = None
    """An activation-cache folder; when set, training runs no model forward."""
    cache_allow_incomplete: bool = False
    """Train on a cache whose manifest says ``complete: false`` (a writer still running, or one that
    crashed): only the shards written so far. Off: such a cache is an error."""
    context_size: int = Field(128, ge=2)
    """Tokens per window (the first, BOS, position is not trained on)."""
    batch_windows: int = Field(16, ge=1)
    """Windows per model forward."""
    buffer_tokens: int = Field(2**16, ge=1)
    """Shuffling-buffer block size (rows)."""
    activation_dtype: str = "float32"
    """Dtype activations are stored and shuffled in ("float32", "bfloat16", "float16")."""
    skip_positions: int = Field(0, ge=0)
    """Positions captured activations leave out after each window's BOS (which is always left
    out): 0 keeps them all. SmolLM2's first token after BOS has a residual norm of 10-100x the
    median in the middle layers (an attention sink); 1 leaves it out of training."""
    max_norm_ratio: float | None = Field(10.0, gt=1)
    """Also leave out of training rows whose norm exceeds this multiple of the batch's median norm
    (at any captured hook); None keeps them. The default, 10, trained SmolLM2's layer-15 SAE to a
    CE loss recovered of 0.983 against 0.969 with every position kept (bench/positions.py).
    Evaluation always scores every position but BOS, and reports such tokens apart (metrics.json
    ``massive_norm_tokens``)."""
    model_dtype: ModelDtype = "float32"
    """Dtype the model runs in for capture, caching and evaluation: "float32", "bfloat16", or
    "auto" (bf16 where the CPU has bf16 matrix units, amx_bf16/avx512_bf16, or on a bf16 GPU; fp32
    otherwise). Evaluation's clean, spliced and ablated runs all use this one dtype, stated in
    metrics.json."""
    train_tokens: int = Field(2_000_000, ge=1)
    """Tokens (activation rows) each SAE trains on."""
    batch_tokens: int = Field(4096, ge=1)
    """Rows per optimiser step."""
    seed: int = 0
    """Seed of the text order, the shuffling buffer and the SAE initialisation."""
    init_sample_tokens: int = Field(4096, ge=1)
    """Rows used to set the input scale and the decoder bias (geometric median) before step 1."""

    @model_validator(mode="before")
    @classmethod
    def _no_model_with_cache(cls, data: Any) -> Any:
        # a cache with no model named trains model-free (the default model is for live capture)
        if isinstance(data, dict) and data.get("cache") and "model" not in data:
            data = {**data, "model": None}
        return data

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.model is None and not self.cache:
            raise ValueError(
                "data.model is null and data.cache is not set: a run needs a model (data.model) "
                "or an activation cache (data.cache) to train from"
            )
        if self.train_tokens < self.batch_tokens:
            raise ValueError(
                f"train_tokens ({self.train_tokens}) must be at least one batch "
                f"({self.batch_tokens})"
            )
        if self.buffer_tokens < self.batch_tokens:
            raise ValueError(
                f"buffer_tokens ({self.buffer_tokens}) must be >= batch_tokens ({self.batch_tokens})"
            )
        return self

    @property
    def windows_per_block(self) -> int:
        rows = self.context_size - 1
        return max(self.batch_windows, -(-self.buffer_tokens // rows))


class OptimConfig(BaseModel):
    """The optimiser and its schedule (per SAE: a multi-SAE job may give each its own)."""

    model_config = SECTION_CONFIG

    lr: float | None = Field(None, ge=0)
    """Adam learning rate; None: 2e-4 / sqrt(d_sae / 2^14) (Gao et al. 2024's scaling)."""
    warmup_steps: int = Field(50, ge=0)
    """Linear warm-up steps."""
    decay_fraction: float = Field(0.2, ge=0, le=1)
    """Fraction of the steps, at the end, over which the learning rate decays linearly to 0."""
    dead_tokens: int | None = Field(None, ge=1)
    """A latent that has not fired for this many tokens is dead (AuxK); None: min(10M,
    train_tokens / 10)."""
    normalize_input: bool = True
    """Scale inputs so E||x|| = sqrt(d_in) (the scale is folded into the exported weights)."""


class LogConfig(BaseModel):
    """The run folder: where it is, checkpoints, the training log."""

    model_config = SECTION_CONFIG

    out_dir: str = "runs/topk"
    """The run folder (a multi-SAE job: the parent of its runs' folders)."""
    checkpoint_every_tokens: int = Field(500_000, ge=1)
    """Write an atomic, verified checkpoint every this many tokens."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many of the newest checkpoints to keep."""
    log_every: int = Field(10, ge=1)
    """Write a train_log.jsonl record every this many steps."""
    wandb: bool = False
    """Also log to Weights & Biases."""
    wandb_project: str = "interp"
    """The W&B project."""
    wandb_online: bool = False
    """False: W&B runs offline (sync later with ``wandb sync``)."""


class EvalConfig(BaseModel):
    """Evaluation on the held-out validation split after training."""

    model_config = SECTION_CONFIG

    tokens: int = Field(32_768, ge=1)
    """Validation rows for FVU, L0 and dead/dense fractions."""
    ce_windows: int = Field(32, ge=0)
    """Validation windows for the spliced CE/KL evaluation (0: skip it)."""
    cache: str | None = None
    """An activation-cache folder of held-out rows (the SAE's hook): FVU, L0, dead/dense, cosine
    and the norm ratio are computed on its first ``tokens`` rows instead of the model's validation
    text; needed for a model-free run unless ``holdout_tokens`` holds rows out of ``data.cache``."""
    holdout_tokens: int | None = Field(None, ge=0)
    """Rows at the end of ``data.cache`` never trained on, evaluated instead (training reads only
    the rows before them; ``data.train_tokens`` must fit there). None: ``tokens`` for a run with
    no model and no ``eval.cache``, else 0."""


class SAEOverride(BaseModel):
    """One SAE of a multi-SAE job (or sweep point): its own SAE and optimiser settings."""

    model_config = SECTION_CONFIG

    name: str | None = None
    """Its folder name; default: built from the overrides (``k16-d_sae8192``)."""
    sae: dict[str, Any] = {}
    """Fields of the SAE section that differ from the job's."""
    optim: dict[str, Any] = {}
    """Fields of the optim section that differ from the job's."""

    @model_validator(mode="before")
    @classmethod
    def _only_sae_and_optim(cls, data: Any) -> Any:
        if isinstance(data, dict):
            places = {k: flat_key_place(k) for k in sorted(data) if k not in cls.model_fields}
            own = [(k, p) for k, p in places.items() if p and p.split(".")[0] in ("sae", "optim")]
            if own:
                raise ValueError(
                    "per-SAE settings: " + "; ".join(flat_key_error(k, p, True) for k, p in own)
                )
            bad = []
            for key in sorted(set(data) - {"name", "sae", "optim"}):
                sub = data[key]
                bad += (
                    [f"{key}.{f}" for f in sub] if isinstance(sub, dict) else [places[key] or key]
                )
            if bad:
                raise ValueError(
                    f"per-SAE settings cannot change {bad}: they are shared by the whole job "
                    "(one activation stream); set them at the top level"
                )
        return data


class RunConfig(BaseModel):
    """Everything a training run needs. Unknown keys are an error that suggests the right one."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    data: DataConfig = Field(default_factory=DataConfig)
    """The activation stream."""
    sae: SAEConfig = Field(default_factory=SAEConfig)
    """The SAE (``d_in`` None: the hook's width; set, it is checked against the hook)."""
    optim: OptimConfig = Field(default_factory=OptimConfig)
    """The optimiser and schedule."""
    log: LogConfig = Field(default_factory=LogConfig)
    """Checkpoints and logging."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Evaluation."""
    device: str = "cpu"
    """Where the model and the SAEs run ("cpu", "cuda", "cuda:1", "mps")."""
    saes: list[SAEOverride] | None = None
    """Many SAEs per forward pass: per-SAE sae/optim overrides, each trained on every hook."""

    @model_validator(mode="before")
    @classmethod
    def _top_level_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            check_keys(data)
        return data

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> RunConfig:
        """A run folder's saved config (``run_config.json``, ``RunDir.config()``): nested, or in
        the old flat layout of run folders written before the sections existed, which is converted
        here and nowhere else (variant keys of other variants, which old flat configs held, are
        dropped)."""
        data = _nest_old_layout(dict(data))
        if isinstance(data.get("sae"), dict):
            data["sae"] = SAEConfig.from_saved(data["sae"]).model_dump()
        return cls(**data)

    @model_validator(mode="after")
    def _check_trainable(self) -> RunConfig:
        variants = [self.sae.variant] + [o.sae.get("variant") for o in self.saes or []]
        for v in dict.fromkeys(v for v in variants if v):
            if v in variant_names() and not variant_class(v).trainable:
                trainable = [n for n in variant_names() if variant_class(n).trainable]
                raise ValueError(
                    f"sae.variant {v!r} is inference-only (it opens other libraries' SAEs) and "
                    f"cannot be trained; trainable variants: {trainable}"
                )
        return self

    @model_validator(mode="after")
    def _check_holdout(self) -> RunConfig:
        if self.eval.holdout_tokens and not self.data.cache:
            raise ValueError(
                f"eval.holdout_tokens ({self.eval.holdout_tokens}) holds rows out of data.cache, "
                "which is not set"
            )
        if self.data.model is None and not self.eval.cache and self.resolved_holdout_tokens == 0:
            raise ValueError(
                "a run without a model (data.model null) is evaluated on held-out cached rows: "
                "set eval.cache to a cache of held-out activations, or eval.holdout_tokens > 0"
            )
        return self

    @model_validator(mode="after")
    def _check_transcoder(self) -> RunConfig:
        kinds = {self.sae.kind} | {o.sae.get("kind", self.sae.kind) for o in self.saes or []}
        if kinds == {"sae"} and self.data.output_hook:
            raise ValueError(
                f"data.output_hook is {self.data.output_hook!r} but sae.kind is 'sae' (an SAE "
                "reconstructs its own hook): set sae.kind to 'transcoder', 'skip_transcoder' or "
                "'clt', or leave data.output_hook unset"
            )
        if "clt" in kinds and len(kinds) > 1:
            raise ValueError(
                f"a job trains one CLT per SAE entry over all its hooks; it cannot mix sae.kind "
                f"'clt' with {sorted(kinds - {'clt'})}"
            )
        if "clt" in kinds and not self.data.hooks:
            raise ValueError(
                "sae.kind 'clt' spans layers: set data.hooks to its input hook at every layer, "
                "e.g. data.hooks: ['blocks.*.ln2.hook_normalized']"
            )
        if "clt" in kinds and self.data.shard_hooks:
            raise ValueError("a CLT is one run over all its hooks: shard_hooks does not apply")
        return self

    @property
    def is_clt(self) -> bool:
        return self.sae.kind == "clt"

    @property
    def input_hooks(self) -> list[str]:
        """The hooks this run reads: its hook, or a CLT's hook at every layer."""
        return list(self.data.hooks or []) if self.is_clt else [self.data.hook]

    @property
    def output_hooks(self) -> list[str]:
        """The hooks this run predicts, one per input hook (an SAE: its own)."""
        if self.sae.kind == "sae":
            return self.input_hooks
        return [output_hook_for(h, self.data.output_hook) for h in self.input_hooks]

    @property
    def stream_hooks(self) -> list[str]:
        """Every hook the activation stream must capture for this run."""
        return list(dict.fromkeys(self.input_hooks + self.output_hooks))

    @property
    def resolved_holdout_tokens(self) -> int:
        """Rows at the end of ``data.cache`` kept out of training and evaluated instead."""
        if self.eval.holdout_tokens is not None:
            return self.eval.holdout_tokens
        return self.eval.tokens if self.data.model is None and not self.eval.cache else 0

    @property
    def resolved_dead_tokens(self) -> int:
        if self.optim.dead_tokens is not None:
            return self.optim.dead_tokens
        d = self.data
        return max(d.batch_tokens, min(10_000_000, d.train_tokens // 10))

    @property
    def is_job(self) -> bool:
        """Several SAEs (hook patterns and/or per-SAE overrides) from one stream; a CLT (one run
        over many hooks) is expanded like a job, its patterns resolved."""
        return bool(self.data.hooks) or bool(self.saes)

    def sae_config(self, d_in: int, d_out: int | None = None) -> SAEConfig:
        """The SAE section completed for a hook of width ``d_in`` (checked against ``sae.d_in``)
        and, for a transcoder, an output hook of width ``d_out``."""
        if self.sae.d_in is not None and self.sae.d_in != d_in:
            raise ValueError(f"sae.d_in is {self.sae.d_in} but {self.data.hook} has width {d_in}")
        update: dict[str, Any] = {
            "d_in": d_in,
            "hook_name": self.data.hook,
            "model_name": self.data.model or "",
        }
        if self.sae.kind != "sae":
            out = self.output_hooks[0]
            if self.sae.d_out is not None and d_out is not None and self.sae.d_out != d_out:
                raise ValueError(f"sae.d_out is {self.sae.d_out} but {out} has width {d_out}")
            update.update({"d_out": d_out, "output_hook_name": out})
        if self.is_clt:
            update.update(
                {
                    "hook_name": hook_template(self.input_hooks),
                    "output_hook_name": hook_template(self.output_hooks),
                    "layers": [hook_layer(h) for h in self.input_hooks],
                }
            )
        return self.sae.model_copy(update=update)

    def with_overrides(self, override: SAEOverride | dict[str, Any], **top: Any) -> RunConfig:
        """This config with one SAE's sae/optim overrides (and top-level ``data``/``log`` field
        updates such as ``data={"hook": h}``) applied and validated."""
        o = override if isinstance(override, SAEOverride) else SAEOverride(**override)
        dump = self.model_dump(exclude={"saes"})
        dump["sae"] = merge_sae(self.sae, o.sae)
        dump["optim"] = {**dump["optim"], **o.optim}
        for section, fields in top.items():
            dump[section] = {**dump[section], **fields} if isinstance(fields, dict) else fields
        return RunConfig(**dump)


def dotted_key_problem(key: str) -> str | None:
    """Why ``key`` (``section.field``, e.g. ``sae.k``) names no run-config field, or None."""
    section, _, field = key.partition(".")
    if not field:
        if key in RunConfig.model_fields:
            return None
        place = flat_key_place(key)
        return flat_key_error(key, place) if place else f"unknown key {key!r}"
    model = SECTIONS.get(section)
    if model is None:
        return f"{key!r}: no section {section!r} (sections: {sorted(SECTIONS)})"
    if field in model.model_fields or (model is SAEConfig and knob_owners(field)):
        return None
    close = difflib.get_close_matches(field, list(model.model_fields), 1)
    return f"unknown key {key!r}" + (f" (did you mean {section}.{close[0]}?)" if close else "")


def apply_changes(cfg: RunConfig, changes: dict[str, Any]) -> RunConfig:
    """``cfg`` with dotted-key changes (``{"sae.k": 16, "optim.lr": 1e-3}``) applied, validated."""
    sae = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("sae.")}
    dump = cfg.model_dump()
    dump["sae"] = merge_sae(cfg.sae, sae)
    for key, value in changes.items():
        if not key.startswith("sae."):
            set_path(dump, key, value)
    return RunConfig(**dump)


def merge_sae(base: SAEConfig, changes: dict[str, Any]) -> dict[str, Any]:
    """``base``'s fields updated by ``changes``; when the variant changes, base's knobs that the new
    variant lacks are dropped (the changes' own keys are still checked)."""
    data = base.model_dump()
    new = changes.get("variant", base.variant)
    if new != base.variant:
        own = set(variant_class(new).Knobs.model_fields)
        data = {k: v for k, v in data.items() if k not in base.knobs or k in own}
    return {**data, **changes}


# ---- keys of the old flat layout -------------------------------------------------------------
SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig,
    "sae": SAEConfig,
    "optim": OptimConfig,
    "log": LogConfig,
    "eval": EvalConfig,
}
_RENAMED = {"eval_tokens": "eval.tokens", "eval_ce_windows": "eval.ce_windows"}


def flat_key_place(key: str) -> str | None:
    """Where a key of the old flat layout lives now (``k`` -> ``sae.k``), or None."""
    if key in _RENAMED:
        return _RENAMED[key]
    for name, model in SECTIONS.items():
        if key in model.model_fields and key not in RunConfig.model_fields:
            return f"{name}.{key}"
    if knob_owners(key):
        return f"sae.{key}"
    return None


def flat_key_error(key: str, place: str, per_sae: bool = False) -> str:
    """The error for ``key`` of the old flat layout, now at ``place`` (``sae.k``): the section it
    belongs in, and how to write it there (``per_sae``: in an entry of ``saes``)."""
    section, field = place.split(".", 1)
    where = f"{key!r} belongs in section {section!r} ({place}): write "
    if per_sae:
        return where + f"{{{section}: {{{field}: ...}}}}"
    return (
        where
        + f"{section}: {{{field}: ...}} in a config file, --set {place}=... on the command line"
    )


def check_keys(data: dict[str, Any], where: str = "config") -> None:
    """Top-level keys must be sections or top-level fields; a flat key names its section."""
    problems = []
    for key in data:
        if key in RunConfig.model_fields:
            continue
        place = flat_key_place(key)
        if place is not None:
            problems.append(flat_key_error(key, place))
        else:
            flat = {f.rsplit(".", 1)[-1]: f for f, _, _ in describe_fields()}
            close = difflib.get_close_matches(key, [*flat, *RunConfig.model_fields], 1)
            hint = f" (did you mean {flat.get(close[0], close[0])!r}?)" if close else ""
            problems.append(f"unknown config keys: {key!r}{hint}")
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems))


# ---- run folders of the old flat layout (RunConfig.from_saved only) ---------------------------
def _nest_old_layout(data: dict[str, Any]) -> dict[str, Any]:
    """A saved config of the old flat layout (``run_config.json`` of runs written before the
    sections existed) in the nested one; a nested config is returned as it is."""
    if not data or any(k in SECTIONS for k in data):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "saes" and value:
            value = [_nest_old_override(o) for o in value]
        place = key if key in RunConfig.model_fields else flat_key_place(key)
        if place is None:
            raise ValueError(f"old config key {key!r} has no place in the nested layout")
        set_path(out, place, value)
    return out


def _nest_old_override(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key == "name" or key in SECTIONS:
            out[key] = value
        else:
            set_path(out, flat_key_place(key) or key, value)
    return out


# ---- reading -----------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``dotted`` = "a.b" (intermediate mappings created)."""
    *parents, leaf = dotted.split(".")
    node = data
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ValueError(f"--set {dotted}: {p!r} is not a section")
        node = child
    node[leaf] = value


def read_config_data(
    path: str | Path | None, overrides: Sequence[str] = (), what: str = "config"
) -> dict[str, Any]:
    """A JSON or YAML file's mapping with ``key=value`` overrides applied (dotted keys set nested
    fields; values parsed as JSON)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{what} file {p} does not exist")
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml  # deferred: only YAML configs need it

            data = yaml.safe_load(text) or {}
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{what} {p} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(
                f"{what} {p} must hold a mapping of keys to values, got {type(data).__name__}"
            )
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        set_path(data, key.strip(), _parse_value(value.strip()))
    return data


def load_run_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Read a JSON or YAML config and apply ``key=value`` overrides, with errors that name the key."""
    data = read_config_data(path, overrides or [])
    where = f"config {path}" if path is not None else "config"
    check_keys(data, where)
    try:
        return RunConfig(**data)
    except ValidationError as e:
        raise ValueError(f"invalid {where}: {e}") from None


# ---- documentation -------------------------------------------------------------------------------
def describe_fields() -> list[tuple[str, str, str]]:
    """(dotted key, default, docstring) for every field of the run config; the variants' own keys
    are listed under ``sae.`` with the variants that have them."""
    rows: list[tuple[str, str, str]] = []
    for name, model in SECTIONS.items():
        for key, f in model.model_fields.items():
            rows.append((f"{name}.{key}", repr(f.default), f.description or ""))
        if model is SAEConfig:
            seen: set[str] = set()
            for v in variant_names():
                for key, f in variant_class(v).Knobs.model_fields.items():
                    if key not in seen:
                        seen.add(key)
                        owners = ", ".join(knob_owners(key))
                        rows.append((f"sae.{key}", repr(f.default), f"[{owners}] {f.description}"))
    for key in ("device", "saes"):
        f = RunConfig.model_fields[key]
        rows.append((key, repr(f.default), f.description or ""))
    return rows
