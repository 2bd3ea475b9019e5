"""The prepared device run (benchmarks/device_check.sh) in its smoke mode: every step runs on the CPU with tiny
shapes and writes its report, so the script cannot rot before a GPU runs it. It checks the script, not speed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def script_env(tmp_path, **extra) -> dict:
    """The script's environment with no virtual environment on PATH: only PYTHON names the interpreter to use."""
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
           "PYTHON": sys.executable, **extra}
    for name in ("MININEO_TEST_DEVICE", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def test_device_check_smoke_mode_runs_every_part_and_writes_its_report(tmp_path):
    done = subprocess.run(["bash", "benchmarks/device_check.sh", "--smoke"], cwd=ROOT, env=script_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in ("log.txt", "benchmark.txt"):  # transformers' bars stay out (it is imported after minineo quiets it)
        assert "Loading weights" not in (tmp_path / name).read_text(), name
    log = (tmp_path / "log.txt").read_text()
    assert f"python={sys.executable}" in log  # the interpreter it was given, not whatever `python` PATH finds
    assert f"report: {tmp_path}/device_run.md" in log.splitlines()[-1]
    for name in ("log.txt", "packages.txt", "tests.txt", "device_run.json", "device_run.md"):
        assert (tmp_path / name).is_file(), name
    assert "torch==" in (tmp_path / "packages.txt").read_text()
    report = json.loads((tmp_path / "device_run.json").read_text())
    assert report["skipped"] == [] and report["errors"] == [] and report["machine"]["smoke"]
    assert "passed" in report["machine"]["tests"] and "exit 0" in report["machine"]["tests"]
    variants = {(r["model"], r["dtype"], r["variant"]) for r in report["results"]}
    for model in ("gpt2-small", "gpt-neo-125M"):
        for dtype in ("float32", "bfloat16"):
            assert {(model, dtype, "minineo fast"), (model, dtype, "minineo run_with_cache (all names)")} <= variants
    for r in report["results"]:  # the fast path agrees with HF float32 (bfloat16: within its precision)
        if r["variant"].startswith("minineo"):
            assert r["max_abs_dlogit"] < (1e-4 if r["dtype"] == "float32" else 0.5), r
    assert {g["model"] for g in report["generation"]} == {"gpt2-small", "gpt-neo-125M"}
    for g in report["generation"]:  # minineo's rows agree with HF's tokens; HF's own row compares with nothing
        assert g["same_tokens_as_hf"] is (None if g["variant"] == "HF generate" else True), g
    for attention in report["local_attention"]:  # flex and masked SDPA equal the explicit path
        assert max(attention["max_abs_diff_vs_explicit"].values()) < (1e-4 if attention["dtype"] == "float32" else 0.1)
    assert report["patching"]["max_abs_diff"] < 1e-4
    assert report["profile"]["ops"] and set(report["matmul_peak_gflops"]) == {"cpu/float32", "cpu/bfloat16"}
    markdown = (tmp_path / "device_run.md").read_text()
    for section in ("## Forward pass", "## The targets", "## Local attention", "## Generation", "## Patching engine",
                    "## Where one forward's time goes"):
        assert section in markdown, section


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the full device run would start")
def test_without_a_gpu_the_first_line_says_so_and_no_report_is_named(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(["bash", "benchmarks/device_check.sh"], cwd=ROOT, env=script_env(out), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    first = done.stdout.splitlines()[0]
    assert "no CUDA GPU here" in first and "no report written" in first and sys.executable in first
    assert not out.exists()  # nothing written, so no report can be mistaken for this run's


def test_failed_steps_give_a_summary_and_name_no_report(tmp_path):
    """pytest and the benchmark die without output: the tests line still says something, and no report is named."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f"""#!/bin/bash
case " $* " in
  *" pytest "*|*" benchmarks.device "*) exit 3 ;;
esac
exec {sys.executable} "$@"
""")
    wrapper.chmod(0o755)
    out = tmp_path / "run"
    done = subprocess.run(["bash", "benchmarks/device_check.sh", "--smoke"], cwd=ROOT,
                          env=script_env(out, PYTHON=str(wrapper)), capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr
    lines = (out / "log.txt").read_text().splitlines()
    tests = next(line for line in lines if "] tests: " in line and "pytest -q" not in line)
    assert tests.split("] tests: ")[1].startswith("no pytest summary line (see tests.txt) (exit 3)"), tests
    assert "no report written (the benchmark exited 3" in lines[-1] and "report: " not in lines[-1]
