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

from benchmarks.device_report import write_report

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
    rows = [(r["model"], r["device"], r["dtype"], tuple(r["shape"]), r["variant"]) for r in report["results"]]
    assert len(rows) == len(set(rows)), sorted(row for row in rows if rows.count(row) > 1)  # each measured once
    markdown = (tmp_path / "device_run.md").read_text()
    for section in ("## Forward pass", "## The targets", "## Local attention", "## Generation", "## Patching engine",
                    "## Where one forward's time goes"):
        assert section in markdown, section
    assert_every_table_has_rows(markdown)
    forward = markdown.split("## Forward pass")[1].split("\n## ")[0]  # each result row once, at its own time
    for r in report["results"]:
        shape = f"{r['shape'][0]}x{r['shape'][1]}"
        row = [line for line in forward.splitlines() if line.startswith(f"| {r['model']} | {r['device']} | "
                                                                          f"{r['dtype']} | {shape} | {r['variant']}")]
        assert len(row) == 1 and f"| {r['median_ms']:.2f} |" in row[0], (r, row)
    assert "Measured 2 times" not in markdown
    # a CPU-only run: no device-vs-CPU rows can exist, and one line says why instead of an empty table
    vs_cpu = markdown.split("## Device vs CPU")[1].split("\n## ")[0]
    assert "Nothing to compare: this run measured the CPU only (no CUDA device" in vs_cpu, vs_cpu


def assert_every_table_has_rows(markdown: str) -> None:
    """Every markdown table (a header line, then its |---| line) has at least one row after its separator."""
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            assert i + 1 < len(lines) and lines[i + 1].startswith("| "), f"a table without rows: {lines[i - 1]}"


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


def a_report(**parts) -> dict:
    """A device_run.json dict with nothing measured, `parts` replacing its fields."""
    machine = {"platform": "test", "cuda": None, "torch": "2", "threads": 1, "smoke": True, "tests": None,
               "packages": {}}
    return {"machine": machine, "matmul_peak_gflops": {}, "bandwidth_gbs": {}, "results": [], "local_attention": [],
            "generation": [], "patching": None, "profile": None, "errors": [], "skipped": [], **parts}


def a_row(variant: str, ms: float, device: str = "cpu") -> dict:
    return {"model": "gpt2-small", "device": device, "dtype": "float32", "shape": [1, 32], "variant": variant,
            "median_ms": ms, "peak_fraction": 0.1, "peak_extra_mb": None, "max_abs_dlogit": 0.0}


def test_the_report_prints_no_table_without_rows_and_names_a_row_measured_twice(tmp_path):
    """An empty run: every section is one line saying why there is nothing. A row measured twice (an older
    device_run.json): the tables show the first measurement, and a line names both."""
    path = tmp_path / "device_run.md"
    write_report(a_report(), path)
    markdown = path.read_text()
    assert_every_table_has_rows(markdown)
    assert "No forward pass was measured" in markdown
    assert "Nothing to compare: this run measured the CPU only (no CUDA device" in markdown
    write_report(a_report(results=[a_row("minineo fast", 0.9), a_row("HF eager", 1.1), a_row("minineo fast", 89.7)]),
                 path)
    markdown = path.read_text()
    assert_every_table_has_rows(markdown)
    forward = markdown.split("## Forward pass")[1].split("\n## ")[0]
    fast = [line for line in forward.splitlines() if "| minineo fast |" in line]
    assert len(fast) == 1 and "| 0.90 | 1.22x |" in fast[0], fast
    assert "Measured 2 times: gpt2-small cpu float32 1x32 minineo fast (0.90, 89.70 ms); the tables show the first." \
        in forward
    # a device row without its CPU twin: the device-vs-CPU section says so instead of printing an empty table
    write_report(a_report(results=[a_row("minineo fast", 0.9, device="cuda")]), path)
    vs_cpu = path.read_text().split("## Device vs CPU")[1].split("\n## ")[0]
    assert "Nothing to compare: no float32 forward shape was measured both on cuda and on the CPU" in vs_cpu
