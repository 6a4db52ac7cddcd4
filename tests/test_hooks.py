"""Tests for interp.hooks: hook names, layers, stop_at_layer, widths, validation and head layout."""

from __future__ import annotations

import pytest
import torch

from interp.hooks import (
    HeadLayout,
    head_layout,
    hook_dim,
    hook_layer,
    hook_name,
    hook_z_layer,
    layout_for_spec,
    stop_at_layer_for,
    validate_hook_names,
    validate_hooks,
)
from interp.models import tiny_model


def test_hook_name_spells_block_hooks():
    assert hook_name(3, "resid_post") == "blocks.3.hook_resid_post"
    assert hook_name(0, "hook_resid_pre") == "blocks.0.hook_resid_pre"
    assert hook_name(1, "attn.z") == "blocks.1.attn.hook_z"
    assert hook_name(1, "attn.hook_pattern") == "blocks.1.attn.hook_pattern"
    assert hook_name(12, "mlp.post") == "blocks.12.mlp.hook_post"
    assert hook_name(2, "ln1.normalized") == "blocks.2.ln1.hook_normalized"
    for bad_layer in (-1, 1.0, True, "2"):
        with pytest.raises(ValueError, match="layer"):
            hook_name(bad_layer, "resid_post")  # type: ignore[arg-type]
    for bad_kind in ("", "blocks.0.hook_z", "attn."):
        with pytest.raises(ValueError, match="hook kind"):
            hook_name(0, bad_kind)


def test_hook_name_round_trips_through_the_model(tiny):
    for layer in range(tiny.cfg.n_layers):
        for kind in ("resid_pre", "resid_mid", "resid_post", "attn.z", "attn.v", "mlp.post"):
            name = hook_name(layer, kind)
            assert name in tiny.hook_dict, name
            assert hook_layer(name) == layer


def test_hook_layer_of_names():
    assert hook_layer("blocks.0.hook_resid_pre") == 0
    assert hook_layer("blocks.27.mlp.hook_post") == 27
    assert hook_layer("blocks.3.attn.hook_z") == 3
    assert hook_layer("hook_tokens") == -1
    assert hook_layer("embed.hook_something") == -1
    assert hook_layer("pos_embed.x") == -1
    assert hook_layer("unembed.hook_out") is None
    assert hook_layer("ln_final.hook_scale") is None
    assert hook_layer("blocks.x.hook_resid_post") is None  # not a block index
    assert hook_layer("myblocks.1.hook_resid_post") is None


def test_stop_at_layer_for_mixed_lists():
    assert stop_at_layer_for(["hook_embed", "blocks.0.attn.hook_z"]) == 1
    assert (
        stop_at_layer_for(["blocks.4.hook_resid_post", "hook_pos_embed", "blocks.2.mlp.hook_post"])
        == 5
    )
    assert stop_at_layer_for(["hook_tokens", "hook_embed"]) == 0
    # anything past the last block needs the whole model
    assert stop_at_layer_for(["blocks.0.hook_resid_post", "unembed.hook_out"]) is None
    assert stop_at_layer_for(["hook_embed", "ln_final.hook_normalized"]) is None
    assert stop_at_layer_for([]) is None


def test_widths_on_the_tiny_model():
    model = tiny_model(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, n_key_value_heads=2)
    assert hook_dim(model, "blocks.0.hook_resid_post") == 64
    assert hook_dim(model, "blocks.1.hook_resid_pre") == 64
    assert hook_dim(model, "blocks.0.hook_attn_out") == 64
    assert hook_dim(model, "blocks.1.attn.hook_z") == 4 * 16
    assert hook_dim(model, "blocks.1.attn.hook_q") == 4 * 16
    assert hook_dim(model, "blocks.0.attn.hook_k") == 2 * 16  # GQA: the kv heads only
    assert hook_dim(model, "blocks.0.attn.hook_v") == 2 * 16
    assert hook_dim(model, "blocks.0.mlp.hook_post") == 256
    assert hook_dim(model, "blocks.0.mlp.hook_pre") == 256
    with pytest.raises(ValueError, match="per \\(query, key\\) pair"):
        hook_dim(model, "blocks.0.attn.hook_pattern")
    # the widths are what a forward actually produces per token
    names = [
        "blocks.0.hook_resid_post",
        "blocks.1.attn.hook_z",
        "blocks.0.attn.hook_k",
        "blocks.0.attn.hook_v",
        "blocks.0.mlp.hook_post",
    ]
    with torch.no_grad():
        _, cache = model.run_with_cache(model.to_tokens("width"), names_filter=names)
    for name in names:
        act = cache[name]
        assert act[0, 0].numel() == hook_dim(model, name), name


def test_widths_without_gqa(tiny):
    assert hook_dim(tiny, "blocks.0.attn.hook_k") == tiny.cfg.n_heads * tiny.cfg.d_head
    assert hook_dim(tiny, "blocks.0.attn.hook_v") == tiny.cfg.n_heads * tiny.cfg.d_head


def test_misspelled_hook_names_the_closest_valid_name(tiny):
    with pytest.raises(ValueError) as err:
        validate_hook_names(tiny, ["blocks.1.hook_resid_pots"])
    msg = str(err.value)
    assert msg.startswith("unknown hook 'blocks.1.hook_resid_pots'; closest valid names: ")
    assert msg.split("closest valid names: ")[1].split(", ")[0] == "blocks.1.hook_resid_post"
    with pytest.raises(ValueError, match="closest valid names: blocks.0.mlp.hook_post"):
        validate_hooks(tiny, ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_psot"])
    with pytest.raises(ValueError, match="no similar names"):
        validate_hook_names(tiny, "completely.different")


def test_validate_hooks_dedupes_and_refuses_empty(tiny):
    names = ["blocks.1.hook_resid_post", "blocks.0.attn.hook_z", "blocks.1.hook_resid_post"]
    assert validate_hooks(tiny, names) == ["blocks.1.hook_resid_post", "blocks.0.attn.hook_z"]
    with pytest.raises(ValueError, match="no hook names"):
        validate_hooks(tiny, [])


def test_gqa_kv_mapping_9_query_3_kv_by_hand():
    # 9 query heads share 3 kv heads: groups of 9 / 3 = 3 consecutive query heads
    lay = HeadLayout(layer=5, n_heads=9, d_head=64, n_kv_heads=3)
    expected = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [lay.kv_head(h) for h in range(9)] == expected
    assert lay.kv_index.tolist() == expected
    assert lay.d_in == 576 and lay.hook == "blocks.5.attn.hook_z"
    # head-major split: head h's block is columns [h * d_head, (h + 1) * d_head)
    x = torch.arange(2 * 576, dtype=torch.float32).reshape(2, 576)
    heads = lay.split(x)
    assert heads.shape == (2, 9, 64)
    torch.testing.assert_close(heads[1, 4], x[1, 4 * 64 : 5 * 64])
    with pytest.raises(ValueError, match="576"):
        lay.split(torch.zeros(2, 575))
    with pytest.raises(ValueError, match="multiple"):
        HeadLayout(0, 9, 64, 2)
    with pytest.raises(ValueError, match="invalid"):
        HeadLayout(-1, 9, 64, 3)


def test_head_layout_from_model_and_spec():
    model = tiny_model(n_layers=2, n_heads=6, d_head=8, d_model=48, n_key_value_heads=2)
    lay = head_layout(model, "blocks.1.attn.hook_z")
    assert lay == HeadLayout(1, 6, 8, 2)
    assert [lay.kv_head(h) for h in range(6)] == [0, 0, 0, 1, 1, 1]
    spec = "tiny:n_heads=6,d_head=8,d_model=48,n_key_value_heads=2"
    assert layout_for_spec(spec, "blocks.1.attn.hook_z") == lay
    assert layout_for_spec("tiny", "blocks.0.attn.hook_z") == HeadLayout(0, 4, 16, 4)
    assert layout_for_spec("tiny", "blocks.9.attn.hook_z") is None  # no such layer
    assert layout_for_spec("no-such-model-anywhere", "blocks.0.attn.hook_z") is None
    assert hook_z_layer("blocks.11.attn.hook_z") == 11
    with pytest.raises(ValueError, match="not an attention-output hook"):
        hook_z_layer("blocks.1.attn.hook_v")
