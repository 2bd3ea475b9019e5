"""Train the embedded tiny GPT-Neo with minineo's own forward pass; save it in HF layout.

    python -m minineo.zoo.train_tiny [--steps 8000] [--stage2-steps 600] [--seed 0] [--out minineo/zoo/tiny-neo]

Two stages, deterministic from the seed on one machine and torch build (byte-level data from
minineo.zoo.data, AdamW with a constant learning rate, so step N does not depend on the step count):
1. half template sentences (indirect object named first), half repeated random printable bytes:
   the induction head forms (around step 2500) and the sentences are learned;
2. a fresh optimizer on sentences in both name orders and repeated segments drawn from the whole
   vocabulary: the head learns to copy any token, and the name movers stop depending on the order.
Stage 2 alone generalises the circuits in a few hundred steps; from scratch the full-vocabulary
mixture stays on the induction plateau far longer.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel

import minineo
from minineo.config import Config
from minineo.forward.model import Model
from minineo.checkpoints.tokenizer import Tokenizer as Tokenizer_
from minineo.checkpoints.weights.export import to_hf_gpt_neo
from minineo.zoo import data

CONFIG = Config(
    architecture="gpt_neo", d_model=128, n_layers=2, n_heads=4, d_mlp=512, n_ctx=128, d_vocab=data.VOCAB,
    act_fn="gelu_new", layer_norm_eps=1e-5, attn_scales=(1.0,) * 2, windows=(8, None),
    qkv_bias=False, upcast_attn=True, tie_unembed=True, bos_token_id=data.BOS, eos_token_id=data.BOS,
)


INIT_STD = 0.02
STEPS = 8000  # stage 1: about 7 minutes on 2 cores; the induction head forms around step 2500
STAGE2_STEPS = 600  # stage 2: about 40 s on 2 cores


def init_model(config: Config, seed: int) -> Model:
    torch.manual_seed(seed)
    model = Model(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith((".w",)):
                p.fill_(1.0)
            elif name.endswith((".b", "b_O", "b_in", "b_out")):
                p.zero_()
            else:
                std = INIT_STD / math.sqrt(2 * config.n_layers) if name.endswith(("W_O", "W_out")) else INIT_STD
                p.normal_(0.0, std)
    return model.requires_grad_(True)


def byte_tokenizer() -> Tokenizer:
    """Byte-level BPE with no merges: token t is byte t; 256 is <|endoftext|>."""
    alphabet = ByteLevel.alphabet()
    byte_to_char = dict(enumerate(_bytes_to_unicode()))
    assert set(byte_to_char.values()) == set(alphabet), "byte -> character table must match ByteLevel's alphabet"
    vocab = {byte_to_char[b]: b for b in range(256)} | {"<|endoftext|>": data.BOS}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>"])
    return tokenizer


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in character for each byte 0..255, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def train(steps: int, seed: int, stage2_steps: int = STAGE2_STEPS, batch_size: int = 16, length: int = 128,
          lr: float = 1e-3, report: int = 500, start: Model | None = None) -> tuple[Model, list[float]]:
    """Stage 1 (from a seeded init, or skipped when `start` is given: a stage-1 model), then stage 2."""
    losses: list[float] = []
    model = init_model(CONFIG, seed) if start is None else start.requires_grad_(True)
    if start is None:
        run_stage(model, steps, data.batch, torch.Generator().manual_seed(seed), batch_size, length, lr, 100, report,
                  losses)
    run_stage(model, stage2_steps, data.batch_stage2, torch.Generator().manual_seed(seed + 1), batch_size, length,
              lr, 0, 100, losses)
    return model.requires_grad_(False).eval(), losses


def run_stage(model: Model, steps: int, make_batch, g: torch.Generator, batch_size: int, length: int, lr: float,
              warmup: int, report: int, losses: list[float]) -> None:
    """`steps` AdamW steps (a fresh optimizer; lr warmed up over `warmup` steps, then constant) on make_batch(g)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    model.train()
    begin = time.time()
    for step in range(steps):
        for group in optimizer.param_groups:  # warm-up, then constant: step N is the same whatever --steps says
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        tokens = make_batch(batch_size, length, g)  # (batch, pos)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, CONFIG.d_vocab), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % report == 0 or step == steps - 1:
            print(f"{make_batch.__name__} step {step:5d}  loss {loss.item():.4f}  {induction_report(model)}  "
                  f"{time.time() - begin:6.1f}s", flush=True)


@torch.no_grad()
def induction_report(model: Model) -> str:
    from minineo.analysis.heads import head_scores, repeated_tokens

    parts = []
    for what, low, high in (("printable", 33, 127), ("any token", 0, CONFIG.d_vocab)):
        scores = head_scores(model, repeated_tokens(model, 25, 8, seed=1, low=low, high=high), repeated_len=25)
        parts.append(f"{what}: repeat loss {scores.first_half_loss:.2f} -> {scores.induction_loss:.2f}, "
                     f"best induction score {float(scores.induction.max()):.2f}")
    return "; ".join(parts)


def save(model: Model, out: Path, steps: int, stage2_steps: int, seed: int, losses: list[float], seconds: float,
         stage1_from: Path | None) -> None:
    """HF layout (config.json, model.safetensors, tokenizer.json) plus a model card, written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.safetensors.tmp"
    save_file(to_hf_gpt_neo(model), str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")  # never leave a half-written model behind
    (out / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2) + "\n")
    byte_tokenizer().save(str(out / "tokenizer.json"))
    model.tokenizer = Tokenizer_.from_dir(out, model.config.bos_token_id)  # the reports below read text
    final = sum(losses[-100:]) / len(losses[-100:])
    how = (f"stage 1 loaded from {stage1_from} (a stage-1 model), then stage 2" if stage1_from is not None
           else "both stages")
    (out / "README.md").write_text(MODEL_CARD.format(
        steps=steps, stage2_steps=stage2_steps, seed=seed, final=final, report=induction_report(model).replace("; ", ";\n  "),
        ioi=ioi_report(model), seconds=seconds, how=how,
        params=sum(p.numel() for p in model.parameters()), threads=torch.get_num_threads(),
    ))
    print(f"saved to {out} (mean training loss over the last 100 steps: {final:.4f})")


@torch.no_grad()
def ioi_report(model: Model) -> str:
    from minineo.analysis.ioi import ioi_analysis, ioi_dataset

    data = ioi_dataset(model, 64, seed=5)  # even rows ABBA, odd rows BABA
    logits = model(data.tokens, attention_mask=data.attention_mask)[:, -1]  # (batch, d_vocab)
    rows = torch.arange(len(data.prompts))
    correct = (logits[rows, data.io_tokens] > logits[rows, data.s_tokens]).float()
    result = ioi_analysis(model, data, ablation=False)
    layer, head = divmod(int(result.head_dla.argmax()), model.config.n_heads)
    return (f"{correct.mean():.0%} of 64 mixed prompts (ABBA {correct[0::2].mean():.0%}, BABA {correct[1::2].mean():.0%}); "
            f"mean IO - S logit difference {result.logit_diff:.2f}, of which head L{layer}H{head} writes "
            f"{float(result.head_dla.max()):.2f} directly (the strongest name mover)")


MODEL_CARD = """# tiny-neo: the embedded model

A 2-layer GPT-Neo ({params:,} parameters; d_model 128, 4 heads, d_mlp 512; layer 0 local with a
window of 8, layer 1 global; byte-level vocabulary of 257: bytes 0..255 and <|endoftext|> = 256,
which is also BOS). Trained in this repository with minineo's own forward pass, so that a machine
without network still has a real model to look inside.

- **Data** (`minineo/zoo/data.py`, generated from the seed, nothing downloaded). Stage 1: half the
  rows are template sentences about two people ("When Mary and John went to the store, John gave a
  drink to Mary.") and lines of the Zen of Python (which ships with Python); half are random
  printable bytes in segments that each repeat twice, which teaches in-context copying. Stage 2:
  the sentences in both name orders (ABBA and BABA), repeated printable segments, and repeated
  segments drawn uniformly from the whole vocabulary.
- **Training**: stage 1, {steps} steps of AdamW (lr 1e-3 after 100 warm-up steps, constant; no
  weight decay); stage 2, {stage2_steps} more steps with a fresh AdamW at lr 1e-3. Batches of 16 rows of
  128 tokens (the whole context), seed {seed}, {threads} CPU threads; {how} took {seconds:.0f} s.
  Mean training loss over the last 100 steps: {final:.3f} nats/token.
- **What it learned**, measured on the saved model (the tests check the same through HF's
  `GPTNeoForCausalLM`):
  - an induction head, on random segments repeated twice (25 tokens, 8 sequences):
  {report};
  - indirect-object identification (`minineo ioi`'s prompts): IO above S in {ioi}.
- **Reproduce**: `python -m minineo.zoo.train_tiny --steps {steps} --stage2-steps {stage2_steps} --seed {seed}`
  (writes `minineo/zoo/tiny-neo/`; about 12 minutes on 2 cores). Round-off differences between machines
  and torch versions grow during training, so a rerun gives the same behaviour, not the same bits; the
  any-token copying forms in a sharp transition in stage 2 whose step varies (raise `--stage2-steps`).

Files: `config.json` (`model_type: gpt_neo`), `model.safetensors` (HF GPTNeoForCausalLM keys; HF
loads it as is), `tokenizer.json` (the `tokenizers` library's byte-level BPE, no merges).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS, help="stage-1 steps")
    parser.add_argument("--stage2-steps", type=int, default=STAGE2_STEPS)
    parser.add_argument("--stage1-from", type=Path, default=None,
                        help="skip stage 1: start stage 2 from this stage-1 model folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tiny-neo")  # the shipped model
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    first = None if args.stage1_from is None else minineo.load(args.stage1_from)
    model, losses = train(args.steps, args.seed, args.stage2_steps, start=first)
    save(model, args.out, args.steps, args.stage2_steps, args.seed, losses, time.time() - start, args.stage1_from)


if __name__ == "__main__":
    main()
