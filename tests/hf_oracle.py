"""Build HuggingFace models of any small shape, perturbed so no term hides, and save them as safetensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM

# Where the `device`-marked tests put both models (tests/conftest.py checks that it exists).
TEST_DEVICE = os.environ.get("MININEO_TEST_DEVICE", "cpu") or "cpu"


def hf_config(arch: str, *, layers=2, heads=4, d_head=8, d_mlp=None, vocab=97, n_ctx=64, act="gelu_new",
              eps=1e-5, window=4, kinds=None, **extra):
    d_model = heads * d_head
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_positions=n_ctx, n_embd=d_model, n_layer=layers, n_head=heads,
                          n_inner=d_mlp, activation_function=act, layer_norm_epsilon=eps,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **extra)
    kinds = kinds or (["global", "local"] * layers)[:layers]
    return GPTNeoConfig(vocab_size=vocab, max_position_embeddings=n_ctx, hidden_size=d_model, num_layers=layers,
                        num_heads=heads, intermediate_size=d_mlp, activation_function=act, layer_norm_epsilon=eps,
                        window_size=window, attention_types=[[[k], 1] for k in kinds],
                        resid_dropout=0.0, embed_dropout=0.0, attention_dropout=0.0, **extra)


def build_hf(config, seed: int = 0, weight_scale: float = 1.0):
    """A random HF model in eval mode with eager attention; biases and LayerNorm weights perturbed."""
    torch.manual_seed(seed)
    cls = GPT2LMHeadModel if config.model_type == "gpt2" else GPTNeoForCausalLM
    model = cls._from_config(config, attn_implementation="eager").eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
            elif weight_scale != 1.0:
                p.mul_(weight_scale)
    return model


def save_hf(model, directory: Path) -> Path:
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def hf_forward(model, tokens, **kwargs):
    """HF logits, hidden states (resid_pre of each layer + final normed) and attention patterns.

    Tokens and tensor arguments move to the model's device (tests build them on the CPU)."""
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    with torch.no_grad():
        out = model(tokens, output_hidden_states=True, output_attentions=True, **kwargs)
    return out
