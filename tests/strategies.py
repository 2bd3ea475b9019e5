"""Hypothesis strategies for model shapes and inputs, in one place."""

import torch
from hypothesis import strategies as st

ACTIVATIONS = ["gelu_new", "gelu", "relu", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "silu", "tanh"]


@st.composite
def neo_shapes(draw):
    layers = draw(st.integers(1, 4))
    return dict(
        layers=layers,
        heads=draw(st.sampled_from([1, 2, 4, 8])),
        d_head=draw(st.sampled_from([4, 8, 16])),
        d_mlp=draw(st.sampled_from([None, 24, 64])),
        act=draw(st.sampled_from(ACTIVATIONS)),
        eps=draw(st.sampled_from([1e-5, 1e-3])),
        window=draw(st.integers(1, 24)),
        kinds=draw(st.lists(st.sampled_from(["global", "local"]), min_size=layers, max_size=layers)),
    )


@st.composite
def gpt2_shapes(draw):
    return dict(
        layers=draw(st.integers(1, 4)),
        heads=draw(st.sampled_from([1, 2, 4, 8])),
        d_head=draw(st.sampled_from([4, 8, 16])),
        d_mlp=draw(st.sampled_from([None, 24, 64])),
        act=draw(st.sampled_from(ACTIVATIONS)),
        eps=draw(st.sampled_from([1e-5, 1e-3])),
        scale_attn_by_inverse_layer_idx=draw(st.booleans()),
        reorder_and_upcast_attn=draw(st.booleans()),
        scale_attn_weights=draw(st.booleans()),
    )


@st.composite
def token_batches(draw, vocab: int = 97, max_pos: int = 40):
    batch = draw(st.integers(1, 3))
    pos = draw(st.integers(1, max_pos))
    seed = draw(st.integers(0, 2**16))
    return batch, pos, seed


# Metrics and inputs shared by the activation- and path-patching tests: logits (batch, pos, d_vocab) -> a scalar.
PATCHING_METRICS = {
    "last logit diff": lambda logits: (logits[:, -1, 3] - logits[:, -1, 5]).mean(),
    "log prob of every next token": lambda logits: logits[:, :-1].log_softmax(-1)[..., 7].sum(),
    "one row, middle position": lambda logits: logits[-1, logits.shape[1] // 2].logsumexp(-1),
}


def patching_inputs(case: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(clean, corrupted, attention_mask or None) for a drawn case: random ids (batch, pos), `n_changed`
    positions re-drawn in the corrupted copy, and left padding in the first row when `padded`."""
    g = torch.Generator().manual_seed(case["seed"])
    batch, pos = case["batch"], case["pos"]
    clean = torch.randint(0, 97, (batch, pos), generator=g)
    corrupted = clean.clone()
    changed = torch.randperm(pos, generator=g)[: case["n_changed"]]
    corrupted[:, changed] = torch.randint(0, 97, (batch, len(changed)), generator=g)
    mask = None
    if case["padded"]:
        mask = torch.ones(batch, pos, dtype=torch.long)
        mask[0, : int(torch.randint(0, pos, (1,), generator=g))] = 0  # left padding in the first row
    return clean, corrupted, mask
