"""Bad input gets a clear exception that names the problem."""

from __future__ import annotations

import json

import pytest
import torch
from hf_oracle import build_hf, hf_config, save_hf
from safetensors.torch import load_file, save_file

import minineo


@pytest.fixture
def neo(hf_pair):
    return hf_pair("gpt_neo", layers=2, window=3, n_ctx=16)[1]


@pytest.fixture
def saved(tmp_path):
    return save_hf(build_hf(hf_config("gpt2", layers=2)), tmp_path / "model")


def test_token_out_of_range(neo):
    with pytest.raises(ValueError, match=r"token id 97 at batch 0, position 2 is outside the vocabulary \(0..96\)"):
        neo(torch.tensor([[1, 2, 97]]))


def test_negative_token(neo):
    with pytest.raises(ValueError, match="token id -1"):
        neo(torch.tensor([-1, 2]))


def test_float_tokens(neo):
    with pytest.raises(ValueError, match="integer ids, got a torch.float32"):
        neo(torch.tensor([[1.0, 2.0]]))


def test_sequence_longer_than_context(neo):
    with pytest.raises(ValueError, match="longer than the model's context n_ctx=16"):
        neo(torch.zeros(1, 17, dtype=torch.long))


def test_unknown_name_lists_close_matches(neo):
    with pytest.raises(KeyError, match="blocks.0.attn.pattern"):
        neo.run_with_cache(torch.tensor([[1, 2]]), names=["blocks.0.attn.patern"])
    with pytest.raises(KeyError, match="layer 5 does not exist"):
        neo.run_with_cache(torch.tensor([[1, 2]]), names=["blocks.5.resid_pre"])
    _, cache = neo.run_with_cache(torch.tensor([[1, 2]]), names=["embed"])
    with pytest.raises(KeyError, match="was not recorded"):
        cache["blocks.0.resid_pre"]


def test_wrong_patch_shape(neo):
    with pytest.raises(ValueError, match=r"patch tensor for 'blocks.0.attn.z' has shape \(1, 2\) but the site has shape"):
        neo(torch.tensor([[1, 2]]), patch={"blocks.0.attn.z": torch.zeros(1, 2)})
    with pytest.raises(TypeError, match="returned NoneType"):
        neo(torch.tensor([[1, 2]]), patch={"blocks.0.attn.z": lambda z: None})


def test_bad_attention_mask(neo):
    with pytest.raises(ValueError, match="attention_mask has shape"):
        neo(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3))


def _rewrite(saved, edit):
    path = saved / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_missing_weight(saved):
    _rewrite(saved, lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"))
    with pytest.raises(ValueError, match="'h.1.mlp.c_fc.bias' is missing"):
        minineo.load(saved)


def test_mis_shaped_weight(saved):
    _rewrite(saved, lambda t: t.__setitem__("transformer.h.0.attn.c_proj.weight", torch.zeros(3, 3)))
    with pytest.raises(ValueError, match=r"'h.0.attn.c_proj.weight' has shape \(3, 3\)"):
        minineo.load(saved)


def test_extra_weight(saved):
    _rewrite(saved, lambda t: t.__setitem__("transformer.h.0.attn.surprise", torch.zeros(3)))
    with pytest.raises(ValueError, match="does not know what to do with.*h.0.attn.surprise"):
        minineo.load(saved)


def test_mask_buffers_are_ignored_but_real_biases_are_not(saved):
    _rewrite(saved, lambda t: t.__setitem__("transformer.h.0.attn.bias", torch.ones(1, 1, 4, 4)))
    minineo.load(saved)  # the old causal-mask buffer is ignored by exact name
    _rewrite(saved, lambda t: t.pop("transformer.h.0.attn.c_attn.bias"))
    with pytest.raises(ValueError, match="c_attn.bias' is missing"):
        minineo.load(saved)


def test_truncated_safetensors(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        minineo.load(saved)


def test_unsupported_model_type(saved):
    config = json.loads((saved / "config.json").read_text())
    config["model_type"] = "llama"
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unsupported model_type 'llama'"):
        minineo.load(saved)


def test_missing_config_and_bin_only_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        minineo.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(hf_config("gpt2").to_dict()))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="never unpickles .bin"):
        minineo.load(tmp_path)
