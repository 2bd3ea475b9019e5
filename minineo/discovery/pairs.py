"""Clean/corrupted prompt pairs and the metric of circuit discovery (EAP-IG's convention).

A pair is a clean prompt, a corrupted prompt of the same token length, an answer token and a wrong token. The metric is
EAP-IG's logit difference at each prompt's last real position, logit[answer] - logit[wrong] (nats of logit), given per
pair; every score and faithfulness number is a mean over pairs. minineo left-pads a batch (positions from the mask, so
a padded row computes exactly what the unpadded one does), so the last real position is always the last one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from minineo import checks, report
from minineo.errors import UserError, WrongTypeError

if TYPE_CHECKING:
    from minineo.forward.model import Model

# metric(logits (n, pos, d_vocab), pairs) -> (n,): one value per pair
Metric = Callable[[torch.Tensor, "Pairs"], torch.Tensor]


@dataclass
class Pairs:
    """n clean/corrupted pairs, tokenized and left-padded: `clean`, `corrupted` (n, pos) LongTensor; `attention_mask`
    (n, pos) (1 = real token; shared, since a pair's prompts have equal lengths) or None; `answer`, `wrong` (n,)."""

    clean: torch.Tensor
    corrupted: torch.Tensor
    attention_mask: torch.Tensor | None
    answer: torch.Tensor
    wrong: torch.Tensor

    def __post_init__(self) -> None:
        """Raises UserError (WrongTypeError for a non-tensor or non-integer ids) naming the field: ids are integer
        tensors with no negative id (the vocabulary's bound is checked where the pairs meet a model), at least one
        pair, the mask 0/1 with a real token in every row."""
        for name in ("clean", "corrupted", "answer", "wrong"):
            checks.token_ids(getattr(self, name), None, name)
        n = self.clean.shape[0]
        if self.clean.ndim != 2 or self.corrupted.shape != self.clean.shape:
            raise UserError(f"clean and corrupted tokens must both be (n, pos) of one shape, got {tuple(self.clean.shape)} "
                            f"and {tuple(self.corrupted.shape)}; give each pair prompts of the same token length")
        if self.answer.shape != (n,) or self.wrong.shape != (n,):
            raise UserError(f"answer and wrong need one token id per pair, shape ({n},); got "
                            f"{tuple(self.answer.shape)} and {tuple(self.wrong.shape)}")
        if self.attention_mask is not None:
            if not isinstance(self.attention_mask, torch.Tensor) or self.attention_mask.shape != self.clean.shape:
                got = tuple(self.attention_mask.shape) if isinstance(self.attention_mask, torch.Tensor) else \
                    checks.describe(self.attention_mask)
                raise UserError(f"attention_mask must be None or a tensor of the tokens' shape "
                                f"{tuple(self.clean.shape)}, got {got}")
            checks.attention_mask(self.attention_mask, self.clean.shape)

    def __len__(self) -> int:
        return self.clean.shape[0]

    def __iter__(self) -> Iterator[Pairs]:
        """Each pair as a batch of one, in order (`for pair in pairs`)."""
        return (self[i] for i in range(len(self)))

    def same_prompts(self) -> torch.Tensor:
        """(n,) bool: the pairs whose clean and corrupted prompts are the same tokens (padding is not compared). Such a
        pair moves nothing: every sender's corrupted - clean output is 0, so it adds 0 to every edge score."""
        same = self.clean == self.corrupted  # (n, pos)
        if self.attention_mask is not None:
            same |= self.attention_mask == 0
        return same.all(1)

    def __getitem__(self, index: int | slice | list | torch.Tensor) -> Pairs:
        """The pairs at `index`, always a Pairs (an int gives a batch of one): an int, a slice, a list of ints, a 1-d
        integer tensor, or a bool mask of length n (a list or a tensor), as torch indexes them (a negative index
        counts from the end). UserError naming the index and the valid range 0..n-1 for an index outside it, a mask
        of another length or an index that selects no pair; WrongTypeError (a UserError) for any other index."""
        rows = self._rows(index)
        mask = None if self.attention_mask is None else self.attention_mask[rows]
        return Pairs(self.clean[rows], self.corrupted[rows], mask, self.answer[rows], self.wrong[rows])

    def _rows(self, index: Any) -> slice | torch.Tensor:
        """`index` as a slice (positive step: views) or a 1-d long tensor of rows in 0..n-1, at least one row."""
        n = len(self)
        valid = f"the {n} pair{'s' * (n != 1)} are 0..{n - 1} (or -{n}..-1 from the end)"
        shown = _shown(index)
        if checks.is_integer(index):  # one pair, kept as a batch of one (a 0-d integer tensor included)
            i = int(index)
            if not -n <= i < n:
                raise UserError(f"pair index {shown} is out of range: {valid}")
            return slice(i, i + 1 if i != -1 else None)
        if isinstance(index, slice):
            try:
                selected = range(n)[index]
            except (TypeError, ValueError) as err:  # a float bound, a step of 0
                raise WrongTypeError(f"pair index {shown} is not a slice of pairs ({err}); give whole-number bounds "
                                     f"and a nonzero step: {valid}") from None
            if not selected:
                raise UserError(f"pair index {shown} selects no pair: {valid}")
            return index if selected.step > 0 else torch.tensor(list(selected))
        if isinstance(index, list):
            if index and all(isinstance(i, bool) for i in index):
                index = torch.tensor(index)
            elif all(checks.is_integer(i) for i in index):
                index = torch.tensor([int(i) for i in index], dtype=torch.long)
            else:
                raise WrongTypeError(f"pair index {shown} must be a list of whole numbers (or of True/False, a "
                                     f"mask): {valid}")
        if not isinstance(index, torch.Tensor) or index.dtype.is_floating_point or index.dtype.is_complex:
            raise WrongTypeError(f"pair index {shown} is not an index of pairs; give an int, a slice, a list of ints, "
                                 f"an integer tensor or a bool mask of length {n}: {valid}")
        index = index.to(self.clean.device)
        if index.dtype == torch.bool:
            if index.shape != (n,):
                raise UserError(f"pair mask {shown} must be 1-d of length {n}, one True/False per pair: {valid}")
            if not bool(index.any()):
                raise UserError(f"pair mask {shown} selects no pair (every value is False): {valid}")
            return index.nonzero().flatten()
        if index.ndim != 1:
            raise UserError(f"pair index {shown} must be 1-d, one index per pair selected: {valid}")
        if not index.numel():
            raise UserError(f"pair index {shown} selects no pair: {valid}")
        if int(index.max()) >= n or int(index.min()) < -n:
            raise UserError(f"pair index {shown} reaches outside the pairs: {valid}")
        return index.long()

    def batches(self, size: int) -> Iterator[Pairs]:
        """Consecutive slices of at most `size` pairs (UserError unless size is a positive int)."""
        checks.count(size, "size", fix="pairs per batch")
        return (self[start:start + size] for start in range(0, len(self), size))

    def to(self, device: torch.device | str) -> Pairs:
        """The pairs on `device` (UserError for a device this torch cannot use)."""
        device = checks.device(device)
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        return Pairs(self.clean.to(device), self.corrupted.to(device), mask, self.answer.to(device), self.wrong.to(device))

    @classmethod
    @checks.typed
    def from_text(cls, model: Model, clean: list[str], corrupted: list[str], answer: list[str], wrong: list[str]) -> Pairs:
        """Tokenize pairs (BOS prepended, left-padded). Each answer and wrong must be a single token of the model's
        tokenizer; each clean prompt and its corrupted one must have the same token length, at most the model's
        n_ctx (UserError otherwise, naming the pair by its 0-based index)."""
        if not (len(clean) == len(corrupted) == len(answer) == len(wrong)) or not clean:
            raise UserError(f"pairs need as many clean prompts, corrupted prompts, answers and wrong answers, and at "
                            f"least one; got clean {len(clean)}, corrupted {len(corrupted)}, answer {len(answer)} "
                            f"and wrong {len(wrong)}")
        return cls._tokenize(model, clean, corrupted, answer, wrong, lambda i: f"pair {i}")

    @classmethod
    def _tokenize(cls, model: Model, clean: list[str], corrupted: list[str], answer: list[str], wrong: list[str],
                  where: Callable[[int], str]) -> Pairs:
        """from_text's work; `where(i)` names pair i in a message ("pair 3", or "tasks.jsonl, line 4")."""
        tokenizer = model._require_tokenizer()
        n_ctx, bos = model.config.n_ctx, int(tokenizer.bos_token_id is not None)  # encode_batch prepends BOS
        for i, (a, b) in enumerate(zip(clean, corrupted)):
            la, lb = len(tokenizer.encode(a)) + bos, len(tokenizer.encode(b)) + bos
            if max(la, lb) > n_ctx:
                raise UserError(f"{where(i)}: the prompts are {max(la, lb)} tokens (with BOS), longer than the "
                                f"model's context of {n_ctx} positions; shorten that pair's prompts ({_quoted(a)})")
            if la != lb:
                raise UserError(f"{where(i)}: the clean prompt is {la} tokens and the corrupted one {lb}; each pair's "
                                f"prompts must have the same token length ({_quoted(a)} / {_quoted(b)})")
        ids = []
        for what, texts in (("answer", answer), ("wrong", wrong)):
            for i, text in enumerate(texts):
                encoded = tokenizer.encode(text, prepend_bos=False) if text else []
                if len(encoded) != 1:
                    raise UserError(f"{where(i)}: the {what} {_quoted(text, 40)} is {len(encoded)} tokens for this "
                                    "tokenizer; the metric compares one token, so give a single-token answer")
                ids.append(encoded[0])
        n = len(clean)
        same = [i for i in range(n) if ids[i] == ids[n + i]]
        if same:
            raise UserError(f"{where(same[0])}: the answer and the wrong answer are the same token "
                            f"({_quoted(answer[same[0]], 40)}), so its logit difference is 0 in every run; give two "
                            "different tokens")
        tokens, mask = tokenizer.encode_batch(list(clean), padding_side="left")
        corrupted_tokens, _ = tokenizer.encode_batch(list(corrupted), padding_side="left")
        mask = None if bool(mask.all()) else mask
        return cls(tokens, corrupted_tokens, mask, torch.tensor(ids[:n]), torch.tensor(ids[n:]))

    @classmethod
    @checks.typed
    def from_jsonl(cls, model: Model, path: str | Path) -> Pairs:
        """Read rows {"clean", "corrupted", "answer", "wrong"} (the format of EAP-IG-style task files).

        Raises MissingFileError for a path that is no file, UserError for a row that is not a pair, a pair longer
        than the model's context, of unequal token lengths or with a multi-token answer (naming the file and
        line). Other keys of a row are not read; a warning names them."""
        path = checks.existing_path(path, "path", kind="file", fix='give a JSONL of {"clean": ..., "corrupted": ..., '
                                    '"answer": ..., "wrong": ...} rows')
        rows, numbers, extra = [], [], {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}, line {number}: not JSON ({err.msg}); each line is one pair object") from None
            missing = [k for k in _KEYS if not isinstance(row, dict) or not isinstance(row.get(k), str)]
            if missing:
                raise UserError(f"{path}, line {number}: {', '.join(missing)} missing or not a string; each row needs "
                                '"clean", "corrupted", "answer" and "wrong" strings')
            for key in row.keys() - set(_KEYS):
                extra.setdefault(key, number)
            rows.append(row)
            numbers.append(number)
        if not rows:
            raise UserError(f"{path} holds no pairs; give at least one row")
        if extra:
            named = ", ".join(f"{key!r} (first on line {line})" for key, line in sorted(extra.items(), key=lambda kv: kv[1]))
            report.warn(f"{path}: the rows' keys {named} are not read; a pair is its \"clean\", \"corrupted\", "
                        "\"answer\" and \"wrong\" (check the spelling if one of those was meant)")
        return cls._tokenize(model, *([row[k] for row in rows] for k in _KEYS),
                             lambda i: f"{path}, line {numbers[i]}")


_KEYS = ("clean", "corrupted", "answer", "wrong")

SAME_RUNS = ("so the corrupted run is the clean run: m(full) - m(empty) = 0, and faithfulness, normalised by it, "
             "means nothing")


def check_prompts_differ(pairs: Pairs, consequence: str = SAME_RUNS, name: str = "pairs") -> int:
    """UserError when every pair's clean and corrupted prompts are the same tokens (`Pairs.same_prompts`): then
    corrupting changes nothing, so the metric's gap m(full) - m(empty) is 0 and every edge score is 0, whatever the
    answers. The message names `name` (the argument, or the CLI's option), says `consequence` (what it means for
    the caller; default: the gap) and the fix, "give pairs whose prompts differ". The one check of attribute,
    faithfulness, faithfulness_curve, mib_scores and `minineo discover`, made before any forward pass. Returns how
    many pairs have the same prompts (fewer than all), for a caller that says so."""
    same, n = int(pairs.same_prompts().sum()), len(pairs)
    if same == n:
        what = f"all {n} pairs have" if n > 1 else "the one pair has"
        raise UserError(f"{name}: {what} the same clean and corrupted prompts, {consequence}; give pairs whose "
                        "prompts differ")
    return same


def _shown(index: Any) -> str:
    """A pair index as a message shows it: its values (a tensor's too, and its dtype), cut at 60 characters."""
    if isinstance(index, torch.Tensor):
        values = index.tolist() if index.numel() <= 20 else f"{index.flatten()[:20].tolist()}..."
        return f"{values} ({index.dtype} tensor of shape {tuple(index.shape)})"
    return checks.describe(index)


def _quoted(text: str, limit: int = 60) -> str:
    """`text` in quotes, shortened to `limit` characters inside them (an ellipsis marks a cut): quotes always match."""
    return repr(text if len(text) <= limit else text[:limit - 1] + "…")


@checks.typed
def logit_diff(logits: torch.Tensor, pairs: Pairs) -> torch.Tensor:
    """EAP-IG's metric per pair: logit[answer] - logit[wrong] at the last position (left-padded: the last real one).

    logits (n, pos, d_vocab) -> (n,)."""
    if logits.ndim != 3 or logits.shape[0] != len(pairs) or logits.shape[1] == 0:
        raise UserError(f"logits must be (n, pos, d_vocab) with n = {len(pairs)} pairs, got {tuple(logits.shape)}; "
                        "give the model's logits on the pairs' prompts")
    vocab = logits.shape[-1]
    if int(max(pairs.answer.max(), pairs.wrong.max())) >= vocab:
        raise UserError(f"logits has {vocab} vocabulary entries but the pairs' answer / wrong ids reach "
                        f"{int(max(pairs.answer.max(), pairs.wrong.max()))}; give logits of the model the pairs were made for")
    last = logits[:, -1]  # (n, d_vocab)
    index = torch.arange(last.shape[0], device=last.device)
    return last[index, pairs.answer.to(last.device)] - last[index, pairs.wrong.to(last.device)]
