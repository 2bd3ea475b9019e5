"""A text corpus -> documents -> packed rows of token ids (SAELens's packing), streamed.

    read_documents(corpus, text_field="text") -> Iterator[str]
        corpus: a .txt file (one document per line), a .jsonl / .json file, a .parquet file, a folder
        written by `datasets.save_to_disk`, or a glob of such files ("data/*.jsonl", one kind only).
        Read through the `datasets` library, streaming: a corpus larger than memory works.
        Documents come in file order (a glob's files sorted by name).

    pack_rows(tokenizer_or_model, documents, context) -> Iterator[torch.LongTensor]
        Each document is tokenized without BOS; documents are joined with the end-of-text token and cut
        into rows of `context` token ids (context,), each beginning with BOS (a row that would start
        with BOS anyway gets no second one). The last, incomplete row is dropped. This is SAELens's
        `concat_and_batch_sequences` with its defaults (begin_batch_token="bos",
        sequence_separator_token="bos" for GPT-2 / GPT-Neo, where <|endoftext|> is BOS). Deterministic:
        the same documents and context give the same rows in the same order.

    count_rows(tokenizer_or_model, documents, context) -> int   (how many rows pack_rows yields)

Mistakes raise `minineo.errors.UserError` (missing path, empty corpus, no `text_field`, a context too
small to hold a token after BOS, a text field that no document has). Documents whose text is
missing or null are skipped, with a `warning:` on stderr that counts them (minineo.report); a corpus where
every document lacks it is an error. The `datasets` library is the optional extra `minineo[harvest]`.
"""

from __future__ import annotations

import glob as globlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import torch

from minineo import checks, report
from minineo.errors import UserError
from minineo.checkpoints.tokenizer import END_OF_TEXT, Tokenizer

if TYPE_CHECKING:  # annotations only (@checks.typed knows minineo's classes by name)
    from minineo.forward.model import Model

INSTALL_HINT = "pip install 'minineo[harvest]'"
_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_BATCH = 256  # documents read and tokenized together (the tokenizers library encodes a batch in parallel)


def require_datasets():
    """The `datasets` module, or a UserError saying which install adds it."""
    try:
        import datasets
    except ImportError:
        raise UserError(f"reading a corpus needs the `datasets` library, which is not installed; {INSTALL_HINT} adds it") from None
    # its JSON reader logs the parse error it is about to raise; minineo reports that error itself (one error: line)
    json_logger = logging.getLogger("datasets.packaged_modules.json.json")
    if not any(isinstance(f, _ReportedHere) for f in json_logger.filters):
        json_logger.addFilter(_ReportedHere())
    return datasets


class _ReportedHere(logging.Filter):
    """Drops datasets' "Failed to load JSON from file ..." line: _read_batches turns the error into a UserError."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to load JSON from file")


# ---- reading ----------------------------------------------------------------------------------------

@checks.typed
def read_documents(corpus: str | Path, text_field: str = "text") -> Iterator[str]:
    """The corpus's documents, streamed, in order. See the module docstring for the accepted layouts."""
    yield from (doc for batch in _read_batches(corpus, text_field) for doc in batch)


def _read_batches(corpus: str | Path, text_field: str) -> Iterator[list[str]]:
    datasets = require_datasets()
    dataset, what = _open(corpus, datasets)
    first = True
    read = skipped = 0  # documents read, and those without text (field missing or null), which are skipped
    try:
        for batch in dataset.iter(batch_size=_BATCH):
            if first and text_field not in batch:
                raise UserError(f"the corpus {what} has no field {text_field!r} (its fields: {sorted(batch)}); "
                                f"pass the right one with text_field= (--text-field)")
            texts = batch[text_field]
            sample = next((t for t in texts if t is not None), "")
            if not isinstance(sample, str):
                raise UserError(f"field {text_field!r} of the corpus {what} holds {type(sample).__name__}, not text; "
                                f"pass a text field with text_field= (--text-field)")
            first = False
            read += len(texts)
            kept = [t for t in texts if t is not None]
            skipped += len(texts) - len(kept)
            yield kept
    except UserError:
        raise
    except Exception as err:  # pyarrow / json parse errors surface here, while streaming
        if not _is_read_error(err):
            raise
        raise UserError(f"could not read the corpus {what}: {type(err).__name__}: {checks.shortened(str(err).splitlines()[0], 300)}; "
                        f"check the file's format") from None
    finally:
        if skipped and read > skipped:  # said when the stream ends, or is dropped part-way (e.g. at max_tokens)
            report.warn(f"{skipped} of the {read} documents read from the corpus {what} have no text in the field "
                          f"{text_field!r} (missing or null) and were skipped; pass another text_field= "
                          "(--text-field) if the text is elsewhere")
    if first:
        raise UserError(f"the corpus {what} holds no documents; give a non-empty corpus")
    if read == skipped:
        raise UserError(f"none of the {read} documents of the corpus {what} has text in the field {text_field!r} "
                        "(missing or null in every one); pass the right field with text_field= (--text-field)")


def _is_read_error(err: Exception) -> bool:
    import pyarrow

    names = {type(err).__name__, *(type(e).__name__ for e in (err.__cause__, err.__context__) if e is not None)}
    return isinstance(err, (pyarrow.ArrowException, UnicodeDecodeError)) or bool(
        names & {"DatasetGenerationError", "JSONDecodeError", "ArrowInvalid", "ArrowTypeError"})


def _open(corpus: str | Path, datasets):
    """(a Dataset or IterableDataset, how to name it in errors)."""
    text = str(corpus)
    path = Path(text).expanduser()
    if path.is_dir():
        return _open_saved(path, datasets), str(path)
    if any(ch in text for ch in "*?["):
        files = sorted(f for f in globlib.glob(str(path), recursive=True) if Path(f).is_file())
        if not files:
            raise UserError(f"the corpus glob {text!r} matches no files; check the pattern")
    elif path.is_file():
        files = [str(path)]
    else:
        raise UserError(f"the corpus {text} does not exist; give a .txt/.jsonl/.json/.parquet file, "
                        f"a datasets.save_to_disk folder, or a glob of such files")
    kinds = {_BUILDERS.get(Path(f).suffix.lower(), Path(f).suffix) for f in files}
    if len(kinds) > 1:
        raise UserError(f"the corpus glob {text!r} mixes file kinds ({sorted(kinds)}); match one kind of file")
    what = files[0] if len(files) == 1 else f"{text!r} ({len(files)} files)"
    if all(Path(f).stat().st_size == 0 for f in files):  # datasets' JSON builder raises a bare StopIteration here
        raise UserError(f"the corpus {what} holds no documents (the file is empty); give a non-empty corpus")
    return datasets.load_dataset(_builder(files[0]), data_files=files, split="train", streaming=True), what


def _builder(file: str) -> str:
    suffix = Path(file).suffix.lower()
    if suffix not in _BUILDERS:
        raise UserError(f"the corpus file {file} is not .txt, .jsonl, .json or .parquet; convert it, "
                        f"or give a datasets.save_to_disk folder")
    return _BUILDERS[suffix]


def _open_saved(path: Path, datasets):
    if not ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        raise UserError(f"the corpus folder {path} was not written by datasets.save_to_disk; "
                        f"give a file or a glob such as '{path}/*.jsonl'")
    loaded = datasets.load_from_disk(str(path))  # memory-mapped: rows are read as iterated
    if isinstance(loaded, datasets.DatasetDict):
        if "train" in loaded:
            return loaded["train"]
        if len(loaded) == 1:
            return next(iter(loaded.values()))
        raise UserError(f"the corpus folder {path} holds several splits {list(loaded)} and none is 'train'; "
                        f"save the split you want on its own")
    return loaded


# ---- packing ----------------------------------------------------------------------------------------

@checks.typed
def special_ids(tokenizer_or_model: Tokenizer | Model) -> tuple[Tokenizer, int, int]:
    """(tokenizer, BOS id, end-of-text id) of a minineo Tokenizer or Model."""
    tokenizer = tokenizer_or_model if isinstance(tokenizer_or_model, Tokenizer) else getattr(tokenizer_or_model, "tokenizer", None)
    if tokenizer is None:
        raise UserError("this model has no tokenizer (no tokenizer.json, or vocab.json + merges.txt, beside its "
                        "weights); add one to the model folder to read a text corpus")
    bos = tokenizer.bos_token_id
    eot = tokenizer.backend.token_to_id(END_OF_TEXT)
    eot = bos if eot is None else eot
    if bos is None:
        raise UserError(f"the tokenizer has neither a BOS token nor {END_OF_TEXT}; rows need one to begin with")
    return tokenizer, bos, eot


@checks.typed
def pack_rows(tokenizer_or_model: Tokenizer | Model, documents: Iterable[str], context: int) -> Iterator[torch.Tensor]:
    """Rows of `context` token ids, LongTensor (context,), each beginning with BOS; see the module docstring."""
    for row in _packed(tokenizer_or_model, documents, context):
        yield torch.tensor(row, dtype=torch.long)


@checks.typed
def count_rows(tokenizer_or_model: Tokenizer | Model, documents: Iterable[str], context: int) -> int:
    """How many rows `pack_rows` yields for these documents (tokenizes everything, keeps nothing)."""
    return sum(1 for _ in _packed(tokenizer_or_model, documents, context))


def _packed(tokenizer_or_model, documents: Iterable[str], context: int) -> Iterator[list[int]]:
    checks.integer(context, "context", low=2, fix="a row is BOS and at least one token after it")
    tokenizer, bos, eot = special_ids(tokenizer_or_model)
    row: list[int] | None = None  # the row being filled
    tokens_seen, rows = 0, 0
    for ids in _token_stream(tokenizer, documents):
        tokens_seen += len(ids)
        offset = 0
        while offset < len(ids):  # an empty document adds nothing, not even a separator (as in SAELens)
            if row is None:
                row = [] if ids[offset] == bos else [bos]
            else:
                row.append(eot)  # only at a document's start: a continued document always opens a new row
            take = max(context - len(row), 0)
            row += ids[offset:offset + take]
            offset += take
            if len(row) >= context:
                yield row[:context]
                rows += 1
                row = None
    if rows == 0:
        raise UserError(f"the corpus (documents) holds {tokens_seen} token{'' if tokens_seen == 1 else 's'}, not enough for one row of context={context}; "
                        f"give a larger corpus or a smaller context")


def _token_stream(tokenizer: Tokenizer, documents: Iterable[str]) -> Iterator[list[int]]:
    """Each document's token ids (no BOS), encoded in batches."""
    batch: list[str] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) == _BATCH:
            yield from (e.ids for e in tokenizer.backend.encode_batch(batch, add_special_tokens=False))
            batch = []
    if batch:
        yield from (e.ids for e in tokenizer.backend.encode_batch(batch, add_special_tokens=False))
