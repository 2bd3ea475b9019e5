"""Train the embedded tiny models (tiny-neo, tiny-gpt2) from scratch with minineo's own forward pass.

    python -m minineo.zoo.train_tiny [--model tiny-neo|tiny-gpt2] [--seed 0] [--out FOLDER]

One stage, the same for both architectures, deterministic from the seed on one machine and torch
build (one CPU thread unless --threads says otherwise): byte-level data from minineo.zoo.data, the
same mixture from the first step (sentences in both name orders, repeated printable segments,
repeated segments drawn from the whole vocabulary), AdamW with a linear warm-up and then a constant
learning rate, so the step N model does not depend on --steps and the schedule never stops at the
induction transition, whichever step it comes at. Writes config.json, model.safetensors (HF keys),
tokenizer.json and the card; --checkpoints also keeps the weights every 250 steps.

Measured 2026-12-02 (the cards' seed tables, `python -m minineo.zoo.check_recipe`), each run from
nothing in about 13 minutes of one CPU thread (two runs at once on a 2-core machine): tiny-neo and
tiny-gpt2 seeds 0-2 all meet every threshold. tiny-neo's induction head forms between steps 2000 and
3000; tiny-gpt2's between 3500 and 6000 here, and as late as 7000-7500 in an earlier run (hence 9000
steps; the remaining steps sharpen IOI). The earlier defaults (lr 3e-3, batches of 8)
never left the plateau in 5000 steps. --out defaults to a scratch folder so that a run never
overwrites a shipped model; --out minineo/zoo/MODEL rewrites it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minineo import outputs
from minineo.config import Config
from minineo.errors import UserError
from minineo.forward.model import Model
from minineo.zoo import data

ZOO_DIR = Path(__file__).resolve().parent
_COMMON = dict(d_model=128, n_layers=2, n_heads=4, d_mlp=512, n_ctx=128, d_vocab=data.VOCAB, act_fn="gelu_new",
               layer_norm_eps=1e-5, tie_unembed=True, bos_token_id=data.BOS, eos_token_id=data.BOS)
CONFIGS = {
    # GPT-Neo: no 1/sqrt(d_head) scaling, q/k/v without bias, layer 0 local (window 8), layer 1 global.
    "tiny-neo": Config(architecture="gpt_neo", attn_scales=(1.0,) * 2, windows=(8, None), qkv_bias=False,
                       upcast_attn=True, eager_attention=True, **_COMMON),
    # GPT-2: 1/sqrt(d_head) scaling, q/k/v biases, both layers global.
    "tiny-gpt2": Config(architecture="gpt2", qkv_bias=True, **_COMMON),
}


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights besides the seed and the architecture."""

    steps: int = 9000  # tiny-neo's induction head forms near step 3000, tiny-gpt2's as late as 7000-7500
    batch_size: int = 16
    length: int = 128  # the whole context
    lr: float = 1e-3  # after `warmup` linear steps; constant (3e-3 at batch 8 never left the plateau in 5000 steps)
    warmup: int = 100
    weight_decay: float = 0.0
    init_std: float = 0.02  # GPT-2's; W_O and W_out get init_std / sqrt(2 n_layers)

    def lr_at(self, step: int) -> float:
        return self.lr * min(1.0, (step + 1) / self.warmup)


def init_model(config: Config, seed: int, std: float) -> Model:
    torch.manual_seed(seed)
    model = Model(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w"):
                p.fill_(1.0)
            elif name.endswith((".b", "b_O", "b_in", "b_out", "b_QKV")):
                p.zero_()
            else:
                p.normal_(0.0, std / math.sqrt(2 * config.n_layers) if name.endswith(("W_O", "W_out")) else std)
    return model.requires_grad_(True)


def train(name: str, seed: int, recipe: Recipe = Recipe(), report: int = 250,
          checkpoints: Path | None = None) -> tuple[Model, list[float]]:
    """The trained model (eval mode, no grad) and the training loss of every step (nats/token).
    With `checkpoints`, the state dict after every 250th step goes to checkpoints/step-N.pt."""
    config = CONFIGS[name]
    model = init_model(config, seed, recipe.init_std)
    g = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=(0.9, 0.98),
                                  weight_decay=recipe.weight_decay)
    model.train()
    losses: list[float] = []
    begin = time.time()
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr_at(step)
        tokens = data.batch(recipe.batch_size, recipe.length, g)  # (batch, pos)
        logits = model(tokens)  # (batch, pos, d_vocab)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, config.d_vocab), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if checkpoints is not None and (step + 1) % 250 == 0:
            checkpoints.mkdir(parents=True, exist_ok=True)
            torch.save({"state_dict": model.state_dict(), "losses": losses}, checkpoints / f"step-{step + 1}.pt")
        if report and (step % report == 0 or step == recipe.steps - 1):
            print(f"{name} seed {seed} step {step:5d}  lr {recipe.lr_at(step):.2e}  loss {loss.item():.4f}  "
                  f"{induction_report(model)}  {time.time() - begin:6.1f}s", flush=True)
            model.train()
    return model.requires_grad_(False).eval(), losses


@torch.no_grad()
def induction_report(model: Model) -> str:
    """A progress line: repeated-segment losses and the best induction score, printable and any token."""
    from minineo.analysis.heads import head_scores, repeated_tokens

    parts = []
    for what, low, high in (("printable", 33, 127), ("any", 0, model.config.d_vocab)):
        scores = head_scores(model, repeated_tokens(model, 25, 8, seed=1, low=low, high=high), repeated_len=25)
        parts.append(f"{what} {scores.first_half_loss:.2f}->{scores.induction_loss:.2f} "
                     f"ind {float(scores.induction.max()):.2f}")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> None:
    from minineo.boundary import ScriptParser

    parser = ScriptParser("minineo.zoo.train_tiny", description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CONFIGS), default="tiny-neo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=Recipe.steps)
    parser.add_argument("--lr", type=float, default=Recipe.lr)
    parser.add_argument("--threads", type=int, default=1, help="1 (the default) is what the shipped weights used")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: ./MODEL-seedS (give minineo/zoo/MODEL to replace a shipped model)")
    parser.add_argument("--report", type=int, default=250, help="print progress every this many steps (0: never)")
    parser.add_argument("--checkpoints", type=Path, default=None, help="keep the weights every 250 steps here")
    args = parser.parse_args(argv)
    for name, value in (("--steps", args.steps), ("--threads", args.threads)):
        if value < 1:
            parser.error(f"{name} must be at least 1 (got {value})")
    if args.report < 0:
        parser.error(f"--report must be 0 (never) or a number of steps between progress lines (got {args.report})")
    if not args.lr > 0:
        parser.error(f"--lr must be positive (got {args.lr})")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    recipe = Recipe(steps=args.steps, lr=args.lr)
    out = args.out or Path(f"{args.model}-seed{args.seed}")
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as claims:
        try:  # held from before training to the card: a second run writing the same folder fails now, not after it
            claims.enter_context(outputs.claim(out, "--out"))
            # a file, an SAE folder, any folder that is not a model's: refused now, not after training into it
            outputs.refuse_replacing(out, "model", "--out")
        except UserError as err:
            parser.error(str(err))
        start = time.time()
        model, losses = train(args.model, args.seed, recipe, args.report, args.checkpoints)
        from minineo.zoo.files import save

        save(model, args.model, out, args.seed, recipe, losses, time.time() - start, args.threads)


if __name__ == "__main__":
    from minineo.boundary import run_script

    run_script(main)
