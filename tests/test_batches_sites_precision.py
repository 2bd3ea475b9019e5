"""Issue 10 §3, the silent wrongs: padded to_tokens batches, to_str_tokens per row, concurrent Cache.save,
clear errors for bad patches / positions / sampling / empty input, GPT-Neo's explicit attention_layers,
unembed.hook_in / hook_out, and float64 kept float64."""

from __future__ import annotations

import shutil
import threading

import pytest
import torch
from hf_oracle import build_hf, hf_config, save_hf
from safetensors.torch import load_file
from transformers import GPTNeoForCausalLM

import minineo
from minineo import outputs
from minineo.record import cache as cache_module
from minineo.errors import UserError
from minineo.checkpoints.hub import EMBEDDED_DIR

PROMPTS = ["Hi", "When Mary and John went to the store, John gave a drink to", "abc abc"]


@pytest.fixture(scope="module")
def tiny():
    return minineo.load()


@pytest.fixture(scope="module")
def small_gpt2(tmp_path_factory):
    """A GPT-2 (absolute positions, global attention) that reads text through the embedded byte tokenizer."""
    folder = tmp_path_factory.mktemp("gpt2")
    save_hf(build_hf(hf_config("gpt2", layers=3, vocab=257, n_ctx=96, bos_token_id=256, eos_token_id=256)), folder)
    shutil.copy(EMBEDDED_DIR / "tokenizer.json", folder / "tokenizer.json")
    return minineo.load(folder)


@pytest.mark.parametrize("which", ["tiny", "small_gpt2"])
def test_padded_to_tokens_batch_gives_each_prompts_own_logits(which, request):
    model = request.getfixturevalue(which)
    batch = model.to_tokens(PROMPTS)
    assert batch.shape[0] == len(PROMPTS) and hasattr(batch, "attention_mask")
    with torch.inference_mode():
        logits = model(batch)
        _, cache = model.run_with_cache(batch, names=["logits"])
        for i, prompt in enumerate(PROMPTS):
            alone = model(model.to_tokens(prompt))  # unpadded: the oracle
            n = alone.shape[1]
            torch.testing.assert_close(logits[i, -n:], alone[0], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(cache["logits"][i, -1], alone[0, -1], atol=1e-4, rtol=1e-4)
    assert not hasattr(model.to_tokens(PROMPTS[1]), "attention_mask")  # nothing padded, nothing to carry


def test_padded_to_tokens_batch_generates_each_prompts_own_continuation(tiny):
    batch = tiny.to_tokens(PROMPTS[:2])
    together = tiny.generate(batch, max_new_tokens=6)[:, -6:]
    for i, prompt in enumerate(PROMPTS[:2]):
        assert torch.equal(together[i], tiny.generate(tiny.to_tokens(prompt), max_new_tokens=6)[0, -6:])


def test_to_str_tokens_of_a_batch_gives_a_list_per_row(tiny):
    rows = tiny.to_str_tokens(tiny.to_tokens(["Hi", "abc"]))
    assert rows == [["<|endoftext|>", "<|endoftext|>", "H", "i"], ["<|endoftext|>", "a", "b", "c"]]
    assert tiny.to_str_tokens(tiny.to_tokens("Hi")[0]) == ["<|endoftext|>", "H", "i"]


def test_concurrent_saves_to_one_path_all_succeed(tiny, tmp_path):
    _, cache = tiny.run_with_cache(tiny.to_tokens("Hello"))
    path, errors = tmp_path / "cache.safetensors", []

    def save():
        try:
            for _ in range(5):
                cache.save(path)
        except Exception as err:  # noqa: BLE001  (collected and reported below)
            errors.append(err)

    threads = [threading.Thread(target=save) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert torch.equal(load_file(path)["blocks.0.attn.pattern"], cache["blocks.0.attn.pattern"])
    assert [p.name for p in tmp_path.iterdir()] == ["cache.safetensors"]  # no temporary file left


def test_a_failed_save_shows_the_real_error_not_the_cleanups(tiny, tmp_path, monkeypatch):
    _, cache = tiny.run_with_cache(tiny.to_tokens("Hi"), names=["embed"])

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def failing_cleanup(*args, **kwargs):
        raise PermissionError(13, "Permission denied (cleanup)")

    monkeypatch.setattr(cache_module, "save_file", full_disk)
    monkeypatch.setattr(outputs.os, "unlink", failing_cleanup)  # the cleanup of Cache.save's temporary file
    with pytest.raises(OSError, match="No space left on device"):
        cache.save(tmp_path / "x.safetensors")


@pytest.mark.parametrize("call,match", [
    (lambda m: m(torch.tensor([[1, 2]]), patch={"blocks.0.attn.z": 0}), r"patch value for 'blocks.0.attn.z' is a int"),
    (lambda m: m(torch.tensor([[1, 2]]), position_ids=torch.tensor([[0, 500]])), r"position id 500 is outside .*0..127"),
    (lambda m: m(torch.tensor([[1, 2]]), position_ids=torch.tensor([[-1, 0]])), r"position id -1 is outside"),
    (lambda m: m(torch.tensor([[1, 2]]), position_ids=torch.tensor([0, 1, 2])), r"position_ids has shape \(1, 3\)"),
    (lambda m: m(torch.tensor([[1, 2]]), position_ids=torch.tensor([0.0, 1.0])), r"integer positions, got a torch.float32"),
    (lambda m: m.generate(torch.tensor([[1, 2]]), 2, do_sample=True, top_k=0), r"top_k must be at least 1, got 0"),
    (lambda m: m([]), r"tokens are empty"),
    (lambda m: m([[]]), r"tokens are empty"),
])
def test_clear_errors(tiny, call, match):
    with pytest.raises(UserError, match=match):
        call(tiny)


def test_explicit_gpt_neo_attention_layers_win_as_in_hf(tmp_path):
    config = hf_config("gpt_neo", layers=2, window=2, kinds=["global", "local"], n_ctx=32)
    config.attention_layers = ["local", "local"]  # differs from the attention_types expansion
    folder = save_hf(build_hf(config), tmp_path / "neo")
    hf = GPTNeoForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    assert hf.config.attention_layers == ["local", "local"]
    tokens = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(tokens).logits
    model = minineo.load(folder)
    assert model.config.windows == (2, 2)
    torch.testing.assert_close(model(tokens), expected, atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # the test can fail: the expansion (layer 0 global) computes something else
        hf.config.attention_layers = ["global", "local"]
        other = GPTNeoForCausalLM._from_config(hf.config, attn_implementation="eager").eval()
        other.load_state_dict(hf.state_dict())
        assert (other(tokens).logits - expected).abs().max() > 1e-3


def test_unembed_hook_in_and_out_resolve(tiny):
    tokens = tiny.to_tokens("Hello")
    logits, cache = tiny.run_with_cache(tokens, names=["unembed.hook_in", "unembed.hook_out", "ln_final.normalized"])
    assert torch.equal(cache["unembed.hook_out"], logits) and torch.equal(cache["unembed.out"], cache["logits"])
    unembed_in = cache["unembed.hook_in"]
    torch.testing.assert_close(unembed_in, cache["ln_final.normalized"] * tiny.ln_final.w + tiny.ln_final.b)
    torch.testing.assert_close(unembed_in @ tiny.W_U, logits)
    assert "unembed.in" in minineo.all_names(tiny.config)


def test_float64_is_never_downcast():
    model = minineo.load(dtype=torch.float64)
    tokens = model.to_tokens(PROMPTS[1])
    with torch.inference_mode():
        fast = model(tokens)
        recorded, cache = model.run_with_cache(tokens)
    assert cache["blocks.0.attn.scores"].dtype == torch.float64 and cache["blocks.0.attn.pattern"].dtype == torch.float64
    assert float((fast - recorded).abs().max()) < 1e-12


def test_unknown_names_and_wrong_types_are_user_errors_and_still_key_and_type_errors(tiny):
    from minineo.errors import UnknownNameError, WrongTypeError

    with pytest.raises(UnknownNameError) as caught:
        tiny.run_with_cache(tiny.to_tokens("Hi"), names=["blocks.0.attn.patern"])
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, UserError)
    assert str(caught.value).startswith("names: unknown activation name 'blocks.0.attn.patern'")  # not KeyError's quoting
    _, cache = tiny.run_with_cache(tiny.to_tokens("Hi"), names=["embed"])
    assert cache.get("blocks.0.resid_pre") is None and "blocks.0.resid_pre" not in cache
    with pytest.raises(WrongTypeError) as caught:
        tiny(tiny.to_tokens("Hi"), patch={"blocks.0.attn.z": lambda z: None})
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, UserError)
