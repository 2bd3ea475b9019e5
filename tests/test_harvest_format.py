"""minineo.harvest.load returns the dataset formatted for torch: indexing gives tensors, not Python lists."""

from __future__ import annotations

import pytest
import torch

import minineo

pytest.importorskip("datasets", reason="harvest needs pip install 'minineo[harvest]'")


def test_load_gives_tensors_equal_to_run_with_cache(tmp_path):
    from minineo.data.harvest import harvest, load

    tiny = minineo.load()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("When Mary and John went to the store, John gave a drink to Mary\n" * 6)
    acts = load(harvest(tiny, corpus, ["blocks.1.resid_post"], tmp_path / "acts", context=32))
    row = acts[0]
    assert isinstance(row["blocks.1.hook_resid_post"], torch.Tensor) and row["blocks.1.hook_resid_post"].shape == (32, 128)
    assert acts[:3]["blocks.1.hook_resid_post"].shape == (3, 32, 128)
    _, cache = tiny.run_with_cache(row["token_ids"].long()[None], names=["blocks.1.resid_post"])
    assert float((row["blocks.1.hook_resid_post"] - cache["blocks.1.resid_post"][0]).abs().max()) <= 1e-5
    assert minineo.harvest.load is load
