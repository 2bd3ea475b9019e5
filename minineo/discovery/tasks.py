"""The two built-in tasks of circuit discovery, as clean/corrupted Pairs.

- `ioi_pairs`: indirect-object identification (minineo.analysis.ioi_dataset): the clean prompt ("When Mary and John
  went to the store, John gave a drink to"), the corrupted one its ABC version (the subject's second mention replaced
  by a third name of the same token length); answer = the indirect object's first token, wrong = the subject's.
- `induction_pairs`: repeated random tokens (minineo.analysis.repeated_tokens): clean = BOS, x_1..x_k, x_1..x_{k-1},
  answer x_k (what an induction head predicts); corrupted = the same first half with a fresh random second half
  z_1..z_{k-1}, wrong = z_k. Tokens are printable bytes on a byte-level vocabulary (33..126), else any id but BOS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from minineo import checks
from minineo.discovery.pairs import Pairs
from minineo.errors import UserError

if TYPE_CHECKING:
    from minineo.forward.model import Model

TASKS = ("ioi", "induction")


@checks.typed
def ioi_pairs(model: Model, n: int = 32, seed: int = 0) -> Pairs:
    """`n` IOI pairs (half ABBA, half BABA): clean prompt vs its ABC prompt, answer IO vs wrong S (first tokens)."""
    from minineo.analysis.ioi import ioi_dataset

    _check_n(n)
    data = ioi_dataset(model, n, seed=seed)
    if not torch.equal(data.attention_mask, data.abc_attention_mask):
        raise UserError("the IOI prompts and their ABC versions tokenize to different lengths on this model's "
                        "tokenizer; give the pairs as a JSONL instead")
    mask = None if bool(data.attention_mask.all()) else data.attention_mask.cpu()
    return Pairs(data.tokens.cpu(), data.abc_tokens.cpu(), mask, data.io_tokens.cpu(), data.s_tokens.cpu())


@checks.typed
def induction_pairs(model: Model, n: int = 32, seq_len: int = 12, seed: int = 0) -> Pairs:
    """`n` induction pairs of 1 + 2 * seq_len - 1 tokens (see the module docstring)."""
    _check_n(n)
    checks.integer(seq_len, "seq_len", low=2, high=model.config.n_ctx // 2,
                   fix=f"a pair repeats seq_len tokens, so 2 * seq_len must fit in n_ctx = {model.config.n_ctx}")
    cfg = model.config
    bos = cfg.bos_token_id if cfg.bos_token_id is not None else 0
    low, high = (33, 127) if cfg.d_vocab <= 260 else (0, cfg.d_vocab)
    g = torch.Generator().manual_seed(seed)

    def draw(shape: tuple[int, int]) -> torch.Tensor:
        x = torch.randint(low, high, shape, generator=g)
        return torch.where(x == bos, (x + 1) % high, x)

    first, second = draw((n, seq_len)), draw((n, seq_len))  # (n, seq_len) each
    start = torch.full((n, 1), bos)
    clean = torch.cat([start, first, first[:, :-1]], dim=1)
    corrupted = torch.cat([start, first, second[:, :-1]], dim=1)
    return Pairs(clean, corrupted, None, first[:, -1].clone(), second[:, -1].clone())


@checks.typed
def task_pairs(model: Model, task: str, n: int = 32, seed: int = 0) -> Pairs:
    """'ioi', 'induction', or the path of a JSONL of {clean, corrupted, answer, wrong} rows."""
    if task == "ioi":
        return ioi_pairs(model, n, seed)
    if task == "induction":
        return induction_pairs(model, n, seed=seed)
    if is_file_task(task):
        return Pairs.from_jsonl(model, task)
    raise UserError(f"task {task!r} is not ioi, induction or a .jsonl file of "
                    '{"clean", "corrupted", "answer", "wrong"} rows')


def is_file_task(task: str) -> bool:
    """Whether task_pairs reads `task` as a JSONL file of pairs (then n and seed do not apply)."""
    return task not in TASKS and (task.endswith((".jsonl", ".json")) or "/" in task)


def _check_n(n: int) -> None:
    checks.count(n, "n (the number of pairs)")
