"""minineo/checks.py, the one validation layer (issue 29 part 1): its rules, and the named cases of the issue.

The oracle for every range check is the rule itself: a value is accepted exactly when it lies in the bound the
message states (hypothesis draws bounds and values), so a message can never point the wrong way.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import minineo
from minineo import checks
from minineo.analysis import TunedLens, path_patching
from minineo.cli import app
from minineo.errors import MissingFileError, UnknownNameError, UserError, WrongTypeError

runner = CliRunner()
PROMPT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def model():
    return minineo.load()


# ---- integers: bools and floats are not integers ----------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, 0.7, 3.0, float("nan"), "3", None, [1], torch.tensor(1.0),
                                   np.float64(2.0), np.bool_(True), torch.tensor([1, 2])])
def test_an_integer_is_never_a_bool_a_float_or_a_string(value):
    with pytest.raises(WrongTypeError, match=r"^layer must be an integer"):
        checks.integer(value, "layer", low=0, high=3)


@pytest.mark.parametrize("value", [2, np.int64(2), torch.tensor(2), torch.tensor(2, dtype=torch.int32)])
def test_integer_kinds_that_are_integers(value):
    assert checks.integer(value, "layer", low=0, high=3) == 2 and type(checks.integer(value, "layer")) is int


@given(low=st.integers(-50, 50), width=st.integers(0, 50), value=st.integers(-200, 200))
def test_the_bound_in_the_message_is_the_bound_applied(low, width, value):
    high = low + width
    try:
        assert checks.integer(value, "--context", low=low, high=high) == value
        accepted = True
    except UserError as err:
        accepted = False
        found = re.search(r"in (-?\d+)\.\.(-?\d+), got (-?\d+)", str(err))
        assert found and (int(found[1]), int(found[2]), int(found[3])) == (low, high, value), str(err)
        assert str(err).startswith("--context ")
    assert accepted == (low <= value <= high)


@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10)))
def test_a_number_in_an_open_range(value):
    try:
        checks.number(value, "lr", low=0, low_open=True)
        assert value > 0 and value == value and value != float("inf")
    except UserError as err:
        assert not (0 < value < float("inf")), value
        assert str(err).startswith("lr must be") and "greater than 0" in str(err)


def test_a_count_is_positive_and_negative_top_is_not_a_slice():
    assert checks.count(3, "--top") == 3
    for bad in (0, -1, -5):
        with pytest.raises(UserError, match=r"--top must be at least 1, got -?\d"):
            checks.count(bad, "--top")


@pytest.mark.parametrize("command", ["embeddings", "heads", "attribute", "ablate", "ioi", "patch", "circuits",
                                     "path-patch"])
def test_negative_top_is_refused_by_every_command(command):
    args = {"attribute": ["attribute", PROMPT, "--answer", " Mary"], "ablate": ["ablate", PROMPT, "--answer", " Mary"],
            "patch": ["patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), "--answer", " Mary", "--wrong", " John"],
            "path-patch": ["path-patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), "--answer", " Mary",
                           "--wrong", " John"]}.get(command, [command])
    result = runner.invoke(app, args + ["--top", "-1"], terminal_width=200)
    assert result.exit_code == 1, (result.output, result.exception)
    assert " ".join(result.stderr.split()).startswith("error: --top must be at least 1, got -1"), result.stderr


# ---- layers, heads, pairs, inputs ---------------------------------------------------------------------------


def test_a_path_patching_sender_with_a_float_layer_is_refused_not_truncated(model):
    clean, corrupted = model.to_tokens("When Mary and John"), model.to_tokens("When Lucy and John")

    def metric(logits):
        return logits[0, -1, 5]

    for senders in ([(0.7, 3)], [(True, 0)], [(0, 1.0)], [("0", 1)]):
        with pytest.raises(UserError, match=r"senders=.*\(layer, head\) pairs of integers") as err:
            path_patching(model, clean, corrupted, metric, senders=senders)
        assert repr(senders[0][0]) in str(err.value) or str(senders[0][0]) in str(err.value)
    with pytest.raises(UserError, match=r"receivers=.* is not one"):
        path_patching(model, clean, corrupted, metric, receivers=[(0.5, 0, "q")])
    assert torch.isfinite(path_patching(model, clean, corrupted, metric, senders=[(0, 3)])).all()  # a valid pair works


def test_a_bool_is_not_a_layer(model):
    _, cache = model.run_with_cache(model.to_tokens("When Mary"))
    with pytest.raises(WrongTypeError, match=r"layer must be an integer.*True \(a bool\)"):
        model.run_from(True, cache["blocks.1.resid_pre"])
    with pytest.raises(WrongTypeError, match=r"layer must be an integer"):
        model.run_from(1.0, cache["blocks.1.resid_pre"])
    with pytest.raises(UserError, match=r"layer must be in 0\.\.1, got 2"):
        model.run_from(2, cache["blocks.1.resid_pre"])
    lens = TunedLens(model)
    with pytest.raises(WrongTypeError, match=r"layer must be an integer"):
        lens.translate(cache["blocks.0.resid_pre"], True)


def test_layer_head_pairs_and_head_inputs():
    assert checks.layer_head((1, 3), 2, 4) == (1, 3)
    for bad, why in (((0.7, 3), "the layer must be an integer"), ((0, True), "the head must be an integer"),
                     ((2, 0), r"the layer must be in 0\.\.1"), ((0, 4), r"the head must be in 0\.\.3"),
                     ((0,), "a \\(layer, head\\) pair"), ("01", "a \\(layer, head\\) pair")):
        with pytest.raises(UserError, match=why):
            checks.layer_head(bad, 2, 4, "sender")
    with pytest.raises(WrongTypeError, match="one pair, not a collection"):
        checks.heads((0, 1), 2, 4)
    assert checks.head_input("k") == "k"
    with pytest.raises(UnknownNameError, match="input='x' is not one of 'q', 'k', 'v'"):
        checks.head_input("x")


def test_a_site_name_lists_close_matches(model):
    names = minineo.all_names(model.config)
    assert checks.site("blocks.0.attn.pattern", names) == "blocks.0.attn.pattern"
    with pytest.raises(UnknownNameError, match=r"site='blocks.0.attn.patern'.*did you mean.*blocks.0.attn.pattern"):
        checks.site("blocks.0.attn.patern", names)


def test_token_ids(model):
    ids = torch.tensor([[1, 2, 300]])
    with pytest.raises(UserError, match=r"tokens: token id 300 at index \(0, 2\) is outside the vocabulary \(0\.\.256\)"):
        checks.token_ids(ids, 257)
    with pytest.raises(WrongTypeError, match="integer ids"):
        checks.token_ids(ids.float(), 257)
    with pytest.raises(UserError, match="clean_tokens: token id -1"):
        model.token_batch(torch.tensor([0, -1]), name="clean_tokens")


# ---- eval --context: the bound points the right way ------------------------------------------------------------


@pytest.mark.parametrize("context", ["0", "1", "129", "100000"])
def test_eval_context_says_the_real_bound(context, tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("When Mary and John went to the store.\n" * 4)
    result = runner.invoke(app, ["eval", str(corpus), "--context", context], terminal_width=200)
    assert result.exit_code == 1, result.output
    text = " ".join(result.stderr.split())
    assert text.startswith(f"error: --context must be in 2..128, got {context}"), text
    assert "smaller" not in text  # context=1 needs a larger value: no message may say "smaller"


def test_sae_eval_context_says_the_real_bound(tmp_path):
    from fuzz_walk import SAE_FOLDER

    corpus = tmp_path / "c.txt"
    corpus.write_text("When Mary and John went to the store.\n" * 4)
    result = runner.invoke(app, ["sae-eval", str(SAE_FOLDER), str(corpus), "--context", "1"], terminal_width=200)
    assert result.exit_code == 1 and "--context must be in 2..128, got 1" in " ".join(result.stderr.split())


# ---- dtype, device, tensors, paths ------------------------------------------------------------------------------


def test_dtype_and_device():
    assert checks.dtype("bfloat16") is torch.bfloat16 and checks.dtype(torch.float64) is torch.float64
    with pytest.raises(UnknownNameError, match="dtype 'int8' is not one of float32, float16, bfloat16, float64"):
        checks.dtype("int8")
    with pytest.raises(WrongTypeError, match="dtype torch.int64"):
        checks.dtype(torch.int64)
    assert checks.device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="--device banana is not a device"):
        checks.device("banana", "--device")
    with pytest.raises(WrongTypeError, match="device must be a device name"):
        checks.device(True)


def test_tensor_shape_dtype_and_casting():
    x = torch.zeros(2, 3, dtype=torch.float64)
    assert checks.tensor(x, "patch", (2, None), dtype=torch.float32, cast=True).dtype == torch.float32
    with pytest.raises(WrongTypeError, match="patch is a torch.float64 tensor but must be torch.float32"):
        checks.tensor(x, "patch", (2, 3), dtype=torch.float32)
    with pytest.raises(WrongTypeError, match="must be torch.float32"):  # an integer tensor is never cast to float
        checks.tensor(x.long(), "patch", (2, 3), dtype=torch.float32, cast=True)
    with pytest.raises(UserError, match=r"resid has shape \(2, 3\) but must have shape \(batch, pos, d_model\) = "
                                        r"\(any, any, 64\)"):
        checks.tensor(x, "resid", (None, None, 64), dims="(batch, pos, d_model)")
    with pytest.raises(UserError, match="NaN or inf"):
        checks.tensor(torch.full((2,), float("nan")), "x", (2,), finite=True)


def test_paths_to_read_and_to_write(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    assert checks.existing_path(tmp_path / "f.txt", "corpus", kind="file") == tmp_path / "f.txt"
    with pytest.raises(MissingFileError, match="corpus .*nope does not exist"):
        checks.existing_path(tmp_path / "nope", "corpus")
    with pytest.raises(UserError, match="is a folder, not a file"):
        checks.existing_path(tmp_path, "corpus", kind="file")
    assert checks.writable_file(tmp_path / "plot", "--plot", (".png",), ".png") == tmp_path / "plot.png"
    with pytest.raises(UserError, match="the folder .* does not exist"):
        checks.writable_file(tmp_path / "no" / "x.png", "--plot")
    with pytest.raises(UserError, match="already holds something that is not"):
        checks.not_overwriting(tmp_path / "f.txt", "--out", is_ours=False)


# ---- @checks.typed ------------------------------------------------------------------------------------------------


def test_typed_reads_the_annotations():
    @checks.typed
    def f(model: "minineo.Model", n: int = 3, lr: "float | None" = None, x: "torch.Tensor | str" = "a",
          flag: bool = True, names: "list[str] | None" = None):
        return n

    assert f(minineo.load(), 2, lr=1) == 2
    for bad, said in ((dict(n=True), "n must be an integer, got True (a bool)"), (dict(n=0.7), "n must be an integer"),
                      (dict(lr="a"), "lr must be a number or None"), (dict(x=3), "x must be a tensor or a string"),
                      (dict(flag=1), "flag must be True or False"), (dict(names="abc"), "names must be a list or None")):
        with pytest.raises(WrongTypeError, match=re.escape(f"f: {said}")):
            f(minineo.load(), **bad)
    with pytest.raises(WrongTypeError, match="model must be a Model"):
        f(object())


def test_typed_hands_numpy_and_0d_tensor_integers_on_as_python_ints():
    """docs/boundary.md: numpy integers are integers; the function gets an int (random.Random, json.dumps and
    range refuse np.int64 or a tensor), except where another alternative takes the value as it is."""
    @checks.typed
    def f(n: int, m: "int | None" = None, either: "int | torch.Tensor" = 0):
        return n, m, either

    n, m, either = f(np.int64(3), m=torch.tensor(4), either=torch.tensor(5))
    assert (type(n), type(m), n, m) == (int, int, 3, 4)
    assert isinstance(either, torch.Tensor)  # a tensor is one of its own alternatives: kept
    assert type(f(np.int64(3), either=np.int32(6))[2]) is int
    with pytest.raises(WrongTypeError, match="n must be an integer"):
        f(np.float64(3.0))
    with pytest.raises(WrongTypeError, match="n must be an integer"):
        f(np.bool_(True))
    assert checks.number(np.int64(2), "lr", low=0) == 2.0 and checks.number(np.float32(0.5), "lr") == 0.5


def test_the_token_mask_and_position_checks_live_in_the_one_layer():
    """The forward pass's token, attention-mask and position-id checks are minineo.checks functions (the old names in
    minineo.checkpoints.tokens delegate to them), with their messages naming the argument."""
    import torch

    from minineo import checks
    from minineo.errors import UserError, WrongTypeError

    assert checks.token_batch([1, 2], 10).shape == (1, 2)
    with pytest.raises(UserError, match="ids: token id 10 at batch 0, position 1 is outside the vocabulary"):
        checks.token_batch([[1, 10]], 10, "ids")
    with pytest.raises(UserError, match=r"mask has shape \(1, 3\) but the tokens need \(1, 2\)"):
        checks.attention_mask([1, 1, 1], (1, 2), name="mask")
    with pytest.raises(UserError, match="attention_mask row 1 \\(of 2\\) has no 1"):
        checks.attention_mask([[1, 1], [0, 0]], (2, 2))
    with pytest.raises(WrongTypeError, match="attention_mask must be a tensor of 0"):
        checks.attention_mask(object(), (1, 2))
    assert checks.attention_mask(torch.tensor([[1.0, 0.0]]), (1, 2)).dtype == torch.long
    with pytest.raises(UserError, match=r"position id 8 is outside the model's positions 0\.\.7"):
        checks.position_ids([0, 8], (1, 2), n_ctx=8)
    with pytest.raises(UserError, match="negative|token id -1"):
        checks.token_ids(torch.tensor([0, -1]), None, "clean")
    assert checks.token_ids(torch.tensor([0, 10**6]), None, "clean") is not None  # no vocabulary known: no upper bound


@pytest.mark.parametrize("field, value, said", [
    ("num_layers", True, "config.json field 'num_layers' must be an integer, got True"),  # a bool was 1 layer
    ("num_layers", 2.0, "config.json field 'num_layers' must be an integer, got 2.0"),
    ("num_heads", 0, "config.json field 'num_heads' must be at least 1, got 0"),
    ("layer_norm_epsilon", "1e-5", "config.json field 'layer_norm_epsilon' must be a number greater than 0"),
    ("layer_norm_epsilon", float("nan"), "must be a finite number greater than 0, got nan"),
])
def test_config_from_hf_checks_its_fields_through_the_one_layer(field, value, said):
    import minineo
    from minineo.errors import UserError

    hf = minineo.load().config.to_hf()
    assert minineo.Config.from_hf(hf) == minineo.load().config
    with pytest.raises(UserError) as err:
        minineo.Config.from_hf({**hf, field: value})
    assert said in str(err.value)


def test_the_file_loaders_read_json_and_weights_through_the_one_layer(tmp_path):
    """config.json, an SAE's cfg.json (its d_in / d_sae too: a bool or a string was int()-ed) and a lens's or SAE's
    weights go through checks.json_object / json_integer / floating_tensors."""
    import json
    import shutil

    import torch

    import minineo.sae
    from minineo import checks
    from minineo.errors import MissingFileError, UserError
    from fuzz_walk import SAE_FOLDER

    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(MissingFileError, match="nowhere.json does not exist; fix it"):
        checks.json_object(tmp_path / "nowhere.json", fix="fix it")
    with pytest.raises(UserError, match="bad.json is not valid JSON"):
        checks.json_object(tmp_path / "bad.json")
    with pytest.raises(UserError, match="list.json holds a list, not a JSON object of model settings"):
        checks.json_object(tmp_path / "list.json", "model settings")
    with pytest.raises(UserError, match="w.safetensors: W is torch.int32, not a floating-point tensor; save it"):
        checks.floating_tensors({"W": torch.zeros(2, dtype=torch.int32)}, "w.safetensors", "save it")
    for value, said in ((True, "must be an integer, got True"), ("64", "must be an integer, got '64'"),
                        (0, "must be at least 1, got 0")):
        folder = tmp_path / f"sae-{value!r}"
        shutil.copytree(SAE_FOLDER, folder)
        cfg = json.loads((folder / "cfg.json").read_text())
        (folder / "cfg.json").write_text(json.dumps({**cfg, "d_in": value}))
        with pytest.raises(UserError, match=f"cfg.json field 'd_in' {said}"):
            minineo.sae.load(folder)


@pytest.mark.parametrize("value", [True, "2", None])
def test_a_lens_json_without_integer_sizes_is_refused_naming_the_field(tmp_path, value):
    import json

    import minineo
    from minineo.analysis import TunedLens
    from minineo.errors import UserError

    model = minineo.load()
    TunedLens(model).save(tmp_path / "lens")
    meta = json.loads((tmp_path / "lens" / "lens.json").read_text())
    (tmp_path / "lens" / "lens.json").write_text(json.dumps({**meta, "n_layers": value}))
    with pytest.raises(UserError, match=f"lens.json field 'n_layers' must be an integer, got {value!r}"):
        TunedLens.load(tmp_path / "lens", model)


# ---- signed indices, layer boundaries, output folders --------------------------------------------------------------


@given(size=st.integers(1, 30), value=st.integers(-60, 60), signed=st.booleans())
def test_an_index_is_accepted_exactly_in_the_range_it_states(size, value, signed):
    low = -size if signed else 0
    try:
        got = checks.index(value, size, "position", signed=signed)
    except UserError as err:
        assert not low <= value < size
        assert f"position must be in {low}..{size - 1}, got {value}" in str(err)
    else:
        assert low <= value < size and got == value % size  # Python's meaning of a negative index


@given(n_layers=st.integers(1, 12), value=st.integers(-30, 30))
def test_a_layer_boundary_is_transformerlens_stop_at_layer(n_layers, value):
    try:
        got = checks.layer_boundary(value, n_layers)
    except UserError as err:
        assert not -n_layers <= value <= n_layers and f"in {-n_layers}..{n_layers}, got {value}" in str(err)
    else:
        assert got == (value if value >= 0 else n_layers + value)  # len(blocks[:value]) blocks run


def test_an_output_folder_needs_an_existing_parent_and_is_never_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    assert checks.writable_folder(tmp_path / "new", "--out") == tmp_path / "new"
    assert checks.writable_folder(tmp_path, "--out") == tmp_path
    with pytest.raises(UserError, match=r"^cannot write --out .*/missing/out: the folder .*/missing does not exist"):
        checks.writable_folder(tmp_path / "missing" / "out", "--out")
    assert not (tmp_path / "missing").exists()  # refused, not created
    with pytest.raises(UserError, match=r"^--out .*/file is a file"):
        checks.writable_folder(tmp_path / "file", "--out")
    with pytest.raises(UserError, match=r"the folder .*/file is a file"):
        checks.writable_folder(tmp_path / "file" / "out", "--out")
    with pytest.raises(WrongTypeError, match="^out_dir must be a path"):
        checks.writable_folder(3, "out_dir")


# ---- the forward's own arguments go through the checks ---------------------------------------------------------


@pytest.mark.parametrize("kwargs, said", [
    (dict(max_new_tokens=-1), "max_new_tokens must be at least 0, got -1"),
    (dict(max_new_tokens=2, temperature=float("nan")), "temperature must be a finite number, got nan; it divides"),
    (dict(max_new_tokens=2, temperature=0, do_sample=True), "temperature must be greater than 0, got 0"),
    (dict(max_new_tokens=2, do_sample=True, top_k=True), "top_k must be an integer or None, got True (a bool)"),
    (dict(max_new_tokens=2, pad_token_id=10**6), "pad_token_id must be in 0..256, got 1000000"),
])
def test_generate_refuses_bad_arguments_naming_them(model, kwargs, said):
    """A NaN temperature was accepted when greedy (it is not used then, but it is a mistake all the same)."""
    with pytest.raises(UserError, match=re.escape(said)):
        model.generate(torch.tensor([[1, 2]]), eos_token_id=5, **kwargs)


@pytest.mark.parametrize("value, said", [(True, "stop_at_layer must be an integer in -2..2, got True (a bool)"),
                                         (3, "stop_at_layer must be in -2..2, got 3"),
                                         (1.0, "stop_at_layer must be an integer in -2..2, got 1.0 (a float)")])
def test_stop_at_layer_states_its_range(model, value, said):
    for call in (lambda: model(torch.tensor([[1, 2]]), stop_at_layer=value),
                 lambda: model.run_with_cache(torch.tensor([[1, 2]]), stop_at_layer=value)):
        with pytest.raises(UserError, match=re.escape(said)):
            call()


# ---- outputs in a missing folder are refused, not created; 0 is not "the default" ---------------------------------


def _corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("When Mary and John went to the store, John gave a drink to Mary.\n" * 8)
    return path


@pytest.mark.parametrize("command", [
    ["harvest", "{corpus}", "--names", "blocks.0.resid_post", "--out", "{out}", "--context", "8", "--max-tokens", "16"],
    ["tune-lens", "{corpus}", "--out", "{out}", "--steps", "1", "--batch-size", "2", "--context", "8"],
])
def test_a_command_writing_a_folder_refuses_a_missing_parent_folder(tmp_path, command):
    """`--out /no/such/dir/out` created /no/such/dir (mkdir -p) and wrote there: a mistyped path grew a tree."""
    out = tmp_path / "missing" / "out"
    args = [a.format(corpus=_corpus(tmp_path), out=out) for a in command]
    result = runner.invoke(app, args, terminal_width=200)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: cannot write --out {out}: the folder {out.parent} does not exist")
    assert "Traceback" not in result.output and not (tmp_path / "missing").exists()


def test_the_api_writers_of_folders_refuse_a_missing_parent_folder(model, tmp_path):
    from minineo.data.harvest import harvest

    out = tmp_path / "missing" / "out"
    with pytest.raises(UserError, match=r"^cannot write out_dir .*: the folder .*missing does not exist"):
        harvest(model, _corpus(tmp_path), "blocks.0.resid_post", out, context=8, max_tokens=16)
    with pytest.raises(UserError, match=r"^cannot write path .*: the folder .*missing does not exist"):
        TunedLens(model).save(out)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("kwargs, said", [
    (dict(context=0), "context must be in 2..128, got 0"),
    (dict(warmup_steps=-1), "warmup_steps must be in 0..1, got -1"),
    (dict(warmup_steps=5), "warmup_steps must be in 0..1, got 5"),
    (dict(momentum=1.0), "momentum must be at least 0 and less than 1, got 1.0"),
    (dict(optimizer="lbfgs"), "optimizer='lbfgs' is not one of 'sgd', 'adam'"),
])
def test_training_a_tuned_lens_refuses_bad_options_naming_them(model, tmp_path, kwargs, said):
    """context=0 was read as "the default" (context or ...) and trained at 128."""
    from minineo.analysis import train_tuned_lens

    with pytest.raises(UserError, match=re.escape(said)):
        train_tuned_lens(model, _corpus(tmp_path), steps=1, batch_size=2, **{"context": 8, **kwargs})


@pytest.mark.parametrize("kwargs, said", [(dict(shard_rows=0), "shard_rows must be at least 1, got 0"),
                                          (dict(max_tokens=0), "max_tokens must be at least 1, got 0"),
                                          (dict(dtype=torch.int8), "dtype torch.int8 (a dtype) cannot hold"),
                                          (dict(context=1), "context must be in 2..128, got 1")])
def test_harvest_refuses_bad_options_naming_them(model, tmp_path, kwargs, said):
    """shard_rows=0 was read as "the default" (shard_rows or ...)."""
    from minineo.data.harvest import harvest

    with pytest.raises(UserError, match=re.escape(said)):
        harvest(model, _corpus(tmp_path), "blocks.0.resid_post", tmp_path / "out", **{"context": 8, **kwargs})
    assert not (tmp_path / "out").exists()


# ---- SAEs: the constructor checks what load checks; cfg.json's dtype and k are never guessed ----------------------


def _sae_parts(d_in=4, d_sae=6):
    return dict(W_enc=torch.randn(d_in, d_sae), b_enc=torch.zeros(d_sae), W_dec=torch.randn(d_sae, d_in),
                b_dec=torch.zeros(d_in))


@pytest.mark.parametrize("change, said", [
    (dict(architecture="banana"), "architecture='banana' is not one of 'standard', 'topk', 'jumprelu'"),
    (dict(architecture="topk"), "k must be an integer in 1..6, got None"),
    (dict(architecture="topk", k=7), "k must be in 1..6, got 7"),
    (dict(architecture="topk", k=True), "k must be an integer or None, got True (a bool)"),
    (dict(architecture="jumprelu"), "threshold must be a tensor of shape"),
    (dict(b_enc=torch.zeros(5)), "b_enc has shape (5,) but must have shape (d_sae,)"),
    (dict(W_dec=torch.randn(4, 6)), "W_dec has shape (4, 6) but must have shape (d_sae, d_in)"),
    (dict(W_enc=torch.full((4, 6), float("nan"))), "W_enc holds NaN or inf values"),
    (dict(b_dec=torch.zeros(4, dtype=torch.float64)), "b_dec is a torch.float64 tensor but must be torch.float32"),
    (dict(normalize_activations="whiten"), "normalize_activations='whiten' is not one of"),
])
def test_an_sae_built_by_hand_is_checked_as_a_loaded_one_is(change, said):
    """SAE(..., architecture='banana') was built, and its encode() then failed deep inside (topk with k=None)."""
    from minineo.sae import SAE

    parts = {**_sae_parts(), **change}
    args = [parts.pop(name) for name in ("W_enc", "b_enc", "W_dec", "b_dec")]
    with pytest.raises(UserError, match=re.escape(said)):
        SAE(*args, **parts)


@pytest.mark.parametrize("field, value, said", [
    ("dtype", "float33", "dtype 'float33' is not a floating-point dtype"),
    ("dtype", "int8", "dtype 'int8' is not a floating-point dtype"),
    ("k", True, "field 'k' must be an integer, got True"),
    ("k", 2.5, "field 'k' must be an integer, got 2.5"),
    ("hook_name", 5, "hook_name 5 is not a site name"),
    ("normalize_activations", ["x"], "normalize_activations ['x'] is not supported"),
])
def test_an_sae_cfg_json_is_never_guessed(tmp_path, field, value, said):
    """dtype 'float33' was read as float32 without a word (getattr(torch, name, float32)); k=True was k=1."""
    import json
    import shutil

    import minineo.sae
    from fuzz_walk import SAE_FOLDER

    folder = tmp_path / "sae"
    shutil.copytree(SAE_FOLDER, folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    if field == "hook_name":
        cfg["metadata"][field] = value
    else:
        cfg[field] = value
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=re.escape(said)) as caught:
        minineo.sae.load(folder)
    assert "cfg.json" in str(caught.value)


def test_sae_load_checks_its_dtype_argument():
    import minineo.sae
    from fuzz_walk import SAE_FOLDER

    with pytest.raises(UserError, match=r"^dtype torch.int64 \(a dtype\) cannot hold"):
        minineo.sae.load(SAE_FOLDER, dtype=torch.int64)
    assert minineo.sae.load(SAE_FOLDER, dtype=torch.float16).W_enc.dtype == torch.float16


def test_evaluate_rows_refuses_rows_of_another_length_or_shape(model):
    """Rows of two lengths were a raw RuntimeError from torch.stack."""
    from minineo.data.evaluation import evaluate_rows

    row = torch.arange(8)
    for rows, said in (([row, row[:5]], "rows item has shape (5,) but must have shape (context,) = (8,)"),
                       ([row] * 9 + [row[:5]], "rows item has shape (5,) but must have shape (context,) = (8,)"),
                       ([[1, 2, 3]], "rows item must be a tensor of shape (context,) = (any,), got [1, 2, 3] (a list)")):
        with pytest.raises(UserError, match=re.escape(said)):
            evaluate_rows(model, rows)
    assert evaluate_rows(model, [row, row]).n_rows == 2


def test_an_sae_refuses_a_scalar_input_naming_it():
    import minineo.sae
    from fuzz_walk import SAE_FOLDER

    with pytest.raises(UserError, match=r"^x must be float activations .* got a torch.float32 tensor of shape \(\)"):
        minineo.sae.load(SAE_FOLDER).encode(torch.tensor(1.0))


def test_composition_scores_names_an_unknown_kind(model):
    from minineo.analysis import composition_scores

    with pytest.raises(UnknownNameError, match=r"^kind='Q' is not one of 'q', 'k', 'v'; the composition kind"):
        composition_scores(model, "Q")


def test_a_cache_is_saved_only_as_safetensors_never_over_another_file(model, tmp_path):
    """`minineo cache PROMPT --save corpus.txt` replaced the corpus with tensors (so did Cache.save)."""
    text = tmp_path / "corpus.txt"
    text.write_text("my corpus\n")
    result = runner.invoke(app, ["cache", "hi", "--save", str(text)], terminal_width=200)
    assert result.exit_code == 1 and "--save file" in result.stderr and ".safetensors" in result.stderr, result.output
    _, cache = model.run_with_cache(model.to_tokens("hi"))
    with pytest.raises(UserError, match=r"path .*corpus.txt: a cache is written as .safetensors"):
        cache.save(text)
    assert text.read_text() == "my corpus\n"
    result = runner.invoke(app, ["cache", "hi", "--save", str(tmp_path / "acts")], terminal_width=200)
    assert result.exit_code == 0 and (tmp_path / "acts.safetensors").is_file(), result.output


def test_shortened_cuts_at_a_word_and_marks_the_cut():
    text = "PytorchStreamReader failed reading zip archive: failed finding central directory"
    cut = checks.shortened(text, 50)
    assert len(cut) <= 50 and cut.endswith(" …") and text.startswith(cut[:-2])
    assert text[len(cut) - 2] == " "  # the cut falls between words, not inside one
    assert checks.shortened(text, 500) == text
    assert checks.shortened("x" * 80, 20) == "x" * 19 + "…"
