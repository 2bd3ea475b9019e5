"""TunedLens.save(path, format="tuned-lens") writes the folder the tuned-lens package reads: the same files as
the package's own TunedLens.save for the same lens (tests/data/tuned_lens_package/), and, where an interpreter
with tuned-lens 0.2.0 is at hand ($MININEO_TUNEDLENS_PYTHON), the package's own loader reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import minineo
from minineo.analysis import TunedLens
from minineo.errors import UserError

FIXTURES = Path(__file__).parent / "data" / "tuned_lens_package"  # written by the real tuned-lens package
ARCHS = ["gpt2", "gpt_neo"]


def write_from_fixture(arch: str, out: Path) -> Path:
    model = minineo.load(FIXTURES / arch / "model")
    TunedLens.load(FIXTURES / arch / "lens", model).save(out, format="tuned-lens")
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_the_written_folder_equals_the_packages_own(arch, tmp_path):
    out = write_from_fixture(arch, tmp_path / arch)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "params.pt"]
    ours = json.loads((out / "config.json").read_text())
    theirs = json.loads((FIXTURES / arch / "lens" / "config.json").read_text())
    # the package recorded an empty name (a model built in memory); minineo records where the model came from
    assert ours.pop("base_model_name_or_path") == str(FIXTURES / arch / "model")
    theirs.pop("base_model_name_or_path")
    assert ours == theirs  # unembed_hash included: the package's hash of the same unembedding
    mine = torch.load(out / "params.pt", weights_only=True)
    package = torch.load(FIXTURES / arch / "lens" / "params.pt", weights_only=True)
    assert mine.keys() == package.keys()
    for key in package:
        assert mine[key].dtype == package[key].dtype and torch.equal(mine[key], package[key]), key


def test_a_lens_without_bias_is_written_with_zero_biases_and_reads_back(tmp_path):
    model = minineo.load(FIXTURES / "gpt2" / "model")
    lens = TunedLens(model, bias=False)
    with torch.no_grad():
        lens.weight.normal_(0, 0.1)
    lens.save(tmp_path / "lens", format="tuned-lens")
    state = torch.load(tmp_path / "lens" / "params.pt", weights_only=True)
    assert all(float(state[f"{i}.bias"].abs().max()) == 0 for i in range(model.config.n_layers))
    again = TunedLens.load(tmp_path / "lens", model)
    tokens = torch.arange(8)[None]
    torch.testing.assert_close(again.logits(model, tokens), lens.logits(model, tokens), atol=1e-6, rtol=0)
    with pytest.raises(UserError, match="format='safetensors' is not one of 'minineo', 'tuned-lens'"):
        lens.save(tmp_path / "other", format="safetensors")


def test_the_tuned_lens_package_reads_the_written_folder(tmp_path):
    python = os.environ.get("MININEO_TUNEDLENS_PYTHON")
    if not python or not Path(python).is_file():
        pytest.skip("MININEO_TUNEDLENS_PYTHON is not set to a python with tuned-lens 0.2.0 (e.g. "
                    "/work/venvs/tunedlens/bin/python): the package's own loader is not run here")
    for arch in ARCHS:
        write_from_fixture(arch, tmp_path / arch)
    result = subprocess.run([python, str(FIXTURES / "check_writer.py"), str(tmp_path)], capture_output=True,
                            text=True, timeout=600, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
