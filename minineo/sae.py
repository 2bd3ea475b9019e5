"""Sparse autoencoders saved by SAELens: `cfg.json` + `sae_weights.safetensors`, read without the package.

    sae = minineo.sae.load("path/to/sae")       # the folder SAELens's save_model / save_inference_model writes
    features = sae.encode(x)                     # (..., d_in) -> (..., d_sae)
    x_hat = sae.decode(features, like=x)         # (..., d_sae) -> (..., d_in); `like` only for normalised SAEs
    logits = model(tokens, patch={sae.hook_name: sae.reconstruct})   # the SAE spliced in at its site

The formulas are SAELens 6's (sae_lens/saes/{sae,standard_sae,topk_sae,jumprelu_sae}.py), checked
against the package's own outputs (tests/data/saelens_package/):

    x' = normalize(x) - b_dec * apply_b_dec_to_input
    h  = x' @ W_enc + b_enc                                   (topk with rescale_acts_by_decoder_norm: h * |W_dec|)
    f  = relu(h)  (standard) | relu(h) * (h > threshold)  (jumprelu) | relu of the top k of h, 0 elsewhere  (topk)
    x_hat = denormalize(f @ W_dec + b_dec)                    (rescaled topk: f / |W_dec| @ W_dec + b_dec)

normalize_activations: "none"; "layer_norm" (x - mean over d_in, divided by its std + 1e-5, torch.std's
unbiased std; undone as * std + mean); "constant_norm_rescale" (x * sqrt(d_in) / |x|; undone by the same
factor); "expected_average_only_in" is read as the package reads a folder (no run-time change: SAELens
folds its scaling factor into the weights when training ends). "covariance_whitening", hook head indices
and other architectures are refused. An SAE of `attn.z` (reshape_activations "hook_z") takes and gives
(..., head, d_head), flattened to head * d_head inside, as SAELens does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from minineo import checks
from minineo.errors import MissingFileError, UserError, WrongTypeError

if TYPE_CHECKING:  # annotations only (@checks.typed knows minineo's classes by name)
    from minineo.forward.model import Model

__all__ = ["SAE", "load"]

CONFIG, WEIGHTS = "cfg.json", "sae_weights.safetensors"
ARCHITECTURES = ("standard", "topk", "jumprelu")
NORMALIZATIONS = ("none", "expected_average_only_in", "layer_norm", "constant_norm_rescale")
LAYER_NORM_EPS = 1e-5  # SAELens's run_time_activation_ln_in default


class SAE(nn.Module):
    """One SAE: W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in), b_dec (d_in,), threshold (d_sae,) for jumprelu."""

    @checks.typed
    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor, *,
                 architecture: str = "standard", hook_name: str | None = None, apply_b_dec_to_input: bool = True,
                 normalize_activations: str = "none", k: int | None = None, threshold: torch.Tensor | None = None,
                 rescale_acts_by_decoder_norm: bool = False, reshape_activations: str = "none"):
        super().__init__()
        architecture = checks.one_of(architecture, "architecture", ARCHITECTURES)
        normalize_activations = checks.one_of(normalize_activations, "normalize_activations", NORMALIZATIONS)
        reshape_activations = checks.one_of(reshape_activations, "reshape_activations", ("none", "hook_z"))
        W_enc = checks.tensor(W_enc, "W_enc", (None, None), finite=True, dims="(d_in, d_sae)")
        d_in, d_sae = W_enc.shape
        if not W_enc.is_floating_point() or 0 in (d_in, d_sae):
            raise UserError(f"W_enc must be a non-empty float tensor (d_in, d_sae), got {checks.describe(W_enc)}")
        for name, value, shape, dims in (("b_enc", b_enc, (d_sae,), "(d_sae,)"), ("W_dec", W_dec, (d_sae, d_in), "(d_sae, d_in)"),
                                         ("b_dec", b_dec, (d_in,), "(d_in,)")):
            checks.tensor(value, name, shape, dtype=W_enc.dtype, finite=True, dims=f"{dims} with W_enc's d_in={d_in}, "
                          f"d_sae={d_sae}")
        if architecture == "topk":
            k = checks.count(k, "k", maximum=d_sae, fix="a topk SAE keeps the k largest features")
        if architecture == "jumprelu":
            threshold = checks.tensor(threshold, "threshold", (d_sae,), dtype=W_enc.dtype, finite=True,
                                      dims=f"(d_sae,) = ({d_sae},), a jumprelu SAE's")
        self.W_enc, self.b_enc = nn.Parameter(W_enc, requires_grad=False), nn.Parameter(b_enc, requires_grad=False)
        self.W_dec, self.b_dec = nn.Parameter(W_dec, requires_grad=False), nn.Parameter(b_dec, requires_grad=False)
        self.threshold = None if threshold is None else nn.Parameter(threshold, requires_grad=False)
        self.architecture, self.hook_name, self.k = architecture, hook_name, k
        self.apply_b_dec_to_input, self.normalize_activations = apply_b_dec_to_input, normalize_activations
        self.rescale_acts_by_decoder_norm, self.reshape_activations = rescale_acts_by_decoder_norm, reshape_activations
        self.metadata: dict = {}

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @checks.typed
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations (..., d_sae) of activations x (..., d_in) (hook_z SAEs: (..., head, d_head))."""
        x = self._flat(x).to(self.W_enc.dtype)
        x, _ = self._normalize(x)
        hidden = (x - self.b_dec * self.apply_b_dec_to_input) @ self.W_enc + self.b_enc  # (..., d_sae)
        if self.architecture == "standard":
            return F.relu(hidden)
        if self.architecture == "jumprelu":
            return F.relu(hidden) * (hidden > self.threshold).to(hidden.dtype)
        if self.rescale_acts_by_decoder_norm:
            hidden = hidden * self.W_dec.norm(dim=-1)
        values, indices = torch.topk(hidden, k=self.k, dim=-1, sorted=False)
        return torch.zeros_like(hidden).scatter_(-1, indices, values.relu())

    @checks.typed
    def decode(self, features: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """The reconstruction (..., d_in) of `features` (..., d_sae).

        A normalising SAE (layer_norm, constant_norm_rescale) undoes the normalisation of the input it
        encoded: pass that input as `like` (SAELens keeps it in the module between encode and decode).
        """
        if not features.is_floating_point() or features.ndim < 1 or features.shape[-1] != self.d_sae:
            raise UserError(f"features must be float feature activations (..., d_sae={self.d_sae}) from sae.encode, "
                            f"got {checks.describe(features)}")
        if self.rescale_acts_by_decoder_norm:
            features = features * (1 / self.W_dec.norm(dim=-1))
        out = features @ self.W_dec + self.b_dec  # (..., d_in)
        if self.normalize_activations in ("layer_norm", "constant_norm_rescale"):
            if like is None:
                raise UserError(f"this SAE normalises its input ({self.normalize_activations}), so decode needs "
                                "that input to undo it: call sae.decode(features, like=x), or sae.reconstruct(x)")
            _, undo = self._normalize(self._flat(like).to(out.dtype))
            out = undo(out)
        return self._unflat(out, like)

    @checks.typed
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x), like=x), in x's shape and dtype: the function to splice in with `patch=`."""
        return self.decode(self.encode(x), like=x).to(x.dtype).reshape(x.shape)

    def _normalize(self, x: torch.Tensor):
        """(normalised x, the function that undoes it on a reconstruction)."""
        if self.normalize_activations == "layer_norm":
            mean = x.mean(dim=-1, keepdim=True)
            centred = x - mean
            std = centred.std(dim=-1, keepdim=True)
            return centred / (std + LAYER_NORM_EPS), lambda out: out * std + mean
        if self.normalize_activations == "constant_norm_rescale":
            coeff = math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True)
            return x * coeff, lambda out: out / coeff
        return x, lambda out: out

    def _flat(self, x: torch.Tensor, name: str = "x") -> torch.Tensor:
        if not x.is_floating_point() or x.ndim < 1:
            raise WrongTypeError(f"{name} must be float activations of the SAE's site {self.hook_name}, got "
                                 f"{checks.describe(x)}")
        if self.reshape_activations == "hook_z" and x.shape[-1] != self.d_in:
            x = x.flatten(-2)  # (..., head, d_head) -> (..., head * d_head)
        if x.shape[-1] != self.d_in:
            raise UserError(f"{name}: the SAE reads vectors of d_in={self.d_in} (its site: {self.hook_name}), got shape "
                            f"{tuple(x.shape)}; give activations of its site")
        return x

    def _unflat(self, out: torch.Tensor, like: torch.Tensor | None) -> torch.Tensor:
        if self.reshape_activations == "hook_z" and like is not None and like.shape[-1] != self.d_in:
            return out.unflatten(-1, like.shape[-2:])
        return out

    @checks.typed
    def check_model(self, model: Model) -> str:
        """The canonical name of this SAE's site in `model`, or a UserError naming both sides when the SAE was
        made for another model: a site the model lacks, a site width other than d_in, or another model named
        in its metadata (SAELens's `model_name`, compared with the model's hub id or folder name)."""
        from minineo.record import sites

        if self.hook_name is None:
            raise UserError("the SAE does not name its site (hook_name in cfg.json); set sae.hook_name, "
                            "e.g. 'blocks.6.hook_resid_post'")
        try:
            site = sites.resolve(self.hook_name, model.config)
        except KeyError as err:
            raise UserError(f"the SAE's site {self.hook_name!r} is not a site of this model: {err.args[0]}") from None
        shape = sites.shape_of(site, model.config, 1, 1)[2:]  # the per-position part: (d,) or (head, d)
        width = math.prod(shape) if self.reshape_activations == "hook_z" else shape[-1]
        recorded = self.metadata.get("model_name")
        names = model_names(model)
        if width != self.d_in:
            raise UserError(f"{self} reads vectors of width d_in={self.d_in}, but {site} of "
                            f"{names[0] if names else 'this model'} is {width} wide"
                            f"{f' (the SAE was trained on {recorded})' if recorded else ''}; use an SAE made for "
                            "this model and site")
        known = {_alias(recorded), _alias(Path(recorded).name)} if recorded else set()  # a hub id, or a folder
        if recorded and names and not known & {_alias(n) for n in names}:
            raise UserError(f"{self} was trained on the model {recorded!r} (its cfg.json's metadata.model_name), but "
                            f"this model is {names[0]!r}; use the SAE made for this model (or, if it is the same "
                            "model under another name, set sae.metadata['model_name'] to its name)")
        return site

    def __repr__(self) -> str:
        extra = f", k={self.k}" if self.architecture == "topk" else ""
        return f"SAE({self.architecture}, {self.hook_name}, d_in={self.d_in}, d_sae={self.d_sae}{extra})"


# TransformerLens's names of hub models (SAELens records these as model_name), lower-cased, to the hub's id
_ALIASES = {"gpt2-small": "gpt2", "gpt-neo-125m": "eleutherai/gpt-neo-125m"}


def _alias(name: str) -> str:
    return _ALIASES.get(name.lower(), name.lower())


def model_names(model) -> list[str]:
    """The names a model goes by: its hub id (from the hub cache's models--org--name folder) or its folder's name."""
    source = getattr(model, "source", None)
    if not source:
        return []
    parts = Path(source).parts
    hub = [p for p in parts if p.startswith("models--")]
    if hub:
        repo = hub[-1].removeprefix("models--").replace("--", "/")
        return [repo, repo.split("/")[-1]]
    return [Path(source).name]


@checks.typed
def load(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> SAE:
    """The SAE in an SAELens folder (cfg.json + sae_weights.safetensors); see the module docstring.

    dtype: default the cfg's (float32 when it names none).
    """
    device = checks.device(device)
    if dtype is not None:
        dtype = checks.dtype(dtype, "dtype")
    folder = Path(folder).expanduser()
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise MissingFileError(f"{folder} is not an SAELens SAE folder: it needs {CONFIG} and {WEIGHTS} (what "
                               "SAELens's save_model writes); check the path")
    cfg = checks.json_object(folder / CONFIG, "SAE settings", "save or download the SAE again")
    try:
        tensors = load_file(str(folder / WEIGHTS))
    except (OSError, ValueError, SafetensorError) as err:
        raise UserError(f"the SAE in {folder} is incomplete or corrupt ({err}); save or download it again") from err
    options = _options(cfg, folder)
    if "log_threshold" in tensors:  # older JumpReLU checkpoints, converted as SAELens does
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    wanted = {"W_enc", "b_enc", "W_dec", "b_dec"} | ({"threshold"} if options["architecture"] == "jumprelu" else set())
    missing, extra = wanted - set(tensors), set(tensors) - wanted
    if missing or extra:
        raise UserError(f"{folder / WEIGHTS} holds {sorted(tensors)}, but a {options['architecture']} SAE has exactly "
                        f"{sorted(wanted)} (missing {sorted(missing)}, unexpected {sorted(extra)}); this SAE's "
                        "architecture is not supported, or the file is damaged")
    d_in, d_sae = (checks.json_integer(cfg, key, str(folder / CONFIG), low=1) for key in ("d_in", "d_sae"))
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,), "threshold": (d_sae,)}
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != shapes[name]:
            raise UserError(f"{folder / WEIGHTS}: {name} has shape {tuple(tensor.shape)}, but {CONFIG} says "
                            f"d_in={d_in}, d_sae={d_sae} (expected {shapes[name]}); the folder is damaged")
    _check_values(tensors, folder)
    if dtype is None:  # an unknown name ("float33") was read as float32 without a word
        named = cfg.get("dtype", "float32")
        if not isinstance(named, str) or named.removeprefix("torch.") not in checks.DTYPES:
            raise UserError(f"{folder / CONFIG}: dtype {named!r} is not a floating-point dtype; an SAE computes in "
                            f"{', '.join(checks.DTYPES)} (set dtype in cfg.json, or pass dtype=)")
        dtype = checks.DTYPES[named.removeprefix("torch.")]
    tensors = {name: t.to(device=device, dtype=dtype) for name, t in tensors.items()}
    if options["architecture"] == "topk" and not 1 <= options["k"] <= d_sae:
        raise UserError(f"{folder / CONFIG}: k={options['k']} must be between 1 and d_sae={d_sae}")
    sae = SAE(tensors["W_enc"], tensors["b_enc"], tensors["W_dec"], tensors["b_dec"],
              threshold=tensors.get("threshold"), **options)
    sae.metadata = dict(cfg.get("metadata") or {})  # SAELens's record: model_name, context_size, ...
    return sae


def _check_values(tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """Integer-typed or non-finite weights are refused, as a model's are (minineo.load): every feature would be
    truncated or NaN."""
    checks.floating_tensors(tensors, folder / WEIGHTS, "an SAE's weights are float32 / float16 / bfloat16: save it "
                            "again")
    bad = [name for name, t in tensors.items() if not bool(t.isfinite().all())]
    if bad:
        raise UserError(f"{folder / WEIGHTS}: {', '.join(bad)} hold NaN or inf values, so every feature and "
                        "reconstruction would be NaN; train or download the SAE again")


def _options(cfg: dict, folder: Path) -> dict:
    """The SAE's options from its cfg.json (SAELens 6's layout; pre-6 names as SAELens maps them)."""
    metadata = cfg.get("metadata") or {}
    architecture = cfg.get("architecture", "standard")
    activation = cfg.get("activation_fn", cfg.get("activation_fn_str", "relu"))
    k = cfg.get("k")
    if architecture == "standard" and activation == "topk":  # SAELens < 6
        kwargs = cfg.get("activation_fn_kwargs") or {}
        architecture, k = "topk", kwargs.get("k") if isinstance(kwargs, dict) else None
    elif architecture == "standard" and activation not in ("relu", None):
        raise UserError(f"{folder / CONFIG}: activation {activation!r} is not supported; minineo reads ReLU "
                        "(standard), topk and jumprelu SAEs")
    if architecture not in ARCHITECTURES:
        raise UserError(f"{folder / CONFIG}: architecture {architecture!r} is not supported; minineo reads "
                        f"{', '.join(ARCHITECTURES)} SAEs (convert it with SAELens, or use SAELens itself)")
    normalize = cfg.get("normalize_activations", "none")
    if isinstance(normalize, bool) or normalize is None:  # SAELens < 6 wrote a flag
        normalize = "expected_average_only_in" if normalize else "none"
    if normalize not in NORMALIZATIONS:
        raise UserError(f"{folder / CONFIG}: normalize_activations {normalize!r} is not supported (only "
                        f"{', '.join(NORMALIZATIONS)}); fold it into the weights with SAELens first")
    if (cfg.get("hook_head_index", metadata.get("hook_head_index"))) is not None:
        raise UserError(f"{folder / CONFIG}: SAEs of one head (hook_head_index) are not supported")
    hook_name = metadata.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    if hook_name is not None and not isinstance(hook_name, str):
        raise UserError(f"{folder / CONFIG}: hook_name {hook_name!r} is not a site name (a string such as "
                        "'blocks.6.hook_resid_post')")
    reshape = cfg.get("reshape_activations") or ("hook_z" if hook_name and hook_name.endswith("hook_z") else "none")
    if reshape not in ("none", "hook_z"):
        raise UserError(f"{folder / CONFIG}: reshape_activations {reshape!r} is not supported")
    if architecture == "topk":  # a bool is no k (isinstance(True, int) let it through)
        k = checks.json_integer({"k": k}, "k", str(folder / CONFIG), low=1)
    return dict(architecture=architecture, hook_name=hook_name, apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                normalize_activations=normalize, k=k if architecture == "topk" else None,
                rescale_acts_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
                reshape_activations=reshape)
