"""Random weights in the real gpt2 (124M) and gpt-neo-125M shapes, at full context, against HF."""

from __future__ import annotations

import torch
from conftest import assert_close
from hf_oracle import save_hf
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM

import minineo


def _check(hf, tmp_path, positions: int):
    model = minineo.load(save_hf(hf, tmp_path))
    tokens = torch.randint(0, 50257, (1, positions), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = hf(tokens, output_hidden_states=True)
    fast = model(tokens)
    assert_close(fast, out.logits, "fast-path logits")
    explicit, cache = model.run_with_cache(tokens, names=lambda n: n.endswith("resid_pre"), explicit=True)
    assert_close(explicit, out.logits, "explicit logits")
    for layer in range(model.config.n_layers):
        assert_close(cache[f"blocks.{layer}.resid_pre"], out.hidden_states[layer], f"resid_pre {layer}")


def test_gpt2_small_shape_at_1024_positions(tmp_path):
    torch.manual_seed(0)
    hf = GPT2LMHeadModel._from_config(GPT2Config(), attn_implementation="eager").eval()
    _check(hf, tmp_path, 1024)


def test_gpt_neo_125m_shape_at_2048_positions_crosses_the_window(tmp_path):
    torch.manual_seed(0)
    config = GPTNeoConfig(hidden_size=768, num_layers=12, num_heads=12, attention_types=[[["global", "local"], 6]],
                          window_size=256, max_position_embeddings=2048)
    hf = GPTNeoForCausalLM._from_config(config, attn_implementation="eager").eval()
    _check(hf, tmp_path, 2048)
