"""minineo.sae reads the folders SAELens writes: encode/decode equal the package's own outputs
(tests/data/saelens_package/, written by sae-lens itself with make_fixture.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import minineo
from minineo.errors import UserError

FIXTURES = Path(__file__).parent / "data" / "saelens_package"
FOLDERS = sorted(p.name for p in FIXTURES.iterdir() if (p / "cfg.json").is_file())


def test_the_fixtures_cover_every_architecture_and_option():
    cfgs = [json.loads((FIXTURES / name / "cfg.json").read_text()) for name in FOLDERS]
    assert {c["architecture"] for c in cfgs} == {"standard", "topk", "jumprelu"}
    assert {c["apply_b_dec_to_input"] for c in cfgs} == {True, False}
    assert {c["normalize_activations"] for c in cfgs} >= {"none", "layer_norm", "constant_norm_rescale"}


@pytest.mark.parametrize("name", FOLDERS)
def test_encode_and_decode_equal_the_package_outputs(name):
    sae = minineo.sae.load(FIXTURES / name)
    expected = load_file(str(FIXTURES / name / "expected.safetensors"))
    cfg = json.loads((FIXTURES / name / "cfg.json").read_text())
    assert (sae.d_in, sae.d_sae, sae.architecture, sae.hook_name) == (
        cfg["d_in"], cfg["d_sae"], cfg["architecture"], cfg["metadata"]["hook_name"])
    features = sae.encode(expected["x"])
    assert torch.equal(features != 0, expected["features"] != 0), "the same features fire"
    assert float((features - expected["features"]).abs().max()) <= 1e-5
    out = sae.decode(features, like=expected["x"])
    assert float((out - expected["reconstruction"]).abs().max()) <= 1e-5
    assert float((sae.reconstruct(expected["x"]) - expected["reconstruction"]).abs().max()) <= 1e-5


def test_a_normalising_sae_asks_for_the_input_to_decode():
    sae = minineo.sae.load(FIXTURES / "standard_no_b_dec_layer_norm")
    with pytest.raises(UserError, match="like=x"):
        sae.decode(torch.zeros(2, sae.d_sae))


def test_unsupported_and_damaged_folders_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="needs cfg.json and sae_weights.safetensors"):
        minineo.sae.load(tmp_path)
    for change, message in (({"architecture": "gated"}, "architecture 'gated' is not supported"),
                            ({"normalize_activations": "covariance_whitening"}, "not supported"),
                            ({"d_in": 31}, "has shape .* but cfg.json says d_in=31")):
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        shutil.copytree(FIXTURES / "standard", folder)
        cfg = json.loads((folder / "cfg.json").read_text()) | change
        (folder / "cfg.json").write_text(json.dumps(cfg))
        with pytest.raises(UserError, match=message):
            minineo.sae.load(folder)
    sae = minineo.sae.load(FIXTURES / "standard")
    with pytest.raises(UserError, match="d_in=32"):
        sae.encode(torch.zeros(3, 8))
