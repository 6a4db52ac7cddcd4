"""Evaluation of transcoders: how well they predict the MLP outputs, and what the model loses when
they replace its MLPs.

Steps:

1. reconstruction on held-out text (the validation split, every position but each window's BOS):
   per layer the FVU of the MLP output, L0 and the dead fraction (latents that never fired on
   these tokens); for a CLT a layer's prediction sums the latents of every earlier layer;
2. spliced CE and KL with **one** layer's MLP output replaced by its prediction (the other MLPs
   real), per layer, against zero-ablating that MLP;
3. the same with **every** MLP replaced at once, each layer's input taken from the replacement
   forward itself: the replacement model's own loss, with no error terms, reported as its CE, its
   distance from clean (``ce_delta``, ``kl_div``) and the recovered fraction against zero-ablating
   every MLP.

BOS keeps its real activations in every spliced run (as the SAE evaluation does). A dictionary is
a list of per-layer transcoders (:class:`saes.sae.SAE`, kind transcoder / skip_transcoder) or a
:class:`~saes.transcoders.CrossLayerTranscoder`; both go through :class:`Replacement`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from interp.atomic_files import atomic_write_json
from interp.hooks import hook_dim, hook_layer, validate_hook_names
from interp.interventions import Intervention, apply, run_with_interventions, zero_ablate
from interp.models import dtype_name, load_model
from saes.evaluation.evaluate import add_training_throughput, validation_windows
from saes.rundir import RunDir
from saes.training.config import RunConfig
from saes.transcoders.clt import CrossLayerTranscoder
from saes.transcoders.files import load_dictionary

__all__ = [
    "Replacement",
    "evaluate_replacement",
    "evaluate_transcoder_run",
    "evaluate_transcoder_set",
]


class Replacement:
    """Per-layer transcoders or a CLT as one map: the input and output hook of each layer, and each
    layer's prediction from the inputs recorded so far in a forward."""

    def __init__(self, dictionary) -> None:
        if isinstance(dictionary, CrossLayerTranscoder):
            self.clt, self.saes = dictionary, None
            self.input_hooks = dictionary.input_hooks()
            self.output_hooks = dictionary.output_hooks()
        else:
            self.clt, self.saes = None, list(dictionary)
            if not self.saes or any(not s.cfg.is_transcoder for s in self.saes):
                raise ValueError("a replacement needs transcoders (sae.kind transcoder / skip)")
            self.input_hooks = [s.cfg.hook_name for s in self.saes]
            self.output_hooks = [s.cfg.output_hook_name for s in self.saes]
        self.layers = [hook_layer(h) for h in self.input_hooks]

    def __len__(self) -> int:
        return len(self.layers)

    def check_model(self, model) -> None:
        """Every hook exists on the model, with the width the transcoders have (clear errors)."""
        validate_hook_names(model, self.input_hooks + self.output_hooks)
        d_in, d_out = self._widths()
        for i in range(len(self)):
            for hook, want in ((self.input_hooks[i], d_in[i]), (self.output_hooks[i], d_out[i])):
                got = hook_dim(model, hook)
                if got != want:
                    raise ValueError(
                        f"the transcoder of layer {self.layers[i]} has width {want} at {hook}, "
                        f"but the model's {hook} has width {got}: these transcoders were "
                        "trained on another model"
                    )

    def _widths(self) -> tuple[list[int], list[int]]:
        if self.clt is not None:
            n = len(self)
            return [self.clt.cfg.d_in] * n, [self.clt.cfg.width_out] * n
        return [s.cfg.d_in for s in self.saes], [s.cfg.width_out for s in self.saes]

    def codes(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Dense codes [N, F] of layer index i from its raw input rows [N, d_in]."""
        if self.clt is not None:
            return self.clt.encode_layer(x, i)
        return self.saes[i].encode(x)

    def predict(self, i: int, inputs: dict[int, torch.Tensor], codes: dict[int, torch.Tensor]):
        """Layer index i's output rows from the recorded raw inputs (and codes) of layers <= i."""
        if self.clt is None:
            return self.saes[i].output_of(codes[i], inputs[i])
        clt = self.clt
        out = clt.b_dec[i] / clt.output_scales[i]
        for j in range(i + 1):
            out = out + clt.decode_layer(codes[j], j, i)
        return out


class _FVU:
    """Streaming sums for one layer's FVU over chosen rows (float64)."""

    def __init__(self) -> None:
        self.err, self.sum_y, self.sum_y2, self.rows = 0.0, 0.0, 0.0, 0

    def add(self, y: torch.Tensor, y_hat: torch.Tensor) -> None:
        self.err += float((y - y_hat).double().pow(2).sum())
        self.sum_y = self.sum_y + y.double().sum(0)
        self.sum_y2 += float(y.double().pow(2).sum())
        self.rows += y.shape[0]

    def value(self) -> float:
        var = self.sum_y2 - float((self.sum_y * self.sum_y).sum()) / max(1, self.rows)
        return self.err / max(var, 1e-12)


@torch.no_grad()
def reconstruction(rep: Replacement, model, windows: torch.Tensor, batch_windows: int = 8):
    """Per-layer FVU, L0 and dead fraction of the predictions on the windows: every position but
    each window's BOS (``fvu``), and also without the first position after it (``fvu_no_sink``:
    SmolLM2's attention sink, whose activations are 10-100x the median's, left out of training)."""
    n = len(rep)
    every, no_sink = [_FVU() for _ in range(n)], [_FVU() for _ in range(n)]
    l0 = torch.zeros(n, dtype=torch.float64)
    fired: list[torch.Tensor | None] = [None] * n
    rows = 0
    hooks = rep.input_hooks + rep.output_hooks
    for tokens in windows.split(batch_windows):
        _, cache = model.run_with_cache(tokens, names_filter=lambda h: h in hooks)
        inputs, codes = {}, {}
        for i in range(n):
            x = cache[rep.input_hooks[i]][:, 1:]
            y = cache[rep.output_hooks[i]][:, 1:].float()
            inputs[i] = x.reshape(-1, x.shape[-1]).float()
            codes[i] = rep.codes(i, inputs[i])
            y_hat = rep.predict(i, inputs, codes).float().reshape(y.shape)
            every[i].add(y.reshape(-1, y.shape[-1]), y_hat.reshape(-1, y.shape[-1]))
            no_sink[i].add(y[:, 1:].reshape(-1, y.shape[-1]), y_hat[:, 1:].reshape(-1, y.shape[-1]))
            active = codes[i] != 0
            l0[i] += active.sum().double()
            f = active.any(0)
            fired[i] = f if fired[i] is None else fired[i] | f
        rows += inputs[0].shape[0]
    return {
        "layers": rep.layers,
        "fvu": [f.value() for f in every],
        "fvu_no_sink": [f.value() for f in no_sink],
        "l0": (l0 / rows).tolist(),
        "dead_fraction": [1.0 - float(f.float().mean()) for f in fired],  # type: ignore[union-attr]
        "n_tokens": rows,
        "positions": "fvu, l0, dead_fraction: every position but each window's BOS; fvu_no_sink: "
        "also without the first position after BOS (the attention sink)",
    }


def _ce_sum(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    lp = logits.float().log_softmax(-1)[:, :-1]
    return -lp.gather(-1, tokens[:, 1:, None]).sum()


def _splice(rep: Replacement, replaced: Sequence[int]) -> list[Intervention]:
    """Interventions that record each layer's input and replace the chosen layers' outputs."""
    inputs: dict[int, torch.Tensor] = {}
    codes: dict[int, torch.Tensor] = {}
    shapes: dict[int, torch.Size] = {}
    need = max(replaced) + 1

    def record(i: int):
        def fn(act: torch.Tensor) -> torch.Tensor:
            x = act.reshape(-1, act.shape[-1]).float()
            inputs[i], codes[i], shapes[i] = x, rep.codes(i, x), act.shape
            return act

        return fn

    def replace(i: int):
        def fn(act: torch.Tensor) -> torch.Tensor:
            return rep.predict(i, inputs, codes).reshape(act.shape).to(act.dtype)

        return fn

    ivs = [Intervention(rep.input_hooks[i], apply(record(i))) for i in range(need)]
    ivs += [Intervention(rep.output_hooks[i], apply(replace(i)), keep_bos=True) for i in replaced]
    return ivs


@torch.no_grad()
def spliced(
    rep: Replacement, model, windows: torch.Tensor, replaced_sets: Sequence[Sequence[int]], batch=8
) -> list[dict[str, Any]]:
    """For each set of layers: CE clean / spliced / zero-ablated, recovered fraction and KL with
    those layers' MLP outputs replaced (BOS kept). The clean forward of each batch of windows is
    run once and shared by every set."""
    tots = [{"clean": 0.0, "spliced": 0.0, "zero": 0.0, "kl": 0.0} for _ in replaced_sets]
    zeros = [
        [Intervention(rep.output_hooks[i], zero_ablate(), keep_bos=True) for i in replaced]
        for replaced in replaced_sets
    ]
    n_pred = 0
    for tokens in windows.split(batch):
        clean = model(tokens)
        lp_clean = clean.float().log_softmax(-1)[:, :-1]
        ce_clean = _ce_sum(clean, tokens).item()
        for tot, replaced, zero in zip(tots, replaced_sets, zeros):
            out = run_with_interventions(model, tokens, _splice(rep, replaced))
            lp = out.float().log_softmax(-1)[:, :-1]
            tot["clean"] += ce_clean
            tot["spliced"] += _ce_sum(out, tokens).item()
            tot["zero"] += _ce_sum(run_with_interventions(model, tokens, zero), tokens).item()
            tot["kl"] += (lp_clean.exp() * (lp_clean - lp)).sum().item()
        n_pred += tokens[:, 1:].numel()
    return [_ce_report({k: v / n_pred for k, v in tot.items()}, n_pred) for tot in tots]


def _ce_report(ce: dict[str, float], n_pred: int) -> dict[str, Any]:
    denom = ce["zero"] - ce["clean"]
    return {
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_zero_ablated": ce["zero"],
        "ce_delta": ce["spliced"] - ce["clean"],
        "ce_loss_recovered": (ce["zero"] - ce["spliced"]) / denom if abs(denom) > 1e-12 else None,
        "kl_div": ce["kl"],
        "n_predicted_tokens": n_pred,
    }


def evaluate_replacement(
    dictionary,
    model,
    source: str = "stdlib",
    context_size: int = 128,
    eval_tokens: int = 8192,
    ce_windows: int = 16,
    seed: int = 0,
    per_layer_ce: bool = True,
) -> dict[str, Any]:
    """Reconstruction per layer, spliced CE/KL per layer (``per_layer_ce``) and with every layer
    replaced, on the validation split of ``source`` (see the module docstring)."""
    rep = dictionary if isinstance(dictionary, Replacement) else Replacement(dictionary)
    rep.check_model(model)
    n = max(ce_windows, -(-eval_tokens // (context_size - 1)))
    device = next(model.parameters()).device
    windows = validation_windows(model, source, context_size, seed, n).to(device)
    out: dict[str, Any] = {"reconstruction": reconstruction(rep, model, windows)}
    if ce_windows > 0:
        ce_win = windows[:ce_windows]
        sets = [[i] for i in range(len(rep))] if per_layer_ce else []
        *one, every = spliced(rep, model, ce_win, [*sets, list(range(len(rep)))])
        if per_layer_ce:
            out["one_layer_replaced"] = one
        out["all_layers_replaced"] = every
        out["all_layers_replaced"]["error_terms"] = "none (the replacement model's own loss)"
    out.update(
        {
            "eval_source": f"{source} (validation split)",
            "context_size": context_size,
            "ce_windows": ce_windows,
            "model_dtype": dtype_name(next(model.parameters()).dtype),
            "bos": "kept at its real activations in spliced runs; left out of reconstruction",
        }
    )
    return out


def _evaluate_for_run(dictionary, cfg: RunConfig, model, per_layer_ce: bool) -> dict[str, Any]:
    """:func:`evaluate_replacement` with a run config's text, windows and model (loaded when
    ``model`` is None)."""
    if cfg.data.model is None:
        raise ValueError(
            f"{cfg.log.out_dir}: transcoders are evaluated through their model (CE with MLPs "
            "replaced); this run has data.model null"
        )
    if model is None:
        model = load_model(cfg.data.model, device=cfg.device, dtype=cfg.data.model_dtype)
    return evaluate_replacement(
        dictionary,
        model,
        source=cfg.data.source,
        context_size=cfg.data.context_size,
        eval_tokens=cfg.eval.tokens,
        ce_windows=cfg.eval.ce_windows,
        seed=cfg.data.seed,
        per_layer_ce=per_layer_ce,
    )


def evaluate_transcoder_run(run_dir: str | Path, cfg=None, model=None) -> dict[str, Any]:
    """A transcoder or CLT run's ``metrics.json``: its layer's (a CLT: every layer's) metrics,
    and the CE/KL with its MLP (a CLT: every MLP) replaced."""
    run_dir = Path(run_dir)
    folder = RunDir(run_dir)
    if cfg is None:
        cfg = RunConfig.from_saved(folder.config(required=True))
    module = load_dictionary(run_dir, device=cfg.device)
    dictionary = module if isinstance(module, CrossLayerTranscoder) else [module]
    metrics = _evaluate_for_run(dictionary, cfg, model, per_layer_ce=True)
    rec = metrics["reconstruction"]
    metrics.update(
        {
            "kind": cfg.sae.kind,
            "model": cfg.data.model,
            "input_hooks": cfg.input_hooks,
            "output_hooks": cfg.output_hooks,
            # the headline keys the runs table reads (a CLT: means over layers, L0 summed)
            "fvu": sum(rec["fvu"]) / len(rec["fvu"]),
            "fvu_no_sink": sum(rec["fvu_no_sink"]) / len(rec["fvu_no_sink"]),
            "l0": sum(rec["l0"]),
            "dead_fraction": sum(rec["dead_fraction"]) / len(rec["dead_fraction"]),
        }
    )
    if "one_layer_replaced" in metrics and len(rec["fvu"]) == 1:
        metrics["ce_loss_recovered"] = metrics["one_layer_replaced"][0]["ce_loss_recovered"]
        metrics["kl_div"] = metrics["one_layer_replaced"][0]["kl_div"]
    add_training_throughput(metrics, folder)
    atomic_write_json(folder.metrics_path, metrics)
    return metrics


REPLACEMENT_FILE = "replacement_metrics.json"


def evaluate_transcoder_set(
    run_dirs: Sequence[str | Path], out: str | Path, cfg=None, model=None
) -> dict[str, Any]:
    """The all-layers-replaced metrics of per-layer transcoder runs (one per layer), written to
    ``out`` (``replacement_metrics.json`` in the job folder)."""
    run_dirs = [Path(d) for d in run_dirs]
    if cfg is None:
        cfg = RunConfig.from_saved(RunDir(run_dirs[0]).config(required=True))
    saes = sorted(
        (load_dictionary(d, device=cfg.device) for d in run_dirs),
        key=lambda s: hook_layer(s.cfg.hook_name),
    )
    metrics = _evaluate_for_run(saes, cfg, model, per_layer_ce=False)
    metrics["runs"] = [str(d) for d in run_dirs]
    atomic_write_json(Path(out), metrics)
    return metrics
