"""minineo.load: a hub id, the embedded model, or a local folder -> a ready Model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from minineo import hub
from minineo.config import Config
from minineo.model import Model
from minineo.tokenizer import Tokenizer
from minineo.weights import load_params


def load(
    name_or_path: str | os.PathLike = hub.EMBEDDED_NAME, *, device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32, cache_dir: str | os.PathLike | None = None, revision: str | None = None,
    compile: bool = False,
) -> Model:
    """Load a GPT-2 / GPT-Neo: "gpt2", "EleutherAI/gpt-neo-125M", "tiny-neo" (embedded) or a local folder.

    Hub ids are fetched once into `cache_dir` (default: $MININEO_CACHE or the project's weights_cache/).
    Parameters do not require grad; call `model.requires_grad_(True)` to train.
    """
    directory = hub.resolve(name_or_path, cache_dir, revision)
    config = read_config(directory)
    params = load_params(directory, config)
    with torch.device("meta"):
        model = Model(config)
    model.load_state_dict(params, strict=True, assign=True)
    model = model.to(device=device, dtype=dtype).requires_grad_(False).eval()
    if model.W_E.device.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        _column_major_matmul_weights(model)
    model.tokenizer = Tokenizer.from_dir(directory, config.bos_token_id)
    model.source = str(directory)
    if compile:
        model.compile_fast_path()
    return model


def _column_major_matmul_weights(model: Model) -> None:
    """Same shapes and values, transposed storage, for the (in, out) weights that go through matmul.

    On CPU, oneDNN's bfloat16/float16 matmul is ~10x slower when the (in, out) weight is row-major
    than when it is the transpose of a row-major (out, in) matrix (nn.Linear's layout, what HF's
    GPT-Neo uses); float32 does not care. Views such as W_Q and W_O.view(-1, d_model) still work.
    """
    for block in model.blocks:
        for module, name in ((block.attn, "W_QKV"), (block.attn, "W_O"), (block.mlp, "W_in"), (block.mlp, "W_out")):
            param = getattr(module, name)
            flat = param.data.reshape(-1, param.shape[-1])  # (in, out)
            param.data = flat.T.contiguous().T.view(param.shape)
    if model.W_U_untied is not None:
        model.W_U_untied.data = model.W_U_untied.data.T.contiguous().T


def read_config(directory: Path) -> Config:
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {directory}; a model folder needs config.json and *.safetensors")
    try:
        hf = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); download it again") from err
    return Config.from_hf(hf)
