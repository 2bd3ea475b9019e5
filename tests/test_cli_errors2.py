"""Issue 17, the second sweep of user mistakes: every input checked at the door, nothing silently dropped.

Each test names a *kind* of mistake and tries several cases of it: a command's mistake is one `error:`
paragraph on stderr with exit code 1 (no traceback); in Python it is a `minineo.errors.UserError`.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import minineo
from minineo import analysis, report
from minineo.checkpoints.hub import EMBEDDED_DIR
from minineo.cli import app  # importing the package registers every command
from minineo.cli import shared
from minineo.errors import UserError

runner = CliRunner()
PROMPT = "When Mary and John went to the store, John gave a drink to"


def invoke(*args: str):
    return runner.invoke(app, list(args), terminal_width=200)


def error_text(result, *fragments: str) -> str:
    """Assert a clean user error (exit 1, `error:` on stderr naming each fragment, no traceback)."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = " ".join(result.stderr.split())
    assert text.startswith("error: "), result.output
    assert "error:" not in result.stdout, result.stdout  # errors go to stderr only
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(EMBEDDED_DIR / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny():
    return minineo.load()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_text("\n".join(f"When Mary and John went to the store, John gave a drink to Mary. {i}" for i in range(40)))
    return path


# ---- 1. numeric options: one check, the allowed range in the message ------------------------------------

def _required(command: str, corpus: Path, out: Path) -> list[str]:
    """The arguments each command needs to get past typer, so that only the option under test is wrong."""
    answers = ["--answer", " Mary", "--wrong", " John"]
    return {"run": ["run", "hi"], "cache": ["cache", "hi"], "embeddings": ["embeddings"], "lens": ["lens", "hi"],
            "heads": ["heads"], "attribute": ["attribute", PROMPT, *answers], "ablate": ["ablate", PROMPT, *answers],
            "ioi": ["ioi"], "patch": ["patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), *answers],
            "harvest": ["harvest", str(corpus), "--names", "blocks.0.resid_post", "--out", str(out)],
            "tune-lens": ["tune-lens", str(corpus), "--out", str(out)],
            "eval": ["eval", str(corpus)], "sae-eval": ["sae-eval", str(out / "sae"), str(corpus)],
            "circuits": ["circuits"], "discover": ["discover", "--out", str(out / "circuit.json")],
            "path-patch": ["path-patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), *answers],
            "view": ["view", "hi", "--out", str(out.with_suffix(".html"))]}[command]


BAD_NUMBERS = [
    ("run", "--top-k", "0", "at least 1"), ("run", "--generate", "-1", "at least 0"),
    ("embeddings", "--top", "-2", "at least 1"), ("embeddings", "--sample", "1", "0 or at least 2"),
    ("heads", "--seq-len", "1", "at least 2"), ("heads", "--n-seqs", "0", "at least 1"),
    ("heads", "--top", "-1", "at least 1"), ("heads", "--seed", "-5", "at least 0"),
    ("attribute", "--top", "0", "at least 1"), ("ablate", "--top", "-1", "at least 1"),
    ("ioi", "--n", "0", "at least 1"), ("ioi", "--top", "-4", "at least 1"),
    ("patch", "--top", "-3", "at least 1"), ("patch", "--top", "0", "at least 1"),
    ("harvest", "--shard-rows", "0", "at least 1"), ("harvest", "--batch-size", "0", "at least 1"),
    ("harvest", "--context", "1", "at least 2"), ("harvest", "--max-tokens", "0", "at least 1"),
    ("tune-lens", "--lr", "-1", "greater than 0"), ("tune-lens", "--lr", "nan", "finite number greater than 0"),
    ("tune-lens", "--lr", "inf", "finite number"), ("tune-lens", "--steps", "0", "at least 1"),
    ("tune-lens", "--batch-size", "-1", "at least 1"), ("tune-lens", "--context", "0", "at least 2"),
]


@pytest.mark.parametrize("command, option, value, allowed", BAD_NUMBERS)
def test_every_numeric_option_out_of_range_is_refused_with_its_range(tmp_path, corpus, command, option, value, allowed):
    out = tmp_path / "out"
    text = error_text(invoke(*_required(command, corpus, out), option, value), f"{option} must be", allowed,
                      f"got {value}")
    assert "error:" in text
    assert not out.exists()  # refused before any work


def test_every_command_with_a_device_option_shares_one_device_check(tmp_path, corpus):
    """The boundary checks `device` for every command that has one, so a new command gets it for free."""
    with_device = [name for name, info in ((c.name or c.callback.__name__, c) for c in app.registered_commands)
                   if "device" in inspect.signature(info.callback).parameters]
    assert {"run", "cache", "harvest", "tune-lens", "ioi", "patch", "lens"} <= set(with_device)
    for command in with_device:
        for bad in ("banana", "cuda:99" if torch.cuda.is_available() else "cuda"):
            error_text(invoke(*_required(command, corpus, tmp_path / "out"), "--device", bad), f"--device {bad}")
    assert not (tmp_path / "out").exists()


def test_check_options_rules():
    shared.check_options(a=(1, ">= 1"), b=(0.5, "0..1"), c=(0, "0 or >= 2"), d=(None, "> 0"), e=(3, "< 4"))
    for checks, message in [({"lr": (float("nan"), "> 0")}, "--lr must be a finite number greater than 0, got nan"),
                            ({"top_k": (0, ">= 1")}, "--top-k must be at least 1, got 0"),
                            ({"frac": (1.5, "0..1")}, "--frac must be between 0 and 1, got 1.5"),
                            ({"sample": (1, "0 or >= 2", "pairs")}, "--sample must be 0 or at least 2 (pairs), got 1")]:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            shared.check_options(**checks)


# ---- 1. tracebacks from the Python API ---------------------------------------------------------------------

def test_a_weight_of_integer_dtype_is_named_at_load(tmp_path):
    folder = model_folder(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    key = next(k for k in tensors if k.endswith("ln_f.weight"))
    tensors[key] = tensors[key].long()
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(UserError, match="ln_f.weight.*int64.*floating point"):
        minineo.load(folder)
    error_text(invoke("run", "hi", "--model", str(folder)), "ln_f.weight", "int64")


@pytest.mark.parametrize("dtype, message", [(torch.int8, "cannot hold a model's weights"), ("float17", "not one of"),
                                            (torch.bool, "cannot hold"), (3, "dtype must be a torch.dtype or a string, got 3")])
def test_load_refuses_a_dtype_that_is_not_floating_point(dtype, message):
    with pytest.raises(UserError, match=message):
        minineo.load(dtype=dtype)


def test_load_takes_a_dtype_by_name():
    assert minineo.load(dtype="bfloat16").W_E.dtype == torch.bfloat16


@pytest.mark.parametrize("text", [None, 123, 4.5, ["hi", 3], b"bytes"])
def test_to_tokens_refuses_what_is_not_text(tiny, text):
    with pytest.raises(UserError, match="text must be a str"):
        tiny.to_tokens(text)


@pytest.mark.parametrize("kwargs, message", [(dict(answer=10**6), "answer token id 1000000 is outside the vocabulary"),
                                             (dict(answer=-1), "outside the vocabulary"),
                                             (dict(answer=5, wrong=257), "wrong token id 257"),
                                             (dict(answer=1.5), "answer must be an integer or a tensor, got 1.5")])
def test_attribution_refuses_answer_ids_outside_the_vocabulary(tiny, kwargs, message):
    tokens = tiny.to_tokens(PROMPT)
    with pytest.raises(UserError, match=message):
        analysis.direct_logit_attribution(tiny, tokens, **kwargs)


def test_cache_save_into_a_missing_folder_or_onto_a_folder_is_a_clear_error(tiny, tmp_path):
    _, cache = tiny.run_with_cache("hi", names=["embed"])
    with pytest.raises(FileNotFoundError, match="the folder .*missing.* does not exist"):
        cache.save(tmp_path / "missing" / "dir" / "c.safetensors")
    with pytest.raises(UserError, match="is a folder"):
        cache.save(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_patch_tensor_on_another_device_is_refused(tiny):
    tokens = tiny.to_tokens("hi")
    shape = (1, tokens.shape[1], tiny.config.n_heads, tiny.config.d_head)
    with pytest.raises(UserError, match="is on meta but the model runs on cpu"):
        tiny(tokens, patch={"blocks.0.attn.z": torch.zeros(shape, device="meta")})
    with pytest.raises(UserError, match="is on meta"):
        tiny(tokens, patch={"blocks.0.attn.z": lambda z: torch.zeros(shape, device="meta")})


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.float64])
def test_a_patch_tensor_of_a_dtype_the_site_cannot_hold_exactly_is_refused(tiny, dtype):
    tokens = tiny.to_tokens("hi")
    value = torch.ones(1, tokens.shape[1], tiny.config.d_model, dtype=dtype)
    with pytest.raises(UserError, match=f"is {str(dtype)[6:]} but the site holds float32"):
        tiny(tokens, patch={"blocks.0.resid_pre": value})


def test_a_patch_of_a_narrower_float_is_exact_and_accepted(tiny):
    tokens = tiny.to_tokens("hi")
    value = torch.randn(1, tokens.shape[1], tiny.config.d_model).half()
    expected = tiny(tokens, patch={"blocks.0.resid_pre": value.float()})
    assert torch.equal(tiny(tokens, patch={"blocks.0.resid_pre": value}), expected)


# ---- 2. silently wrong or ignored --------------------------------------------------------------------------

def test_a_non_finite_tuned_lens_is_never_written_and_never_loaded(tiny, tmp_path):
    lens = analysis.TunedLens(tiny)
    with torch.no_grad():
        lens.weight[0, 0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN or inf.*nothing was written"):
        lens.save(tmp_path / "lens")
    assert not (tmp_path / "lens").exists() and list(tmp_path.iterdir()) == []
    analysis.TunedLens(tiny).save(tmp_path / "good")  # a finite lens, then damaged on disk
    tensors = load_file(tmp_path / "good" / "lens.safetensors")
    tensors["bias"][1, 3] = float("inf")
    save_file(tensors, tmp_path / "good" / "lens.safetensors", metadata={"format": "minineo-tuned-lens"})
    with pytest.raises(UserError, match="holds NaN or inf in its bias"):
        analysis.TunedLens.load(tmp_path / "good", tiny)
    error_text(invoke("lens", "hi", "--tuned", str(tmp_path / "good")), "NaN or inf")


def test_tune_lens_refuses_a_nan_learning_rate_in_python_too(tiny, corpus):
    for lr in (float("nan"), -1.0, 0.0, float("inf")):
        with pytest.raises(UserError, match=r"^lr must be (a finite number )?greater than 0, got (nan|inf|-1.0|0.0)"):
            analysis.train_tuned_lens(tiny, corpus, steps=1, lr=lr)


def test_a_tokenizer_that_encodes_text_to_no_tokens_is_named(tmp_path):
    """transformers 5's GPT2TokenizerFast(vocab_file, merges_file).save_pretrained writes an empty BPE vocabulary."""
    folder = model_folder(tmp_path)
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["model"]["vocab"], spec["model"]["merges"] = {}, []
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    model = minineo.load(folder)
    with pytest.raises(UserError, match="tokenizer.json encodes the non-empty text 'hi' to no tokens"):
        model.to_tokens("hi")
    error_text(invoke("run", "hi", "--model", str(folder)), str(folder / "tokenizer.json"), "to no tokens")
    error_text(invoke("attribute", "hi", "--answer", " Mary", "--model", str(folder)), "to no tokens")
    assert model.to_tokens("").tolist() == [[256]]  # an empty text is BOS alone, as before


@pytest.mark.parametrize("bos", [50256, 257, -1])
def test_a_bos_token_id_outside_the_vocabulary_is_named_at_load(tmp_path, bos):
    folder = model_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["bos_token_id"] = bos
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=f"config.json: bos_token_id {bos} is outside the vocabulary .*vocab_size 257"):
        minineo.load(folder)
    error_text(invoke("run", "hi", "--model", str(folder)), str(folder / "config.json"), f"bos_token_id {bos}")


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_documents_without_text_are_counted_and_reported(tmp_path):
    from minineo.data.corpus import read_documents

    rows = [{"text": "hello there"}, {"title": "no text here"}, {"text": None}, {"text": "again"}]
    path = _jsonl(tmp_path / "c.jsonl", rows)
    with report.collect() as said:
        assert list(read_documents(path)) == ["hello there", "again"]
    assert len(said) == 1 and re.search("2 of the 4 documents .* have no text in the field 'text'.*skipped", said[0])
    with report.collect() as said:  # a corpus where every document has text warns nothing
        assert list(read_documents(_jsonl(tmp_path / "ok.jsonl", [{"text": "a"}, {"text": ""}]))) == ["a", ""]
    assert said == []


def test_harvest_says_how_many_documents_it_skipped_and_refuses_when_none_has_text(tmp_path):
    rows = [{"text": "When Mary and John went to the store. " * 4}, {"body": "x"}, {"text": None}] * 4
    path = _jsonl(tmp_path / "c.jsonl", rows)
    result = invoke("harvest", str(path), "--names", "blocks.0.resid_post", "--out", str(tmp_path / "acts"),
                    "--context", "16")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "warning: 8 of the 12 documents" in text and "--text-field" in text, text
    none = _jsonl(tmp_path / "none.jsonl", [{"text": None, "body": "x"}, {"body": "y"}])
    error_text(invoke("harvest", str(none), "--names", "blocks.0.resid_post", "--out", str(tmp_path / "never")),
               "none of the 2 documents", "--text-field")
    assert not (tmp_path / "never").exists()


def test_patch_errors_go_to_stderr():
    text = error_text(invoke("patch", PROMPT, PROMPT, "--answer", " Mary", "--wrong", " John"),
                      "is the same on both prompts")
    assert text
    error_text(invoke("patch", PROMPT, "short", "--answer", " Mary", "--wrong", " John"), "same length")
    error_text(invoke("patch", PROMPT, PROMPT, "--answer", " Mary", "--wrong", " John", "--site", "resid_psot"),
               "resid_psot")
