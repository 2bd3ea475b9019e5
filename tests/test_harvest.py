"""minineo harvest: every row is run_with_cache's, torchrun's 2 processes give the 1-process rows,
a killed run continues without losing or doubling a row, and bad input is one clear error."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_close
from typer.testing import CliRunner

import minineo
from minineo.cli import app  # importing the package registers every command
from minineo.data.corpus import pack_rows, read_documents
from minineo.errors import UserError
from minineo.data.harvest import harvest, load

datasets = pytest.importorskip("datasets", reason="harvest needs pip install 'minineo[harvest]'")

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["blocks.0.hook_resid_post", "blocks.1.attn.z", "blocks.1.mlp.post"]
ARGS = dict(context=32, batch_size=8, shard_rows=16)
CLI_ARGS = ["--names", ",".join(NAMES), "--context", "32", "--batch-size", "8", "--shard-rows", "16"]
WORDS = "When Mary and John went to the store John gave a drink to Beautiful is better than ugly".split()


@pytest.fixture(scope="module")
def tiny():
    return minineo.load()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 200 rows of 32 tokens of the embedded model's byte tokens."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))) + "\n" for _ in range(220)))
    return path


@pytest.fixture(scope="module")
def reference(tiny, corpus, tmp_path_factory) -> Path:
    """One uninterrupted in-process harvest, the yardstick of the other runs."""
    return harvest(tiny, corpus, NAMES, tmp_path_factory.mktemp("reference") / "out", **ARGS)


def columns(out: Path) -> dict[str, np.ndarray]:
    return dict(load(out).with_format("numpy")[:])


def assert_same_harvest(out: Path, reference: Path, rtol: float) -> None:
    """Every column equal to the reference's within rtol x the column's largest |value| (float32 round-off when the
    rows are batched differently: another batch shape or thread count can change a matmul's summation order)."""
    got, want = columns(out), columns(reference)
    assert sorted(got) == sorted(want)
    assert np.array_equal(got["token_ids"], want["token_ids"])
    for name in want:
        scale = max(1.0, float(np.abs(want[name]).max()))
        assert np.abs(got[name].astype(np.float64) - want[name]).max() <= rtol * scale, name


def test_every_row_equals_run_with_cache_and_the_folder_is_saelens_layout(tiny, corpus, reference):
    dataset = load(reference)
    assert set(dataset.column_names) == {"token_ids", "blocks.0.hook_resid_post", "blocks.1.attn.hook_z", "blocks.1.mlp.hook_post"}
    assert dataset.features["blocks.1.mlp.hook_post"] == datasets.Array2D((32, 512), "float32")
    assert dataset.features["blocks.1.attn.hook_z"] == datasets.Array2D((32, 128), "float32")  # head * d_head, as SAELens's hook_z
    assert dataset.features["token_ids"] == datasets.Sequence(datasets.Value("int32"), length=32)
    rows = [r.tolist() for r in pack_rows(tiny, read_documents(corpus), 32)]
    assert len(dataset) == len(rows) > 150 and len(dataset) % 16 != 0  # several shards, the last one partial
    stored = dataset.with_format("torch")[:]
    assert stored["token_ids"].tolist() == rows
    sites = {"blocks.0.hook_resid_post": "blocks.0.resid_post", "blocks.1.attn.hook_z": "blocks.1.attn.z",
             "blocks.1.mlp.hook_post": "blocks.1.mlp.post"}
    _, every = tiny.run_with_cache(stored["token_ids"].long(), names=list(sites.values()))  # rows are independent
    for i in [0, 15, 16, 100, len(rows) - 1]:  # and a few rows on their own: shard edges, the last row
        _, one = tiny.run_with_cache(stored["token_ids"][i].long(), names=list(sites.values()))
        for column, site in sites.items():
            assert_close(stored[column][i], one[site][0].flatten(1) if site.endswith("z") else one[site][0], f"row {i} {site}")
    for column, site in sites.items():
        assert_close(stored[column], every[site].flatten(2) if site.endswith("z") else every[site], f"every row, {site}")
    assert len(datasets.load_from_disk(str(reference))) == len(rows)  # what SAELens's cached_activations_path reads


def test_torchrun_two_processes_give_the_one_process_rows(corpus, reference, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "minineo", "harvest", str(corpus), "--out", str(out), "--device", "cpu", *CLI_ARGS]
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 processes" in result.stdout
    assert_same_harvest(out, reference, rtol=1e-6)


def test_under_torchrun_a_user_error_is_printed_once(corpus, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "minineo", "harvest", str(corpus), "--out", str(out), "--device", "cpu", "--names", "blocks.9.resid_post"]
    result = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: 'blocks.9.resid_post': layer 9 does not exist"), errors
    assert not out.exists()


def test_a_rank_other_than_0_says_an_error_only_when_it_is_its_own(corpus, tmp_path, monkeypatch):
    from minineo.cli import harvest as cli_harvest

    monkeypatch.setattr(cli_harvest, "QUIET_RANK_WAIT_S", 0.0)  # torchrun would have ended it by now had rank 0 failed
    arguments = ["harvest", str(corpus), "--out", str(tmp_path / "out"), "--names", "blocks.0.resid_post", "--dtype", "int8"]
    for rank, said in [("0", "error: --dtype int8 is not one of"), ("1", "error: (rank 1) --dtype int8 is not one of")]:
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        result = CliRunner().invoke(app, arguments, catch_exceptions=False, terminal_width=400)
        assert result.exit_code == 1 and result.output.startswith(said) and result.output.count("error:") == 1, result.output


def test_a_killed_run_continues_without_losing_or_doubling_a_row(corpus, reference, tmp_path):
    out = tmp_path / "out"
    # A real process, really killed (SIGKILL) while it writes: each shard's write pauses 0.3 s after
    # writing its rows to the temporary file, before finishing and renaming it, so the kill lands mid-shard.
    script = (
        "import sys, time\n"
        "from datasets.arrow_writer import ArrowWriter\n"
        "write_batch = ArrowWriter.write_batch\n"
        "def slow(self, *a, **k):\n"
        "    out = write_batch(self, *a, **k); time.sleep(0.3); return out\n"
        "ArrowWriter.write_batch = slow\n"
        "from minineo.cli import main\n"
        "sys.argv = ['minineo', 'harvest'] + sys.argv[1:]\n"
        "main()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script, str(corpus), "--out", str(out), *CLI_ARGS],
                               cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while len(list(out.glob("data-*.arrow"))) < 3 or not list(out.glob(".*.tmp")):
        assert process.poll() is None, f"the run ended before it was killed: {process.stdout.read()}"
        assert time.time() < deadline, "the run wrote no shards in 300 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    committed = sorted(out.glob("data-*.arrow"))
    assert 3 <= len(committed) < len(load(reference)) // 16 and list(out.glob(".*.tmp"))  # killed part-way, a half shard on disk
    with pytest.raises(UserError, match="not complete"):
        load(out)
    before = {f.name: f.stat().st_mtime_ns for f in committed}
    result = CliRunner().invoke(app, ["harvest", str(corpus), "--out", str(out), *CLI_ARGS], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not list(out.glob(".*.tmp"))
    assert {f.name: f.stat().st_mtime_ns for f in committed} == before  # completed shards kept, not redone
    assert_same_harvest(out, reference, rtol=1e-6)


def test_a_full_disk_mid_write_is_one_clear_error_and_the_rerun_completes(tiny, corpus, reference, tmp_path, monkeypatch):
    from datasets.arrow_writer import ArrowWriter

    out, calls, write_batch = tmp_path / "out", [], ArrowWriter.write_batch

    def full_after_two(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_batch(self, *args, **kwargs)

    monkeypatch.setattr(ArrowWriter, "write_batch", full_after_two)
    with pytest.raises(UserError, match="could not write shard 2 .*No space left on device.*re-run the same command"):
        harvest(tiny, corpus, NAMES, out, **ARGS)
    assert sorted(f.name for f in out.glob("data-*")) == ["data-00000.arrow", "data-00001.arrow"]
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(ArrowWriter, "write_batch", write_batch)
    harvest(tiny, corpus, NAMES, out, **ARGS)
    assert_same_harvest(out, reference, rtol=0.0)


def test_bad_input_is_one_clear_error_and_touches_nothing(tiny, corpus, reference, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "c.jsonl").write_text(json.dumps({"content": "hello"}) + "\n")
    cases = [
        (dict(corpus=tmp_path / "missing.txt"), "does not exist"),
        (dict(corpus=tmp_path / "empty.txt"), "holds no documents"),
        (dict(corpus=tmp_path / "c.jsonl"), "no field 'text'"),
        (dict(names=["blocks.9.resid_post"]), "layer 9 does not exist"),
        (dict(names=["blocks.0.resid_psot"]), "Did you mean"),
        (dict(names=["blocks.0.attn.pattern"]), "not one vector per position"),
        (dict(context=129), "n_ctx=128"),
        (dict(max_tokens=10), "less than one row"),
    ]
    for change, message in cases:
        arguments = dict(corpus=corpus, names=NAMES, out_dir=tmp_path / "never", **ARGS) | change
        with pytest.raises(UserError, match=message):
            harvest(tiny, **arguments)
        assert not (tmp_path / "never").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a minineo harvest"):
        harvest(tiny, corpus, NAMES, other, **ARGS)
    assert [f.name for f in other.iterdir()] == ["notes.txt"]
    manifest = (reference / "harvest.json").read_text()
    with pytest.raises(UserError, match="other arguments .*context: 32 there, 16 now"):
        harvest(tiny, corpus, NAMES, reference, **(ARGS | dict(context=16)))
    assert (reference / "harvest.json").read_text() == manifest
    assert harvest(tiny, corpus, NAMES, reference, **(ARGS | dict(batch_size=5))) == reference  # complete: nothing to do


def test_a_refused_resume_names_only_the_arguments_the_user_changed(tiny, corpus, reference, tmp_path):
    out = harvest(tiny, corpus, ["blocks.0.resid_post"], tmp_path / "out", context=32, max_tokens=64)  # default shard_rows
    with pytest.raises(UserError) as refused:  # the default shard_rows and max_rows follow --context: not news
        harvest(tiny, corpus, ["blocks.0.resid_post"], out, context=16, max_tokens=64)
    assert "context: 32 there, 16 now)" in str(refused.value)
    assert "shard_rows" not in str(refused.value) and "max_rows" not in str(refused.value)
    with pytest.raises(UserError, match=r"\(max_rows: 2 there, 4 now \(whole rows of --max-tokens at --context\)\)"):
        harvest(tiny, corpus, ["blocks.0.resid_post"], out, context=32, max_tokens=128)
    without = {k: v for k, v in ARGS.items() if k != "shard_rows"}  # the reference was written with shard_rows=16
    with pytest.raises(UserError, match=r"shard_rows: 16 there, \d+ now \(--shard-rows was not given: .*give --shard-rows 16 "
                                        r"to continue\)"):
        harvest(tiny, corpus, NAMES, reference, **without)


def test_float16_is_stored_as_float16_and_bfloat16_exactly_as_float32(tiny, corpus, tmp_path):
    half = load(harvest(tiny, corpus, ["blocks.1.resid_post"], tmp_path / "half", dtype=torch.float16,
                        max_tokens=64, **ARGS)).with_format("torch")
    assert half.features["blocks.1.hook_resid_post"].dtype == "float16" and len(half) == 2
    _, cache = tiny.run_with_cache(half[0]["token_ids"].long(), names="blocks.1.resid_post")
    assert torch.equal(half[0]["blocks.1.hook_resid_post"], cache["blocks.1.resid_post"][0].half())
    brain = minineo.load(dtype=torch.bfloat16)
    bf = load(harvest(brain, corpus, ["blocks.1.resid_post"], tmp_path / "bf", max_tokens=64, **ARGS)).with_format("torch")
    assert bf.features["blocks.1.hook_resid_post"].dtype == "float32"
    stored = bf[1]["blocks.1.hook_resid_post"]
    assert torch.equal(stored.bfloat16().float(), stored)  # bfloat16 values, kept exactly
    _, cache = brain.run_with_cache(bf[1]["token_ids"].long(), names="blocks.1.resid_post")
    assert_close(stored, cache["blocks.1.resid_post"][0].float(), "bf16", atol=0.1)


def test_the_forward_stops_after_the_last_block_asked_for(tiny, corpus, tmp_path, monkeypatch):
    from minineo.data.harvest import _blocks_needed

    assert _blocks_needed(["embed"]) == 0 and _blocks_needed(["blocks.1.attn.z", "embed"]) == 2
    assert _blocks_needed(["blocks.0.resid_post", "ln_final.normalized"]) is None  # the whole forward
    model = minineo.load()

    def never(*args, **kwargs):
        raise AssertionError("block 1 ran although nothing of it or later was asked for")

    monkeypatch.setattr(model.blocks[1], "forward", never)
    names = ["pos_embed", "blocks.0.mlp.post"]
    got = load(harvest(model, corpus, names, tmp_path / "out", max_tokens=64, **ARGS)).with_format("torch")[:]
    _, cache = tiny.run_with_cache(got["token_ids"].long(), names=names)
    assert torch.equal(got["hook_pos_embed"], cache["pos_embed"])
    assert torch.equal(got["blocks.0.mlp.hook_post"], cache["blocks.0.mlp.post"])


def test_without_datasets_the_command_says_which_install_adds_it(corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # what `import datasets` meets when it is not installed
    result = CliRunner().invoke(app, ["harvest", str(corpus), "--out", str(tmp_path / "out"), "--names", "blocks.0.resid_post"],
                                catch_exceptions=False, terminal_width=400)
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "pip install 'minineo[harvest]'" in result.output
    assert not (tmp_path / "out").exists()


def _env() -> dict:
    return os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
