"""Every common SAE artifact opens through ``load_sae`` into our SAE, with the library's own encode
and decode (SAELens jumprelu / gated / BatchTopK / Matryoshka / hook_z / rescaled topk; sparsify;
dictionary_learning, written by hand); our cfg.json keeps its hook and model names in SAELens 6."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from saes.analysis.attention_heads import encode_z, reconstruct_z
from saes.artifacts import load_sae, save_sae
from saes.config import SAEConfig
from saes.sae import SAE
from saes.training.step import TrainStep
from saes.variants import variant_class

D_IN, D_SAE = 16, 48
TOL = dict(rtol=1e-5, atol=1e-5)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _x(n=40, d=D_IN, seed=1):
    return torch.randn(n, d, generator=_gen(seed))


def _randomize(lens, seed=0):
    """Random non-trivial weights on a SAELens SAE (every parameter, biases included)."""
    g = _gen(seed)
    with torch.no_grad():
        for name, p in lens.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.4 if name.startswith("W") else 0.2))
    return lens


def _some_on_some_off(z):
    frac = float((z != 0).float().mean())
    assert 0.05 < frac < 0.95, frac


def _same(ours, lens_encode, lens_decode, x):
    z = ours.encode(x)
    z_ref = lens_encode(x)
    _some_on_some_off(z_ref)
    torch.testing.assert_close(z, z_ref, **TOL)
    torch.testing.assert_close(ours.decode(z), lens_decode(z_ref), **TOL)


# ---- SAELens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_jumprelu_opens_and_round_trips(tmp_path, apply_b_dec):
    from sae_lens import SAE as LensSAE
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    lens = JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec))
    _randomize(lens)
    with torch.no_grad():  # thresholds around the pre-activations' scale: some latents on
        lens.threshold.copy_(torch.rand(D_SAE, generator=_gen(3)) * 0.8 - 0.1)
    lens.save_model(tmp_path / "lens")
    ours = load_sae(tmp_path / "lens")
    assert ours.cfg.variant == "jumprelu" and ours.threshold.shape == (D_SAE,)
    x = _x()
    _same(ours, lens.encode, lens.decode, x)
    # and back: our export opens in SAELens as a JumpReLU SAE with the same function
    save_sae(ours, tmp_path / "ours")
    again = LensSAE.load_from_disk(tmp_path / "ours")
    assert type(again).__name__ == "JumpReLUSAE"
    torch.testing.assert_close(again.encode(x), lens.encode(x), **TOL)


def test_saelens_batchtopk_and_matryoshka_open_as_jumprelu(tmp_path):
    from sae_lens import SAE as LensSAE
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )

    trainers = [
        BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=6)),
        MatryoshkaBatchTopKTrainingSAE(
            MatryoshkaBatchTopKTrainingSAEConfig(
                d_in=D_IN, d_sae=D_SAE, k=6, matryoshka_widths=[12, 24, D_SAE]
            )
        ),
    ]
    for i, tr in enumerate(trainers):
        _randomize(tr, seed=i)
        tr.topk_threshold = torch.tensor(0.35, dtype=torch.double)
        tr.save_inference_model(tmp_path / f"s{i}")
        raw = json.loads((tmp_path / f"s{i}" / "cfg.json").read_text())
        assert raw["architecture"] == "jumprelu"
        lens = LensSAE.load_from_disk(tmp_path / f"s{i}")
        ours = load_sae(tmp_path / f"s{i}")
        assert ours.cfg.variant == "jumprelu"
        _same(ours, lens.encode, lens.decode, _x(seed=i))


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_gated_opens_and_round_trips(tmp_path, apply_b_dec):
    from sae_lens import SAE as LensSAE
    from sae_lens import GatedSAE, GatedSAEConfig

    lens = _randomize(
        GatedSAE(GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=apply_b_dec))
    )
    lens.save_model(tmp_path / "lens")
    ours = load_sae(tmp_path / "lens")
    assert ours.cfg.variant == "gated"
    x = _x()
    _same(ours, lens.encode, lens.decode, x)
    # the gate: a latent is on only where the gate pre-activation (our pre_acts) is positive
    assert bool(((ours.encode(x) != 0) <= (ours.pre_acts(x) > 0)).all())
    save_sae(ours, tmp_path / "ours")
    again = LensSAE.load_from_disk(tmp_path / "ours")
    assert type(again).__name__ == "GatedSAE"
    torch.testing.assert_close(again.encode(x), lens.encode(x), **TOL)


def test_saelens_topk_rescaled_by_decoder_norm(tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig

    lens = _randomize(
        TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5, rescale_acts_by_decoder_norm=True))
    )
    with torch.no_grad():  # decoder rows far from unit norm, so the rescaling matters
        lens.W_dec.mul_(torch.rand(D_SAE, 1, generator=_gen(4)) * 3 + 0.2)
    lens.save_model(tmp_path / "lens")
    ours = load_sae(tmp_path / "lens")
    x = _x()
    torch.testing.assert_close(ours.encode(x), lens.encode(x), **TOL)
    torch.testing.assert_close(ours(x)[0], lens(x), **TOL)


def test_saelens_hook_z_sae_with_reshape(tmp_path):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    n_heads, d_head = 4, 8
    lens = JumpReLUSAE(
        JumpReLUSAEConfig(
            d_in=n_heads * d_head,
            d_sae=D_SAE,
            reshape_activations="hook_z",
            metadata=SAEMetadata(hook_name="blocks.1.attn.hook_z", model_name="tiny"),
        )
    )
    _randomize(lens)
    with torch.no_grad():
        lens.threshold.copy_(torch.rand(D_SAE, generator=_gen(5)) * 0.8)
    lens.save_model(tmp_path / "lens")
    raw = json.loads((tmp_path / "lens" / "cfg.json").read_text())
    assert raw["reshape_activations"] == "hook_z"
    ours = load_sae(tmp_path / "lens")
    assert ours.cfg.d_in == n_heads * d_head and ours.cfg.hook_name == "blocks.1.attn.hook_z"
    z = torch.randn(2, 5, n_heads, d_head, generator=_gen(6))
    codes = lens.encode(z)
    _some_on_some_off(codes)
    torch.testing.assert_close(encode_z(ours, z), codes, **TOL)
    torch.testing.assert_close(reconstruct_z(ours, z), lens(z), **TOL)
    # a hook_z reshape on a hook that is no hook_z is refused, naming both
    raw["metadata"]["hook_name"] = "blocks.1.hook_resid_post"
    (tmp_path / "lens" / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"cfg.json: reshape_activations='hook_z'.*resid_post"):
        load_sae(tmp_path / "lens")


def test_saelens_threshold_shape_error_names_file_key_and_shapes(tmp_path):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
    from safetensors.torch import load_file, save_file

    JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE)).save_model(tmp_path)
    w = tmp_path / "sae_weights.safetensors"
    state = load_file(str(w))
    state["threshold"] = torch.zeros(D_SAE - 1)
    save_file(state, str(w))
    with pytest.raises(
        ValueError,
        match=rf"sae_weights.safetensors: threshold has shape "
        rf"\({D_SAE - 1},\), expected \({D_SAE},\)",
    ):
        load_sae(tmp_path)


def test_saelens_unsupported_input_normalization_is_refused(tmp_path):
    from sae_lens import StandardSAE, StandardSAEConfig

    cfg = StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, normalize_activations="layer_norm")
    StandardSAE(cfg).save_model(tmp_path)
    with pytest.raises(ValueError, match=r"cfg.json: normalize_activations='layer_norm' is not"):
        load_sae(tmp_path)


# ---- our metadata, read by SAELens 6 ------------------------------------------------------------


def test_our_cfg_keeps_hook_and_model_names_in_saelens(tmp_path):
    from sae_lens import SAE as LensSAE

    cfg = SAEConfig(
        d_in=D_IN, d_sae=D_SAE, k=4, hook_name="blocks.2.hook_resid_post", model_name="tiny"
    )
    sae = SAE(cfg, seed=0)
    folder = save_sae(sae, tmp_path / "ours")
    raw = json.loads((folder / "cfg.json").read_text())
    assert raw["metadata"]["sae_lens_version"].startswith("6.")
    lens = LensSAE.load_from_disk(folder)
    assert lens.cfg.metadata.hook_name == "blocks.2.hook_resid_post"
    assert lens.cfg.metadata.model_name == "tiny"
    x = _x()
    torch.testing.assert_close(lens.encode(x), sae.encode(x), **TOL)
    # a folder written before the version was recorded still opens with its names
    for key in ("sae_lens_version", "sae_lens_training_version"):
        raw["metadata"].pop(key)
    (folder / "cfg.json").write_text(json.dumps(raw))
    old = load_sae(folder)
    assert (old.cfg.hook_name, old.cfg.model_name) == ("blocks.2.hook_resid_post", "tiny")
    torch.testing.assert_close(old.encode(x), sae.encode(x), **TOL)
    # and a SAELens-only (no "interp") legacy file with its names at the top level
    legacy = {k: v for k, v in raw.items() if k not in ("interp", "metadata")}
    legacy.update(hook_point="blocks.2.hook_resid_post", model_name="tiny")
    (folder / "cfg.json").write_text(json.dumps(legacy))
    assert load_sae(folder).cfg.hook_name == "blocks.2.hook_resid_post"


# ---- inference-only variants refuse training ----------------------------------------------------


@pytest.mark.parametrize("name", ["jumprelu", "gated"])
def test_inference_only_variants_refuse_training(name):
    assert variant_class(name).trainable is False
    assert getattr(variant_class("topk"), "trainable", True) is True
    sae = SAE(SAEConfig(d_in=D_IN, d_sae=D_SAE, variant=name), seed=0)
    with pytest.raises(ValueError, match=rf"variant '{name}' is inference-only"):
        TrainStep(sae, lr=1e-3)(_x())


# ---- sparsify -----------------------------------------------------------------------------------


def test_sparsify_hook_folder_opens(tmp_path):
    from sparsify import SparseCoder, SparseCoderConfig

    coder = SparseCoder(D_IN, SparseCoderConfig(k=6, num_latents=D_SAE))
    g = _gen(7)
    with torch.no_grad():
        for p in coder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    run = tmp_path / "run"
    coder.save_to_disk(run / "layers.3")
    coder.save_to_disk(run / "layers.5.mlp")
    (run / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m"}))

    ours = load_sae(run, hook="layers.3")
    assert ours.cfg.variant == "topk" and ours.cfg.k == 6
    assert ours.cfg.hook_name == "blocks.3.hook_resid_post"
    assert ours.cfg.model_name == "EleutherAI/pythia-70m"
    assert load_sae(run / "layers.5.mlp").cfg.hook_name == "blocks.5.hook_mlp_out"
    x = _x()
    with torch.no_grad():
        out = coder.encode(x)
        dense = torch.zeros(x.shape[0], D_SAE).scatter_(-1, out.top_indices, out.top_acts)
        recon = coder.decode(out.top_acts, out.top_indices)
    torch.testing.assert_close(ours.encode(x), dense, **TOL)
    torch.testing.assert_close(ours.decode(ours.encode(x)), recon, **TOL)
    with pytest.raises(
        FileNotFoundError, match=r"pass hook= one of \['layers.3', 'layers.5.mlp'\]"
    ):
        load_sae(run)
    # sparsify's transcoders open as ours (tests/test_transcoders.py compares their outputs)


# ---- dictionary_learning (written by hand: the library is not installed) ------------------------


def _dl_folder(folder, dict_class, state, **trainer):
    folder.mkdir(parents=True)
    torch.save(state, folder / "ae.pt")
    cfg = {
        "trainer": {
            "dict_class": dict_class,
            "activation_dim": D_IN,
            "dict_size": D_SAE,
            "lm_name": "EleutherAI/pythia-70m-deduped",
            "layer": 3,
            "submodule_name": "resid_post_layer_3",
            **trainer,
        }
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def _linear(g, out_f, in_f):
    return torch.randn(out_f, in_f, generator=g) * 0.4


def _dl_cases():
    """(dict_class, state dict, reference encode(x), reference decode(f), trainer keys) per the
    documented forward of each dictionary_learning class."""
    g = _gen(11)
    enc_w, enc_b = _linear(g, D_SAE, D_IN), torch.randn(D_SAE, generator=g) * 0.2
    dec_w, b_dec = _linear(g, D_IN, D_SAE), torch.randn(D_IN, generator=g) * 0.2
    W_enc, W_dec = enc_w.t().contiguous(), dec_w.t().contiguous()
    thr = torch.rand(D_SAE, generator=g) * 0.6
    k = 5

    def linear_dec(f):
        return f @ dec_w.t() + b_dec

    def topk_enc(x):
        post = torch.relu((x - b_dec) @ enc_w.t() + enc_b)
        top = post.topk(k, dim=-1)
        return torch.zeros_like(post).scatter_(-1, top.indices, top.values)

    def batch_enc(x):  # inference: the learned threshold (use_threshold=True)
        post = torch.relu((x - b_dec) @ enc_w.t() + enc_b)
        return post * (post > 0.3)

    def matry_enc(x):
        post = torch.relu((x - b_dec) @ W_enc + enc_b)
        return post * (post > 0.3)

    def jump_enc(x):  # apply_b_dec_to_input = False
        pre = x @ W_enc + enc_b
        return torch.relu(pre * (pre > thr))

    r_mag, gate_b, mag_b = (torch.randn(D_SAE, generator=g) * 0.3 for _ in range(3))

    def gated_enc(x):
        x_enc = (x - b_dec) @ enc_w.t()
        return ((x_enc + gate_b) > 0).float() * torch.relu(r_mag.exp() * x_enc + mag_b)

    def relu_enc(x):
        return torch.relu((x - b_dec) @ enc_w.t() + enc_b)

    lin = {"encoder.weight": enc_w, "encoder.bias": enc_b, "decoder.weight": dec_w}
    params = {"W_enc": W_enc, "b_enc": enc_b, "W_dec": W_dec, "b_dec": b_dec}
    return [
        (
            "AutoEncoderTopK",
            {
                **lin,
                "b_dec": b_dec,
                "k": torch.tensor(k, dtype=torch.int),
                "threshold": torch.tensor(0.3),
            },
            topk_enc,
            linear_dec,
            {"k": k},
        ),
        (
            "BatchTopKSAE",
            {
                **lin,
                "b_dec": b_dec,
                "k": torch.tensor(k, dtype=torch.int),
                "threshold": torch.tensor(0.3),
            },
            batch_enc,
            linear_dec,
            {"k": k},
        ),
        (
            "MatryoshkaBatchTopKSAE",
            {
                **params,
                "k": torch.tensor(k, dtype=torch.int),
                "threshold": torch.tensor(0.3),
                "group_sizes": torch.tensor([12, 12, 24]),
            },
            matry_enc,
            lambda f: f @ W_dec + b_dec,
            {"k": k},
        ),
        (
            "JumpReluAutoEncoder",
            {**params, "threshold": thr},
            jump_enc,
            lambda f: f @ W_dec + b_dec,
            {},
        ),
        (
            "GatedAutoEncoder",
            {
                "encoder.weight": enc_w,
                "decoder.weight": dec_w,
                "decoder_bias": b_dec,
                "r_mag": r_mag,
                "gate_bias": gate_b,
                "mag_bias": mag_b,
            },
            gated_enc,
            linear_dec,
            {},
        ),
        ("AutoEncoder", {**lin, "bias": b_dec}, relu_enc, linear_dec, {}),
    ]


@pytest.mark.parametrize("case", _dl_cases(), ids=lambda c: c[0])
def test_dictionary_learning_folders_open(tmp_path, case):
    dict_class, state, ref_encode, ref_decode, trainer = case
    folder = _dl_folder(tmp_path / dict_class, dict_class, state, **trainer)
    ours = load_sae(folder)
    assert ours.cfg.hook_name == "blocks.3.hook_resid_post"
    assert ours.cfg.model_name == "EleutherAI/pythia-70m-deduped"
    x = _x(n=64)
    _same(ours, ref_encode, ref_decode, x)


def test_dictionary_learning_errors(tmp_path):
    dict_class, state, *_ = _dl_cases()[0]
    bad_k = _dl_folder(tmp_path / "k", dict_class, state, k=7)
    with pytest.raises(ValueError, match=r"config.json: trainer k=7 but ae.pt has k=5"):
        load_sae(bad_k)
    bad_dim = _dl_folder(tmp_path / "dim", dict_class, state, k=5, dict_size=D_SAE + 1)
    with pytest.raises(
        ValueError,
        match=rf"dict_size={D_SAE + 1} but ae.pt's weights give "
        rf"{D_SAE}",
    ):
        load_sae(bad_dim)
    unknown = _dl_folder(tmp_path / "u", "CrossCoder", state)
    with pytest.raises(ValueError, match="dict_class 'CrossCoder' has no interp variant"):
        load_sae(unknown)
    # never unpickled: an ae.pt holding an arbitrary object is refused (weights_only)
    pickled = _dl_folder(tmp_path / "p", dict_class, state, k=5)
    (pickled / "ae.pt").write_bytes(pickle.dumps({"encoder.weight": _Evil()}))
    with pytest.raises(ValueError, match=r"cannot read SAE weights .*ae.pt \(weights only\)"):
        load_sae(pickled)


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize("variant", ["jumprelu", "gated"])
def test_a_run_config_that_trains_an_inference_only_variant_is_refused(variant):
    from saes.training.config import RunConfig

    with pytest.raises(ValueError, match=f"'{variant}' is inference-only.*trainable variants"):
        RunConfig(sae={"variant": variant})
    with pytest.raises(ValueError, match="inference-only"):
        RunConfig(saes=[{"sae": {"variant": variant}}])
