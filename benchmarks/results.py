"""What a benchmark run records: one forward-pass timing, one generation timing, the whole run."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Result:
    model: str
    device: str
    dtype: str
    shape: tuple[int, int]
    variant: str
    median_ms: float
    tokens_per_s: float
    gflops: float
    peak_fraction: float
    peak_extra_mb: float | None
    ratio_to_hf: float | None = None
    max_abs_dlogit: float | None = None
    note: str = ""


@dataclass
class GenerationResult:
    model: str
    device: str
    dtype: str
    shape: tuple[int, int, int]  # (batch, prompt, new tokens)
    variant: str
    median_s: float
    tokens_per_s: float  # new tokens (batch x new) per second
    ratio_to_hf: float
    same_tokens_as_hf: bool | None  # None on HF's own row: the reference compares with nothing


@dataclass
class Run:
    machine: dict = field(default_factory=dict)
    matmul_peak_gflops: dict = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)
    generation: list[GenerationResult] = field(default_factory=list)
