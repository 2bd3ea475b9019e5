"""Text <-> token ids through the `tokenizers` library, from a snapshot's tokenizer.json (or vocab.json + merges.txt)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from minineo import checks
from minineo.errors import UserError, WrongTypeError

END_OF_TEXT = "<|endoftext|>"


def _char_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable stand-in character of each byte -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}


_CHAR_TO_BYTE = _char_to_byte()


class Tokenizer:
    """A byte-level BPE tokenizer with the model's BOS (GPT-2's and GPT-Neo's <|endoftext|>)."""

    def __init__(self, backend: HFTokenizer, bos_token_id: int | None = None, pad_token_id: int | None = None):
        self.backend = backend
        fallback = backend.token_to_id(END_OF_TEXT)
        self.bos_token_id = bos_token_id if bos_token_id is not None else fallback
        self.pad_token_id = pad_token_id if pad_token_id is not None else self.bos_token_id
        self.source: Path | None = None  # the file it was read from, named in errors

    @classmethod
    @checks.typed
    def from_dir(cls, directory: str | Path, bos_token_id: int | None = None) -> Tokenizer | None:
        """The tokenizer files in `directory`, or None when there are none."""
        directory = Path(directory)
        try:
            if (directory / "tokenizer.json").is_file():
                tokenizer = cls(HFTokenizer.from_file(str(directory / "tokenizer.json")), bos_token_id)
                tokenizer.source = directory / "tokenizer.json"
                return tokenizer
            if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
                return cls.from_vocab(directory / "vocab.json", directory / "merges.txt", bos_token_id)
        except Exception as err:  # the tokenizers library raises a bare Exception for an unreadable file
            files = "tokenizer.json" if (directory / "tokenizer.json").is_file() else "vocab.json / merges.txt"
            raise UserError(
                f"{directory / files.split(' ')[0]} is not a readable tokenizer file ({err}); "
                f"download the model's {files} again or fix it"
            ) from err
        return None

    @classmethod
    @checks.typed
    def from_vocab(cls, vocab: str | Path, merges: str | Path, bos_token_id: int | None = None) -> Tokenizer:
        """GPT-2's byte-level BPE from its vocab.json (encoder.json) and merges.txt (vocab.bpe)."""
        vocab = checks.existing_path(vocab, "vocab", kind="file", fix="give GPT-2's vocab.json (encoder.json)")
        merges = checks.existing_path(merges, "merges", kind="file", fix="give GPT-2's merges.txt (vocab.bpe)")
        try:
            backend = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
        except Exception as err:  # the tokenizers library raises a bare Exception for an unreadable file
            raise UserError(f"vocab {vocab} and merges {merges} are not a readable BPE vocabulary ({err}); give "
                            "GPT-2's vocab.json and merges.txt") from None
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        tokenizer = cls(backend, bos_token_id)
        tokenizer.source = Path(vocab)
        return tokenizer

    @checks.typed
    def encode(self, text: str, prepend_bos: bool = False) -> list[int]:
        """Token ids of `text` (BOS first with prepend_bos); a UserError for a tokenizer that cannot encode it."""
        if not isinstance(text, str):
            raise WrongTypeError(f"text must be a str (or a list of str), got {type(text).__name__} ({text!r:.60}); "
                                 "pass token ids to the model directly as a LongTensor (batch, pos)")
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if text and not ids:  # e.g. a tokenizer.json whose BPE vocabulary is empty
            where = self.source or "the tokenizer"
            raise UserError(f"{where} encodes the non-empty text {text[:40]!r} to no tokens: its vocabulary cannot "
                            f"represent it (it has {self.vocab_size} entries); use the model's own tokenizer.json "
                            "(for GPT-2, the hub's gpt2 tokenizer.json)")
        if prepend_bos:
            if self.bos_token_id is None:
                raise UserError("this tokenizer has no BOS token; pass prepend_bos=False")
            ids = [self.bos_token_id] + ids
        return ids

    @checks.typed
    def encode_batch(
        self, texts: str | list[str], prepend_bos: bool = True, padding_side: str = "right"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, attention_mask), both LongTensor (batch, pos); shorter texts are padded."""
        if padding_side not in ("left", "right"):
            raise UserError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            bad = texts if not isinstance(texts, (list, tuple)) else next(t for t in texts if not isinstance(t, str))
            raise WrongTypeError(f"text must be a str or a list of str, got {type(bad).__name__} ({bad!r:.60}); "
                                 "token ids go to the model directly as a LongTensor (batch, pos)")
        if not texts:
            raise UserError("texts is an empty list; give at least one text")
        rows = [self.encode(t, prepend_bos) for t in texts]
        if max(map(len, rows)) == 0:
            raise UserError("texts: the text encodes to no tokens; give a non-empty text or prepend_bos=True")
        width = max(map(len, rows))
        tokens = torch.full((len(rows), width), self.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            span = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            tokens[i, span] = torch.tensor(row, dtype=torch.long)
            mask[i, span] = 1
        return tokens, mask

    @checks.typed
    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)

    @checks.typed
    def token_bytes(self, token_id: int) -> bytes | None:
        """The raw bytes of one byte-level BPE token (None for a token outside GPT-2's byte alphabet).

        `decode` turns bytes that are not valid UTF-8 on their own into '�'; these are the bytes themselves.
        """
        piece = self.backend.id_to_token(checks.token_id(token_id, self.vocab_size, "token_id"))
        if piece is None or not all(char in _CHAR_TO_BYTE for char in piece):
            return None
        return bytes(_CHAR_TO_BYTE[char] for char in piece)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size()
