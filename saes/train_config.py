"""The run configuration of a training job: one flat, validated model (``--set key=value`` friendly)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from saes.config import SAEConfig, Variant


class RunConfig(BaseModel):
    """Everything a training run needs. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    # where activations come from
    model: str = "smollm2-135m"
    hook: str = "blocks.15.hook_resid_post"
    # many SAEs per forward pass (saes.multi): hook names or glob patterns ("blocks.*.hook_resid_post"),
    # and per-SAE overrides ({"k": 16}, {"d_sae": 8192, "lr": 1e-3}, ...) trained on every hook;
    # each SAE gets its own run folder under out_dir. shard_hooks: under torchrun, each rank owns some SAEs.
    hooks: list[str] | None = None
    saes: list[dict[str, Any]] | None = None
    shard_hooks: bool = False
    source: str = "stdlib"
    cache: str | None = None  # an activation-cache folder; when set, no model forward in training
    context_size: int = 128
    batch_windows: int = 16  # windows per model forward
    buffer_tokens: int = 2**16  # shuffling-buffer block size (rows)
    activation_dtype: str = "float32"
    d_in: int | None = None  # optional check: the hook's (or cache's) width must equal this
    # the SAE
    variant: Variant = "topk"
    d_sae: int = 4608
    k: int = 32
    aux_k: int | None = None
    aux_k_coef: float = 1 / 32
    l1_coefficient: float = 5.0
    beta: float = 1.0  # g-SAE gradient weight
    # mutual / feature choice: capacities ("uniform" / "zipf"), Zipf exponent, threshold EMA decay, aux_zipf weight
    allocation: Literal["uniform", "zipf"] = "zipf"
    zipf_exponent: float = 1.0
    threshold_decay: float = 0.99
    aux_zipf_coef: float = 1 / 32
    encoder_dtype: str | None = (
        None  # "bfloat16": bf16 encoder GEMM + selection (fast on AMX/AVX512-BF16)
    )
    normalize_input: bool = True
    # optimisation
    train_tokens: int = 2_000_000
    batch_tokens: int = 4096
    lr: float | None = None  # None: 2e-4 / sqrt(d_sae / 2^14)
    warmup_steps: int = 50
    decay_fraction: float = 0.2
    dead_tokens: int | None = None  # None: min(10M, train_tokens / 10)
    seed: int = 0
    init_sample_tokens: int = 4096
    device: str = "cpu"
    # bookkeeping
    out_dir: str = "runs/topk"
    checkpoint_every_tokens: int = 500_000
    keep_checkpoints: int = 2
    log_every: int = 10
    wandb: bool = False
    wandb_project: str = "interp"
    wandb_online: bool = False
    # evaluation (held-out validation split)
    eval_tokens: int = 32_768
    eval_ce_windows: int = 32

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.batch_tokens < 1 or self.train_tokens < self.batch_tokens:
            raise ValueError(
                f"train_tokens ({self.train_tokens}) must be at least one batch ({self.batch_tokens})"
            )
        if self.buffer_tokens < self.batch_tokens:
            raise ValueError(
                f"buffer_tokens ({self.buffer_tokens}) must be >= batch_tokens ({self.batch_tokens})"
            )
        if self.context_size < 2:
            raise ValueError(f"context_size must be >= 2, got {self.context_size}")
        if self.variant != "relu_l1" and not 0 < self.k < self.d_sae:
            raise ValueError(f"k must satisfy 0 < k < d_sae; got k={self.k}, d_sae={self.d_sae}")
        return self

    @property
    def resolved_dead_tokens(self) -> int:
        if self.dead_tokens is not None:
            return self.dead_tokens
        return max(self.batch_tokens, min(10_000_000, self.train_tokens // 10))

    @property
    def windows_per_block(self) -> int:
        rows = self.context_size - 1
        return max(self.batch_windows, -(-self.buffer_tokens // rows))

    def sae_config(self, d_in: int) -> SAEConfig:
        return SAEConfig(
            d_in=d_in,
            d_sae=self.d_sae,
            variant=self.variant,
            k=self.k,
            aux_k=self.aux_k,
            aux_k_coef=self.aux_k_coef,
            l1_coefficient=self.l1_coefficient,
            beta=self.beta,
            allocation=self.allocation,
            zipf_exponent=self.zipf_exponent,
            threshold_decay=self.threshold_decay,
            aux_zipf_coef=self.aux_zipf_coef,
            encoder_dtype=self.encoder_dtype,
            hook_name=self.hook,
            model_name=self.model,
        )


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def read_config_data(
    path: str | Path | None, overrides: Sequence[str] = (), what: str = "config"
) -> dict[str, Any]:
    """A JSON or YAML file's top-level mapping with ``key=value`` overrides applied (values parsed as JSON)."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"{what} file {p} does not exist")
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml

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
        data[key.strip()] = _parse_value(value.strip())
    return data


def load_run_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Read a JSON or YAML config and apply ``key=value`` overrides, with errors that name the key."""
    data = read_config_data(path, overrides or [])
    unknown = sorted(set(data) - set(RunConfig.model_fields))
    if unknown:
        import difflib

        hints = [
            f"{u!r} (did you mean {difflib.get_close_matches(u, RunConfig.model_fields, 1)})"
            for u in unknown
        ]
        raise ValueError(f"unknown config keys: {', '.join(hints)}")
    try:
        return RunConfig(**data)
    except ValidationError as e:
        raise ValueError(f"invalid config: {e}") from None
