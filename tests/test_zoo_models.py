"""Both trained zoo models (tiny-neo, tiny-gpt2): HF parity on trained weights, the card's thresholds, analyses.

Trained weights have sharp attention and large activations that random test weights lack, so the
HF comparisons here are the GPT-2 code path's (q/k/v biases, 1/sqrt(d_head), Conv1D) first test on
a model that learned something. HF's GPTNeoForCausalLM / GPT2LMHeadModel are the oracles.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_close
from safetensors.torch import load_file
from transformers import GPT2LMHeadModel, GPTNeoForCausalLM

import minineo
from minineo import analysis
from minineo.checkpoints.hub import EMBEDDED
from minineo.checkpoints.weights.export import to_hf_gpt2
from minineo.zoo.behaviour import measure
from minineo.zoo.train_tiny import CONFIGS, init_model

HF_CLASS = {"tiny-neo": GPTNeoForCausalLM, "tiny-gpt2": GPT2LMHeadModel}
MODELS = sorted(EMBEDDED)


def hf_model(name):
    return HF_CLASS[name].from_pretrained(EMBEDDED[name], attn_implementation="eager").eval()


def sample_tokens(model):
    """Text of the training kind and any-token repeats (the sharpest attention the model has)."""
    text = model.to_tokens(["When Mary and John went to the store, John gave a drink to",
                            "Beautiful is better than ugly. Explicit is better than implicit."])
    half = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(3))
    bos = torch.full((2, 1), model.config.bos_token_id)
    return text, torch.cat([bos, half, half], dim=1)  # (2, 61)


@pytest.mark.parametrize("name", MODELS)
def test_the_embedded_model_loads_by_name_with_its_architecture(name):
    model = minineo.load(name)
    config = json.loads((EMBEDDED[name] / "config.json").read_text())
    assert model.config.architecture == config["model_type"] == {"tiny-neo": "gpt_neo", "tiny-gpt2": "gpt2"}[name]
    assert model.to_string(model.to_tokens("Hi ∑", prepend_bos=False)[0]) == "Hi ∑"
    if name == "tiny-gpt2":  # the GPT-2 traps, resolved into values
        assert model.config.qkv_bias and model.config.windows == (None, None)
        assert model.config.attn_scales == pytest.approx((32 ** -0.5,) * 2)


@pytest.mark.parametrize("name", MODELS)
def test_hf_and_minineo_agree_on_every_residual_and_pattern_of_the_trained_weights(name):
    model, hf = minineo.load(name), hf_model(name)
    text, repeats = sample_tokens(model)
    for tokens in (repeats, text):
        mask = getattr(tokens, "attention_mask", torch.ones_like(tokens))
        with torch.no_grad():
            out = hf(tokens, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                     output_hidden_states=True, output_attentions=True)
        logits, cache = model.run_with_cache(tokens)
        real = mask.bool()  # left-padded positions are nobody's prediction
        # 1e-4, not 1e-5: on tiny-neo's any-token repeats the logits differ from HF's by 4.7e-5 (measured
        # 2026-12-01; sharp trained attention amplifies float32 round-off; not investigated further).
        assert_close(logits[real], out.logits[real], f"{name} logits", atol=1e-4)
        assert_close(model(tokens)[real], out.logits[real], f"{name} fast-path logits", atol=1e-4)
        for layer in range(model.config.n_layers):
            assert_close(cache[f"blocks.{layer}.resid_pre"][real], out.hidden_states[layer][real], f"resid_pre {layer}")
            pattern, expected = cache[f"blocks.{layer}.attn.pattern"], out.attentions[layer]  # (batch, head, q, k)
            assert_close(pattern.transpose(1, 2)[real], expected.transpose(1, 2)[real], f"pattern {layer}")
    # Trained patterns are far sharper than at initialisation (what random test weights exercise): the
    # mean over queries of the largest attention weight, for the sharpest head.
    def sharpest(cache):
        return max(float(cache[f"blocks.{layer}.attn.pattern"].max(-1).values.mean((0, 2)).max())
                   for layer in range(model.config.n_layers))

    _, at_init = init_model(CONFIGS[name], seed=0, std=0.02).run_with_cache(text)
    assert sharpest(cache) > 3 * sharpest(at_init), (sharpest(cache), sharpest(at_init))


@pytest.mark.parametrize("name", MODELS)
def test_the_shipped_files_meet_the_cards_thresholds(name):
    behaviour = measure(EMBEDDED[name])
    assert behaviour.failures() == [], behaviour


@pytest.mark.parametrize("name", MODELS)
def test_hf_trains_the_shipped_config_without_dropout_as_the_recipe_did(name):
    """minineo has no dropout and the recipe trained without; GPT-2's HF default would add 0.1 in train mode."""
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(EMBEDDED[name])
    fields = {"tiny-neo": ("embed_dropout", "attention_dropout", "resid_dropout"),
              "tiny-gpt2": ("embd_pdrop", "attn_pdrop", "resid_pdrop")}[name]
    assert {f: getattr(hf, f) for f in fields} == dict.fromkeys(fields, 0.0)


@pytest.mark.parametrize("name", MODELS)
def test_the_card_quotes_what_the_shipped_files_measure(name):
    card = (EMBEDDED[name] / "README.md").read_text()
    assert measure(EMBEDDED[name]).table() in card
    assert "/tmp" not in card and "/work" not in card  # no scratch path of the machine that trained it


@pytest.mark.parametrize("name", MODELS)
def test_residual_decomposition_and_dla_sum_up_on_the_trained_model(name):
    model = minineo.load(name)
    _, tokens = sample_tokens(model)
    logits, cache = model.run_with_cache(tokens)
    parts = [cache["embed"], cache["pos_embed"]]
    for layer in range(model.config.n_layers):
        parts += [cache[f"blocks.{layer}.attn_out"], cache[f"blocks.{layer}.mlp_out"]]
    assert_close(torch.stack(parts).sum(0), cache[f"blocks.{model.config.n_layers - 1}.resid_post"], "decomposition",
                 atol=1e-4)
    # Each head's write (attn.result) sums, with b_O, to attn_out.
    for layer in range(model.config.n_layers):
        result = cache[f"blocks.{layer}.attn.result"]  # (batch, pos, head, d_model)
        assert_close(result.sum(2) + model.blocks[layer].attn.b_O, cache[f"blocks.{layer}.attn_out"], "heads", atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_the_induction_head_hf_finds_is_the_one_minineo_ranks_first(name):
    behaviour = measure(EMBEDDED[name])
    model = minineo.load(name)
    half = torch.randint(0, 256, (16, 40), generator=torch.Generator().manual_seed(7))  # measure()'s tokens
    tokens = torch.cat([torch.full((16, 1), model.config.bos_token_id), half, half], dim=1)
    ours = analysis.head_scores(model, tokens, repeated_len=40)
    assert divmod(int(ours.induction.argmax()), model.config.n_heads) == behaviour.induction_head


def test_gpt2_export_is_what_hf_saves_and_loads():
    """to_hf_gpt2 writes exactly the keys and shapes GPT2LMHeadModel.save_pretrained writes (its
    buffers aside), and HF computes the same logits from them as minineo."""
    model = init_model(CONFIGS["tiny-gpt2"], seed=1, std=0.2)
    state = to_hf_gpt2(model)
    hf = GPT2LMHeadModel._from_config(__import__("transformers").GPT2Config(**CONFIGS["tiny-gpt2"].to_hf()),
                                      attn_implementation="eager").eval()
    expected = {k: v.shape for k, v in hf.state_dict().items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    expected.pop("lm_head.weight")  # tied to wte: save_pretrained leaves it out
    assert {k: v.shape for k, v in state.items()} == expected
    hf.load_state_dict(state, strict=False)
    tokens = torch.randint(0, 257, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(model(tokens), hf(tokens).logits, "exported tiny GPT-2 vs HF")


def test_shipped_gpt2_file_has_hf_keys_only():
    keys = set(load_file(EMBEDDED["tiny-gpt2"] / "model.safetensors"))
    assert "transformer.h.0.attn.c_attn.bias" in keys and not any("q_proj" in k for k in keys)


def test_the_zoo_pages_side_by_side_table_is_what_compare_measures():
    import re
    from pathlib import Path

    from minineo.zoo.compare import table

    page = (Path(__file__).resolve().parent.parent / "docs" / "zoo.md").read_text()
    quoted = re.search(r"<!-- zoo-compare: python -m minineo.zoo.compare -->\n(.*?)\n<!-- /zoo-compare -->", page,
                       flags=re.S).group(1)
    assert quoted == table(["tiny-neo", "tiny-gpt2"])


@pytest.mark.parametrize("module, args, message", [
    ("check_recipe", ["--reuse"], "--reuse needs --keep DIR"),
    ("check_recipe", ["--jobs", "0"], "--jobs must be at least 1"),
    ("check_recipe", ["--seeds", "-1"], "--seeds must be non-negative"),
    ("train_tiny", ["--steps", "0"], "--steps must be at least 1"),
    ("train_tiny", ["--lr", "0"], "--lr must be positive"),
    ("train_tiny", ["--out", __file__], "already holds a text file"),  # not a model folder: refused
])
def test_the_zoo_scripts_refuse_bad_arguments_before_any_work(module, args, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", f"minineo.zoo.{module}", *args], capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr, done.stderr
