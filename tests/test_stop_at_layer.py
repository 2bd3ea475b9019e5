"""stop_at_layer: the forward pass stops before a block and returns the residual there (TransformerLens's meaning)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close
from hf_oracle import hf_forward

from minineo.errors import UserError


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_stop_at_layer_returns_the_residual_before_that_block(hf_pair, arch):
    hf, model = hf_pair(arch, layers=3, window=3)
    tokens = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(0))
    hidden = hf_forward(hf, tokens).hidden_states  # resid_pre of each block, then ln_f(final residual)
    n = model.config.n_layers
    for layer in range(n):
        for stop in (layer, layer - n):  # -1 stops before the last block, as in TransformerLens
            assert_close(model(tokens, stop_at_layer=stop), hidden[layer], f"{arch} stop_at_layer={stop}")
    final = model(tokens, stop_at_layer=n)  # the last resid_post, before ln_final
    assert_close(torch.nn.functional.layer_norm(final, (final.shape[-1],), hf.transformer.ln_f.weight,
                                                hf.transformer.ln_f.bias, hf.config.layer_norm_epsilon),
                 hidden[n], f"{arch} ln_f(stop_at_layer={n})")
    _, cache = model.run_with_cache(tokens)
    assert_close(final, cache[f"blocks.{n - 1}.resid_post"], f"{arch} stop_at_layer={n} vs the cache")


def test_run_with_cache_records_only_the_sites_that_ran(hf_pair):
    hf, model = hf_pair("gpt2", layers=3)
    tokens = torch.randint(0, 97, (1, 6), generator=torch.Generator().manual_seed(1))
    _, full = model.run_with_cache(tokens)
    resid, cache = model.run_with_cache(tokens, stop_at_layer=2)
    assert torch.equal(resid, full["blocks.2.resid_pre"])
    recorded = set(cache)
    assert "blocks.1.attn.pattern" in recorded and "blocks.1.resid_post" in recorded
    assert not any(name.startswith("blocks.2.") for name in recorded), sorted(recorded)
    assert not {"logits", "unembed.in", "ln_final.scale", "ln_final.normalized"} & recorded
    assert {"blocks.1.resid_mid", "blocks.1.ln2.normalized", "blocks.1.mlp.post"} <= recorded  # computed on access
    for name in recorded:  # every listed site is readable and equals the full run's
        assert torch.equal(cache[name], full[name]), name
    embeddings, cache = model.run_with_cache(tokens, stop_at_layer=0)
    assert torch.equal(embeddings, full["embed"] + full["pos_embed"]) and set(cache) == {"embed", "pos_embed"}


@pytest.mark.parametrize("bad", [4, -4, 10, 1.0, "1", True])
def test_bad_stop_at_layer_is_a_user_error_naming_the_range(hf_pair, bad):
    _, model = hf_pair("gpt2", layers=3)
    tokens = torch.zeros(1, 3, dtype=torch.long)
    for call in (model, model.run_with_cache):
        with pytest.raises(UserError, match=r"-3\.\.3"):
            call(tokens, stop_at_layer=bad)
