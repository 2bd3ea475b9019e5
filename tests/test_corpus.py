"""Corpus reading (every accepted layout gives the same documents) and SAELens packing (hand-computed rows, invariants)."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import minineo
from minineo.data.corpus import count_rows, pack_rows, read_documents
from minineo.errors import UserError

datasets = pytest.importorskip("datasets", reason="the corpus reader needs pip install 'minineo[harvest]'")

DOCS = ["When Mary and John went to the store,", "", "Beautiful is better than ugly.", "Explicit is better than implicit."]
BOS = 256  # the embedded model's <|endoftext|>, also its BOS


@pytest.fixture(scope="module")
def tiny():
    return minineo.load()


def write_layouts(folder):
    """The same documents as .txt, .jsonl, .json, .parquet, a save_to_disk folder, and a glob of two .jsonl files."""
    (folder / "c.txt").write_text("\n".join(DOCS) + "\n")
    (folder / "c.jsonl").write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    (folder / "c.json").write_text(json.dumps([{"text": d} for d in DOCS]))
    datasets.Dataset.from_dict({"text": DOCS}).to_parquet(str(folder / "c.parquet"))
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(str(folder / "saved"))
    (folder / "parts").mkdir()
    for part, docs in (("a", DOCS[:2]), ("b", DOCS[2:])):
        (folder / "parts" / f"{part}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return ["c.txt", "c.jsonl", "c.json", "c.parquet", "saved", "parts/*.jsonl"]


def test_every_layout_reads_the_same_documents_in_order(tmp_path):
    for name in write_layouts(tmp_path):
        assert list(read_documents(tmp_path / name)) == DOCS, name


def test_packing_matches_the_hand_computed_saelens_rows(tiny):
    # Bytes are token ids in the embedded model. Documents are joined with <|endoftext|> (256); each row
    # opens with BOS (256); a document that ends exactly at a row's end adds no separator to the next row;
    # a separator that fills a row's last slot stays there; the incomplete last row is dropped.
    docs = ["abc", "defgh", "", "ij", "klmnopq"]
    a = [ord(c) for c in "abcdefghijklmnopq"]
    rows = [r.tolist() for r in pack_rows(tiny, docs, context=4)]
    b = dict(zip("abcdefghijklmnopq", a))
    assert rows == [
        [BOS, b["a"], b["b"], b["c"]],
        [BOS, b["d"], b["e"], b["f"]],
        [BOS, b["g"], b["h"], BOS],
        [BOS, b["i"], b["j"], BOS],
        [BOS, b["k"], b["l"], b["m"]],
        [BOS, b["n"], b["o"], b["p"]],
    ]
    assert count_rows(tiny, docs, 4) == 6


@given(st.lists(st.text(alphabet="abcxyz .", max_size=40), max_size=12), st.integers(2, 17))
def test_rows_are_full_open_with_bos_and_keep_the_text_in_order(tiny, docs, context):
    stream = [ord(c) for c in "".join(docs)]
    try:
        rows = list(pack_rows(tiny, docs, context))
    except UserError as err:  # too short for one row: the only allowed failure
        assert "not enough for one row" in str(err)
        separators = max(sum(1 for d in docs if d) - 1, 0)
        assert len(stream) + separators < context - 1
        return
    assert all(r.dtype == torch.long and r.shape == (context,) and r[0] == BOS for r in rows)
    text = [t for r in rows for t in r.tolist() if t != BOS]
    assert text == stream[:len(text)]  # nothing reordered, skipped or invented
    assert len(stream) - len(text) < context  # only the dropped last row's text is missing
    assert [r.tolist() for r in pack_rows(tiny, docs, context)] == [r.tolist() for r in rows]  # deterministic


def test_corpus_mistakes_are_user_errors_that_say_the_fix(tmp_path, tiny):
    write_layouts(tmp_path)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n\n")
    (tmp_path / "c.csv").write_text("text\nhello\n")
    (tmp_path / "plain").mkdir()
    cases = {
        tmp_path / "missing.txt": "does not exist",
        tmp_path / "empty.txt": "holds no documents",
        str(tmp_path / "nothing*.jsonl"): "matches no files",
        str(tmp_path / "c.*"): "mixes file kinds",
        tmp_path / "c.csv": "is not .txt",
        tmp_path / "plain": "not written by datasets.save_to_disk",
    }
    for corpus, message in cases.items():
        with pytest.raises(UserError, match=message):
            list(read_documents(corpus))
    with pytest.raises(UserError, match="no field 'content'.*fields: \\['id', 'text'\\]"):
        list(read_documents(tmp_path / "c.jsonl", text_field="content"))
    with pytest.raises(UserError, match="holds int"):
        list(read_documents(tmp_path / "c.jsonl", text_field="id"))
    with pytest.raises(UserError, match="0 tokens, not enough for one row"):
        list(pack_rows(tiny, read_documents(tmp_path / "blank.txt"), 8))
    (tmp_path / "broken.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(UserError, match="could not read the corpus"):
        list(read_documents(tmp_path / "broken.jsonl"))
