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


def tiny_configs():
    """Both architectures at toy size (64 wide, 512 tokens): the device run's smoke mode, which checks the script."""
    from transformers import GPT2Config, GPTNeoConfig

    return {
        "gpt2-small": GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=128),
        "gpt-neo-125M": GPTNeoConfig(hidden_size=64, num_layers=2, num_heads=4, window_size=16, vocab_size=512,
                                     attention_types=[[["global", "local"], 1]], max_position_embeddings=128),
    }


def save_random_model(hf_config, folder: Path) -> Path:
    """The HF model with random weights, saved as safetensors (both libraries load the same file)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(hf_config).save_pretrained(folder)
    return folder


def load_hf(folder: Path, device: str, dtype: torch.dtype, flash: bool = False) -> dict[str, torch.nn.Module]:
    """HF's attention implementations for this model: eager always, sdpa where HF has it (not GPT-Neo), and
    with `flash` flash_attention_2 where it loads (it needs the flash-attn package and CUDA half precision)."""
    from transformers import AutoModelForCausalLM

    models = {}
    for impl in ("eager", "sdpa") + (("flash_attention_2",) if flash else ()):
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
