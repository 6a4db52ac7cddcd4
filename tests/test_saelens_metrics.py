"""SAELens's evaluation convention, computed by our code (saes.evaluation.metrics.saelens_metrics, the
"saelens" block of metrics.json), against SAELens's own evaluator
(``sae_lens.evals.get_downstream_reconstruction_metrics`` and ``get_sparsity_and_variance_metrics``)
on the same windows of the tiny model, with our save_sae folder opened by ``SAE.load_from_disk``."""

from __future__ import annotations

import json

import pytest
import torch
from _runs import tiny_config
from sae_lens import SAE as LensSAE
from sae_lens.evals import get_downstream_reconstruction_metrics, get_sparsity_and_variance_metrics
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.util import get_special_token_ids

from saes.artifacts import save_sae
from saes.config import SAEConfig
from saes.evaluation.evaluate import validation_windows
from saes.evaluation.metrics import saelens_metrics, special_token_ids, spliced_metrics
from saes.sae import SAE
from saes.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread_module")

HOOK = "blocks.1.hook_resid_post"
WINDOWS = 6
BATCH = 2  # windows per SAELens batch (3 batches: averaging across batches is exercised)
# every metric the "saelens" block reports, under SAELens's key names
SAELENS_KEYS = (
    "ce_loss_score",
    "ce_loss_with_ablation",
    "ce_loss_with_sae",
    "ce_loss_without_sae",
    "kl_div_score",
    "kl_div_with_ablation",
    "kl_div_with_sae",
    "l0",
    "l1",
    "l2_norm_in",
    "l2_norm_out",
    "l2_ratio",
    "mse",
    "cossim",
    "explained_variance",
)


class _Store:
    """What SAELens's evaluator reads from an ActivationsStore: ``get_batch_tokens(n)``, here the
    next ``n`` of our windows."""

    def __init__(self, windows: torch.Tensor) -> None:
        self.windows, self.i = windows, 0

    def get_batch_tokens(self, n: int) -> torch.Tensor:
        out = self.windows[self.i : self.i + n]
        self.i += n
        return out


def _saelens(folder, model, windows, ignore_tokens) -> dict[str, float]:
    """SAELens's own numbers for the artifact in ``folder`` on ``windows``."""
    sae = LensSAE.load_from_disk(str(folder))
    if sae.cfg.metadata.hook_name is None:  # older artifacts: name the hook explicitly
        sae.cfg.metadata.hook_name = HOOK
    n_batches = -(-windows.shape[0] // BATCH)
    out = get_downstream_reconstruction_metrics(
        sae,
        model,
        _Store(windows),
        ActivationScaler(),
        compute_kl=True,
        compute_ce_loss=True,
        n_batches=n_batches,
        eval_batch_size_prompts=BATCH,
        ignore_tokens=ignore_tokens,
    )
    sparsity, _ = get_sparsity_and_variance_metrics(
        sae,
        model,
        _Store(windows),
        ActivationScaler(),
        n_batches=n_batches,
        compute_l2_norms=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
        compute_featurewise_density_statistics=False,
        eval_batch_size_prompts=BATCH,
        model_kwargs={},
        ignore_tokens=ignore_tokens,
    )
    return {**out, **sparsity}


def _assert_agree(ours: dict, theirs: dict) -> None:
    for key in SAELENS_KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-3), (key, ours[key], theirs[key])


@pytest.fixture(scope="module")
def trained_run(tiny, tmp_path_factory):
    """A TopK SAE trained by our trainer on the tiny model, evaluated at the end (metrics.json)."""
    cfg = tiny_config(
        tmp_path_factory.mktemp("saelens"),
        data={"hook": HOOK, "train_tokens": 256 * 12},
        eval={"ce_windows": WINDOWS},
    )
    run = train(cfg, progress=False, model=tiny)
    return run, cfg


def test_metrics_json_saelens_block_agrees_with_saelens_on_the_same_windows(trained_run, tiny):
    run, cfg = trained_run
    m = json.loads((run / "metrics.json").read_text())
    ours = m["saelens"]
    windows = validation_windows(
        tiny, cfg.data.source, cfg.data.context_size, cfg.data.seed, WINDOWS
    )
    ignore = get_special_token_ids(tiny.tokenizer)
    assert ours["ignore_tokens"] == sorted(ignore) == special_token_ids(tiny.tokenizer)
    theirs = _saelens(run, tiny, windows, ignore)
    _assert_agree(ours, theirs)
    assert ours["n_windows"] == WINDOWS
    assert ours["n_tokens"] == int((~torch.isin(windows, torch.tensor(ignore))).sum())
    # the two conventions differ where the README says: the zero ablation (BOS zeroed too in
    # SAELens's) and the clean CE (ours also counts the prediction made at BOS)
    assert m["ce_zero_ablated"] != pytest.approx(ours["ce_loss_with_ablation"], abs=1e-3)
    assert m["n_predicted_tokens"] == WINDOWS * 32 and ours["n_predicted_tokens"] == WINDOWS * 31
    with torch.no_grad():
        lp = tiny(windows).log_softmax(-1)
    ce_at_bos = -lp[:, 0].gather(-1, windows[:, 1:2]).sum().item()
    assert m["ce_clean"] * WINDOWS * 32 == pytest.approx(
        ours["ce_loss_without_sae"] * WINDOWS * 31 + ce_at_bos, rel=1e-5
    )


@pytest.mark.parametrize("variant", ["topk", "relu_l1"])
def test_saelens_metrics_agree_with_special_tokens_mid_window_and_none_ignored(
    variant, tiny, tmp_path
):
    """A random SAE of each SAELens architecture we write (topk, standard); windows with special
    tokens inside (a PAD, an EOS = BOS), so positions are kept by token id, not by index; and with no
    ignored token, where every position is spliced and counted."""
    d_in = tiny.cfg.d_model
    knobs = {"k": 8} if variant == "topk" else {}
    sae = SAE(
        SAEConfig(variant=variant, d_in=d_in, d_sae=96, hook_name=HOOK, model_name="tiny", **knobs),
        seed=5,
    )
    with torch.no_grad():
        sae.b_dec.normal_(0, 0.1)
    save_sae(sae, tmp_path / "sae")
    windows = validation_windows(tiny, "stdlib", 33, 0, WINDOWS)
    windows[1, 10] = tiny.tokenizer.pad_token_id
    windows[2, 20] = tiny.tokenizer.eos_token_id
    ignore = get_special_token_ids(tiny.tokenizer)
    ours = saelens_metrics(sae, tiny, HOOK, windows, batch_size=4)  # our batches differ from theirs
    _assert_agree(ours, _saelens(tmp_path / "sae", tiny, windows, ignore))
    assert ours["n_tokens"] == WINDOWS * 33 - WINDOWS - 2
    everything = saelens_metrics(sae, tiny, HOOK, windows, batch_size=4, ignore_tokens=[])
    _assert_agree(everything, _saelens(tmp_path / "sae", tiny, windows, None))
    assert everything["n_tokens"] == WINDOWS * 33
    # ours (BOS kept in both runs) is another number on the same windows
    own = spliced_metrics(sae, tiny, HOOK, windows)
    assert own["ce_zero_ablated"] != pytest.approx(ours["ce_loss_with_ablation"], abs=1e-3)
