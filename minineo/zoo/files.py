"""Write a trained zoo model in HF layout: config.json, model.safetensors, tokenizer.json and its card."""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel

from minineo.checkpoints.weights.export import to_hf_gpt2, to_hf_gpt_neo
from minineo.forward.model import Model
from minineo.zoo import data
from minineo.zoo.cards import SEEDS_BEGIN, SEEDS_END, card

EXPORTS = {"gpt_neo": to_hf_gpt_neo, "gpt2": to_hf_gpt2}


def save(model: Model, name: str, out: Path, seed: int, recipe, losses: list[float], seconds: float,
         threads: int, provenance: str | None = None) -> None:
    """The HF folder, then the card with the behaviour measured on it.

    Only a run into the shipped folder itself (minineo/zoo/NAME) is called the shipped weights on its card;
    any other folder's card says that its weights are a scratch run (unless `provenance` says otherwise)."""
    from minineo.zoo.behaviour import measure

    write_folder(model, out)
    behaviour = measure(out)
    last = losses[-100:]  # the last 100 steps, or every step of a shorter run
    final = sum(last) / len(last)
    readme = out / "README.md"
    seeds = seeds_section(readme.read_text()) if readme.is_file() else ""
    if provenance is None and not is_shipped_folder(name, out):
        provenance = (f"**These are scratch weights** written to `{out}`, not the shipped {name} "
                      f"(`minineo.load(\"{name}\")` loads those, from minineo/zoo/{name}).")
    readme.write_text(card(name, model, recipe, seed, final, seconds, threads, behaviour, seeds, provenance))
    print(f"saved {name} (seed {seed}) to {out}: mean training loss over the last {len(last)} steps {final:.4f}; "
          f"thresholds missed: {behaviour.failures() or 'none'}")


def is_shipped_folder(name: str, out: Path) -> bool:
    """Is `out` the shipped model's own folder, minineo/zoo/NAME?"""
    return Path(out).resolve() == (Path(__file__).resolve().parent / name).resolve()


def write_folder(model: Model, out: Path) -> None:
    """config.json, model.safetensors (HF keys of the model's architecture, written atomically), tokenizer.json."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.safetensors.tmp"
    save_file(EXPORTS[model.config.architecture](model), str(tmp), metadata={"format": "pt"})
    tmp.replace(out / "model.safetensors")  # never leave a half-written model behind
    (out / "config.json").write_text(json.dumps(model.config.to_hf(), indent=2) + "\n")
    byte_tokenizer().save(str(out / "tokenizer.json"))


def seeds_section(text: str) -> str:
    """The card's table of seeds between the markers (kept when the card is rewritten), or ''."""
    found = re.search(re.escape(SEEDS_BEGIN) + r"(.*?)" + re.escape(SEEDS_END), text, flags=re.S)
    return found.group(1).strip("\n") if found else ""


def write_seeds_section(readme: Path, table: str) -> None:
    text = readme.read_text()
    begin, end = text.index(SEEDS_BEGIN) + len(SEEDS_BEGIN), text.index(SEEDS_END)
    readme.write_text(text[:begin] + "\n" + table.strip("\n") + "\n" + text[end:])


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

