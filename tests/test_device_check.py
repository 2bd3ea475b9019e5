"""The prepared device run (benchmarks/device_check.sh) in its smoke mode: every step runs on the CPU with tiny
shapes and writes its report, so the script cannot rot before a GPU runs it. It checks the script, not speed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_device_check_smoke_mode_runs_every_part_and_writes_its_report(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), OMP_NUM_THREADS="1")
    env.pop("MININEO_TEST_DEVICE", None)
    done = subprocess.run(["bash", "benchmarks/device_check.sh", "--smoke"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
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
    assert all(g["same_tokens_as_hf"] for g in report["generation"])
    for attention in report["local_attention"]:  # flex and masked SDPA equal the explicit path
        assert max(attention["max_abs_diff_vs_explicit"].values()) < (1e-4 if attention["dtype"] == "float32" else 0.1)
    assert report["patching"]["max_abs_diff"] < 1e-4
    assert report["profile"]["ops"] and set(report["matmul_peak_gflops"]) == {"cpu/float32", "cpu/bfloat16"}
    markdown = (tmp_path / "device_run.md").read_text()
    for section in ("## Forward pass", "## The targets", "## Local attention", "## Generation", "## Patching engine",
                    "## Where one forward's time goes"):
        assert section in markdown, section
