"""Facts about the shipped tiny GPT-Neo, computed here from its weights (not copied from a file)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close
from transformers import GPTNeoForCausalLM

import minineo
from minineo import analysis
from minineo.checkpoints.hub import EMBEDDED_DIR


def test_hf_loads_the_shipped_files_and_agrees():
    model = minineo.load()
    hf = GPTNeoForCausalLM.from_pretrained(EMBEDDED_DIR, attn_implementation="eager").eval()
    tokens = model.to_tokens(["When Mary and John went to the store, John gave a drink to", "Beautiful is better than"])
    mask = tokens.attention_mask  # left padding, carried by the tensor
    with torch.no_grad():
        expected = hf(tokens, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    real = mask.bool()  # padded positions are nobody's prediction
    assert_close(model(tokens)[real], expected[real], "embedded model vs HF")
    assert model.config.architecture == "gpt_neo" and None in model.config.windows and any(model.config.windows)


def test_it_learned_in_context_copying():
    model = minineo.load()
    seq_len = 30
    repeated = analysis.repeated_tokens(model, seq_len, n_seqs=16, seed=123, low=33, high=127)  # printable bytes
    scores = analysis.head_scores(model, repeated, repeated_len=seq_len)
    assert scores.induction_loss < 0.3 * scores.first_half_loss, (scores.first_half_loss, scores.induction_loss)
    assert float(scores.induction.max()) > 0.5


def test_it_copies_any_token_in_context_measured_by_hf():
    """Induction on random ids drawn uniformly from all 256 bytes (not only printable ASCII), each
    sequence repeated twice; losses and attention patterns come from HF's own forward pass."""
    hf = GPTNeoForCausalLM.from_pretrained(EMBEDDED_DIR, attn_implementation="eager").eval()
    seq_len, n = 40, 16
    half = torch.randint(0, 256, (n, seq_len), generator=torch.Generator().manual_seed(7))
    tokens = torch.cat([torch.full((n, 1), hf.config.bos_token_id), half, half], dim=1)  # (n, 1 + 2 seq_len)
    with torch.no_grad():
        out = hf(tokens, output_attentions=True)
    losses = F.cross_entropy(out.logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")  # (n, 2 seq_len)
    first = losses[:, 1:seq_len].mean()  # predicting tokens 2..seq_len: unpredictable
    second = losses[:, seq_len + 1:].mean()  # predicting tokens seq_len+2..2 seq_len: copies
    assert second < 0.5 * first, (float(first), float(second))
    # An induction head at query q (second repeat) attends to the token after q's earlier occurrence.
    q = torch.arange(seq_len + 1, 2 * seq_len + 1)
    scores = torch.stack([pattern[:, :, q, q - seq_len + 1].mean((0, 2)) for pattern in out.attentions])
    assert float(scores.max()) > 0.5, scores  # (layer, head)
    # ... and it is the head minineo's detector ranks first on the same tokens.
    ours = analysis.head_scores(minineo.load(), tokens, repeated_len=seq_len)
    assert int(ours.induction.argmax()) == int(scores.argmax())


def test_it_finds_the_indirect_object_in_both_name_orders():
    """`minineo ioi`'s analysis: IO above S on half ABBA, half BABA prompts, through layer-1 name movers."""
    model = minineo.load()
    data = analysis.ioi_dataset(model, 64, seed=5)  # even rows ABBA, odd rows BABA
    result = analysis.ioi_analysis(model, data, ablation=False)
    assert result.accuracy >= 0.9, result.accuracy
    logits = model(data.tokens, attention_mask=data.attention_mask)[:, -1]  # (batch, vocab)
    rows = torch.arange(len(data.prompts))
    correct = logits[rows, data.io_tokens] > logits[rows, data.s_tokens]
    assert correct[0::2].float().mean() >= 0.85 and correct[1::2].float().mean() >= 0.85, correct
    # A name mover: the top head of the DLA table is in the global layer, writes a tenth of IO - S straight
    # to the logits, and mean-ablating it (on the ABC prompts' mean) removes over a tenth of the logit
    # difference (a second head may share the job, as GPT-2 small's three name movers do; the card says why).
    with_ablation = analysis.ioi_analysis(model, data, ablation=True)
    dla = result.head_dla.flatten()
    top = int(dla.argmax())
    assert top // model.config.n_heads == 1, result.head_dla
    assert float(dla[top]) > 0.1 * result.logit_diff, (result.head_dla, result.logit_diff)
    assert float(with_ablation.head_ablation.flatten()[top]) < -0.1 * result.logit_diff, with_ablation.head_ablation
    # Without a repeated name (ABC) there is nothing to pick: the difference collapses.
    assert abs(result.abc_logit_diff) < 0.25 * result.logit_diff, (result.abc_logit_diff, result.logit_diff)


def test_it_completes_its_training_text():
    model = minineo.load()
    prompt = "When Mary and John went to the store, John gave a drink to"
    completion = model.to_string(model.generate(model.to_tokens(prompt), max_new_tokens=5)[0, -5:])
    assert completion.startswith(" Mary")


def test_tokenizer_round_trips_bytes():
    model = minineo.load()
    text = "Hello, wörld! ∑ 123"
    assert model.to_string(model.to_tokens(text, prepend_bos=False)[0]) == text
