"""The README's SAELens recipe (examples/train_sae_saelens.py) trains on a `minineo harvest` folder offline,
and the SAE it saves loads with minineo.sae.load and splices into the model.

sae-lens is never a minineo dependency: the test runs the script with an interpreter that has it, the
current one when `sae_lens` is importable, else $MININEO_SAELENS_PYTHON (e.g. /work/venvs/saelens/bin/python,
see tests/data/saelens_package/make_fixture.py), and skips saying so otherwise.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import minineo
from minineo import analysis

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "train_sae_saelens.py"


def saelens_python() -> str:
    if importlib.util.find_spec("sae_lens") is not None:
        return sys.executable
    other = os.environ.get("MININEO_SAELENS_PYTHON")
    if other and Path(other).is_file():
        return other
    pytest.skip("sae_lens is not importable here and MININEO_SAELENS_PYTHON is not set: pip install "
                "'sae-lens==6.54.12' (or point MININEO_SAELENS_PYTHON at a venv's python that has it) to run the recipe")


def test_the_saelens_recipe_trains_on_a_harvest_and_the_sae_loads(tmp_path):
    python = saelens_python()
    pytest.importorskip("datasets", reason="harvest needs pip install 'minineo[harvest]'")
    from minineo.data.harvest import harvest

    tiny = minineo.load()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("When Mary and John went to the store, John gave a drink to Mary\n" * 40)
    acts = harvest(tiny, corpus, ["blocks.1.resid_post"], tmp_path / "acts", context=64)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                        "WANDB_MODE": "disabled"}
    result = subprocess.run([python, str(SCRIPT), str(acts), "--out", str(tmp_path / "sae")], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sae = minineo.sae.load(tmp_path / "sae")
    assert (sae.d_in, sae.d_sae, sae.hook_name, sae.architecture) == (128, 512, "blocks.1.hook_resid_post", "standard")
    figures = analysis.sae_metrics(tiny, sae, tiny.to_tokens(["When Mary and John went to the store, John gave"]))
    assert figures.site == "blocks.1.resid_post" and figures.explained_variance == figures.explained_variance  # finite
