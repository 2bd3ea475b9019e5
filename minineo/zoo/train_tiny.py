"""Train the embedded tiny GPT-Neo with minineo's own forward pass; save it in HF layout.

    python -m minineo.zoo.train_tiny [--steps 1200] [--out minineo/zoo/tiny-neo]

Deterministic from the seed: byte-level data from minineo.zoo.data, AdamW, cosine schedule.
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

from minineo.config import Config
from minineo.model import Model
from minineo.weights.export import to_hf_gpt_neo
from minineo.zoo import data

CONFIG = Config(
    architecture="gpt_neo", d_model=128, n_layers=4, n_heads=4, d_mlp=512, n_ctx=256, d_vocab=data.VOCAB,
    act_fn="gelu_new", layer_norm_eps=1e-5, attn_scales=(1.0,) * 4, windows=(8, None, 8, None),
    qkv_bias=False, upcast_attn=True, tie_unembed=True, bos_token_id=data.BOS, eos_token_id=data.BOS,
)


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
                std = 0.02 / math.sqrt(2 * config.n_layers) if name.endswith(("W_O", "W_out")) else 0.02
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


def train(steps: int, seed: int, batch_size: int = 24, length: int = 128, lr: float = 3e-3) -> tuple[Model, list[float]]:
    model = init_model(CONFIG, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    g = torch.Generator().manual_seed(seed)
    losses, start = [], time.time()
    for step in range(steps):
        warm = min(1.0, (step + 1) / 100)
        for group in optimizer.param_groups:
            group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / steps))
        tokens = data.batch(batch_size, length, g)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, CONFIG.d_vocab), tokens[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - start:6.1f}s", flush=True)
    return model.requires_grad_(False).eval(), losses


def save(model: Model, out: Path, steps: int, seed: int, losses: list[float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.safetensors.tmp"
    save_file(to_hf_gpt_neo(model), tmp, metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")  # never leave a half-written model behind
    (out / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2) + "\n")
    byte_tokenizer().save(str(out / "tokenizer.json"))
    final = sum(losses[-50:]) / len(losses[-50:])
    (out / "training.json").write_text(json.dumps({"steps": steps, "seed": seed, "final_loss_last50": final}, indent=2) + "\n")
    print(f"saved to {out} (mean loss over the last 50 steps: {final:.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "tiny-neo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, losses = train(args.steps, args.seed)
    save(model, args.out, args.steps, args.seed, losses)


if __name__ == "__main__":
    main()
