"""Fixtures: HF models (the oracle) saved as safetensors and loaded back with minineo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))
from hf_oracle import build_hf, hf_config, save_hf  # noqa: E402

import minineo  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture
def hf_pair(tmp_path):
    """hf_pair("gpt_neo", window=3, ...) -> (HF model, minineo model) with identical weights."""

    def make(arch: str, seed: int = 0, weight_scale: float = 1.0, **shape):
        hf = build_hf(hf_config(arch, **shape), seed=seed, weight_scale=weight_scale)
        directory = save_hf(hf, tmp_path / f"{arch}-{seed}-{len(list(tmp_path.iterdir()))}")
        return hf, minineo.load(directory)

    return make


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = 1e-5) -> None:
    """float32 agreement: |diff| <= atol + 1e-6 * max|expected| (large logits carry proportionally more round-off)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    bound = atol + 1e-6 * float(expected.abs().max())
    diff = float((actual - expected).abs().max())
    assert diff <= bound, f"{what}: max |diff| {diff:.3g} > {bound:.3g}"


def cached_hub_model(name: str):
    """minineo.load(name) from a local cache (minineo's or HF's), or skip saying why and how to fix it."""
    from huggingface_hub import constants

    from minineo.checkpoints.hub import default_cache_dir

    places = [default_cache_dir(), Path(constants.HF_HUB_CACHE)]
    for place in places:
        if (place / f"models--{name.replace('/', '--')}").is_dir():
            try:
                return minineo.load(name, cache_dir=place)
            except FileNotFoundError:
                continue
    pytest.skip(f"real {name} weights are not cached in {[str(p) for p in places]}; "
                f"run `minineo download {name}` on a machine with network to run this test")
