"""Tuned-lens folders on disk: minineo's own, and the `tuned-lens` package's published ones.

minineo's folder: `lens.safetensors` (`weight` (layer, d_model, d_model) as nn.Linear's (out, in),
optional `bias` (layer, d_model)) and `lens.json` (format, version, the model's identity and shapes).

The package's folder (tuned_lens 0.2 `TunedLens.save`): `config.json` (base_model_name_or_path, d_model,
num_hidden_layers, bias, base_model_revision, unembed_hash, lens_type) and `params.pt`, written by
`torch.save(lens.layer_translators.state_dict())`: keys `{i}.weight` (d_model, d_model) and `{i}.bias`
(d_model) for i < num_hidden_layers. It is read with `torch.load(weights_only=True)`: plain tensors
only, never arbitrary pickled objects.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from minineo import checks, outputs
from minineo.config import Config
from minineo.errors import UserError

FORMAT, VERSION = "minineo-tuned-lens", 1
WEIGHTS, META = "lens.safetensors", "lens.json"
PACKAGE_CONFIG, PACKAGE_PARAMS = "config.json", "params.pt"


def check_output(path: str | Path) -> None:
    """Refuse an output path that holds something other than a lens folder (which would be replaced)."""
    path = Path(path)
    is_lens = path.is_dir() and (not any(path.iterdir()) or (path / META).is_file()
                                 or {p.name for p in path.iterdir()} <= {PACKAGE_CONFIG, PACKAGE_PARAMS})
    if path.exists() and not is_lens:
        raise UserError(f"{path} exists and is not a minineo tuned-lens folder (nor a tuned-lens package one); "
                        "choose another output path")


def write_lens(path: Path, tensors: dict[str, torch.Tensor], identity: dict) -> None:
    """minineo's folder (lens.safetensors + lens.json), written whole or not at all."""
    _refuse_non_finite(tensors, path)
    meta = {"format": FORMAT, "version": VERSION, **identity, "bias": "bias" in tensors}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")

    _write_folder(path, write)


def write_package_lens(path: Path, tensors: dict[str, torch.Tensor], identity: dict, unembed_hash: str | None) -> None:
    """The tuned-lens package's folder (config.json + params.pt, as its TunedLens.save writes them), whole or not at all.

    params.pt holds `{i}.weight` (d_model, d_model) and `{i}.bias` (d_model,) for each layer: the package's
    translators always have a bias (its constructor zeroes one), so a lens without one is written with zeros.
    """
    _refuse_non_finite(tensors, path)
    weight = tensors["weight"]
    bias = tensors.get("bias", torch.zeros(weight.shape[:2], dtype=weight.dtype))
    state = {}
    for i in range(weight.shape[0]):
        state[f"{i}.weight"], state[f"{i}.bias"] = weight[i].clone(), bias[i].clone()
    config = {"base_model_name_or_path": identity.get("model") or "", "d_model": identity["d_model"],
              "num_hidden_layers": identity["n_layers"], "bias": True, "base_model_revision": None,
              "unembed_hash": unembed_hash, "lens_type": "linear_tuned_lens"}

    def write(tmp: Path) -> None:
        torch.save(state, tmp / PACKAGE_PARAMS)
        (tmp / PACKAGE_CONFIG).write_text(json.dumps(config))

    _write_folder(path, write)


def _refuse_non_finite(tensors: dict[str, torch.Tensor], path: Path) -> None:
    bad = [name for name, tensor in tensors.items() if not bool(tensor.isfinite().all())]
    if bad:  # e.g. trained at lr=nan or diverged: such a lens would print KL nan, so it is never written
        raise UserError(f"the tuned lens's {' and '.join(bad)} hold NaN or inf (training diverged: lower the learning "
                        f"rate or check the corpus); nothing was written to {path}")


def _write_folder(path: Path, write) -> None:
    """Write the folder `path` whole or not at all; an older lens there is replaced only once the new one is complete."""
    check_output(path)
    with outputs.claim(path, "the tuned-lens folder"):  # one writer at a time: the renames below are not atomic as a pair
        _replace_folder(path, write)


def _replace_folder(path: Path, write) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = path.with_name(f".{path.name}.old")
    try:
        write(tmp)
        tmp.chmod(outputs.normal_mode(folder=True))  # mkdtemp's private 0700 is for the temporary folder only
        for file in tmp.iterdir():
            file.chmod(outputs.normal_mode())
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def read_lens(path: Path, config: Config) -> tuple[dict, dict[str, torch.Tensor]]:
    """(identity, {"weight": (layer, d_model, d_model), "bias": (layer, d_model)}) in float32, checked against `config`."""
    if (path / META).is_file():
        meta, tensors = _read_minineo(path)
    elif (path / PACKAGE_CONFIG).is_file() and (path / PACKAGE_PARAMS).is_file():
        meta, tensors = _read_package(path)
    else:
        raise UserError(f"{path} is not a tuned-lens folder: it needs {META} + {WEIGHTS} (`minineo tune-lens`) or "
                        f"{PACKAGE_CONFIG} + {PACKAGE_PARAMS} (the tuned-lens package); check the path")
    if (meta["n_layers"], meta["d_model"]) != (config.n_layers, config.d_model):
        raise UserError(f"the tuned lens in {path} was made for a model with {meta['n_layers']} layers of width "
                        f"{meta['d_model']} ({meta.get('model') or 'unnamed'}), but this model has {config.n_layers} "
                        f"layers of width {config.d_model}; use the lens trained for this model, or train one with "
                        "`minineo tune-lens`")
    bad = [name for name, tensor in tensors.items() if not bool(tensor.isfinite().all())]
    if bad:
        raise UserError(f"the tuned lens in {path} holds NaN or inf in its {' and '.join(bad)}, so every KL would be "
                        "nan; train it again (with a lower learning rate)")
    expected = {"weight": (config.n_layers, config.d_model, config.d_model), "bias": (config.n_layers, config.d_model)}
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != expected[name]:
            raise UserError(f"{path}: the lens's {name} has shape {tuple(tensor.shape)}, expected {expected[name]}; "
                            "the lens file is damaged: train or download it again")
    return meta, tensors


def _read_minineo(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        meta = json.loads((path / META).read_text())
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{META} does not describe a {FORMAT}")
        for key in ("n_layers", "d_model"):  # a UserError is a ValueError: said as "incomplete or corrupt (...)"
            checks.json_integer(meta, key, META, low=1)
        tensors = load_file(str(path / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as err:  # JSONDecodeError is a ValueError
        raise UserError(f"the tuned lens in {path} is incomplete or corrupt ({err}); train or download it "
                        "again") from err
    if meta.get("version", 0) > VERSION:
        raise UserError(f"{path / META} is version {meta['version']} of the lens format, this minineo reads up to "
                        f"version {VERSION}: upgrade minineo")
    if "weight" not in tensors or set(tensors) - {"weight", "bias"}:
        raise UserError(f"{path / WEIGHTS} holds {sorted(tensors)}, not a lens's weight (and bias); train it again")
    _refuse_integer(tensors, path / WEIGHTS)
    return meta, {name: t.float() for name, t in tensors.items()}


def _refuse_integer(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """Integer-typed translators are refused, as a model's or an SAE's weights are (a cast would hide the damage)."""
    checks.floating_tensors(tensors, file, "the lens file is damaged: train or download it again")


def _read_package(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        config = json.loads((path / PACKAGE_CONFIG).read_text())
        n_layers, d_model = int(config["num_hidden_layers"]), int(config["d_model"])
        state = torch.load(path / PACKAGE_PARAMS, map_location="cpu", weights_only=True)
    except Exception as err:  # a damaged zip or pickle raises many types; weights_only refuses code either way
        raise UserError(f"the tuned-lens package folder {path} is corrupt or not a lens ({type(err).__name__}: "
                        f"{err}); download it again") from err
    if config.get("lens_type", "linear_tuned_lens") != "linear_tuned_lens":
        raise UserError(f"{path}: lens_type {config['lens_type']!r} is not supported, only linear_tuned_lens")
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise UserError(f"{path / PACKAGE_PARAMS} does not hold a state dict of tensors; download it again")
    _refuse_integer(state, path / PACKAGE_PARAMS)
    bias = bool(config.get("bias", True))
    wanted = {f"{i}.{kind}" for i in range(n_layers) for kind in (("weight", "bias") if bias else ("weight",))}
    missing, extra = wanted - set(state), set(state) - wanted
    if missing or extra:
        raise UserError(f"{path / PACKAGE_PARAMS} does not match its {PACKAGE_CONFIG} (missing {sorted(missing)[:3]}, "
                        f"unexpected {sorted(extra)[:3]}); download the lens again")
    try:
        tensors = {kind: torch.stack([state[f"{i}.{kind}"].float() for i in range(n_layers)])
                   for kind in (("weight", "bias") if bias else ("weight",))}
    except RuntimeError as err:
        raise UserError(f"{path / PACKAGE_PARAMS}: translators of different shapes ({err}); download it again") from err
    return {"model": config.get("base_model_name_or_path"), "n_layers": n_layers, "d_model": d_model,
            "unembed_hash": config.get("unembed_hash")}, tensors
