"""minineo.load: a hub id, the embedded model, or a local folder -> a ready Model."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from minineo import checks
from minineo.checkpoints import hub
from minineo.config import Config, GenerationConfig
from minineo.errors import MissingFileError, UserError
from minineo.forward.model import Model
from minineo.checkpoints.tokenizer import Tokenizer
from minineo.checkpoints.weights import load_params


@checks.typed
def load(
    name_or_path: str | os.PathLike = hub.EMBEDDED_NAME, *, device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32, cache_dir: str | os.PathLike | None = None, revision: str | None = None,
    compile: bool = False, check_finite: bool = True,
) -> Model:
    """Load a GPT-2 / GPT-Neo: "gpt2", "EleutherAI/gpt-neo-125M", "tiny-neo" / "tiny-gpt2" (embedded) or a local folder.

    Hub ids are fetched once into `cache_dir` (default: $MININEO_CACHE or the project's weights_cache/).
    Parameters do not require grad; call `model.requires_grad_(True)` to train. Weights holding NaN
    or inf are refused (UserError) unless `check_finite=False`. `dtype`: float32 (default), float16, bfloat16
    or float64, as a torch.dtype or its name.
    """
    device = check_device(device)
    dtype = check_dtype(dtype)
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
    model.generation_config = read_generation_config(directory, config)
    _check_bos(model.tokenizer, config, directory)
    _check_vocabulary(model.tokenizer, config, directory)
    model.source = str(directory)  # where the files are (this machine's path)
    model.name = str(name_or_path)  # what the user asked for: "tiny-neo", "gpt2", or their folder as given
    if compile:
        model.compile_fast_path()
    return model


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def check_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A floating-point torch dtype (a torch.dtype or its name, e.g. "bfloat16"), or a UserError naming the choices."""
    return checks.dtype(dtype, "dtype", DTYPES)


def _check_bos(tokenizer: Tokenizer | None, config: Config, directory: Path) -> None:
    """Text gets BOS prepended: an id outside the vocabulary is config.json's mistake, said at load, not at a prompt."""
    if tokenizer is None or tokenizer.bos_token_id is None or 0 <= tokenizer.bos_token_id < config.d_vocab:
        return
    if config.bos_token_id is not None:
        raise UserError(f"{directory / 'config.json'}: bos_token_id {config.bos_token_id} is outside the vocabulary "
                        f"(vocab_size {config.d_vocab}: ids 0..{config.d_vocab - 1}), so no text could be read; set "
                        "bos_token_id to the id of the model's beginning-of-text token (e.g. its <|endoftext|>)")
    raise UserError(f"{directory}: the tokenizer's <|endoftext|> (id {tokenizer.bos_token_id}, used as BOS because "
                    f"config.json has no bos_token_id) is outside the vocabulary (vocab_size {config.d_vocab}); set "
                    "bos_token_id in config.json")


def _check_vocabulary(tokenizer: Tokenizer | None, config: Config, directory: Path) -> None:
    """A tokenizer that can produce ids the embedding has no row for is the folder's mistake, said at load (a model
    may have more rows than its tokenizer has tokens: GPT-2 fine-tunes pad W_E; never fewer)."""
    if tokenizer is None:
        return
    highest = max(tokenizer.backend.get_vocab(with_added_tokens=True).values(), default=-1)
    if highest >= config.d_vocab:
        source = getattr(tokenizer, "source", None) or directory / "tokenizer.json"
        raise UserError(f"{source}: the tokenizer has ids up to {highest} ({tokenizer.vocab_size} tokens), but the "
                        f"model's vocabulary (vocab_size {config.d_vocab} in {directory / 'config.json'}) has ids "
                        f"0..{config.d_vocab - 1}, so text could become ids the model cannot read; use the model's "
                        "own tokenizer, or resize the model's embedding to the tokenizer")


def check_device(device: str | torch.device) -> torch.device:
    """The device, or a UserError when it is not a device name or this torch cannot use it (minineo.checks.device)."""
    return checks.device(device, "device")


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
    """The folder's config.json as a Config: MissingFileError without one, UserError naming the file otherwise."""
    path = directory / "config.json"
    if not path.is_file():
        raise MissingFileError(f"no config.json in {directory}; a model folder needs config.json and *.safetensors")
    hf = checks.json_object(path, "model settings")
    try:
        return Config.from_hf(hf)
    except UserError as err:
        raise UserError(f"{path}: {err}") from err


def read_generation_config(directory: Path, config: Config) -> GenerationConfig:
    """generate's defaults as HF's `from_pretrained` sets `model.generation_config`: the folder's
    generation_config.json when it has one, else config.json's ids. Raises UserError for a file that is not a
    JSON object or holds ids that are not whole numbers."""
    path = directory / "generation_config.json"
    if not path.is_file():
        return GenerationConfig.from_config(config)
    hf = checks.json_object(path, "generation settings", "download it again, fix it, or delete it (generate then "
                            "takes its stop ids from config.json)")
    try:
        return GenerationConfig.from_hf(hf)
    except UserError as err:  # the path in place of the bare file name the message starts with
        raise UserError(f"{path}: {str(err).removeprefix('generation_config.json: ')}") from err
