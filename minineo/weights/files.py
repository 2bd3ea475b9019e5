"""Read a folder's safetensors (one file or an index of shards) with clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

INDEX = "model.safetensors.index.json"


def safetensors_files(directory: Path) -> list[Path]:
    """model.safetensors, or the shards its index names."""
    if (directory / INDEX).is_file():
        index = json.loads((directory / INDEX).read_text())
        shards = sorted(set(index.get("weight_map", {}).values()))
        missing = [s for s in shards if not (directory / s).is_file()]
        if not shards or missing:
            raise FileNotFoundError(f"{directory / INDEX} names shards that are not there: {missing or 'none listed'}")
        return [directory / s for s in shards]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        bins = [p.name for p in directory.glob("*.bin")]
        hint = f" (found {bins}: convert them to safetensors; minineo never unpickles .bin files)" if bins else ""
        raise FileNotFoundError(f"no *.safetensors weights in {directory}{hint}")
    return files


def read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file in `directory`, by key."""
    tensors: dict[str, torch.Tensor] = {}
    for path in safetensors_files(directory):
        try:
            part = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(
                f"{path} is not a readable safetensors file ({err}); it is probably truncated or corrupt: "
                "delete it and download it again"
            ) from err
        clash = tensors.keys() & part.keys()
        if clash:
            raise ValueError(f"{path} repeats keys found in another shard: {sorted(clash)[:5]}")
        tensors.update(part)
    return tensors
