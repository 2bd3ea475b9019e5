"""The embedded models' behaviour thresholds, measured on a saved folder: copying through HF, IOI through minineo.

The card of every zoo model quotes these numbers, tests/test_zoo_models.py checks the thresholds
on the shipped files, and minineo.zoo.check_recipe on a fresh retraining.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Behaviour:
    # Through HF (GPTNeoForCausalLM / GPT2LMHeadModel, eager attention): 16 sequences of 40 ids drawn
    # uniformly from the 256 bytes (seed 7), each repeated twice after BOS.
    first_half_loss: float  # nats/token, predicting ids 2..40 of the first repeat (unpredictable: ~ln 257)
    second_half_loss: float  # nats/token, predicting ids 2..40 of the second repeat (copyable)
    induction_score: float  # the best head's mean attention on the token after the earlier occurrence
    induction_head: tuple[int, int]  # (layer, head)
    printable_first: float  # the same losses on printable bytes 33..126 (seed 7)
    printable_second: float
    # Through minineo's `ioi` analysis on 64 prompts (seed 5), even rows ABBA, odd rows BABA.
    ioi_accuracy: float  # fraction with logit(IO) > logit(S) at the last position
    abba_accuracy: float
    baba_accuracy: float
    logit_diff: float  # mean IO - S logit difference
    abc_logit_diff: float  # the same on the ABC prompts (no repeated name)
    name_mover: tuple[int, int]  # the head with the largest direct logit attribution to IO - S
    name_mover_dla: float
    runner_up_dla: float  # the largest |DLA| of any other head (a second name mover is allowed: GPT-2 small has three)
    name_mover_ablation: float  # change of the logit difference when the name mover is mean-ablated
    # Its OV circuit's copying score (analysis.copying_scores), in [-1, 1]: reported, not a threshold. In these
    # byte-level toys the heads' direct effect is a fraction of the logit difference (MLP 1 reads what they
    # move), and a top head may suppress S rather than copy IO (the 7000-step tiny-gpt2, seed 0: -0.91).
    name_mover_copying: float

    def failures(self) -> list[str]:
        """The thresholds of the issue and the card this behaviour misses (empty: it meets them all)."""
        checks = {
            f"any-token second-half loss {self.second_half_loss:.2f} < half the first's {self.first_half_loss:.2f}":
                self.second_half_loss < 0.5 * self.first_half_loss,
            f"induction score {self.induction_score:.2f} > 0.5": self.induction_score > 0.5,
            f"IOI accuracy {self.ioi_accuracy:.0%} >= 90%": self.ioi_accuracy >= 0.9,
            f"ABBA {self.abba_accuracy:.0%} and BABA {self.baba_accuracy:.0%} >= 85%":
                min(self.abba_accuracy, self.baba_accuracy) >= 0.85,
            f"name mover L{self.name_mover[0]}H{self.name_mover[1]} in the last layer": self.name_mover[0] == 1,
            f"name mover DLA {self.name_mover_dla:.2f} > 0.1 x logit diff {self.logit_diff:.2f}":
                self.name_mover_dla > 0.1 * self.logit_diff,
            f"ablating the name mover {self.name_mover_ablation:.2f} < -0.1 x logit diff":
                self.name_mover_ablation < -0.1 * self.logit_diff,
            f"ABC logit diff {self.abc_logit_diff:.2f} within 0.25 x logit diff":
                abs(self.abc_logit_diff) < 0.25 * self.logit_diff,
        }
        return [what for what, ok in checks.items() if not ok]

    def table(self) -> str:
        """The card's Markdown rows (`| quantity | value |`)."""
        layer, head = self.induction_head
        mover = f"L{self.name_mover[0]}H{self.name_mover[1]}"
        return "\n".join([
            f"| any-token repeats (HF): loss first half -> second half | {self.first_half_loss:.2f} -> "
            f"{self.second_half_loss:.2f} |",
            f"| induction score, best head (HF attentions) | {self.induction_score:.2f} (L{layer}H{head}) |",
            f"| printable repeats (HF): loss first -> second half | {self.printable_first:.2f} -> "
            f"{self.printable_second:.2f} |",
            f"| IOI: IO above S, 64 mixed prompts (ABBA, BABA) | {self.ioi_accuracy:.0%} ({self.abba_accuracy:.0%}, "
            f"{self.baba_accuracy:.0%}) |",
            f"| IOI: mean IO - S logit difference (ABC prompts) | {self.logit_diff:.2f} ({self.abc_logit_diff:.2f}) |",
            f"| name mover: DLA (next head's abs) / mean-ablation effect / copying score | {mover}: "
            f"{self.name_mover_dla:.2f} ({self.runner_up_dla:.2f}) / {self.name_mover_ablation:.2f} / "
            f"{self.name_mover_copying:.2f} |",
        ])


@torch.no_grad()
def _hf_repeats(hf, bos: int, low: int, high: int) -> tuple[float, float, torch.Tensor]:
    """(first-half loss, second-half loss, induction scores (layer, head)) through HF's forward pass."""
    seq_len, n = 40, 16
    half = torch.randint(low, high, (n, seq_len), generator=torch.Generator().manual_seed(7))
    tokens = torch.cat([torch.full((n, 1), bos), half, half], dim=1)  # (n, 1 + 2 seq_len)
    out = hf(tokens, output_attentions=True)
    losses = F.cross_entropy(out.logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")  # (n, 2 seq_len)
    q = torch.arange(seq_len + 1, 2 * seq_len + 1)  # queries in the second repeat
    scores = torch.stack([pattern[:, :, q, q - seq_len + 1].mean((0, 2)) for pattern in out.attentions])
    return float(losses[:, 1:seq_len].mean()), float(losses[:, seq_len + 1:].mean()), scores


@torch.no_grad()
def measure(folder: str | Path) -> Behaviour:
    """Load `folder` with HF (the architecture its config.json names) and with minineo; measure both halves."""
    import transformers

    import minineo
    from minineo import analysis, report

    report.quiet_third_parties()  # no "Loading weights" bar from transformers in the scripts' output

    model = minineo.load(folder)
    hf_class = {"gpt_neo": transformers.GPTNeoForCausalLM, "gpt2": transformers.GPT2LMHeadModel}[model.config.architecture]
    hf = hf_class.from_pretrained(folder, attn_implementation="eager").eval()
    bos = model.config.bos_token_id
    first, second, scores = _hf_repeats(hf, bos, 0, 256)
    printable_first, printable_second, _ = _hf_repeats(hf, bos, 33, 127)
    best = int(scores.argmax())

    data = analysis.ioi_dataset(model, 64, seed=5)  # even rows ABBA, odd rows BABA
    with report.collect() as said:  # the analysis's warnings are about its own prompts, not the user's
        result = analysis.ioi_analysis(model, data, ablation=True)
    if said:
        report.warn(f"the card's IOI figures (path patching, ablation) are noise for this model: on the check's "
                    f"{len(data.prompts)} IOI prompts its logit difference is {result.logit_diff:+.3f} and on the "
                    f"corrupted (ABC) prompts {result.abc_logit_diff:+.3f}, too close to measure a circuit; a model "
                    "trained for too few steps has no IOI behaviour yet")
    logits = model(data.tokens, attention_mask=data.attention_mask)[:, -1]  # (batch, d_vocab)
    rows = torch.arange(len(data.prompts))
    correct = (logits[rows, data.io_tokens] > logits[rows, data.s_tokens]).float()
    dla = result.head_dla.flatten()  # (layer * head,)
    top = int(dla.argmax())
    n_heads = model.config.n_heads
    return Behaviour(
        first_half_loss=first, second_half_loss=second, induction_score=float(scores.max()),
        induction_head=divmod(best, n_heads), printable_first=printable_first, printable_second=printable_second,
        ioi_accuracy=result.accuracy, abba_accuracy=float(correct[0::2].mean()),
        baba_accuracy=float(correct[1::2].mean()), logit_diff=result.logit_diff, abc_logit_diff=result.abc_logit_diff,
        name_mover=divmod(top, n_heads), name_mover_dla=float(dla[top]),
        runner_up_dla=float(dla[torch.arange(len(dla)) != top].abs().max()),
        name_mover_ablation=float(result.head_ablation.flatten()[top]),
        name_mover_copying=float(result.head_copying.flatten()[top]),
    )
