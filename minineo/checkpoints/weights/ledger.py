"""Exact key accounting: every key in the file is used or deliberately ignored, every shape is checked."""

from __future__ import annotations

import re

import torch

from minineo.errors import UserError


class Ledger:
    """Hands out a checkpoint's tensors by key and, at the end, refuses any key nobody took."""

    def __init__(self, tensors: dict[str, torch.Tensor], ignore: re.Pattern[str]):
        prefixed = any(k.startswith("transformer.") for k in tensors)
        # save_pretrained writes `transformer.`-prefixed keys; the hub's own gpt2 files have none.
        self.tensors = {k.removeprefix("transformer.") if prefixed else k: v for k, v in tensors.items()}
        self.ignore = ignore
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.tensors

    def take(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in self.tensors:
            raise UserError(f"weight {key!r} is missing from the checkpoint (expected shape {shape})")
        tensor = self.tensors[key]
        if tuple(tensor.shape) != shape:
            raise UserError(
                f"weight {key!r} has shape {tuple(tensor.shape)} but config.json implies {shape}; "
                "the weights and config.json do not belong together"
            )
        if not tensor.is_floating_point():
            raise UserError(
                f"weight {key!r} is a {str(tensor.dtype).removeprefix('torch.')} tensor, but weights must be floating "
                "point (float32, float16 or bfloat16); the checkpoint is damaged or was not written as model weights: "
                "export or download it again"
            )
        self.used.add(key)
        return tensor

    def finish(self) -> None:
        extra = sorted(k for k in self.tensors if k not in self.used and not self.ignore.fullmatch(k))
        if extra:
            raise UserError(
                f"the checkpoint has {len(extra)} weight(s) minineo does not know what to do with: {extra[:8]}; "
                "is config.json the right one for these weights?"
            )
