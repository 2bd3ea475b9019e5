"""Loading by repo id from a hub-layout cache, offline; clear errors and no partial files otherwise."""

from __future__ import annotations

import shutil

import pytest
import torch
from hf_oracle import build_hf, hf_config, save_hf

import minineo

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(root, repo="someorg/tiny-neo", sharded=False):
    hf = build_hf(hf_config("gpt_neo", layers=2, window=2))
    snapshot = root / f"models--{repo.replace('/', '--')}" / "snapshots" / COMMIT
    save_hf(hf, snapshot) if not sharded else hf.save_pretrained(snapshot, max_shard_size="20KB")
    (root / f"models--{repo.replace('/', '--')}" / "refs").mkdir(parents=True)
    (root / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text(COMMIT)
    return hf


@pytest.mark.parametrize("sharded", [False, True])
def test_hub_layout_cache_loads_offline_by_repo_id(tmp_path, monkeypatch, sharded):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = make_hub_cache(tmp_path, sharded=sharded)
    if sharded:
        assert (tmp_path / "models--someorg--tiny-neo" / "snapshots" / COMMIT / "model.safetensors.index.json").exists()
    model = minineo.load("someorg/tiny-neo", cache_dir=tmp_path)
    tokens = torch.randint(0, 97, (1, 9))
    with torch.no_grad():
        expected = hf(tokens).logits
    assert torch.allclose(model(tokens), expected, atol=1e-5)


def test_minineo_cache_env_var_is_the_default_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MININEO_CACHE", str(tmp_path))
    make_hub_cache(tmp_path, repo="other/model")
    assert minineo.load("other/model").config.n_layers == 2


def test_offline_and_not_cached_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="minineo download someorg/absent"):
        minineo.load("someorg/absent", cache_dir=tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("name, hint", [("tiny-gpt3", "did you mean the embedded model 'tiny-gpt2'?"),
                                        ("tiny_neo", "did you mean the embedded model 'tiny-neo'?"),
                                        ("someorg/absent", None)])
def test_a_misspelled_embedded_name_gets_the_nearest_embedded_model(tmp_path, monkeypatch, name, hint):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no folder of that name here
    with pytest.raises(FileNotFoundError) as raised:
        minineo.load(name, cache_dir=tmp_path)
    assert (hint in str(raised.value)) if hint else "did you mean" not in str(raised.value), str(raised.value)


def test_unreachable_hub_and_not_cached_says_what_to_do_and_leaves_no_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: connection refused
    with pytest.raises(FileNotFoundError, match="could not be reached"):
        minineo.load("someorg/absent", cache_dir=tmp_path)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert leftovers == []


def test_embedded_model_name_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        minineo.load(str(tmp_path / "does-not-exist"))
    shutil.rmtree(tmp_path)
