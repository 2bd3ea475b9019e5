"""Hypothesis strategies for model shapes and inputs, in one place."""

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
