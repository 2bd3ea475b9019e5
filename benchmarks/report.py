"""The report: every timing as a table, the targets' ratios, the generation table, the matmul peak."""

from __future__ import annotations

from benchmarks.results import Run


def summary(run: Run) -> list[dict]:
    """Per (model, device, dtype, shape): the ratios the issue asks about."""
    rows = []
    keys = sorted({(r.model, r.device, r.dtype, tuple(r.shape)) for r in run.results})
    for key in keys:
        by = {r.variant: r for r in run.results if (r.model, r.device, r.dtype, tuple(r.shape)) == key}
        fast, rwc = by.get("minineo fast"), by.get("minineo run_with_cache (all names)")
        tl3 = by.get("TransformerLens 3 run_with_cache")
        if fast is None or rwc is None:
            continue
        rows.append({"model": key[0], "device": key[1], "dtype": key[2], "shape": key[3],
                     "fast_vs_hf": fast.ratio_to_hf, "rwc_over_fast": rwc.median_ms / fast.median_ms,
                     "rwc_peak_mb": rwc.peak_extra_mb, "tl3_peak_mb": tl3.peak_extra_mb if tl3 else None,
                     "rwc_peak_over_tl3": (rwc.peak_extra_mb / tl3.peak_extra_mb
                                           if tl3 and tl3.peak_extra_mb and rwc.peak_extra_mb is not None else None)})
    return rows


def print_table(run: Run) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="forward pass: time, throughput, share of the measured matmul peak, ratio to HF (higher = faster)")
    for column in ("model", "device", "dtype", "shape", "variant", "median ms", "tok/s", "GFLOP/s", "% peak",
                   "peak +MB", "speed vs HF", "max|Δlogit| vs f32"):
        table.add_column(column, justify="left" if column in ("model", "variant") else "right")
    for r in run.results:
        table.add_row(r.model, r.device, r.dtype, f"{r.shape[0]}x{r.shape[1]}", r.variant, f"{r.median_ms:.1f}",
                      f"{r.tokens_per_s:,.0f}", f"{r.gflops:.0f}", f"{100 * r.peak_fraction:.0f}%",
                      "-" if r.peak_extra_mb is None else f"{r.peak_extra_mb:.0f}",
                      "-" if r.ratio_to_hf is None else f"{r.ratio_to_hf:.2f}x",
                      "-" if r.max_abs_dlogit is None else f"{r.max_abs_dlogit:.1e}")
    console = Console(width=max(170, Console().width))
    console.print(table)
    rows = summary(run)
    if rows:
        table = Table(title="the targets: fast path vs HF, run_with_cache (every name) vs fast, peak memory vs TransformerLens 3")
        for column in ("model", "device", "dtype", "shape", "fast vs HF", "rwc / fast", "rwc peak +MB",
                       "TL3 rwc peak +MB", "rwc / TL3 memory"):
            table.add_column(column, justify="left" if column == "model" else "right")
        for r in rows:
            table.add_row(r["model"], r["device"], r["dtype"], f"{r['shape'][0]}x{r['shape'][1]}", f"{r['fast_vs_hf']:.2f}x",
                          f"{r['rwc_over_fast']:.2f}", "-" if r["rwc_peak_mb"] is None else f"{r['rwc_peak_mb']:.0f}",
                          "-" if r["tl3_peak_mb"] is None else f"{r['tl3_peak_mb']:.0f}",
                          "-" if r["rwc_peak_over_tl3"] is None else f"{r['rwc_peak_over_tl3']:.2f}")
        console.print(table)
    if run.generation:
        table = Table(title="generation: greedy, new tokens per second (higher = faster)")
        for column in ("model", "device", "dtype", "batch x prompt + new", "variant", "median s", "tok/s", "vs HF",
                       "same tokens as HF"):
            table.add_column(column, justify="left" if column in ("model", "variant") else "right")
        for g in run.generation:
            table.add_row(g.model, g.device, g.dtype, f"{g.shape[0]}x{g.shape[1]}+{g.shape[2]}", g.variant,
                          f"{g.median_s:.2f}", f"{g.tokens_per_s:.1f}", f"{g.ratio_to_hf:.2f}x",
                          "-" if g.same_tokens_as_hf is None else str(g.same_tokens_as_hf))
        console.print(table)
    console.print("matmul peak measured in this run (GFLOP/s): " +
                  ", ".join(f"{k} {v:.0f}" for k, v in run.matmul_peak_gflops.items()) +
                  ". % peak = the forward's model FLOPs per second over that one square matmul's rate, measured once: "
                  "above 100% when the matmul's measurement met more load than the forward (a shared machine) or "
                  "the forward's shapes suit the kernels better; compare rows of one run, not runs.")
    if any(g.same_tokens_as_hf is False for g in run.generation):
        console.print("same tokens as HF: False in a bfloat16 row is rounding, not a bug: bfloat16 keeps 8 bits of "
                      "mantissa, so two libraries' different (both valid) summation orders can flip a near-tie "
                      "argmax, after which the continuations differ; float32 rows say True.")
