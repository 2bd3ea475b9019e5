"""generate's stop tokens and padding against HF's `generate` on both trained zoo models (their greedy text
varies, so stop ids end rows at different steps): the config's eos by default, a config's list of eos ids and
its pad id, several stop ids given, `eos_token_id=None`, batched and left-padded rows, finished rows filled
with the pad id exactly as HF fills them."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

import minineo
from minineo.checkpoints.hub import EMBEDDED
from minineo.errors import UserError

NEW = 16
PROMPTS = ["When Mary and John", "The cat sat on the", "ab"]  # greedy: " went to the sta", ... (left-padded)
SPACE, LETTER_E, LETTER_T = 32, 101, 116


def _pair(tmp_path, name: str, **config_changes):
    """(HF model, minineo model) from a copy of the zoo folder whose config.json carries `config_changes`."""
    folder = tmp_path / name
    shutil.copytree(EMBEDDED[name], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_changes)
    (folder / "config.json").write_text(json.dumps(config))
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return hf, minineo.load(folder)


def _hf_generate(hf, tokens, **kwargs):
    with warnings.catch_warnings():  # HF warns when it falls back to the eos id as pad
        warnings.simplefilter("ignore")
        mask = getattr(tokens, "attention_mask", torch.ones_like(tokens))  # to_tokens pads rows of unequal length
        return hf.generate(tokens, attention_mask=mask, max_new_tokens=NEW, do_sample=False, **kwargs)


def _stopped_rows(out: torch.Tensor, prompt: int, stops: list[int], pad: int) -> int:
    """How many rows stopped before the end; each must hold only the pad id after its first stop id."""
    count = 0
    for row in out[:, prompt:].tolist():
        first = next((i for i, t in enumerate(row) if t in stops), None)
        if first is not None and first + 1 < len(row):
            assert all(t == pad for t in row[first + 1:]), f"row {row} is not padded with {pad} after its stop"
            count += 1
    return count


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_generate_stops_at_the_configs_eos_by_default_as_hf_generate(tmp_path, name):
    hf, model = _pair(tmp_path, name, eos_token_id=LETTER_T)  # no pad_token_id: HF pads with the eos id
    tokens = model.to_tokens(PROMPTS)
    expected = _hf_generate(hf, tokens)
    ours = model.generate(tokens, max_new_tokens=NEW)
    assert torch.equal(ours, expected)
    assert _stopped_rows(ours, tokens.shape[1], [LETTER_T], LETTER_T) >= 1
    assert torch.equal(model.generate(tokens, max_new_tokens=NEW, static=True), expected)


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_several_stop_ids_and_a_pad_id_as_hf_generate(tmp_path, name):
    hf, model = _pair(tmp_path, name)
    tokens = model.to_tokens(PROMPTS)
    stops = [LETTER_E, LETTER_T]
    for pad in (0, 255):
        expected = _hf_generate(hf, tokens, eos_token_id=stops, pad_token_id=pad)
        assert _stopped_rows(expected, tokens.shape[1], stops, pad) >= 2
        for given in (stops, tuple(stops), torch.tensor(stops)):
            ours = model.generate(tokens, NEW, eos_token_id=given, pad_token_id=pad)
            assert torch.equal(ours, expected), f"stop ids given as {type(given).__name__}, pad {pad}"
    two = model.to_tokens(PROMPTS[:2])  # both continue with a space, then " went" / " better" / " office"
    one = _hf_generate(hf, two, eos_token_id=SPACE, pad_token_id=0)
    assert one.shape[1] < two.shape[1] + NEW  # every row stopped: HF ends early, and so does minineo
    assert torch.equal(model.generate(two, NEW, eos_token_id=SPACE, pad_token_id=0), one)


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_a_configs_list_of_eos_ids_and_its_pad_id_are_the_defaults(tmp_path, name):
    hf, model = _pair(tmp_path, name, eos_token_id=[LETTER_E, LETTER_T], pad_token_id=33)
    assert model.config.eos_token_ids == (LETTER_E, LETTER_T) and model.config.pad_token_id == 33
    exported = model.config.to_hf()  # written back as HF wrote them
    assert exported["eos_token_id"] == [LETTER_E, LETTER_T] and exported["pad_token_id"] == 33
    tokens = model.to_tokens(PROMPTS)
    expected = _hf_generate(hf, tokens)
    assert torch.equal(model.generate(tokens, NEW), expected)
    assert _stopped_rows(expected, tokens.shape[1], [LETTER_E, LETTER_T], 33) >= 2


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_eos_token_id_none_disables_stopping(tmp_path, name):
    hf, model = _pair(tmp_path, name, eos_token_id=SPACE)
    tokens = model.to_tokens(PROMPTS)
    expected = _hf_generate(hf, tokens, eos_token_id=None, pad_token_id=0)
    ours = model.generate(tokens, NEW, eos_token_id=None)
    assert torch.equal(ours, expected)
    assert ours.shape[1] == tokens.shape[1] + NEW
    assert (ours[:, tokens.shape[1]:-1] == SPACE).any()  # the eos id was produced and stopped nothing


def test_the_shipped_models_default_is_their_own_eos():
    model = minineo.load()
    assert model.config.eos_token_ids == (256,)
    tokens = model.to_tokens("ab")
    free = model.generate(tokens, 40, eos_token_id=None)
    assert torch.equal(model.generate(tokens, 40), free[:, :tokens.shape[1] + _end(free[0, tokens.shape[1]:], 256)])


def _end(new: torch.Tensor, eos: int) -> int:
    row = new.tolist()
    return row.index(eos) + 1 if eos in row else len(row)


@pytest.mark.parametrize("bad", [[], [3, 257], 257, -1, True, 2.0, [1.5], torch.tensor([[1, 2]]), torch.tensor([1.0])])
def test_a_bad_stop_id_is_a_user_error_naming_it(bad):
    model = minineo.load()
    with pytest.raises(UserError, match="eos_token_id"):
        model.generate(torch.tensor([[1, 2]]), 3, eos_token_id=bad)


@pytest.mark.parametrize("bad", [257, -2, False, 1.0])
def test_a_bad_pad_id_is_a_user_error_naming_it(bad):
    model = minineo.load()
    with pytest.raises(UserError, match=r"pad_token_id .*0\.\.256"):
        model.generate(torch.tensor([[1, 2]]), 3, eos_token_id=5, pad_token_id=bad)
