"""`minineo discover`: damaged or busy --state files before any work, the metric-gap warnings, empty circuits refused,
the task recorded and compared with --from, long JSONL pairs named by line, a bounded default batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import minineo
from minineo import checks, outputs, report
from minineo.analysis import path_patching
from minineo.cli import app
from minineo.cli import circuit_plot
from minineo.discovery import Graph, files

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["discover", "--model", "tiny-gpt2", *args])


def error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and "Traceback" not in result.output, result.output
    return " ".join(lines)


@pytest.mark.parametrize("field, value, said", [("done", "x", '"done" must be a whole number'),
                                               ("current", "x", '"current" must be a finite number')])
def test_a_damaged_state_is_one_error_line(tmp_path, field, value, said):
    state = tmp_path / "bad8.json"
    good = {"settings": {}, "done": 5, "current": 1.0, "removed": {}, "scores": {}}
    state.write_text(json.dumps({**good, field: value}))
    result = invoke("--method", "acdc", "--n", "2", "--state", str(state), "--out", str(tmp_path / "a.json"))
    assert error_line(result).startswith(f"error: {state}: not an ACDC state file ({said}"), result.output


def test_a_state_another_process_writes_is_refused_naming_its_pid(tmp_path):
    state = tmp_path / "s.json"
    lock = outputs.lock_file(state)
    import fcntl
    import os
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242: minineo discover")
    # a claim in this process would be re-entrant; the lock file's own holder text is what the message names
    try:
        import subprocess
        import sys
        code = ("import sys; from typer.testing import CliRunner; from minineo.cli import app; "
                f"r = CliRunner().invoke(app, ['discover', '--method', 'acdc', '--state', {str(state)!r}, '--out', "
                f"{str(tmp_path / 'a.json')!r}]); print(r.output)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    finally:
        os.close(fd)
    assert "error: --state file" in out and "is being written by another process (pid 4242: minineo discover)" in out


def test_gap_warnings_rule():
    assert checks.metric_gap_warnings(7.5, 0.6) == []
    small, reversed_ = checks.metric_gap_warnings(-0.086, -0.006, "clean", "corrupted")
    assert small.startswith("clean -0.086 and corrupted -0.006 differ by only 0.080 (under 0.1 metric units")
    assert reversed_.startswith("clean -0.086 is below corrupted -0.006: the task's direction is reversed")
    assert checks.metric_gap_warnings(-0.121, -0.007)[0].startswith("m(clean) -0.121 is below")  # 0.114: not small
    assert len(checks.metric_gap_warnings(1000.0, 995.0)) == 1  # under 1% of the values' size


def test_discover_on_a_reversed_near_zero_task_warns(tmp_path):
    task = tmp_path / "x.jsonl"
    task.write_text(json.dumps({"clean": "ab", "corrupted": "cd", "answer": "M", "wrong": "J"}) + "\n")
    result = runner.invoke(app, ["discover", "--model", "tiny-neo", "--task", str(task), "--method", "eap", "--top",
                                 "60", "--out", str(tmp_path / "c.json")])  # the newcomer's case: -0.121, -0.007
    assert result.exit_code == 0, result.output
    assert "warning: m(full) -0.121 is below m(empty) -0.007: the task's direction is reversed" in result.output


def test_path_patching_warns_on_a_near_zero_gap():
    model = minineo.load("tiny-neo")
    clean = model.to_tokens("When Mary and John went to the store, John gave a drink to")
    corrupted = model.to_tokens("When Mary and John went to the store, Mary gave a drink to")
    M, J = model.tokenizer.encode("M", prepend_bos=False)[0], model.tokenizer.encode("J", prepend_bos=False)[0]
    with report.collect() as said:
        path_patching(model, clean, corrupted, lambda logits: (logits[:, -1, M] - logits[:, -1, J]).mean(), [(0, 0)])
    assert any("unreliable" in m or "reversed" in m for m in said), said
    with report.collect() as said:  # the docs' prompts (trailing space): a clear gap, no word
        path_patching(model, model.to_tokens("When Mary and John went to the store, John gave a drink to "),
                      model.to_tokens("When Mary and John went to the store, Mary gave a drink to "),
                      lambda logits: (logits[:, -1, M] - logits[:, -1, J]).mean(), [(0, 0)])
    assert said == []


def test_an_empty_acdc_circuit_is_refused_and_an_empty_top_n_warned(tmp_path):
    result = invoke("--n", "2", "--method", "acdc", "--threshold", "1e9", "--out", str(tmp_path / "t.json"),
                    "--plot", str(tmp_path / "t.png"))
    assert error_line(result).startswith("error: ACDC's --threshold 1e+09 keeps no edge"), result.output
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "t.png").exists()
    result = invoke("--n", "4", "--top", "1", "--out", str(tmp_path / "t.json"))
    assert result.exit_code == 0, result.output
    assert ("warning: --top 1 keeps no edge after pruning (its 1 edge lies on no path from input to logits), so the "
            "circuit is empty and its faithfulness 0 by construction, not a finding; give a larger --top"
            in " ".join(result.output.split()))


def test_an_empty_circuit_plot_invents_no_scale(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(circuit_plot, "_legend", lambda fig, top, *rest: seen.append(top))
    circuit_plot.circuit_figure(Graph(2, 4, 16), None, tmp_path / "e.png", "empty")
    assert seen == [None]


def test_the_task_is_recorded_and_from_on_other_pairs_says_so(tmp_path):
    out = tmp_path / "c.json"
    result = invoke("--n", "4", "--method", "eap", "--out", str(out))
    assert result.exit_code == 0, result.output
    task = files.read_file(out)[1]["task"]
    assert {k: task[k] for k in ("name", "n", "seed", "n_pairs")} == {"name": "ioi", "n": 4, "seed": 0, "n_pairs": 4}
    same = invoke("--from", str(out), "--n", "4")
    assert same.exit_code == 0 and "warning" not in same.output, same.output
    other = invoke("--from", str(out), "--n", "6")
    assert other.exit_code == 0, other.output
    assert ("warning: --from " in other.output and "was found on --task ioi --n 4 --seed 0" in other.output
            and "--task ioi --n 6 --seed 0" in other.output)


def test_a_jsonl_pair_longer_than_the_context_names_the_file_and_line(tmp_path):
    n_ctx = minineo.load("tiny-gpt2").config.n_ctx
    task = tmp_path / "long.jsonl"
    rows = [{"clean": "ab", "corrupted": "cd", "answer": "M", "wrong": "J"},
            {"clean": "a" * (n_ctx + 5), "corrupted": "b" * (n_ctx + 5), "answer": "M", "wrong": "J"}]
    task.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    line = error_line(invoke("--task", str(task), "--out", str(tmp_path / "c.json")))
    assert line.startswith(f"error: {task}, line 2: the prompts are ") and "shorten that pair's prompts" in line, line


def test_the_default_batch_is_bounded_and_a_large_run_says_its_cost(tmp_path, monkeypatch):
    import sys

    faithfulness = sys.modules["minineo.discovery.faithfulness"]
    sizes = []
    real = faithfulness.full_metric
    monkeypatch.setattr(faithfulness, "full_metric", lambda *a, **k: sizes.append(k["batch_size"]) or real(*a, **k))
    from minineo.cli import discover
    monkeypatch.setattr(discover, "LARGE_RUN", 3)
    result = invoke("--n", "4", "--method", "eap", "--out", str(tmp_path / "c.json"))
    assert result.exit_code == 0, result.output
    assert sizes and sizes[0] == discover.DEFAULT_BATCH == 32
    assert "warning: 4 pairs: every pass runs in 1 batches of 32 (--batch-size)" in result.output
