"""The `python -m` scripts (minineo.zoo.compare / train_tiny / check_recipe, benchmarks, benchmarks.device) end a
user's mistake in one `error:` line through the CLI's boundary (minineo.boundary.run_script), naming the program
as it is run; a short train_tiny run's card states its own arguments and calls its weights scratch ones; lens.json
records the model's name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import minineo
from minineo.checkpoints.hub import EMBEDDED
from minineo.boundary import run_script
from minineo.zoo import train_tiny
from minineo.zoo.cards import training_command

ROOT = Path(__file__).resolve().parent.parent


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


# (module, arguments, words the error names): one real `python -m` run per script
SUBPROCESS_CASES = [
    ("minineo.zoo.compare", ["--models", "/nonexistent/model-folder"], ["/nonexistent/model-folder"]),
    ("minineo.zoo.train_tiny", ["--steps", "ten"], ["python -m minineo.zoo.train_tiny", "--steps", "'ten'"]),
    ("minineo.zoo.check_recipe", ["--jobs", "0"], ["python -m minineo.zoo.check_recipe", "--jobs"]),
    ("benchmarks", ["--shapes", "8xabc"], ["python -m benchmarks", "--shapes", "8xabc"]),
    ("benchmarks.device", ["--device", "cuda:99"], ["--device cuda:99"]),
]


@pytest.mark.parametrize("module,args,words", SUBPROCESS_CASES, ids=[c[0] for c in SUBPROCESS_CASES])
def test_a_scripts_mistake_is_one_error_line(module, args, words):
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode in (1, 2), done.stdout + done.stderr
    line = one_error_line(done.stderr)
    for word in words:
        assert word in line, line


IN_PROCESS_CASES = [
    (train_tiny.main, ["--model", "gpt"], ["python -m minineo.zoo.train_tiny", "invalid choice", "--help"]),
    (train_tiny.main, ["--lr", "-1"], ["--lr must be positive"]),
    (train_tiny.main, ["--out", __file__], ["already holds a text file", "not a model folder"]),
    ("compare", ["--models"], ["python -m minineo.zoo.compare", "--models"]),
    ("check_recipe", ["--reuse"], ["--reuse needs --keep"]),
    ("benchmarks", ["--device", "cuda:99"], ["--device cuda:99"]),
    ("benchmarks", ["--models", "gpt3"], ["'gpt3' is not one of gpt2-small, gpt-neo-125M"]),
    ("benchmarks", ["--generation", "1x8"], ["'1x8' is not a shape like 8x128+128"]),
    ("benchmarks", ["--dtypes", "float16"], ["'float16' is not one of float32, bfloat16"]),
    ("benchmarks", ["--rounds", "0"], ["--rounds: must be at least 1"]),
]


def _main(which):
    if callable(which):
        return which
    if which == "compare":
        from minineo.zoo.compare import main
    elif which == "check_recipe":
        from minineo.zoo.check_recipe import main
    else:
        from benchmarks.run import main
    return main


@pytest.mark.parametrize("which,args,words", IN_PROCESS_CASES)
def test_each_malformed_option_is_one_error_line(capsys, which, args, words):
    with pytest.raises(SystemExit) as exit_:
        run_script(_main(which), args)
    assert exit_.value.code in (1, 2)
    line = one_error_line(capsys.readouterr().err)
    for word in words:
        assert word in line, line


def test_a_short_train_tiny_runs_card_states_its_arguments_and_calls_its_weights_scratch(tmp_path):
    out = tmp_path / "short"
    train_tiny.main(["--model", "tiny-gpt2", "--seed", "3", "--steps", "2", "--lr", "0.002", "--report", "0",
                     "--out", str(out)])
    card = (out / "README.md").read_text()
    assert "`python -m minineo.zoo.train_tiny --model tiny-gpt2 --seed 3 --steps 2 --lr 0.002`, defaults otherwise" in card
    assert "its defaults" not in card and "2 steps of AdamW" in card and "seed 3" in card
    assert "scratch weights" in card and "The shipped weights are what this command wrote" not in card
    assert minineo.load(out).config.n_layers == 2  # the folder it wrote loads


def test_the_shipped_cards_still_name_the_default_command():
    recipe = train_tiny.Recipe()
    for name in EMBEDDED:
        line = training_command(name, recipe, 0, 1)
        assert line == f"`python -m minineo.zoo.train_tiny --model {name}`, its defaults"
        card = (EMBEDDED[name] / "README.md").read_text()
        assert line in card and "The shipped weights are what this command wrote" in card


def test_lens_json_records_the_model_by_name_not_its_install_path(tmp_path):
    from minineo.analysis import TunedLens

    for name in ("tiny-neo", "tiny-gpt2"):
        TunedLens(minineo.load(name)).save(tmp_path / name)
        meta = json.loads((tmp_path / name / "lens.json").read_text())
        assert json.dumps(meta).count(str(ROOT)) == 0 and meta["model"] == name
        assert TunedLens.load(tmp_path / name, minineo.load(name)).identity["model"] == name


# scripts run with another project's Python (a TransformerLens 3 / EAP-IG venv) that never import minineo
FOREIGN_PEERS = {"tl3.py": "runs in a transformer-lens<4 venv, imports no minineo",
                 "eap_ig_peer.py": "runs in an EAP-IG venv, imports no minineo"}
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                 if 'if __name__ == "__main__":' in p.read_text() and p.name not in FOREIGN_PEERS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_script_runs_its_main_inside_the_boundary(script):
    """A new benchmarks/*.py with a main cannot skip the one `error:` line boundary (or says why beside FOREIGN_PEERS)."""
    text = (ROOT / "benchmarks" / script).read_text()
    entry = text.split('if __name__ == "__main__":', 1)[1]
    assert "run_script(main" in entry, f"benchmarks/{script}: call run_script(main) under __main__"
    if "ArgumentParser(" in text or "ScriptParser(" in text:
        assert "ArgumentParser(" not in text, f"benchmarks/{script}: parse with minineo.boundary.ScriptParser"


@pytest.mark.parametrize("script", [s for s in SCRIPTS if "ScriptParser(" in (ROOT / "benchmarks" / s).read_text()])
def test_every_benchmark_scripts_unknown_option_is_one_error_line(monkeypatch, capsys, script):
    import importlib

    module = importlib.import_module(f"benchmarks.{script.removesuffix('.py')}")
    monkeypatch.setattr(sys, "argv", [script, "--no-such-option"])
    with pytest.raises(SystemExit) as exit_:
        run_script(module.main)
    assert exit_.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("error: python -m benchmarks") and line.endswith("--help)"), line  # its argparse message


def test_a_failed_training_seed_in_check_recipe_is_one_error_line(monkeypatch, capsys):
    """check_recipe trains each seed in a subprocess; one that fails is one `error:` line naming the seed and how to
    rerun it (it was a bare SystemExit message, without the `error:` of every other script failure)."""
    from minineo.zoo import check_recipe

    popen = subprocess.Popen
    monkeypatch.setattr(check_recipe.subprocess, "Popen",
                        lambda command: popen([sys.executable, "-c", "raise SystemExit(3)"]))
    with pytest.raises(SystemExit) as exit_:
        run_script(check_recipe.main, ["--seeds", "5"])
    assert exit_.value.code == 1
    stderr = capsys.readouterr().err
    line = one_error_line(stderr)
    assert "training seed 5 failed (exit status 3" in line and "--seed 5" in line, line


def test_a_scripts_bare_systemexit_message_is_one_error_line(capsys):
    def main() -> None:
        raise SystemExit("2 part(s) failed: see errors in report.json")

    with pytest.raises(SystemExit) as exit_:
        run_script(main)
    assert exit_.value.code == 1
    assert one_error_line(capsys.readouterr().err) == "error: 2 part(s) failed: see errors in report.json"
    for code in (0, 3, None):  # an exit status passes through unchanged
        with pytest.raises(SystemExit) as exit_:
            run_script(lambda: sys.exit(code))
        assert exit_.value.code == code
