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
from minineo.errors import UserError, WrongTypeError
from hf_oracle import build_hf, hf_config, save_hf

NEW = 16
PROMPTS = ["When Mary and John", "The cat sat on the", "ab"]  # greedy: " went to the sta", ... (left-padded)
SPACE, LETTER_E, LETTER_T = 32, 101, 116
LETTER_O, LETTER_R = 111, 114  # " went to" / " better" / " office": stops at different steps


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


def test_numpy_and_0d_tensor_ids_are_stop_and_pad_ids():
    """docs/boundary.md: numpy integers are integers (findings 13: np.int64(32) was 'not a token id')."""
    import numpy as np

    model = minineo.load()
    tokens = model.to_tokens(PROMPTS)
    expected = model.generate(tokens, NEW, eos_token_id=[SPACE, LETTER_E], pad_token_id=0)
    for stops in ([np.int64(SPACE), np.int32(LETTER_E)], np.array([SPACE, LETTER_E]),
                  [torch.tensor(SPACE), torch.tensor(LETTER_E)], (SPACE, np.int16(LETTER_E))):
        got = model.generate(tokens, np.int64(NEW), eos_token_id=stops, pad_token_id=np.int64(0))
        assert torch.equal(got, expected), stops
    one = model.generate(tokens, NEW, eos_token_id=SPACE, pad_token_id=0)
    assert torch.equal(model.generate(tokens, NEW, eos_token_id=np.int64(SPACE), pad_token_id=torch.tensor(0)), one)
    assert torch.equal(model.generate(tokens, NEW, eos_token_id=torch.tensor(SPACE), pad_token_id=0), one)


@pytest.mark.parametrize("container", [{SPACE, LETTER_E}, frozenset({SPACE}), {SPACE: 1}, "32", 32.0])
def test_a_stop_id_container_of_the_wrong_type_is_a_type_error_naming_the_accepted_types(container):
    """A set has no first id (the default pad id), a dict or string no ids: a WrongTypeError listing what is
    accepted, not 'is not a token id'."""
    model = minineo.load()
    with pytest.raises(WrongTypeError, match=r"eos_token_id must be an id \(an int\), a list or tuple of ids, a 1-D "
                                             r"integer tensor of ids, or None") as raised:
        model.generate(torch.tensor([[1, 2]]), 3, eos_token_id=container)
    if isinstance(container, (set, frozenset)):
        assert "give a list" in str(raised.value)


@pytest.mark.parametrize("bad", [257, -2, False, 1.0])
def test_a_bad_pad_id_is_a_user_error_naming_it(bad):
    model = minineo.load()
    with pytest.raises(UserError, match=r"pad_token_id .*0\.\.256"):
        model.generate(torch.tensor([[1, 2]]), 3, eos_token_id=5, pad_token_id=bad)


# ---- generation_config.json: HF's generate reads the model's GenerationConfig, not config.json -----------------------

def _saved_by_hf(tmp_path, name: str, generation: dict | None, **config_changes):
    """(HF model, minineo model) of a folder HF's save_pretrained wrote for the zoo model `name` (config.json with
    `config_changes`), whose generation_config.json is then replaced by `generation` (None: the file removed)."""
    folder = tmp_path / f"{name}-saved"
    AutoModelForCausalLM.from_pretrained(EMBEDDED[name]).save_pretrained(folder, safe_serialization=True)
    shutil.copy(EMBEDDED[name] / "tokenizer.json", folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_changes}))
    assert (folder / "generation_config.json").is_file()  # HF writes one from the config
    if generation is None:
        (folder / "generation_config.json").unlink()
    else:
        (folder / "generation_config.json").write_text(json.dumps(generation))
    hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return hf, minineo.load(folder)


def _stop_steps(out: torch.Tensor, prompt: int, stops: list[int]) -> list[int | None]:
    """Per row, the step of its first stop id (None: it never stopped)."""
    return [next((i for i, t in enumerate(row) if t in stops), None) for row in out[:, prompt:].tolist()]


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_generation_config_json_stop_ids_win_over_config_json_as_in_hf(tmp_path, name):
    stops = [LETTER_O, LETTER_R]
    hf, model = _saved_by_hf(tmp_path, name, {"bos_token_id": 256, "eos_token_id": stops},
                             eos_token_id=SPACE, pad_token_id=33)
    assert model.generation_config.eos_token_ids == tuple(stops)
    assert model.generation_config.pad_token_id is None  # not config.json's 33: HF pads with the first stop id
    tokens = model.to_tokens(PROMPTS)
    expected = _hf_generate(hf, tokens)
    assert torch.equal(model.generate(tokens, NEW), expected)
    assert torch.equal(model.generate(tokens, NEW, static=True), expected)
    steps = _stop_steps(expected, tokens.shape[1], stops)
    assert len({s for s in steps if s is not None}) >= 2, steps  # rows stop at different steps
    assert _stopped_rows(expected, tokens.shape[1], stops, LETTER_O) >= 2
    by_config_json = model.generate(tokens, NEW, eos_token_id=SPACE, pad_token_id=33)
    assert not torch.equal(by_config_json, expected)  # the test tells the two files apart


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_generation_config_json_with_one_id_and_its_pad_id_as_in_hf(tmp_path, name):
    hf, model = _saved_by_hf(tmp_path, name, {"eos_token_id": LETTER_T, "pad_token_id": 0}, eos_token_id=SPACE)
    tokens = model.to_tokens(PROMPTS)
    expected = _hf_generate(hf, tokens)
    assert torch.equal(model.generate(tokens, NEW), expected)
    assert _stopped_rows(expected, tokens.shape[1], [LETTER_T], 0) >= 1
    given = _hf_generate(hf, tokens, eos_token_id=LETTER_E)  # a stop id given: the file's pad id still pads
    assert torch.equal(model.generate(tokens, NEW, eos_token_id=LETTER_E), given)
    assert _stopped_rows(given, tokens.shape[1], [LETTER_E], 0) >= 1


@pytest.mark.parametrize("eos", ["null", "absent"])
def test_generation_config_json_without_eos_never_stops_as_in_hf(tmp_path, eos):
    generation = {"bos_token_id": 256} | ({"eos_token_id": None} if eos == "null" else {})
    hf, model = _saved_by_hf(tmp_path, "tiny-neo", generation, eos_token_id=SPACE)
    tokens = model.to_tokens(PROMPTS)
    expected = _hf_generate(hf, tokens, pad_token_id=0)
    assert expected.shape[1] == tokens.shape[1] + NEW and (expected[:, tokens.shape[1]:] == SPACE).any()
    assert torch.equal(model.generate(tokens, NEW), expected)


def test_without_generation_config_json_config_json_gives_the_ids_as_in_hf(tmp_path):
    hf, model = _saved_by_hf(tmp_path, "tiny-gpt2", None, eos_token_id=[LETTER_E, LETTER_T], pad_token_id=33)
    assert model.generation_config.eos_token_ids == (LETTER_E, LETTER_T) and model.generation_config.pad_token_id == 33
    tokens = model.to_tokens(PROMPTS)
    assert torch.equal(model.generate(tokens, NEW), _hf_generate(hf, tokens))


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_a_random_models_generation_config_json_list_as_in_hf(tmp_path, arch):
    """A random model (tests/hf_oracle.py) saved by HF, its generation_config.json given a list of stop ids chosen
    from its own free run (so rows stop at different steps), config.json another id; explicit left padding."""
    hf = build_hf(hf_config(arch, vocab=97, n_ctx=64, bos_token_id=0, eos_token_id=1), weight_scale=3.0)  # varied text
    torch.manual_seed(1)
    tokens = torch.randint(2, 97, (3, 6))
    mask = torch.ones_like(tokens)
    mask[1, :2] = mask[2, :4] = 0
    tokens[mask == 0] = 0
    free = _hf_generate(hf, _masked(tokens, mask), eos_token_id=None, pad_token_id=0)[:, 6:]
    varied = max(sorted(set(free.flatten().tolist())), key=lambda t: len(set(_stop_steps(free, 0, [t]))))
    stops = [varied, 96 if varied != 96 else 95]  # the one whose rows stop at the most different steps, and one more
    save_hf(hf, tmp_path / "random")
    (tmp_path / "random" / "generation_config.json").write_text(json.dumps({"eos_token_id": stops}))
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "random", attn_implementation="eager").eval()
    model = minineo.load(tmp_path / "random")
    expected = _hf_generate(hf, _masked(tokens, mask))
    assert len(set(_stop_steps(expected, 6, stops))) >= 2  # rows stop at different steps (or one never does)
    assert torch.equal(model.generate(tokens, NEW, attention_mask=mask), expected)
    assert _stopped_rows(expected, 6, stops, stops[0]) >= 1


def _masked(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`tokens` carrying `mask` as its attention_mask (as to_tokens attaches one), for _hf_generate."""
    tokens = tokens.clone()
    tokens.attention_mask = mask
    return tokens


def test_processed_weights_keep_the_generation_config(tmp_path):
    _, model = _saved_by_hf(tmp_path, "tiny-gpt2", {"eos_token_id": [LETTER_E]})
    assert model.processed(fold_ln=True).generation_config == model.generation_config


@pytest.mark.parametrize("text, complaint", [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object"),
                                             ('{"eos_token_id": []}', "empty list"),
                                             ('{"eos_token_id": [1, 2.5]}', "whole number"),
                                             ('{"eos_token_id": 3, "pad_token_id": true}', "whole number"),
                                             ('{"eos_token_id": -1}', "whole number")])
def test_a_malformed_generation_config_json_is_a_user_error_naming_the_file(tmp_path, text, complaint):
    folder = tmp_path / "model"
    shutil.copytree(EMBEDDED["tiny-neo"], folder)
    (folder / "generation_config.json").write_text(text)
    with pytest.raises(UserError, match=complaint) as caught:
        minineo.load(folder)
    assert "generation_config.json" in str(caught.value)
