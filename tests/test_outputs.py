"""Issue 29 part 4: two writers of one output path. The second fails at once and clearly; the first finishes
and its file is whole and its own (never replaced by the second).

Every command that writes is tried with two real writers: writer A, a `python -m minineo` process, is frozen
(SIGSTOP) once it holds its claim, writer B runs the same command on the same path, then A is resumed.
`test_every_writing_option_is_covered` finds the writing options by introspecting the app, so a new one
must be added here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from minineo import outputs
from minineo.cli import app, shared
from minineo.errors import UserError

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = PROMPT.replace("John gave", "Mary gave")
ANSWERS = ["--answer", " Mary", "--wrong", " John"]
SAE = Path(__file__).parent / "data" / "saelens_package" / "tiny_neo_resid_post_1"
EAP_IG_JSON = Path(__file__).parent / "data" / "eap_ig" / "eap-ig-tiny-gpt2-ioi16-eap.json"
WRITING_OPTIONS = {"--plot", "--save", "--json", "--out", "--html"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _held_elsewhere(path: Path) -> bool:
    """True while some process holds the claim on `path` (its lock file is flocked)."""
    try:
        fd = os.open(outputs.lock_file(path), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _hold(path: Path) -> subprocess.Popen:
    """A process that claims `path` and keeps it until killed."""
    code = ("import sys, time; from minineo import outputs; c = outputs.claim(sys.argv[1], '--out'); c.__enter__(); "
            "print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert holder.stdout.readline().strip() == "held"
    return holder


# ---- the mechanism ------------------------------------------------------------------------------------

def test_a_claim_held_by_another_process_is_refused_with_the_path_and_the_holder(tmp_path):
    target = tmp_path / "out.png"
    holder = _hold(target)
    try:
        with pytest.raises(UserError) as caught:
            with outputs.claim(target, "--plot"):
                pass
        message = str(caught.value)
        assert "--plot" in message and str(target) in message and "being written by another process" in message
        assert f"pid {holder.pid}" in message and "give another path" in message
    finally:
        holder.kill()
        holder.wait()
    with outputs.claim(target, "--plot"):  # a killed holder releases the lock (the kernel's), its stale file is reused
        assert outputs.holds(target)
    assert not outputs.holds(target) and not outputs.lock_file(target).exists()


def test_claims_are_reentrant_within_a_process(tmp_path):
    target = tmp_path / "x.json"
    with outputs.claim(target):
        with outputs.claim(target):
            outputs.write_text(target, "{}")
        assert outputs.holds(target)
    assert not outputs.holds(target)
    assert json.loads(target.read_text()) == {}


def test_threads_of_one_process_take_turns(tmp_path):
    """Within a process a second thread waits for the first's claim (serialised), it does not fail or overlap."""
    import threading

    target, inside, most, errors = tmp_path / "x.json", [0], [0], []

    def write(i: int) -> None:
        try:
            for _ in range(5):
                with outputs.claim(target):
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                    outputs.write_text(target, json.dumps({"writer": i}))
                    time.sleep(0.001)
                    inside[0] -= 1
        except Exception as err:  # noqa: BLE001  (collected and reported below)
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and most[0] == 1
    assert json.loads(target.read_text())["writer"] in range(6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with outputs.replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_a_waiting_claim_gets_the_path_once_the_holder_is_done(tmp_path):
    target = tmp_path / "models--gpt2"
    holder = _hold(target)
    started = time.monotonic()
    subprocess.run(["sh", "-c", f"sleep 1; kill {holder.pid}"], check=True)
    with outputs.claim(target, wait=True):
        assert outputs.holds(target)
    holder.wait()
    assert time.monotonic() - started >= 1.0


def test_a_download_waits_for_another_download_of_the_same_model(tmp_path):
    """Two `minineo download gpt2` into one cache: the second waits for the first (then finds its files) instead of
    deleting the first one's partial files; another model's partial download is left alone."""
    other = tmp_path / "models--EleutherAI--gpt-neo-125M" / "blobs"
    other.mkdir(parents=True)
    (other / "abc.incomplete").write_text("another download in flight")
    holder = _hold(tmp_path / "models--gpt2")
    second = subprocess.Popen([sys.executable, "-m", "minineo", "download", "gpt2", "--cache-dir", str(tmp_path)],
                              stderr=subprocess.PIPE, text=True, env={**ENV, "HF_HUB_OFFLINE": "1"})
    try:
        time.sleep(4)
        assert second.poll() is None, "the second download did not wait for the first"
    finally:
        holder.kill()
        holder.wait()
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1 and "error:" in err and "HF_HUB_OFFLINE" in " ".join(err.split())
    assert (other / "abc.incomplete").read_text() == "another download in flight"


# ---- every file written gets the mode a plain open() gives it -------------------------------------------

def _plain_mode(folder: Path) -> int:
    """The mode of a file made by a plain open() in `folder` (the independent expectation: the umask's)."""
    reference = folder / "plain-open-reference"
    with open(reference, "w"):
        pass
    mode = reference.stat().st_mode & 0o777
    reference.unlink()
    return mode


def _assert_plain_modes(out: Path) -> None:
    """`out` (a file, or every file of a folder) has the mode a plain open() gives a file beside it."""
    expected = _plain_mode(out.parent)
    written = [p for p in out.rglob("*") if p.is_file()] if out.is_dir() else [out]
    assert written
    for path in written:
        assert oct(path.stat().st_mode & 0o777) == oct(expected), path


def _library_writers():
    """(name, a function writing the path it is given): every library function that writes a user's file."""
    import torch

    import minineo
    from minineo import discovery, views

    def acdc_state(path):
        model = minineo.load("tiny-gpt2")
        discovery.acdc(model, discovery.ioi_pairs(model, 2), threshold=1e6, state=path)

    def cache(path):
        model = minineo.load()
        model.run_with_cache(model.to_tokens("hi"), names=["blocks.0.resid_post"])[1].save(path)

    def replaced(path):
        with outputs.replacing(path) as tmp:
            tmp.write_bytes(b"x")

    graph = discovery.load_graph(EAP_IG_JSON)
    return [
        ("outputs.write_text", "x.txt", lambda path: outputs.write_text(path, "x")),
        ("outputs.replacing", "x.bin", replaced),
        ("discovery.to_json", "c.json", lambda path: discovery.to_json(graph, path)),
        ("discovery.to_pt", "c.pt", lambda path: discovery.to_pt(graph, path)),
        ("discovery.save_graph", "c.json", lambda path: discovery.save_graph(graph, path)),
        ("discovery.acdc state", "state.json", acdc_state),
        ("Cache.save", "c.safetensors", cache),
        ("View.save", "v.html", lambda path: views.circuit(EAP_IG_JSON).save(path)),
        ("TunedLens.save", "lens", lambda path: _tuned_lens().save(path)),
    ]


def _tuned_lens():
    import minineo
    from minineo import analysis

    return analysis.TunedLens(minineo.load())


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_every_library_writer_gives_its_file_the_umasks_mode_as_open_does(tmp_path, umask):
    """Not mkstemp's private 0600: collaborators on a shared disk read what minineo wrote (finding 6)."""
    old = os.umask(umask)
    try:
        for name, filename, write in _library_writers():
            write(tmp_path / filename)
            _assert_plain_modes(tmp_path / filename)
            expected = 0o666 & ~umask
            assert _plain_mode(tmp_path) == expected, name
    finally:
        os.umask(old)


# ---- every command that writes, with two real writers ---------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_text("\n".join(f"When Mary and John went to the store, John gave a drink to Mary. {i}" for i in range(40)))
    return path


def _png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def _json(path: Path) -> None:
    assert "model" in json.loads(path.read_text())


def big_graph(folder: Path) -> str:
    """A GPT-2-small-shaped EAP-IG graph file (32,491 edges): view-circuit takes long enough on it for the second
    writer to find the first one's claim (on the zoo's 110 edges it is done before the test can look)."""
    import torch

    from minineo.discovery import Graph, to_json

    graph = Graph(12, 12, 768)
    graph.scores = torch.randn(graph.scores.shape, generator=torch.Generator().manual_seed(0)) * graph.real_edges
    return str(to_json(graph, folder / "big-graph.json"))


def _html(path: Path) -> None:
    text = path.read_text()
    assert text.lstrip().lower().startswith("<!doctype html") and text.rstrip().endswith("</html>")


def _graph_json(path: Path) -> None:
    document = json.loads(path.read_text())
    assert document["edges"] and document["cfg"]["n_layers"] == 2


def _safetensors(path: Path) -> None:
    assert "blocks.0.resid_post" in load_file(str(path))


def _lens(path: Path) -> None:
    assert json.loads((path / "lens.json").read_text())["n_layers"] == 2


def _harvest(path: Path) -> None:
    from minineo.data.shards import load

    assert load(path)[0]["blocks.0.hook_resid_post"].shape == (16, 128)


# (command, its arguments with {out} for the output path, the output's name, the check that it is whole)
WRITERS = [
    ("cache", ["cache", "hi", "--save", "{out}"], "c.safetensors", _safetensors),
    ("embeddings", ["embeddings", "--plot", "{out}"], "p.png", _png),
    ("lens", ["lens", "hi", "--plot", "{out}"], "p.png", _png),
    ("heads", ["heads", "--n-seqs", "1", "--seq-len", "8", "--plot", "{out}"], "p.png", _png),
    ("attribute", ["attribute", PROMPT, *ANSWERS, "--plot", "{out}"], "p.png", _png),
    ("ablate", ["ablate", PROMPT, *ANSWERS, "--plot", "{out}"], "p.png", _png),
    ("ioi", ["ioi", "--n", "2", "--plot", "{out}"], "p.png", _png),
    ("patch", ["patch", PROMPT, CORRUPTED, *ANSWERS, "--plot", "{out}"], "p.png", _png),
    ("path-patch", ["path-patch", PROMPT, CORRUPTED, *ANSWERS, "--plot", "{out}"], "p.png", _png),
    ("circuits", ["circuits", "--plot", "{out}"], "p.png", _png),
    ("eval", ["eval", "{corpus}", "--context", "16", "--max-tokens", "64", "--json", "{out}"], "e.json", _json),
    ("sae-eval", ["sae-eval", str(SAE), "{corpus}", "--context", "16", "--max-tokens", "64", "--json", "{out}"],
     "s.json", _json),
    ("harvest", ["harvest", "{corpus}", "--names", "blocks.0.resid_post", "--out", "{out}", "--context", "16",
                 "--max-tokens", "64"], "h", _harvest),
    ("view", ["view", "hi", "--out", "{out}"], "v.html", _html),
    ("discover", ["discover", "--task", "ioi", "--n", "2", "--method", "eap", "--top", "5", "--out", "{out}"], "c.json",
     _graph_json),
    ("view-circuit", ["view-circuit", "{big_graph}", "--out", "{out}"], "c.html", _html),
    ("tune-lens", ["tune-lens", "{corpus}", "--out", "{out}", "--steps", "2", "--context", "16", "--batch-size", "2"],
     "lens", _lens),
]


def test_every_writing_option_is_covered():
    """Every command with an option that names an output (--plot, --save, --json, --out, --html) is in WRITERS."""
    import typer.main

    group = typer.main.get_command(app)
    writing = {name for name, command in group.commands.items()
               if any(set(p.opts) & WRITING_OPTIONS for p in command.params)}
    assert writing == {name for name, *_ in WRITERS}


@pytest.mark.parametrize("name, arguments, output, whole", WRITERS, ids=[w[0] for w in WRITERS])
def test_a_second_writer_of_the_same_path_fails_and_the_first_keeps_its_file(tmp_path, corpus, name, arguments,
                                                                            output, whole):
    if name in ("eval", "sae-eval", "harvest", "tune-lens"):
        pytest.importorskip("datasets", reason="the corpus commands need pip install 'minineo[harvest]'")
    out = tmp_path / output
    args = [a.format(out=out, corpus=corpus, big_graph=big_graph(tmp_path)) if "{big_graph}" in a
            else a.format(out=out, corpus=corpus) for a in arguments]
    first = subprocess.Popen([sys.executable, "-m", "minineo", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not _held_elsewhere(out):  # A claims its output at the door, before loading the model
            assert first.poll() is None, f"the first writer ended before it claimed {out}: {first.communicate()}"
            assert time.monotonic() < deadline, "the first writer never claimed its output"
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # A holds the claim and is stopped mid-command
        second = CliRunner().invoke(app, args, terminal_width=300)
        assert second.exit_code == 1, second.output
        text = " ".join(second.stderr.split())
        assert text.startswith("error:") and str(out) in text and "being written by another process" in text
        assert f"pid {first.pid}" in text and "Traceback" not in second.output
    finally:
        first.send_signal(signal.SIGCONT)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    whole(out)  # the first writer's file, whole
    assert outputs.refuse_replacing(out, KIND[name]) == out  # the same command may replace it: it holds its kind
    _assert_plain_modes(out)  # with the mode a plain open() gives a file there, not a temporary file's 0600
    assert not outputs.lock_file(out).exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


def test_two_outputs_of_one_command_naming_one_file_are_refused(tmp_path):
    """Within one command, a second option naming the path another one claimed is an error, not an overwrite."""
    out = tmp_path / "both.png"
    with contextlib.ExitStack() as stack:
        shared._state["outputs"], shared._state["claimed"] = stack, {}
        try:
            shared.claim_output(out, "--plot")
            with pytest.raises(UserError, match="--plot and --json name the same path"):
                shared.claim_output(out, "--json")
        finally:
            shared._state["outputs"], shared._state["claimed"] = None, {}


# ---- an existing output is replaced only by the same kind of artefact (minineo.outputs.refuse_replacing) ----------

# each command's kind of output: what it may replace (WRITERS' order)
KIND = {"cache": "cache", "embeddings": "plot", "lens": "plot", "heads": "plot", "attribute": "plot", "ablate": "plot",
        "ioi": "plot", "patch": "plot", "path-patch": "plot", "circuits": "plot", "eval": "eval", "sae-eval": "sae-eval",
        "harvest": "harvest", "view": "page", "discover": "circuit", "view-circuit": "page", "tune-lens": "tuned-lens"}


def test_every_writer_declares_the_kind_it_replaces():
    assert set(KIND) == {name for name, *_ in WRITERS} and set(KIND.values()) <= set(outputs.KINDS)


def _fingerprint(path: Path) -> str:
    return repr(sorted((p.name, p.read_bytes()) for p in path.iterdir()) if path.is_dir() else path.read_bytes())


def _foreign(path: Path, folder: bool) -> str:
    """Put something the command does not write at `path`: an SAE folder for a folder output, a torch.save file
    for a file output. Returns a fingerprint of it."""
    import shutil

    import torch

    if folder:
        shutil.copytree(SAE, path)
    else:
        torch.save(torch.zeros(3), path)
    return _fingerprint(path)


@pytest.mark.parametrize("name, arguments, output, whole", WRITERS, ids=[w[0] for w in WRITERS])
def test_an_output_holding_another_artefact_is_refused_before_any_work(tmp_path, corpus, monkeypatch, name,
                                                                       arguments, output, whole):
    """`discover --out tensor.pt` replaced an unrelated torch.save file: now every writing command refuses an existing
    path that holds another kind of artefact, naming the path, what it holds and the fix, before loading the model."""
    from minineo.checkpoints import loading

    if name in ("eval", "sae-eval", "harvest", "tune-lens"):
        pytest.importorskip("datasets", reason="the corpus commands need pip install 'minineo[harvest]'")

    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded: the output was checked after work began")

    monkeypatch.setattr(loading, "load", no_work)
    monkeypatch.setattr(shared, "load", no_work)
    out = tmp_path / output
    folder = outputs.KINDS[KIND[name]][1]
    before = _foreign(out, folder)
    args = [a.format(out=out, corpus=corpus, big_graph=EAP_IG_JSON) for a in arguments]
    result = CliRunner().invoke(app, args, terminal_width=300)
    assert result.exit_code == 1, result.output
    text = " ".join(result.stderr.split())
    assert text.startswith("error:") and text.count("error:") == 1 and "Traceback" not in result.output
    holds = "an SAE folder" if folder else "a torch.save file"
    assert f"{out} already holds {holds}" in text and f", not {outputs.KINDS[KIND[name]][0]}, " in text, text
    assert "give another path, or delete" in text
    assert _fingerprint(out) == before  # untouched


def test_train_tiny_refuses_an_sae_folder_before_training(tmp_path, monkeypatch):
    """`python -m minineo.zoo.train_tiny --out my-sae` trained, then wrote a model INTO the SAE folder: now refused
    before training, the folder untouched; a model folder (the shipped one's copy) may be replaced."""
    import shutil

    from minineo.boundary import ScriptUsageError
    from minineo.checkpoints.hub import EMBEDDED_DIR
    from minineo.zoo import train_tiny

    monkeypatch.setattr(train_tiny, "train", lambda *a, **k: pytest.fail("it trained before checking --out"))
    sae = tmp_path / "my-sae"
    shutil.copytree(SAE, sae)
    names = sorted(p.name for p in sae.iterdir())
    with pytest.raises(ScriptUsageError, match=f"--out {sae} already holds an SAE folder .*, not a model folder"):
        train_tiny.main(["--steps", "3", "--out", str(sae), "--report", "0"])
    assert sorted(p.name for p in sae.iterdir()) == names
    model = tmp_path / "model"
    shutil.copytree(EMBEDDED_DIR, model)  # the shipped tiny-neo: what train_tiny writes
    assert outputs.refuse_replacing(model, "model", "--out") == model
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    with pytest.raises(ScriptUsageError, match="already holds a text file"):
        train_tiny.main(["--steps", "3", "--out", str(file), "--report", "0"])


@pytest.mark.parametrize("kind", ["plot", "circuit", "eval", "harvest", "model"])
def test_a_missing_path_an_empty_file_and_an_empty_folder_are_free(tmp_path, kind):
    folder = outputs.KINDS[kind][1]
    empty = tmp_path / "empty"
    empty.mkdir() if folder else empty.touch()
    assert outputs.refuse_replacing(tmp_path / "new", kind) == tmp_path / "new"
    assert outputs.refuse_replacing(empty, kind) == empty


def test_the_tuned_lens_file_names_outputs_knows_are_the_writers_own():
    from minineo import outputs
    from minineo.analysis.tuned_lens_files import META, PACKAGE_CONFIG, PACKAGE_PARAMS

    assert outputs.TUNED_LENS_META == META and outputs.TUNED_LENS_PACKAGE == {PACKAGE_CONFIG, PACKAGE_PARAMS}
