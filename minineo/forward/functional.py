"""Small numerical building blocks, written with the primitives HF uses so float32 agreement is round-off."""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """OpenAI GPT-2's tanh GELU, written exactly as HF's NewGELUActivation.

    Without autograd the same operations run in place on one buffer (bit-identical: each op rounds
    the same way; a test checks it), so recording mlp.post costs one (batch, pos, d_mlp) temporary, not six.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    inner = torch.pow(x, 3.0).mul_(0.044715).add_(x).mul_(math.sqrt(2.0 / math.pi)).tanh_().add_(1.0)
    return (0.5 * x).mul_(inner)


def centred(x: torch.Tensor) -> torch.Tensor:
    """x minus its mean over the last dimension: the recorded LayerNorm's first step (and its lazy recompute's)."""
    return x - x.mean(-1, keepdim=True)


def gelu_fast(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu_new": gelu_new,
    "gelu": F.gelu,
    "gelu_fast": gelu_fast,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": quick_gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


# The fast path's fused kernels: the same function, rounded differently (~1e-7), one pass over memory.
FUSED_ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    **ACTIVATION_FUNCTIONS,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
}
