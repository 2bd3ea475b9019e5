"""Each analysis against an independent computation: brute force, closed forms, hand-built circuits."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from conftest import assert_close

from minineo import Config, Model, analysis


@pytest.fixture
def neo(hf_pair):
    return hf_pair("gpt_neo", layers=3, heads=4, window=3, weight_scale=3.0)[1]


def tokens(n=3, pos=10, seed=0):
    return torch.randint(0, 97, (n, pos), generator=torch.Generator().manual_seed(seed))


# ---- embeddings ---------------------------------------------------------------------------------

def test_pairwise_cosines_equal_brute_force_matrix():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(301, 16, generator=g) + 3 * torch.randn(16, generator=g)  # a shared offset
    result = analysis.embedding_geometry(W, chunk=64)
    unit = W.double() / W.double().norm(dim=-1, keepdim=True)
    cos = unit @ unit.T
    off = ~torch.eye(301, dtype=torch.bool)
    assert math.isclose(result.mean_cosine, float(cos[off].mean()), abs_tol=1e-9)
    centred = W.double() - W.double().mean(0)
    unit_c = centred / centred.norm(dim=-1, keepdim=True)
    cos_c = unit_c @ unit_c.T
    assert math.isclose(result.mean_cosine_centred, float(cos_c[off].mean()), abs_tol=1e-9)
    assert math.isclose(result.mean_abs_cosine_centred, float(cos_c[off].abs().mean()), abs_tol=1e-9)
    assert math.isclose(result.mean_vector_norm, float(W.double().mean(0).norm()), rel_tol=1e-9)
    assert result.largest_norms[0][0] == int(W.norm(dim=-1).argmax())
    # centring removes the shared offset: the mean cosine of centred vectors is exactly -1/(n-1)
    assert math.isclose(result.mean_cosine_centred, -1 / 300, rel_tol=0.5)


def test_autoencoding_is_perfect_for_orthogonal_tied_embeddings_and_fails_under_a_shared_offset(hf_pair):
    _, model = hf_pair("gpt_neo", layers=1, heads=4, d_head=32)  # d_model 128 >= vocab 97
    vocab, d = model.config.d_vocab, model.config.d_model
    with torch.no_grad():
        model.W_E.copy_(torch.linalg.qr(torch.randn(d, d))[0][:vocab] * 5)  # orthogonal rows: e_t . e_t wins
    assert analysis.embedding_autoencoding(model).top1_raw == 1.0
    with torch.no_grad():
        model.W_E.copy_(torch.randn(vocab, d) * 0.1 + torch.randn(d) * 10)  # one huge shared direction
    auto = analysis.embedding_autoencoding(model)
    assert auto.top1_raw < 0.2
    assert auto.most_frequent_winners[0][1] > vocab / 5  # a few tokens win for everyone


# ---- logit lens -----------------------------------------------------------------------------------

def test_logit_lens_final_layer_equals_the_logits(neo):
    t = tokens(1, 12)
    lens = analysis.logit_lens(neo, t)
    assert_close(lens.logits[-1], neo(t)[0], "lens at the final residual")
    assert float(lens.kl_to_final[-1].abs().max()) < 1e-5
    expected_rank = (neo(t)[0, :-1] > neo(t)[0, :-1].gather(-1, t[0, 1:, None])).sum(-1)
    assert torch.equal(lens.next_token_rank[-1], expected_rank)


def test_logit_lens_uses_each_layers_own_layernorm_scale(neo):
    t = tokens(1, 8)
    lens = analysis.logit_lens(neo, t)
    _, cache = neo.run_with_cache(t)
    x = cache["blocks.1.resid_pre"][0]
    own = torch.nn.functional.layer_norm(x, x.shape[-1:], neo.ln_final.w, neo.ln_final.b, neo.config.layer_norm_eps)
    assert_close(lens.logits[1], own @ neo.W_U, "layer 1 with its own scale")


# ---- direct logit attribution --------------------------------------------------------------------

@pytest.mark.parametrize("wrong", [None, 5])
def test_dla_contributions_sum_to_the_logit(neo, wrong):
    t = tokens(3, 9)
    result = analysis.direct_logit_attribution(neo, t, answer=7, wrong=wrong)
    logits = neo(t)
    expected = logits[:, -1, 7] - (logits[:, -1, wrong] if wrong is not None else 0)
    assert_close(result.logit, expected, "reported logit")
    assert_close(result.contributions.sum(0) + result.ln_bias_term, expected, "sum of contributions", atol=1e-4)
    assert len(result.labels) == 2 + neo.config.n_layers * (neo.config.n_heads + 2)


# ---- hand-built induction circuit -----------------------------------------------------------------

def induction_circuit_model() -> Model:
    """Two attention-only layers: L0H0 a previous-token head, L1H1 an induction head; other heads off."""
    vocab, n_ctx, d_model = 20, 64, 128
    config = Config(architecture="gpt2", d_model=d_model, n_layers=2, n_heads=2, d_mlp=4, n_ctx=n_ctx, d_vocab=vocab)
    model = Model(config)
    token_dims, pos_dims, prev_dims = torch.arange(vocab), vocab + torch.arange(n_ctx), vocab + n_ctx + torch.arange(vocab)
    c = 3.0
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in [b.ln1 for b in model.blocks] + [b.ln2 for b in model.blocks] + [model.ln_final]:
            ln.w.fill_(1.0)
        model.W_E[torch.arange(vocab), token_dims] = 1.0
        model.W_pos[torch.arange(n_ctx), pos_dims] = 1.0
        prev = model.blocks[0].attn  # query at position i matches key at position i - 1
        prev.W_Q[0, pos_dims, torch.arange(n_ctx)] = c
        prev.W_K[0, pos_dims[:-1], torch.arange(1, n_ctx)] = c
        prev.W_V[0, token_dims, torch.arange(vocab)] = 1.0
        prev.W_O[0, torch.arange(vocab), prev_dims] = 1.0  # writes the previous token into its own subspace
        induction = model.blocks[1].attn  # query: my token; key: the token before you
        induction.W_Q[1, token_dims, torch.arange(vocab)] = c
        induction.W_K[1, prev_dims, torch.arange(vocab)] = c
    return model.requires_grad_(False)


def test_hand_built_induction_head_gets_the_top_induction_score():
    model = induction_circuit_model()
    scores = analysis.head_scores(model, analysis.repeated_tokens(model, 20, 6, seed=1))
    assert divmod(int(scores.induction.argmax()), 2) == (1, 1)
    assert float(scores.induction[1, 1]) > 0.5
    assert divmod(int(scores.previous_token.argmax()), 2) == (0, 0)
    assert float(scores.previous_token[0, 0]) > 0.9


# ---- ablation ---------------------------------------------------------------------------------------

def test_zero_ablating_a_head_equals_zeroing_its_W_O(neo):
    t = tokens()
    ablated = analysis.ablate_heads(neo, t, [(1, 2)], "zero")
    surgery = copy.deepcopy(neo)
    with torch.no_grad():
        surgery.blocks[1].attn.W_O[2] = 0
    assert_close(ablated, surgery(t), "patch vs W_O surgery")


def test_mean_ablation_replaces_z_with_its_dataset_mean(neo):
    t = tokens()
    _, cache = neo.run_with_cache(t, names=["blocks.2.attn.z"])
    mean = cache["blocks.2.attn.z"][:, :, 0].mean((0, 1))

    def by_hand(z):
        z = z.clone()
        z[:, :, 0] = mean
        return z

    assert_close(analysis.ablate_heads(neo, t, [(2, 0)], "mean"), neo(t, patch={"blocks.2.attn.z": by_hand}), "mean ablation")


def test_resampling_from_identical_rows_changes_nothing(neo):
    t = tokens(1).expand(4, -1)
    assert_close(analysis.ablate_heads(neo, t, [(0, 1), (2, 3)], "resample"), neo(t), "resample from identical rows")


def test_single_head_effects_match_one_ablation_each(neo):
    t = tokens()
    metric = lambda logits: logits[:, -1, 3].mean()  # noqa: E731
    effects = analysis.head_ablation_effects(neo, t, metric)
    direct = float(metric(analysis.ablate_heads(neo, t, [(2, 1)]))) - float(metric(neo(t)))
    assert math.isclose(float(effects[2, 1]), direct, abs_tol=1e-5)


def test_backup_heads_ablates_the_top_direct_heads(neo):
    t = tokens()
    report = analysis.backup_heads(neo, t, answer=4, top=2, method="zero")
    top2 = report.direct_before.flatten().argsort(descending=True)[:2].tolist()
    assert [l * neo.config.n_heads + h for l, h in report.ablated] == top2
    for layer, head in report.ablated:  # a zeroed head writes nothing
        assert abs(float(report.direct_after[layer, head])) < 1e-5
    assert all((l, h) not in report.ablated for (l, h), _ in report.backups)


def test_bad_ablation_requests_are_clear_errors(neo):
    with pytest.raises(ValueError, match=r"heads item \(7, 0\): the layer must be in 0\.\.2, got 7"):
        analysis.ablate_heads(neo, tokens(), [(7, 0)])
    with pytest.raises(ValueError, match="method='median' is not one of"):
        analysis.ablate_heads(neo, tokens(), [(0, 0)], "median")
