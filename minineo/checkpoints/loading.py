"""minineo.load: a hub id, the embedded model, or a local folder -> a ready Model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from minineo.checkpoints import hub
from minineo.config import Config
from minineo.errors import MissingFileError, UserError
from minineo.forward.model import Model
from minineo.checkpoints.tokenizer import Tokenizer
from minineo.checkpoints.weights import load_params


def load(
    name_or_path: str | os.PathLike = hub.EMBEDDED_NAME, *, device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32, cache_dir: str | os.PathLike | None = None, revision: str | None = None,
    compile: bool = False, check_finite: bool = True,
) -> Model:
    """Load a GPT-2 / GPT-Neo: "gpt2", "EleutherAI/gpt-neo-125M", "tiny-neo" / "tiny-gpt2" (embedded) or a local folder.

    Hub ids are fetched once into `cache_dir` (default: $MININEO_CACHE or the project's weights_cache/).
    Parameters do not require grad; call `model.requires_grad_(True)` to train. Weights holding NaN
    or inf are refused (UserError) unless `check_finite=False`.
    """
    device = check_device(device)
    directory = hub.resolve(name_or_path, cache_dir, revision)
    config = read_config(directory)
    try:
        params = load_params(directory, config)
    except UserError as err:  # name the folder when the message does not already
        if str(directory) in str(err):
            raise
        raise UserError(f"the weights in {directory}: {err}") from err
    if check_finite:
        bad = [name for name, value in params.items() if value.is_floating_point() and not bool(value.isfinite().all())]
        if bad:
            raise UserError(
                f"the weights in {directory} hold NaN or inf values ({len(bad)} tensor(s): {', '.join(bad[:5])}"
                f"{', ...' if len(bad) > 5 else ''}), so every output would be NaN; download or export the model "
                "again (or pass check_finite=False to minineo.load to inspect it anyway)"
            )
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


def check_device(device: str | torch.device) -> torch.device:
    """The device, or a UserError when it is not a device name or this torch cannot use it."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise UserError(f"{str(device)!r} is not a device ({err}); use 'cpu', 'cuda', 'cuda:1' or 'mps'") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise UserError(f"device {str(device)!r} is not available ({why}); use --device cpu (device='cpu')")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("device 'mps' is not available on this machine; use 'cpu'")
    return device


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
        raise MissingFileError(f"no config.json in {directory}; a model folder needs config.json and *.safetensors")
    try:
        hf = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); download it again or fix the file") from err
    if not isinstance(hf, dict):
        raise UserError(f"{path} holds a {type(hf).__name__}, not a JSON object of model settings; "
                        "download it again or fix the file")
    try:
        return Config.from_hf(hf)
    except UserError as err:
        raise UserError(f"{path}: {err}") from err
