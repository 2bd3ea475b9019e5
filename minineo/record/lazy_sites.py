"""Sites that `run_with_cache` computes on access instead of keeping: exact functions of sites it keeps.

Each one is recomputed from the recorded inputs with the very function the forward pass (or, for
attention, the explicit path) uses, so it is bit-identical to what a run that stores it holds
(tests/test_lazy_sites.py). What this saves at GPT-2-small size, 8x128 tokens: the (q_pos, k_pos)
scores and patterns, and 21 MiB per layer of normalised residuals, resid_mid and mlp.post.

A site that is patched, or whose computation involves a patched site, is stored as usual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Mapping

import torch

from minineo.forward.attention import attention_pattern, attention_scores
from minineo.config import Config
from minineo.forward.functional import ACTIVATION_FUNCTIONS, centred
from minineo.record.sites import HEAD_INPUTS


@dataclass(frozen=True)
class Rule:
    inputs: tuple[str, ...]  # block sites (or global names) it is computed from
    blockers: tuple[str, ...]  # if any of these is patched, the site is stored instead
    forward_exact: bool = False  # the forward must compute it the explicit way even though nobody keeps it


BLOCK_RULES = {
    "ln1.normalized": Rule(("resid_pre", "ln1.scale"), ("ln1.normalized",)),
    "attn.scores": Rule(("attn.q", "attn.k"), ("attn.scores",)),
    "attn.pattern": Rule(("attn.q", "attn.k"), ("attn.scores", "attn.pattern")),
    "resid_mid": Rule(("resid_pre", "attn_out"), ("resid_mid",)),
    "mlp_in": Rule(("resid_pre", "attn_out"), ("resid_mid", "mlp_in")),  # resid_mid, as ln2 reads it
    "ln2.normalized": Rule(("resid_mid", "ln2.scale"), ("ln2.normalized", "mlp_in")),
    "mlp.post": Rule(("mlp.pre",), ("mlp.post",), forward_exact=True),  # HF's GELU formula, not the fused kernel
    # each head's input is resid_pre, repeated along a head axis (a view: no memory); q/k/v read attn_in
    "attn_in": Rule(("resid_pre",), ("attn_in",)),
    "q_input": Rule(("resid_pre",), ("attn_in", "q_input")),
    "k_input": Rule(("resid_pre",), ("attn_in", "k_input")),
    "v_input": Rule(("resid_pre",), ("attn_in", "v_input")),
}


def rule(name: str, config: Config) -> tuple[Rule, str] | None:
    """(the rule, the prefix its inputs are named under) for a lazy-capable site, else None."""
    if name == "ln_final.normalized":
        last = f"blocks.{config.n_layers - 1}."
        return Rule((last + "resid_post", "ln_final.scale"), ("ln_final.normalized",)), ""
    if name.startswith("blocks."):
        _, layer, site = name.split(".", 2)
        if site in BLOCK_RULES:
            return BLOCK_RULES[site], f"blocks.{layer}."
    return None


def inputs(name: str, config: Config) -> list[str]:
    found = rule(name, config)
    assert found is not None, name
    site_rule, prefix = found
    return [prefix + i for i in site_rule.inputs]


def plan(
    keep: Collection[str], patch: Mapping[str, object], config: Config, stored_anyway: Collection[str] = (),
) -> tuple[set[str], set[str], set[str]]:
    """Split the requested names: (stored, lazy, helpers).

    `helpers` are stored only as inputs of a recomputation (not listed in the Cache); `stored`
    includes them. Names in `stored_anyway` are never lazy.
    """
    lazy = set()
    for name in keep:
        if name in stored_anyway:
            continue
        found = rule(name, config)
        if found is not None and not any(found[1] + b in patch for b in found[0].blockers):
            lazy.add(name)
    helpers, todo = set(), list(lazy)
    while todo:
        for needed in inputs(todo.pop(), config):
            if needed not in keep and needed not in helpers:
                helpers.add(needed)  # a helper is always stored, even when it could be lazy itself
    return (set(keep) - lazy) | helpers, lazy, helpers


def forward_exact(lazy: Collection[str], config: Config) -> set[str]:
    """The lazy sites the forward pass must still compute by the explicit formula (see Rule)."""
    return {name for name in lazy if rule(name, config)[0].forward_exact}


def recompute(
    name: str, get: Callable[[str], torch.Tensor], config: Config, attention_masks: list[torch.Tensor | None],
) -> torch.Tensor:
    """The value of lazy site `name`, from `get(input name)`."""
    site = name.split(".", 2)[2] if name.startswith("blocks.") else name
    values = [get(n) for n in inputs(name, config)]
    if site.endswith("normalized"):
        x, scale = values  # (batch, pos, d_model), (batch, pos, 1)
        return centred(x) / scale
    if site in ("resid_mid", "mlp_in"):
        resid_pre, attn_out = values
        return resid_pre + attn_out
    if site in HEAD_INPUTS:
        (resid_pre,) = values  # (batch, pos, d_model)
        return resid_pre[:, :, None].expand(-1, -1, config.n_heads, -1)  # (batch, pos, head, d_model)
    if site == "mlp.post":
        return ACTIVATION_FUNCTIONS[config.act_fn](values[0])
    layer = int(name.split(".")[1])
    q, k = values  # (batch, pos, head, d_head)
    scores = attention_scores(q, k, attention_masks[layer], config.attn_scales[layer], config.upcast_attn)
    return attention_pattern(scores, q.dtype) if site == "attn.pattern" else scores  # (batch, head, q_pos, k_pos)
