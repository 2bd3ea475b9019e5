"""The activation-name -> shape table: one source for the cache, the docs and the errors.

Names are TransformerLens's hook names without `hook_`; the `hook_` spellings resolve too.
"""

from __future__ import annotations

import difflib
import re

from minineo import checks
from minineo.config import Config
from minineo.errors import UnknownNameError, WrongTypeError

# name template -> shape in named dimensions ({L} is the layer)
GLOBAL_SITES = {
    "embed": ("batch", "pos", "d_model"),
    "pos_embed": ("batch", "pos", "d_model"),
    "ln_final.scale": ("batch", "pos", "1"),
    "ln_final.normalized": ("batch", "pos", "d_model"),
    "unembed.in": ("batch", "pos", "d_model"),  # ln_final's output, after its weight and bias
    "logits": ("batch", "pos", "d_vocab"),
}
BLOCK_SITES = {
    "resid_pre": ("batch", "pos", "d_model"),
    # each head's own copy of resid_pre, before ln1 (TransformerLens's use_attn_in / use_split_qkv_input)
    "attn_in": ("batch", "pos", "head", "d_model"),
    "q_input": ("batch", "pos", "head", "d_model"),  # what each head's query reads (from attn_in)
    "k_input": ("batch", "pos", "head", "d_model"),
    "v_input": ("batch", "pos", "head", "d_model"),
    "ln1.scale": ("batch", "pos", "1"),
    "ln1.normalized": ("batch", "pos", "d_model"),
    "attn.q": ("batch", "pos", "head", "d_head"),
    "attn.k": ("batch", "pos", "head", "d_head"),
    "attn.v": ("batch", "pos", "head", "d_head"),
    "attn.scores": ("batch", "head", "q_pos", "k_pos"),
    "attn.pattern": ("batch", "head", "q_pos", "k_pos"),
    "attn.z": ("batch", "pos", "head", "d_head"),
    "attn.result": ("batch", "pos", "head", "d_model"),
    "attn_out": ("batch", "pos", "d_model"),
    "resid_mid": ("batch", "pos", "d_model"),
    "mlp_in": ("batch", "pos", "d_model"),  # the MLP's input before ln2 (use_hook_mlp_in): does not flow on
    "ln2.scale": ("batch", "pos", "1"),
    "ln2.normalized": ("batch", "pos", "d_model"),
    "mlp.pre": ("batch", "pos", "d_mlp"),
    "mlp.post": ("batch", "pos", "d_mlp"),
    "mlp_out": ("batch", "pos", "d_model"),
    "resid_post": ("batch", "pos", "d_model"),
}
# Sites left out of a full run_with_cache unless named: each head's d_model-wide write is memory-hungry, and
# the input sites are TransformerLens's optional hooks (off by default there too; computed on access here).
ON_REQUEST = {"attn.result", "attn_in", "q_input", "k_input", "v_input", "mlp_in"}
HEAD_INPUTS = ("attn_in", "q_input", "k_input", "v_input")  # per-head input sites, in forward order

_ALIASES = {"attn.attn_scores": "attn.scores"}
_GLOBAL_ALIASES = {"unembed.out": "logits"}  # TransformerLens's unembed.hook_out
_BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


@checks.typed
def all_names(config: Config, include_on_request: bool = False) -> list[str]:
    """Every site name of this model, in forward order."""
    names = ["embed", "pos_embed"]
    for layer in range(config.n_layers):
        names += [f"blocks.{layer}.{site}" for site in BLOCK_SITES if include_on_request or site not in ON_REQUEST]
    return names + ["ln_final.scale", "ln_final.normalized", "unembed.in", "logits"]


def canonical(name: str) -> str:
    """Strip TransformerLens's `hook_` prefixes and map its aliases: 'blocks.0.attn.hook_pattern' -> '...pattern'."""
    name = ".".join(part.removeprefix("hook_") for part in name.split("."))
    match = _BLOCK_NAME.match(name)
    if match:
        site = _ALIASES.get(match.group(2), match.group(2))
        return f"blocks.{match.group(1)}.{site}"
    return _GLOBAL_ALIASES.get(name, name)


def block_site(short: str) -> str:
    """TransformerLens's short site names: 'pattern' -> 'attn.pattern', 'resid_pre' -> 'resid_pre'."""
    short = _ALIASES.get("attn." + canonical(short), canonical(short)).removeprefix("attn.") if short else short
    if short in BLOCK_SITES:
        return short
    candidates = [site for site in BLOCK_SITES if site.endswith("." + short)]
    if len(candidates) != 1:
        raise UnknownNameError(f"{short!r} does not name one block site; give one of {list(BLOCK_SITES)}")
    return candidates[0]


def resolve(name: str, config: Config) -> str:
    """The canonical name, or a KeyError that lists close matches."""
    if not isinstance(name, str):
        raise WrongTypeError(f"activation names are strings, got {type(name).__name__}: {name!r}")
    canon = canonical(name)
    match = _BLOCK_NAME.match(canon)
    if match and match.group(2) in BLOCK_SITES and int(match.group(1)) < config.n_layers:
        return canon
    if canon in GLOBAL_SITES:
        return canon
    if match and match.group(2) in BLOCK_SITES:
        raise UnknownNameError(f"{name!r}: layer {match.group(1)} does not exist; this model has layers 0..{config.n_layers - 1}")
    close = difflib.get_close_matches(canon, all_names(config, include_on_request=True), n=5, cutoff=0.6)
    hint = f" Did you mean one of {close}?" if close else ""
    raise UnknownNameError(f"unknown activation name {name!r}.{hint} See minineo.record.sites for the full table.")


def shape_of(name: str, config: Config, batch: int, pos: int) -> tuple[int, ...]:
    """The concrete shape of a site for an input of (batch, pos)."""
    match = _BLOCK_NAME.match(name)
    dims = BLOCK_SITES[match.group(2)] if match else GLOBAL_SITES[name]
    sizes = {"batch": batch, "pos": pos, "q_pos": pos, "k_pos": pos, "head": config.n_heads,
             "d_head": config.d_head, "d_model": config.d_model, "d_mlp": config.d_mlp,
             "d_vocab": config.d_vocab, "1": 1}
    return tuple(sizes[d] for d in dims)
