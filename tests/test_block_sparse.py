"""Block-sparse local attention (flex attention) against the explicit path, the spec.

Uncompiled, flex attention applies the mask densely and ignores which blocks the BlockMask lists, so
the block structure is checked on its own against a brute-force reading of the boolean mask; the
compiled kernel, which does skip blocks, runs in the `slow` tests (a ~30 s compilation each).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

from minineo import report
from minineo.forward import blocks
from minineo.forward.attention import allowed_keys, attend_explicit, window_masks
from minineo.forward.flex import attend_block_sparse, block_mask, use_block_sparse
from minineo.record.recording import Recorder


@st.composite
def local_cases(draw):
    """A window, a length around or past it, a batch with left padding, and a flex block size."""
    window = draw(st.integers(1, 12))
    pos = draw(st.integers(max(1, window - 2), 3 * window + 5))
    batch = draw(st.integers(1, 3))
    pads = draw(st.lists(st.integers(0, pos - 1), min_size=batch, max_size=batch))
    block = draw(st.sampled_from([1, 2, 4, 8, 128]))
    return window, pos, pads, block, draw(st.integers(0, 2**16))


def local_mask(window: int, pos: int, pads: list[int]) -> torch.Tensor:
    key_mask = torch.ones(len(pads), pos, dtype=torch.long)
    for row, pad in enumerate(pads):
        key_mask[row, :pad] = 0
    mask = window_masks(pos, pos, [window], key_mask if any(pads) else None, torch.device("cpu"))[window]
    index = torch.arange(pos)
    return allowed_keys(index, index, window, None) if mask is None else mask  # (batch or 1, 1, pos, pos)


@settings(max_examples=12)  # each new shape retraces flex attention (~1-2 s)
@given(case=local_cases(), heads=st.sampled_from([1, 3]), d_head=st.sampled_from([4, 16]),
       scale=st.sampled_from([1.0, 0.25]))
def test_block_sparse_attention_equals_the_explicit_path(case, heads, d_head, scale):
    window, pos, pads, block, seed = case
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(len(pads), pos, heads, d_head, generator=g) for _ in range(3))
    allowed = local_mask(window, pos, pads)
    expected = attend_explicit(q, k, v, allowed, scale, True, Recorder(), "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile": here on purpose
        z = attend_block_sparse(q, k, v, allowed, scale, True, block_size=block)
    assert_close(z, expected, f"window {window}, pos {pos}, pads {pads}, block {block}")


@settings(max_examples=40)
@given(case=local_cases())
def test_block_mask_lists_exactly_the_blocks_the_mask_touches(case):
    window, pos, pads, block, _ = case
    allowed = local_mask(window, pos, pads)
    mask = block_mask(allowed, block_size=block)
    n_blocks = -(-pos // block)
    for row in range(allowed.shape[0]):
        partial, full = set(), set()
        for q_block in range(n_blocks):
            n = int(mask.kv_num_blocks[row, 0, q_block])
            partial |= {(q_block, int(kb)) for kb in mask.kv_indices[row, 0, q_block, :n]}
            n = int(mask.full_kv_num_blocks[row, 0, q_block])
            full |= {(q_block, int(kb)) for kb in mask.full_kv_indices[row, 0, q_block, :n]}
        assert not partial & full
        for q_block in range(n_blocks):
            for k_block in range(n_blocks):
                tile = allowed[row, 0, q_block * block:(q_block + 1) * block, k_block * block:(k_block + 1) * block]
                # a tile cut short by the sequence's end is full only if its real part is all allowed
                whole = tile.shape == (block, block)
                expected = ("full" if bool(tile.all()) and whole else "partial" if bool(tile.any()) else "skipped")
                got = ("full" if (q_block, k_block) in full else
                       "partial" if (q_block, k_block) in partial else "skipped")
                assert got == expected, f"block ({q_block}, {k_block}) of row {row}: {got}, mask says {expected}"


def test_eager_fast_path_keeps_sdpa():
    """Uncompiled flex attention computes the dense scores: never chosen outside torch.compile."""
    allowed = local_mask(4, 256, [0])
    assert not use_block_sparse(4, allowed, 256, 256)
    assert not use_block_sparse(None, allowed, 256, 256)


@pytest.mark.slow
@pytest.mark.parametrize("padded", [False, True])
def test_compiled_local_layers_run_block_sparse_and_match_hf(hf_pair, monkeypatch, padded):
    """The compiled fast path traces the flex kernel for local layers, and its logits still equal HF's.

    A padded batch keeps SDPA on the CPU (Inductor's CPU flex kernel does not compile a per-row mask: see
    use_block_sparse); there the compiled logits are still checked against HF.
    """
    hf, model = hf_pair("gpt_neo", layers=2, heads=2, d_head=16, window=40, n_ctx=300, kinds=["local", "global"])
    traced = []
    original = blocks.attend_block_sparse
    monkeypatch.setattr(blocks, "attend_block_sparse", lambda *a, **kw: traced.append(1) or original(*a, **kw))
    tokens = torch.randint(0, 97, (2, 256), generator=torch.Generator().manual_seed(0))  # two whole blocks
    mask = torch.ones_like(tokens)
    if padded:
        mask[0, :37] = 0
    model.compile_fast_path()
    with report.collect() as said:
        logits = model(tokens, attention_mask=mask if padded else None)
    failures = [message for message in said if "torch.compile failed" in message]
    assert not failures, failures  # a compile failure falls back to eager with this warning
    device = next(hf.parameters()).device
    assert bool(traced) == (not padded or device.type == "cuda"), "flex attention where it should (not) run"
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(tokens.to(device), attention_mask=mask.to(device), position_ids=positions.to(device)).logits
    assert_close(logits[:, 37:], expected[:, 37:], "compiled logits vs HF")
