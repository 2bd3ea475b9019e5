"""model.loss: HF's labels loss is the oracle; padding and patching against hand-computed cross-entropies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hf_oracle import build_hf, hf_config, save_hf
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import gpt2_shapes, neo_shapes

import minineo
from minineo.errors import UserError


def hf_loss(hf, tokens: torch.Tensor) -> float:
    with torch.no_grad():
        return float(hf(tokens, labels=tokens).loss)


def check_against_hf(directory, arch, shape, pos, seed):
    hf = build_hf(hf_config(arch, **shape), seed=seed)
    model = minineo.load(save_hf(hf, directory))
    tokens = torch.randint(0, 97, (2, pos), generator=torch.Generator().manual_seed(seed))
    assert abs(float(model.loss(tokens)) - hf_loss(hf, tokens)) <= 1e-5
    per_token = model.loss(tokens, per_token=True)
    assert per_token.shape == (2, pos - 1)
    with torch.no_grad():
        hf_logits = hf(tokens).logits
    expected = F.cross_entropy(hf_logits[:, :-1].reshape(-1, 97), tokens[:, 1:].reshape(-1), reduction="none")
    assert float((per_token - expected.view(2, pos - 1)).abs().max()) <= 1e-5


@settings(max_examples=6)
@given(shape=gpt2_shapes(), pos=st.integers(2, 40), seed=st.integers(0, 2**16))
def test_gpt2_loss_equals_hf_labels_loss(tmp_path_factory, shape, pos, seed):
    check_against_hf(tmp_path_factory.mktemp("gpt2"), "gpt2", shape, pos, seed)


@settings(max_examples=6)
@given(shape=neo_shapes(), pos=st.integers(2, 40), seed=st.integers(0, 2**16))
def test_gpt_neo_loss_equals_hf_labels_loss(tmp_path_factory, shape, pos, seed):
    check_against_hf(tmp_path_factory.mktemp("neo"), "gpt_neo", shape, pos, seed)


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_left_padded_rows_have_the_loss_of_the_unpadded_rows(hf_pair, arch):
    hf, model = hf_pair(arch, window=3)
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 97, (n,), generator=g) for n in (12, 7, 3)]
    width = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(tokens)
    for i, row in enumerate(rows):
        tokens[i, width - len(row):], mask[i, width - len(row):] = row, 1
    per_token = model.loss(tokens, attention_mask=mask, per_token=True)
    nats, count = 0.0, 0
    for i, row in enumerate(rows):
        alone = hf_loss(hf, row[None])  # HF on the row alone: the oracle for the padded row
        n = len(row) - 1
        assert abs(float(per_token[i, width - len(row):].mean()) - alone) <= 1e-5
        assert bool((per_token[i, :width - len(row)] == 0).all())  # pads count nothing
        nats, count = nats + alone * n, count + n
    # the batch's loss: the mean over every counted prediction of every row
    assert abs(float(model.loss(tokens, attention_mask=mask)) - nats / count) <= 1e-5


def test_patched_loss_is_the_cross_entropy_of_the_patched_logits(hf_pair):
    _, model = hf_pair("gpt_neo")
    tokens = torch.randint(0, 97, (3, 20), generator=torch.Generator().manual_seed(2))
    patch = {"blocks.1.resid_pre": lambda x: x * 0.5, "blocks.0.attn.hook_z": lambda z: z.flip(-1)}
    logits = model(tokens, patch=patch)
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, 97), tokens[:, 1:].reshape(-1))
    assert abs(float(model.loss(tokens, patch=patch)) - float(expected)) <= 1e-6
    assert abs(float(model.loss(tokens, patch=patch)) - float(model.loss(tokens))) > 1e-3  # the patch mattered


def test_text_input_and_bad_lengths(hf_pair):
    _, model = hf_pair("gpt2")
    with pytest.raises(UserError, match="at least 2 positions"):
        model.loss(torch.tensor([[5]]))
    with pytest.raises(UserError, match="nothing to predict"):
        model.loss(torch.tensor([[5, 6, 7]]), attention_mask=torch.tensor([[0, 0, 1]]))
    tiny = minineo.load()
    tokens = tiny.to_tokens("When Mary and John went to the store")
    assert float(tiny.loss("When Mary and John went to the store")) == float(tiny.loss(tokens))
