"""The benchmarked models: random GPT-2-small and GPT-Neo-125M shapes, saved once and loaded by HF,
minineo and TransformerLens from the same safetensors."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


def hf_configs(quick: bool):
    from transformers import GPT2Config, GPTNeoConfig

    layers = 2 if quick else 12
    return {
        "gpt2-small": GPT2Config(n_layer=layers),
        "gpt-neo-125M": GPTNeoConfig(hidden_size=768, num_layers=layers, num_heads=12, window_size=256,
                                     attention_types=[[["global", "local"], layers // 2]], max_position_embeddings=2048),
    }


def save_random_model(hf_config, folder: Path) -> Path:
    """The HF model with random weights, saved as safetensors (both libraries load the same file)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(hf_config).save_pretrained(folder)
    return folder


def load_hf(folder: Path, device: str, dtype: torch.dtype) -> dict[str, torch.nn.Module]:
    """HF's attention implementations for this model: eager always, sdpa where HF has it (not GPT-Neo)."""
    from transformers import AutoModelForCausalLM

    models = {}
    for impl in ("eager", "sdpa"):
        try:
            models[impl] = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=impl, dtype=dtype).to(device).eval()
        except (ValueError, ImportError):
            pass  # GPT-Neo has no sdpa in HF
    return models


def transformer_lens_model(folder: Path, device: str, dtype: torch.dtype):
    """TransformerLens 4's TransformerBridge on the same saved weights, or None when it is not installed."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformerBridge.boot_transformers(str(folder), device=device, dtype=dtype).eval()
