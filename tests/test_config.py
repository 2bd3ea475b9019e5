"""Config.from_hf: every field that changes the math is honoured or refused by name."""

from __future__ import annotations

import json
import math

import pytest
from hf_oracle import hf_config
from transformers import GPTNeoConfig

from minineo import Config


def neo_dict(**changes):
    d = hf_config("gpt_neo", layers=4, window=5).to_dict()
    d.update(changes)
    return d


def test_gpt_neo_values():
    c = Config.from_hf(neo_dict(attention_types=[[["global", "local"], 2]]))
    assert c.windows == (None, 5, None, 5) and c.attn_scales == (1.0,) * 4 and not c.qkv_bias and c.upcast_attn


def test_explicit_attention_layers_win_over_attention_types_as_in_hf(tmp_path):
    d = neo_dict()
    d.pop("attention_types")
    d["attention_layers"] = ["local", "local", "global", "local"]
    assert Config.from_hf(d).windows == (5, 5, None, 5)
    # attention_types expands to global/local/global/local; HF runs the explicit list (construction and from_pretrained)
    conflicting = neo_dict(attention_types=[[["global", "local"], 2]], attention_layers=["local"] * 4)
    (tmp_path / "config.json").write_text(json.dumps(conflicting))
    hf = GPTNeoConfig.from_pretrained(tmp_path)
    assert hf.attention_layers == ["local"] * 4
    assert Config.from_hf(conflicting).windows == tuple(5 if k == "local" else None for k in hf.attention_layers)
    short = neo_dict(attention_types=[[["global", "local"], 1]])
    short.pop("attention_layers")
    with pytest.raises(ValueError, match="num_layers=4"):
        Config.from_hf(short)


def test_gpt2_scale_flags():
    d = hf_config("gpt2", layers=3, heads=2, d_head=16, scale_attn_by_inverse_layer_idx=True).to_dict()
    assert Config.from_hf(d).attn_scales == pytest.approx([1 / 4, 1 / 8, 1 / 12])
    d["scale_attn_weights"] = False
    d["scale_attn_by_inverse_layer_idx"] = False
    assert Config.from_hf(d).attn_scales == (1.0,) * 3
    assert math.isclose(Config.from_hf(hf_config("gpt2", d_head=16).to_dict()).attn_scales[0], 0.25)


@pytest.mark.parametrize("field,value,match", [
    ("activation_function", "mish", "activation_function 'mish' is not supported"),
    ("add_cross_attention", True, "add_cross_attention"),
    ("rotary_dim", 64, r"fields minineo does not know how to honour: \['rotary_dim'\]"),
    ("n_embd", "wide", "'n_embd' must be an integer"),
])
def test_gpt2_refusals_name_the_field(field, value, match):
    d = hf_config("gpt2").to_dict()
    d[field] = value
    with pytest.raises(ValueError, match=match):
        Config.from_hf(d)
