"""Read a folder's safetensors (one file or an index of shards) with clear errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from minineo import checks
from minineo.errors import MissingFileError, UserError

INDEX = "model.safetensors.index.json"


def safetensors_files(directory: Path) -> list[Path]:
    """model.safetensors, or the shards its index names."""
    if (directory / INDEX).is_file():
        shards = _shard_names(directory / INDEX)
        missing = [s for s in shards if not (directory / s).is_file()]
        if not shards or missing:
            raise MissingFileError(f"{directory / INDEX} names shards that are not there: {missing or 'none listed'}")
        return [directory / s for s in shards]
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        bins = [p.name for p in directory.glob("*.bin")]
        hint = f" (found {bins}: convert them to safetensors; minineo never unpickles .bin files)" if bins else ""
        raise MissingFileError(f"no *.safetensors weights in {directory}{hint}")
    return files


def _shard_names(index_path: Path) -> list[str]:
    """The shard files a model.safetensors.index.json names: plain file names beside it (a path such as
    '../other/model.safetensors' would read weights from outside the model's folder). UserError otherwise."""
    fix = ("it must be a JSON object whose 'weight_map' maps weight names to shard files: download it again or "
           "fix it")
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{index_path} is not a valid shard index ({err}); {fix}") from err
    weight_map = index.get("weight_map", {}) if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise UserError(f"{index_path} is not a valid shard index (its weight_map is {checks.describe(weight_map)}); "
                        f"{fix}")
    shards = sorted(set(weight_map.values()))
    outside = [name for name in shards if Path(name).name != name or name in ("", ".", "..")]
    if outside:
        raise UserError(f"{index_path} is not a valid shard index: {outside[0]!r} is not a file name beside it "
                        "(shards live in the model's folder); download it again or fix it")
    return shards


def read_tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every safetensors file in `directory`, by key."""
    tensors: dict[str, torch.Tensor] = {}
    for path in safetensors_files(directory):
        try:
            part = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise UserError(
                f"{path} is not a readable safetensors file ({err}); it is probably truncated or corrupt: "
                "delete it and download it again"
            ) from err
        clash = tensors.keys() & part.keys()
        if clash:
            raise UserError(f"{path} repeats keys found in another shard: {sorted(clash)[:5]}")
        tensors.update(part)
    return tensors
