"""The command line's error boundary: every user mistake of issue 10 gives one `error:` line, exit 1, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from minineo.cli import analysis as cli_analysis
from minineo.cli import app  # importing the package registers every command
from minineo.checkpoints.hub import EMBEDDED_DIR

runner = CliRunner()
LONG = "x" * 200  # 201 tokens with BOS: longer than the embedded model's n_ctx=128
PROMPT = "When Mary and John went to the store, John gave a drink to"


def invoke(*args: str, env: dict[str, str] | None = None):
    return runner.invoke(app, list(args), env=env, terminal_width=200)


def error_text(result, *fragments: str) -> str:
    """Assert a clean user error (exit 1, `error:` on stderr naming each fragment, no traceback) and return it."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = " ".join(result.stderr.split())
    assert text.startswith("error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


def model_folder(tmp_path: Path, with_tokenizer: bool = True) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors") + (("tokenizer.json",) if with_tokenizer else ()):
        shutil.copy(EMBEDDED_DIR / name, folder / name)
    return folder


# ---- bad model folders ---------------------------------------------------------------------------------


def test_model_without_tokenizer(tmp_path):
    folder = model_folder(tmp_path, with_tokenizer=False)
    error_text(invoke("run", "hi", "--model", str(folder)), str(folder), "no tokenizer", "tokenizer.json")


def test_config_json_that_is_not_an_object(tmp_path):
    folder = model_folder(tmp_path)
    (folder / "config.json").write_text("[1, 2]")
    error_text(invoke("run", "hi", "--model", str(folder)), str(folder / "config.json"), "JSON object")


def test_corrupt_tokenizer_json_is_named(tmp_path):
    folder = model_folder(tmp_path)
    (folder / "tokenizer.json").write_text("{not json")
    error_text(invoke("run", "hi", "--model", str(folder)), str(folder / "tokenizer.json"), "not a readable tokenizer")


def test_invalid_index_json_is_named(tmp_path):
    folder = model_folder(tmp_path)
    (folder / "model.safetensors.index.json").write_text("{oops")
    error_text(invoke("run", "hi", "--model", str(folder)), "model.safetensors.index.json", "not a valid shard index")


def test_typo_in_folder_name_says_no_folder_and_not_in_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MININEO_CACHE", str(tmp_path / "cache"))
    text = error_text(invoke("run", "hi", "--model", "my-modle"), "'my-modle'", "no folder", "not in the hub cache")
    assert str(tmp_path / "my-modle") in text


def test_minineo_cache_pointing_at_a_file(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MININEO_CACHE", str(tmp_path / "afile"))
    error_text(invoke("run", "hi", "--model", "gpt2"), str(tmp_path / "afile"), "MININEO_CACHE", "is a file")


def test_nan_weights_are_refused(tmp_path):
    folder = model_folder(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    key = next(k for k in tensors if k.endswith("mlp.c_fc.weight"))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    error_text(invoke("run", "hi", "--model", str(folder)), "NaN", str(folder))


# ---- prompts and options that do not fit ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "cache", "lens"])
def test_prompt_longer_than_the_context(command):
    error_text(invoke(command, LONG), "201 tokens", "n_ctx=128", "shorten")


@pytest.mark.parametrize("args,fragments", [
    (["heads", "--seq-len", "100"], ["--seq-len 100 needs 201 positions", "n_ctx=128", "--seq-len 63"]),
    (["heads", "--seq-len", "0"], ["--seq-len must be at least 2"]),
    (["heads", "--n-seqs", "0"], ["--n-seqs must be at least 1"]),
    (["ioi", "--n", "0"], ["--n must be at least 1"]),
    (["run", "hi", "--top-k", "-5"], ["--top-k must be at least 1"]),
    (["run", "hi", "--device", "banana"], ["--device banana is not a device"]),
    (["ablate", "hi", "--answer", " Mary", "--heads", "abc"], ["'abc' is not LAYER.HEAD"]),
    (["ablate", "hi", "--answer", " Mary", "--heads", "1"], ["'1' is not LAYER.HEAD"]),
    (["ablate", "hi", "--answer", " Mary", "--heads", "9.9"], ["head 9.9 does not exist", "layers 0..1"]),
    (["ablate", "hi", "--answer", " Mary", "--method", "bogus"], ["--method 'bogus' is unknown", "zero, mean"]),
    (["attribute", "hi", "--answer", " Mary", "--wrong", " Mary"], ["no differing token"]),
    (["attribute", "hi", "--answer", ""], ["encodes to no token"]),
])
def test_bad_options(args, fragments):
    error_text(invoke(*args), *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA: --device cuda is valid here")
def test_cuda_on_a_cpu_only_torch():
    error_text(invoke("run", "hi", "--device", "cuda"), "--device cuda is not available", "--device cpu")


# ---- files to write ---------------------------------------------------------------------------------------


def read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write to: chmod 555 (or, for root, who ignores modes, /sys when read-only)."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if os.access("/sys", os.W_OK) and subprocess.run(["touch", "/sys/minineo-probe"], capture_output=True).returncode == 0:
        pytest.skip("running as root with a writable /sys: no read-only folder to test with")
    return Path("/sys")


def test_cache_save_to_missing_read_only_and_directory_paths(tmp_path):
    error_text(invoke("cache", "hi", "--save", str(tmp_path / "missing" / "x.safetensors")),
               "the folder", "missing", "does not exist")
    error_text(invoke("cache", "hi", "--save", str(read_only_folder(tmp_path) / "x")), "is not writable")
    error_text(invoke("cache", "hi", "--save", str(tmp_path)), str(tmp_path), "is a directory")


def test_plot_paths(tmp_path):
    error_text(invoke("lens", "hi", "--plot", str(tmp_path / "missing" / "x.png")), "does not exist")
    error_text(invoke("lens", "hi", "--plot", str(tmp_path / "x.xyz")), "'.xyz'", ".png")
    error_text(invoke("heads", "--seq-len", "5", "--n-seqs", "1", "--plot", str(tmp_path)), "is a directory")


def test_plot_without_extension_reports_the_file_it_wrote(tmp_path):
    result = invoke("heads", "--seq-len", "5", "--n-seqs", "1", "--plot", str(tmp_path / "noext"))
    assert result.exit_code == 0, result.output
    written = tmp_path / "noext.png"
    assert written.read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "noext").exists()
    assert f"wrote {written}" in " ".join(result.output.split())


# ---- bugs keep their traceback; --debug and MININEO_DEBUG show it for user errors too -----------------


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_analysis.analysis, "logit_lens", broken)
    result = invoke("lens", "hi")
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    assert "error:" not in result.output


def test_debug_shows_the_traceback_of_a_user_error(monkeypatch):
    result = invoke("--debug", "run", "hi", "--top-k", "-5")
    assert result.exit_code != 0 and type(result.exception).__name__ == "UserError"
    monkeypatch.setenv("MININEO_DEBUG", "1")
    result = invoke("run", "hi", "--top-k", "-5")
    assert result.exit_code != 0 and type(result.exception).__name__ == "UserError"


def run_module(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "MININEO_DEBUG"} | env
    return subprocess.run([sys.executable, "-m", "minineo", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent, env=environment, timeout=300)


def test_the_real_command_prints_one_line_and_exit_1_or_the_traceback_under_debug():
    plain = run_module("run", "hi", "--device", "banana")
    assert plain.returncode == 1 and plain.stderr.startswith("error: ") and "Traceback" not in plain.stderr + plain.stdout
    debug = run_module("run", "hi", "--device", "banana", MININEO_DEBUG="1")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "UserError" in debug.stderr


def test_config_json_path_named_in_a_config_error(tmp_path):
    folder = model_folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["num_layers"] = "two"
    (folder / "config.json").write_text(json.dumps(config))
    error_text(invoke("run", "hi", "--model", str(folder)), str(folder / "config.json"), "'num_layers' must be an integer")


@pytest.mark.parametrize("index, said", [
    ({"weight_map": ["model.safetensors"]}, "its weight_map is ['model.safetensors'] (a list)"),
    ({"weight_map": {"wte.weight": 3}}, "its weight_map is"),
    ({"weight_map": {"wte.weight": "../elsewhere/model.safetensors"}}, "'../elsewhere/model.safetensors' is not a file name beside it"),
])
def test_a_shard_index_naming_no_shard_file_beside_it_is_named(tmp_path, index, said):
    import json

    folder = model_folder(tmp_path)
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    error_text(invoke("run", "hi", "--model", str(folder)), "model.safetensors.index.json", "not a valid shard index",
               said)
