"""`minineo sae-eval` of an SAE whose cfg.json names no model (a hand-made SAE) warns, as discovery warns of a
circuit file with no model identity, and says how to record it; an SAE that names its model is silent."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from minineo.cli import app

SAE = Path(__file__).parent / "data" / "saelens_package" / "tiny_neo_resid_post_1"


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(f"When Mary and John went to the store, John gave a drink to Mary. {i}" for i in range(8)))
    return path


def sae_eval(sae: Path, corpus: Path):
    pytest.importorskip("datasets", reason="sae-eval needs pip install 'minineo[harvest]'")
    return CliRunner().invoke(app, ["sae-eval", str(sae), str(corpus), "--context", "16", "--max-tokens", "32",
                                    "--model", "tiny-neo"], terminal_width=300)


def test_an_sae_with_no_model_identity_is_evaluated_with_a_warning_naming_the_fix(tmp_path, corpus):
    sae = tmp_path / "my-sae"
    shutil.copytree(SAE, sae)
    cfg = json.loads((sae / "cfg.json").read_text())
    del cfg["metadata"]["model_name"]
    (sae / "cfg.json").write_text(json.dumps(cfg))
    result = sae_eval(sae, corpus)
    assert result.exit_code == 0, result.output
    warning = " ".join(result.stderr.split())
    assert warning.startswith("warning: ") and warning.count("warning:") == 1
    assert f"{sae} carries no model identity (its cfg.json has no metadata.model_name)" in warning
    assert f'"metadata": {{"model_name": "tiny-neo"}} to {sae / "cfg.json"}' in warning


def test_an_sae_that_names_its_model_is_evaluated_silently(corpus):
    result = sae_eval(SAE, corpus)
    assert result.exit_code == 0 and "carries no model identity" not in result.stderr, result.output


@pytest.mark.parametrize("recorded", [1000, 0])
def test_a_bad_recorded_context_size_names_the_cfg_json_not_an_option_not_given(tmp_path, corpus, recorded):
    pytest.importorskip("datasets", reason="sae-eval needs pip install 'minineo[harvest]'")
    sae = tmp_path / "my-sae"
    shutil.copytree(SAE, sae)
    cfg = json.loads((sae / "cfg.json").read_text())
    cfg["metadata"]["context_size"] = recorded
    (sae / "cfg.json").write_text(json.dumps(cfg))
    result = CliRunner().invoke(app, ["sae-eval", str(sae), str(corpus), "--max-tokens", "256", "--model", "tiny-neo"],
                                terminal_width=300)
    assert result.exit_code == 1, result.output
    assert "metadata.context_size (the default of --context)" in result.output and "--context must" not in result.output
