"""The benchmark suite's smoke run (`python -m benchmarks --quick`): it runs, reports every variant, and
its fast path agrees with HF. It checks that the benchmark works, not how fast anything is."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.run import main
from benchmarks.timing import forward_flops

import minineo
from minineo.discovery import Graph


def test_quick_benchmark_runs_and_reports_every_variant(tmp_path):
    out = tmp_path / "results.json"
    main(["--quick", "--device", "cpu", "--out", str(out)])
    report = json.loads(out.read_text())
    variants = {(r["model"], r["dtype"], r["variant"]) for r in report["results"]}
    for model in ("gpt2-small", "gpt-neo-125M"):
        for dtype in ("float32", "bfloat16"):
            assert {(model, dtype, "minineo fast"), (model, dtype, "minineo run_with_cache (all names)"),
                    (model, dtype, "HF eager")} <= variants
    assert ("gpt2-small", "float32", "HF sdpa") in variants
    for r in report["results"]:
        assert r["median_ms"] > 0 and r["ratio_to_hf"] > 0
        if r["variant"].startswith("minineo") and r["dtype"] == "float32":
            assert r["max_abs_dlogit"] < 1e-4, r
    assert set(report["matmul_peak_gflops"]) == {"cpu/float32", "cpu/bfloat16"}
    generation = {(g["model"], g["dtype"], g["variant"]): g for g in report["generation"]}
    for model in ("gpt2-small", "gpt-neo-125M"):
        for dtype in ("float32", "bfloat16"):
            assert {(model, dtype, "minineo generate"), (model, dtype, "HF generate")} <= set(generation)
        assert generation[(model, "float32", "minineo generate")]["same_tokens_as_hf"]  # greedy float32: identical
        for dtype in ("float32", "bfloat16"):  # HF's own row compares with nothing: no verdict, not a True
            assert generation[(model, dtype, "HF generate")]["same_tokens_as_hf"] is None


def test_flop_count_matches_a_hand_count_for_one_layer():
    config = minineo.Config(architecture="gpt_neo", d_model=8, n_layers=1, n_heads=2, d_mlp=32, n_ctx=16,
                            d_vocab=10, attn_scales=(1.0,), windows=(2,), qkv_bias=False)
    pos = 4
    # projections 4*d^2 + mlp 2*d*d_mlp + unembed d*V per token; q.k and p.v over 1+2+2+2 keys
    expected = 2 * (pos * (4 * 64 + 2 * 8 * 32 + 8 * 10) + 2 * (1 + 2 + 2 + 2) * 8)
    assert forward_flops(config, 1, pos) == expected


def test_discovery_benchmark_smoke_run_reports_every_method(tmp_path, capsys):
    """`python -m benchmarks.discovery --quick` on tiny-gpt2 (minineo in-process, no peer): every method runs, is timed
    against a plain forward, and the table says the peer was not asked for. Speed is not checked."""
    from benchmarks.discovery import METHODS
    from benchmarks.discovery import main as discovery

    out = tmp_path / "discovery.json"
    run = discovery(["--quick", "--peer", "none", "--in-process", "--model-dir", str(tmp_path), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(run))
    (case,) = run["cases"]
    assert case["model"] == "tiny-gpt2" and case["n_edges"] == 110 and set(case["methods"]) == set(METHODS)
    for method, entry in case["methods"].items():
        ours = entry["minineo"]
        assert "error" not in ours, (method, ours)
        assert ours["seconds"] > 0 and ours["forward_seconds"] > 0 and ours["peak_extra_mb"] is not None
        assert entry["eap_ig"] is None
    # the last circuit holds every edge: the clean run's metric, which the worker took from a plain forward
    evaluate = case["methods"]["evaluate"]["minineo"]
    values = torch.load(tmp_path / "tiny-gpt2-files" / "minineo-evaluate.pt")["values"]  # (n_circuits, n)
    assert evaluate["n_circuits"] == 3 and values.shape == (3, 8)
    assert abs(float(values[-1].mean()) - evaluate["m_clean"]) <= 1e-5 * max(1.0, abs(evaluate["m_clean"]))
    table = capsys.readouterr().out
    assert "not asked for (--peer none)" in table and "| tiny-gpt2 | exact |" in table


def test_discovery_benchmark_says_when_the_eap_ig_venv_is_absent(tmp_path, capsys):
    from benchmarks.discovery import main as discovery

    run = discovery(["--quick", "--methods", "evaluate", "--peer", str(tmp_path / "no-venv" / "python"), "--in-process"])
    assert run["peer"].startswith(f"EAP-IG not measured: no {tmp_path / 'no-venv' / 'python'}")
    assert run["cases"][0]["methods"]["evaluate"]["eap_ig"] is None
    assert "EAP-IG not measured" in capsys.readouterr().out


def test_exact_timed_on_sampled_chunks_scores_them_as_the_full_run_does(tmp_path):
    """The benchmark's estimate of exact at full shapes runs one of every N forwards of variants per receiver group:
    the edges run get the scores that exact over every edge gives them (the oracle: the full run), the rest stay 0, the
    counts say how many ran, and the wrapper is undone afterwards."""
    from benchmarks.discovery import build_model, ioi_pairs
    from benchmarks.discovery_worker import measure
    from minineo.boundary import ScriptUsageError
    from minineo.discovery import exact

    before = exact._chunks
    folder = str(build_model("tiny-gpt2", tmp_path))
    torch.save(ioi_pairs(minineo.load(folder), 4), tmp_path / "pairs.pt")
    base = [folder, str(tmp_path / "pairs.pt"), "--method", "exact"]
    full = measure([*base, "--out", str(tmp_path / "full.pt")])
    budget = exact.VARIANT_FLOATS
    exact.VARIANT_FLOATS = 4 * 4 * 80 * 128  # a few variants per forward, so that groups have several chunks
    try:
        sampled = measure([*base, "--exact-sample", "3", "--out", str(tmp_path / "sampled.pt")])
    finally:
        exact.VARIANT_FLOATS = budget
    assert exact._chunks is before
    a, b = torch.load(tmp_path / "full.pt")["scores"], torch.load(tmp_path / "sampled.pt")["scores"]
    run = b != 0
    assert torch.equal(a[run], b[run]) and int(run.sum()) < int((a != 0).sum())
    ran = torch.load(tmp_path / "sampled.pt")["ran"]  # the edges run, which the parity compares
    assert bool(ran[run].all()) and not bool(ran.all()) and not b[~ran].any()
    assert 0 < sampled["n_variants_timed"] < sampled["n_variants"] <= Graph.from_model(minineo.load(folder)).n_edges
    assert sampled["estimated_seconds"] > sampled["seconds"] / 2 and "estimated_seconds" not in full
    with pytest.raises(ScriptUsageError, match="--exact-sample 0: give a count of 1 or more"):
        measure([*base, "--exact-sample", "0"])


def test_python_m_benchmarks_is_run_from_the_repository_root_as_the_docs_say(tmp_path):
    """Findings 20: outside the repository root `python -m benchmarks` is Python's own bare "No module named
    benchmarks" (it stops before any minineo code runs, so no message of ours can replace it); the README and
    benchmarks/README.md (docs/benchmarks.md) say to run it from the root, and why, quoting that message."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ""}
    outside = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=tmp_path, capture_output=True,
                             text=True, env=env, timeout=120)
    assert outside.returncode != 0 and "No module named benchmarks" in outside.stderr
    inside = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], cwd=root, capture_output=True, text=True,
                            env=env, timeout=120)
    assert inside.returncode == 0 and "python -m benchmarks" in inside.stdout, inside.stderr[-2000:]
    how_to_run = (root / "benchmarks" / "README.md").read_text().split("## How to run", 1)[1][:1500]
    assert "From the repository root" in how_to_run and "No module named benchmarks" in how_to_run
    assert "from the repository root" in (root / "README.md").read_text()
