"""Indirect-object identification: prompts from templates and names (with the ABC counterfactual), the
IO - S logit difference, and per-head direct attribution and mean-ablation effects on it."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from minineo.analysis.ablation import head_ablation_effects
from minineo.analysis.attribution import dla_sites, head_logit_attribution
from minineo import progress
from minineo.errors import UserError
from minineo.forward.model import Model

TEMPLATES = [
    "When {A} and {B} went to the {place}, {S} gave {obj} to",
    "After {A} and {B} met at the {place}, {S} passed {obj} to",
    "Then, {A} and {B} had a long day at the {place}. {S} handed {obj} to",
    "{A} and {B} walked to the {place}. Later {S} sent {obj} to",
]
NAMES = ["Mary", "John", "Alice", "Bob", "Tom", "Anna", "Paul", "Kate", "Mark", "Lucy", "Sam", "Emma"]
PLACES = ["store", "park", "school", "garden", "office", "beach", "market", "station"]
OBJECTS = ["a drink", "a book", "the keys", "a letter", "an apple", "the ball", "a gift", "the bag"]


@dataclass
class IOIDataset:
    prompts: list[str]  # "When Mary and John went to the store, John gave a drink to"
    abc_prompts: list[str]  # the same with the subject's second mention replaced by a third name
    io_names: list[str]
    s_names: list[str]
    tokens: torch.Tensor  # (batch, pos), left-padded
    attention_mask: torch.Tensor
    abc_tokens: torch.Tensor
    abc_attention_mask: torch.Tensor
    io_tokens: torch.Tensor  # (batch,): the first token of the indirect object's name after the prompt
    s_tokens: torch.Tensor  # (batch,): the same for the subject


def ioi_dataset(model: Model, n: int = 32, seed: int = 0, templates: list[str] = TEMPLATES,
                names: list[str] = NAMES, abba_only: bool = False) -> IOIDataset:
    """`n` prompts; half ABBA (IO named first), half BABA (S named first) unless `abba_only`."""
    rng = random.Random(seed)
    tokenizer = model._require_tokenizer()
    # Byte-level vocabularies split " Mary" into " " + "M": then the space belongs in the prompt.
    space_in_prompt = tokenizer.encode(" " + names[0])[0] == tokenizer.encode(" " + names[1])[0]
    sep = "" if space_in_prompt else " "
    first_token = {name: tokenizer.encode(sep + name)[0] for name in names}
    if len(set(first_token.values())) < 3:
        raise UserError("IOI needs at least 3 names whose first tokens differ")
    prompts, abc, ios, ss = [], [], [], []
    for i in range(n):
        io, s, c = rng.sample(names, 3)
        while len({first_token[io], first_token[s], first_token[c]}) < 3:  # the metric compares first tokens
            io, s, c = rng.sample(names, 3)
        template, place, obj = rng.choice(templates), rng.choice(PLACES), rng.choice(OBJECTS)
        first, second = (io, s) if abba_only or i % 2 == 0 else (s, io)
        tail = " " if space_in_prompt else ""
        prompts.append(template.format(A=first, B=second, S=s, place=place, obj=obj) + tail)
        abc.append(template.format(A=first, B=second, S=c, place=place, obj=obj) + tail)
        ios.append(io)
        ss.append(s)
    io_tokens = torch.tensor([first_token[x] for x in ios])
    s_tokens = torch.tensor([first_token[x] for x in ss])
    tokens, mask = tokenizer.encode_batch(prompts, padding_side="left")
    abc_tokens, abc_mask = tokenizer.encode_batch(abc, padding_side="left")
    device = model.W_E.device
    return IOIDataset(prompts, abc, ios, ss, tokens.to(device), mask.to(device), abc_tokens.to(device),
                      abc_mask.to(device), io_tokens.to(device), s_tokens.to(device))


def logit_diff(logits: torch.Tensor, data: IOIDataset) -> torch.Tensor:
    """Mean over prompts of logit(IO) - logit(S) at the last position."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    last = logits[:, -1]
    return (last[rows, data.io_tokens] - last[rows, data.s_tokens]).mean()


@dataclass
class IOIResult:
    logit_diff: float  # mean IO - S logit difference
    abc_logit_diff: float  # the same on the ABC prompts (no repeated name: near 0 for a real IOI circuit)
    accuracy: float  # share of prompts with IO above S
    head_dla: torch.Tensor  # (layer, head) direct effect on IO - S
    head_ablation: torch.Tensor  # (layer, head) change in logit difference when the head is mean-ablated (ABC mean)


def ioi_analysis(model: Model, data: IOIDataset, ablation: bool = True) -> IOIResult:
    with progress.task(f"IOI: {len(data.prompts)} prompts and their ABC counterparts, per-head DLA"):
        logits, cache = model.run_with_cache(data.tokens, names=dla_sites, attention_mask=data.attention_mask)
        abc_logits = model(data.abc_tokens, attention_mask=data.abc_attention_mask)
    rows = torch.arange(logits.shape[0], device=logits.device)
    diffs = logits[rows, -1, data.io_tokens] - logits[rows, -1, data.s_tokens]
    dla = head_logit_attribution(model, cache, logits, data.io_tokens, data.s_tokens, -1)
    effects = torch.zeros_like(dla)
    if ablation:
        effects = head_ablation_effects(model, data.tokens, lambda lg: logit_diff(lg, data), "mean",
                                        attention_mask=data.attention_mask, reference_tokens=data.abc_tokens,
                                        reference_mask=data.abc_attention_mask)
    return IOIResult(float(diffs.mean()), float(logit_diff(abc_logits, data)), float((diffs > 0).float().mean()),
                     dla, effects)
