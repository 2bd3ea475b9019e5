"""Fixtures: HF models (the oracle) saved as safetensors and loaded back with minineo.

`MININEO_TEST_DEVICE=cuda python -m pytest -q -m "not slow"` runs the tests marked `device` (the HF-parity
ones: both models on that device, HF eager as the oracle) there and skips the others, saying why; the
default is the CPU, where every test runs. An unusable device stops the run before collection with one message.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))
from hf_oracle import TEST_DEVICE, build_hf, hf_config, save_hf  # noqa: E402

import minineo  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])
settings.load_profile("ci")


def pytest_configure(config):
    config.addinivalue_line("markers", "device: runs on MININEO_TEST_DEVICE (HF parity); unmarked tests are CPU-only")
    if TEST_DEVICE == "cpu":
        return
    try:
        torch.empty(1, device=TEST_DEVICE)
    except (RuntimeError, AssertionError, ValueError) as err:
        raise pytest.UsageError(
            f"MININEO_TEST_DEVICE={TEST_DEVICE!r} is not usable here ({type(err).__name__}: {str(err).strip()[:200]}); "
            f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}. Unset it to test on the CPU, "
            "or run on a machine with that device."
        ) from None
    if TEST_DEVICE.startswith("cuda"):  # float32 must mean float32 against HF eager: no TF32 matmuls
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def pytest_collection_modifyitems(config, items):
    if TEST_DEVICE == "cpu":
        return
    skip = pytest.mark.skip(reason=f"CPU-only test (it builds its tensors on the CPU); MININEO_TEST_DEVICE={TEST_DEVICE} "
                                   "runs the tests marked `device`: the HF-parity tests")
    for item in items:
        if "device" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def hf_pair(tmp_path):
    """hf_pair("gpt_neo", window=3, ...) -> (HF model, minineo model) with identical weights, on TEST_DEVICE."""

    def make(arch: str, seed: int = 0, weight_scale: float = 1.0, **shape):
        hf = build_hf(hf_config(arch, **shape), seed=seed, weight_scale=weight_scale)
        directory = save_hf(hf, tmp_path / f"{arch}-{seed}-{len(list(tmp_path.iterdir()))}")
        return hf.to(TEST_DEVICE), minineo.load(directory, device=TEST_DEVICE)

    return make


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = 1e-5) -> None:
    """float32 agreement: |diff| <= atol + 1e-6 * max|expected| (large logits carry proportionally more round-off)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual = actual.to(expected.device)
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


@pytest.fixture
def figures(monkeypatch):
    """The figures minineo.cli.plots draws, kept open for inspection (and still written, to check the pixel size)."""
    from minineo.cli import plots

    kept = []

    def keep(fig, plt, path):
        kept.append(fig)
        fig.savefig(path, dpi=120)

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    import matplotlib.pyplot as plt

    plt.close("all")
