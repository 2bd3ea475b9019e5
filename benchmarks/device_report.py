"""The device run's markdown report, from device_run.json's dict: the forward table, the issue's targets, the
CUDA-vs-CPU table, local attention, generation, patching, the profile, and what was skipped."""

from __future__ import annotations

from pathlib import Path


def _num(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _groups(results: list[dict]) -> dict[tuple, dict[str, dict]]:
    """(model, device, dtype, shape) -> {variant: result}; a row measured twice (a device_run.json of an older
    benchmarks.device, whose smoke run measured the CPU rows twice) keeps its first measurement:
    `duplicate_lines` says so."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in results:
        groups.setdefault((r["model"], r["device"], r["dtype"], tuple(r["shape"])), {}).setdefault(r["variant"], r)
    return groups


def duplicate_lines(report: dict) -> list[str]:
    """One line per row the results hold more than once, naming the measurement the tables show (the first)."""
    seen: dict[tuple, list[float]] = {}
    for r in report["results"]:
        seen.setdefault((r["model"], r["device"], r["dtype"], tuple(r["shape"]), r["variant"]), []).append(
            r["median_ms"])
    return [f"Measured {len(ms)} times: {model} {device} {dtype} {shape[0]}x{shape[1]} {variant} "
            f"({', '.join(f'{m:.2f}' for m in ms)} ms); the tables show the first." for
            (model, device, dtype, shape, variant), ms in seen.items() if len(ms) > 1]


def _table(head: list[str], rows: list[str], empty: str) -> list[str]:
    """The table's header and rows, or, when there is no row, the line saying why (no table without rows)."""
    return head + rows if rows else [empty]


def _fastest_hf(by: dict[str, dict]) -> dict | None:
    hf = [r for variant, r in by.items() if variant.startswith("HF ")]
    return min(hf, key=lambda r: r["median_ms"]) if hf else None


def _speed(best: dict | None, r: dict | None) -> float | None:
    return best["median_ms"] / r["median_ms"] if best and r else None


def forward_lines(report: dict) -> list[str]:
    head = ["Median ms; speed = the fastest HF implementation's time / this one (higher is faster).",
            "", "| model | device | dtype | shape | variant | ms | speed vs fastest HF | % matmul peak | peak +MB | "
            "max abs dlogit vs HF f32 |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = []
    for (model, device, dtype, shape), by in _groups(report["results"]).items():
        best = _fastest_hf(by)
        for variant, r in by.items():
            name = variant + (" (fastest HF)" if r is best else "")
            rows.append(f"| {model} | {device} | {dtype} | {shape[0]}x{shape[1]} | {name} | {r['median_ms']:.2f} | "
                        f"{_num(_speed(best, r), '.2f', 'x')} | {100 * r['peak_fraction']:.0f}% | "
                        f"{_num(r['peak_extra_mb'], '.0f')} | {_num(r['max_abs_dlogit'], '.1e')} |")
    duplicates = duplicate_lines(report)
    return (["## Forward pass", ""] + _table(head, rows, "No forward pass was measured (see Errors and Skipped).")
            + ([""] + duplicates if duplicates else []))


def target_lines(report: dict) -> list[str]:
    head = ["Targets: fast >= 1.0x the fastest HF everywhere, compiled >= 2x at batch 1, "
            "run_with_cache <= 1.3x fast, bfloat16 matmul-bound shapes >= 50% of the measured peak.", "",
            "| model | device | dtype | shape | fast vs fastest HF | compiled vs fastest HF | run_with_cache / fast | "
            "fast: % of matmul peak |", "|---|---|---|---|---|---|---|---|"]
    lines = []
    for (model, device, dtype, shape), by in _groups(report["results"]).items():
        best, fast = _fastest_hf(by), by.get("minineo fast")
        rwc = by.get("minineo run_with_cache (all names)")
        if fast is None:
            continue
        lines.append(f"| {model} | {device} | {dtype} | {shape[0]}x{shape[1]} | {_num(_speed(best, fast), '.2f', 'x')} | "
                     f"{_num(_speed(best, by.get('minineo compiled')), '.2f', 'x')} | "
                     f"{_num(rwc['median_ms'] / fast['median_ms'] if rwc else None, '.2f')} | "
                     f"{100 * fast['peak_fraction']:.0f}% |")
    return ["## The targets", ""] + _table(head, lines, "No minineo fast forward was measured, so there is no "
                                                        "target to check (see Errors and Skipped).")


def cuda_vs_cpu_lines(report: dict) -> list[str]:
    """The fast path (and HF's fastest) on the device against the same shape on the CPU, float32."""
    groups = _groups(report["results"])
    devices = sorted({key[1] for key in groups} - {"cpu"})
    head = ["| model | shape | device | fast ms (device) | fast ms (CPU) | CPU / device | fastest HF ms (device) | "
            "fastest HF ms (CPU) |", "|---|---|---|---|---|---|---|---|"]
    lines = []
    for (model, device, dtype, shape), by in groups.items():
        cpu = groups.get((model, "cpu", dtype, shape))
        if device not in devices or dtype != "float32" or cpu is None:
            continue
        fast, cpu_fast = by.get("minineo fast"), cpu.get("minineo fast")
        best, cpu_best = _fastest_hf(by), _fastest_hf(cpu)
        lines.append(f"| {model} | {shape[0]}x{shape[1]} | {device} | {_num(fast and fast['median_ms'], '.2f')} | "
                     f"{_num(cpu_fast and cpu_fast['median_ms'], '.1f')} | "
                     f"{_num(cpu_fast['median_ms'] / fast['median_ms'] if fast and cpu_fast else None, '.1f', 'x')} | "
                     f"{_num(best and best['median_ms'], '.2f')} | {_num(cpu_best and cpu_best['median_ms'], '.1f')} |")
    why = ("Nothing to compare: this run measured the CPU only (no CUDA device; the forward table above is the CPU's)."
           if not devices else f"Nothing to compare: no float32 forward shape was measured both on {', '.join(devices)}"
           " and on the CPU (see Errors and Skipped).")
    return ["## Device vs CPU (float32, eager, same run)", ""] + _table(head, lines, why)


def other_lines(report: dict) -> list[str]:
    rows = []
    for a in report["local_attention"]:
        ms, diffs = a["median_ms"], list(a["max_abs_diff_vs_explicit"].values())
        rows.append(f"| {a['device']} | {a['dtype']} | {'x'.join(map(str, a['shape']))} | {a['window']} | "
                     f"{ms[a['flex_variant']]:.2f} | {ms['SDPA + boolean window mask']:.2f} | "
                     f"{ms['SDPA causal, no window (dense)']:.2f} | {a['flex_over_masked_sdpa']:.2f} | "
                     f"{a['compile_s']:.1f} | {diffs[0]:.1e}, {diffs[1]:.1e} |")
    lines = ["## Local attention (one GPT-Neo local layer)", ""] + _table(
        ["| device | dtype | batch x head x pos x d_head | window | flex ms | SDPA + mask ms | SDPA causal dense ms | "
         "flex / masked SDPA | compile s | max abs diff vs explicit (flex, masked SDPA) |",
         "|---|---|---|---|---|---|---|---|---|---|"], rows, "Not measured (see Errors and Skipped).")
    rows = []
    for g in report["generation"]:
        b, p, n = g["shape"]
        rows.append(f"| {g['model']} | {g['device']} | {b}x{p}+{n} | {g['variant']} | {g['tokens_per_s']:.1f} | "
                     f"{g['ratio_to_hf']:.2f}x | {'-' if g['same_tokens_as_hf'] is None else g['same_tokens_as_hf']} |")
    lines += ["", "## Generation (greedy, float32; tokens/s of new tokens)", ""] + _table(
        ["| model | device | batch x prompt + new | variant | tok/s | vs HF | same tokens as HF |",
         "|---|---|---|---|---|---|---|"], rows, "Not measured (see Errors and Skipped).")
    patching = report.get("patching")
    lines += ["", "## Patching engine vs its brute-force loop (resid_pre per position)", ""]
    if not patching:
        lines.append("Not measured (see Errors and Skipped).")
    else:
        lines.append(f"{patching['shape'][0]}x{patching['shape'][1]} tokens, {patching['cells']} cells: engine "
                     f"{patching['engine_s']:.2f} s, brute force {patching['brute_force_s']:.2f} s (timed on "
                     f"{patching['cells_timed_for_brute_force']} cells, scaled), {patching['speedup']:.1f}x; "
                     f"max abs difference {patching['max_abs_diff']:.1e}.")
    profile = report.get("profile")
    lines += ["", "## Where one forward's time goes (profile)", ""]
    if not profile or not profile["ops"]:
        lines.append("Not measured (see Errors and Skipped).")
    else:
        lines += [f"{profile['model']} {profile['dtype']} {'x'.join(map(str, profile['shape']))}, fast path:", "",
                  "| op | ms | share | calls |", "|---|---|---|---|"]
        lines += [f"| `{op['op'][:80]}` | {op['ms']:.3f} | {100 * op['share']:.0f}% | {op['calls']} |" for op in profile["ops"]]
    return lines


def write_report(report: dict, path: Path) -> None:
    m = report["machine"]
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in report["matmul_peak_gflops"].items())
    bandwidth = ", ".join(f"{k} {v:.0f}" for k, v in report["bandwidth_gbs"].items())
    lines = ["# minineo device run" + (" (smoke: tiny shapes, no torch.compile; checks the script, not the speed)"
                                       if m["smoke"] else ""), "",
             f"Machine: {m['platform']}, {m['cuda'] or 'no CUDA device'}, torch {m['torch']}, {m['threads']} CPU threads.",
             f"Tests: {m['tests'] or 'not run'}.", f"Matmul peak measured (GFLOP/s): {peaks}. Copy bandwidth (GB/s): {bandwidth}.",
             "", "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()), ""]
    lines += forward_lines(report) + [""] + target_lines(report) + [""] + cuda_vs_cpu_lines(report) + [""]
    lines += other_lines(report) + ["", "## Errors", ""] + ([f"- {e}" for e in report["errors"]] or ["- none"])
    lines += ["", "## Skipped (the budget ran out)", ""]
    lines += [f"- {s}" for s in report["skipped"]] or ["- nothing"]
    path.write_text("\n".join(lines) + "\n")
