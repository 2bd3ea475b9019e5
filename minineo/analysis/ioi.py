"""Indirect-object identification: prompts from templates and names (with the ABC counterfactual), the
IO - S logit difference, and per-head direct attribution, mean-ablation and path-patching effects on it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from minineo import checks
from minineo.analysis.ablation import head_ablation_effects
from minineo.analysis.attribution import dla_sites, head_logit_attribution
from minineo.analysis.circuits import copying_scores
from minineo.analysis.path_patching import path_patching
from minineo import progress
from minineo.errors import UserError
from minineo.forward.model import Model

Head = tuple[int, int]

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
    abc_prompts: list[str]  # the same with the subject's second mention replaced by a third name of its token length
    io_names: list[str]
    s_names: list[str]
    tokens: torch.Tensor  # (batch, pos), left-padded
    attention_mask: torch.Tensor
    abc_tokens: torch.Tensor
    abc_attention_mask: torch.Tensor
    io_tokens: torch.Tensor  # (batch,): the first token of the indirect object's name after the prompt
    s_tokens: torch.Tensor  # (batch,): the same for the subject


@checks.typed
def ioi_dataset(model: Model, n: int = 32, seed: int = 0, templates: list[str] = TEMPLATES,
                names: list[str] = NAMES, abba_only: bool = False) -> IOIDataset:
    """`n` prompts; half ABBA (IO named first), half BABA (S named first) unless `abba_only`."""
    n = checks.count(n, "n")
    if not templates or not all(isinstance(t, str) for t in templates):
        raise UserError(f"templates must be a non-empty list of prompt templates such as {TEMPLATES[0]!r}, got "
                        f"{checks.describe(templates)}")
    if len(names) < 3 or not all(isinstance(name, str) and name for name in names):
        raise UserError(f"names must be a list of at least 3 names (IOI needs an IO, a subject and a third name), got "
                        f"{checks.describe(names)}")
    rng = random.Random(seed)
    tokenizer = model._require_tokenizer()
    # Byte-level vocabularies split " Mary" into " " + "M": then the space belongs in the prompt.
    space_in_prompt = tokenizer.encode(" " + names[0])[0] == tokenizer.encode(" " + names[1])[0]
    sep = "" if space_in_prompt else " "
    first_token = {name: tokenizer.encode(sep + name)[0] for name in names}
    length = {name: len(tokenizer.encode(sep + name)) for name in names}
    if len(set(first_token.values())) < 3:
        raise UserError("IOI needs at least 3 names whose first tokens differ")

    def usable(io: str, s: str, c: str) -> bool:
        # the metric compares first tokens; the ABC prompt lines up with its prompt token by token (path patching)
        return len({first_token[io], first_token[s], first_token[c]}) == 3 and length[c] == length[s]

    if not any(usable(io, s, c) for io in names for s in names for c in names if len({io, s, c}) == 3):
        raise UserError("IOI needs three names with distinct first tokens, two of them of the same token length "
                        "(the ABC prompt's third name replaces the subject token for token); add such names")
    prompts, abc, ios, ss = [], [], [], []
    for i in range(n):
        io, s, c = rng.sample(names, 3)
        while not usable(io, s, c):
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
    name_movers: list[Head] = field(default_factory=list)  # the heads with the largest DLA (path receivers)
    head_path_logits: torch.Tensor | None = None  # (layer, head) change in IO - S: path patching head -> logits (ABC)
    head_path_name_movers: torch.Tensor | None = None  # (layer, head) the same, head -> the name movers' queries
    ablation_run: bool = True  # False: head_ablation is zeros, not computed
    head_copying: torch.Tensor | None = None  # (layer, head) copying score of the full OV circuit, in [-1, 1]

    def head_columns(self) -> dict[str, torch.Tensor]:
        """The per-head (layer, head) results that were computed, by column title (the `ioi` table and plot)."""
        movers = ", ".join(f"{layer}.{head}" for layer, head in self.name_movers)
        columns = {"DLA on IO-S": self.head_dla, "ablation effect": self.head_ablation if self.ablation_run else None,
                   "path -> logits": self.head_path_logits, f"path -> {movers} queries": self.head_path_name_movers,
                   "copying score": self.head_copying}
        return {title: value for title, value in columns.items() if value is not None}


@checks.typed
def ioi_analysis(model: Model, data: IOIDataset, ablation: bool = True, paths: bool = True,
                 n_name_movers: int = 3) -> IOIResult:
    """Logit difference, per-head DLA, and optionally mean-ablation effects (`ablation`) and path-patching
    effects (`paths`: each head's path to the logits and to the queries of the `n_name_movers` heads with the
    largest DLA -- the IOI paper's S-inhibition step -- with the ABC prompts as the corrupted input), and every
    head's copying score (`analysis.copying_scores`, from the weights; the paper's name movers copy)."""
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
    result = IOIResult(float(diffs.mean()), float(logit_diff(abc_logits, data)), float((diffs > 0).float().mean()),
                       dla, effects, ablation_run=ablation)
    # name movers copy the name they attend to: the weights' copying score beside the measured effects
    result.head_copying = copying_scores(model).to(dla)
    if paths:
        n_heads = model.config.n_heads
        order = dla.flatten().argsort(descending=True)[:max(1, n_name_movers)].tolist()
        result.name_movers = [divmod(int(i), n_heads) for i in order]
        receivers = [(layer, head, "q") for layer, head in result.name_movers]
        metric = lambda lg: logit_diff(lg, data)  # noqa: E731
        clean = float(metric(logits))
        with progress.task("IOI: path patching every head to the logits and to the name movers' queries"):
            for name, target in (("head_path_logits", "logits"), ("head_path_name_movers", receivers)):
                values = path_patching(model, data.tokens, data.abc_tokens, metric, "heads", target,
                                       attention_mask=data.attention_mask)
                setattr(result, name, (values - clean).to(dla))
    return result
