"""The fast path is as exact as HF's float32: both measured against a float64 run of the same weights.

The bound is HF float32's own error, with no slack: per model, pooled over a fixed sample of batches, the
fast path's logit error (max and RMS over every logit) must not exceed the envelope (the largest) of the
errors of the HF float32 computations a user gets for that model: attention eager, and sdpa (HF's default)
where HF has it; the activation as configured, and for `gelu_new` also HF's `gelu_pytorch_tanh` (HF's
one-kernel form of the same tanh GELU, "equivalent to NewGELU ... not an exact numerical match").

What was measured (CPU AVX-512, torch 2.13, transformers 5.24, 4 x 128-token batches):

- The issue's "6.9e-5 against 2.0e-5" on tiny-gpt2 is one batch's largest logit error. Single-batch
  maxima of the fast path and of HF float32 (eager or sdpa) range from 2e-5 to 1.4e-4 and trade places
  from batch to batch (in one sample, batch 3: HF sdpa 6.9e-5, fast path 7.6e-5; batch 4: 6.5e-5, 2.5e-5).
- Op by op (each op alone in float32 inside a float64 run of tiny-gpt2, logit RMS 2.4e-6 in all): the
  matmuls give 1.7e-6, attention 1.5e-6, LayerNorm 0.9e-6, the unembedding 3e-7, GELU 2e-7. All but
  attention and GELU are the same calls as HF's (addmm, F.layer_norm, F.linear), bit for bit.
- GPT-2: the fast path *is* HF float32 with sdpa and `gelu_pytorch_tanh`, bit for bit (tested below), so
  its error is one of the envelope's members. Its fused GELU is 1.4-5.6% less exact (local RMS) than
  HF's six-op formula on the zoo's real pre-activations; the formula costs ~6x the kernel's time
  (128 vs 22 ms on a 1024 x 3072 tensor here), so the fused kernel stays.
- GPT-Neo: HF runs only eager attention on the CPU, and the fast path runs its operations (Config.eager_attention):
  the fast path is HF eager float32 with `gelu_pytorch_tanh`, bit for bit (tested below), one of the envelope's
  members. Before, it ran SDPA's fused CPU kernel (the kernel HF's GPT-2 runs by default), whose causal layers put
  the logit RMS up to 0.3% above HF eager's on random GPT-Neo models (max error within); eager attention costs
  2% of a GPT-Neo-125M-shaped forward at 128 tokens and 16% at 1024 tokens on a quiet machine (up to 40%
  under heavy load) (one thread; benchmarks/README.md), for a fast path that is exactly HF's computation.

The explicit path runs HF eager's own float32 operations, so its error is HF's, exactly.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hf_oracle import build_hf, hf_config, save_hf
from transformers import AutoConfig, AutoModelForCausalLM

import minineo
from minineo.checkpoints.hub import EMBEDDED

# Random models: (architecture, seed, layers, heads, d_head, window). d_head 32 makes GPT-2's score
# scale 1/sqrt(32), not a power of two, so scaling before or after the product rounds differently.
RANDOM = [("gpt2", 1, 3, 4, 16, 5), ("gpt2", 2, 2, 2, 32, 3), ("gpt2", 3, 4, 4, 8, 7),
          ("gpt_neo", 1, 3, 4, 16, 5), ("gpt_neo", 2, 2, 2, 32, 3), ("gpt_neo", 3, 4, 4, 8, 7)]
MODELS = sorted(EMBEDDED) + ["-".join(map(str, spec)) for spec in RANDOM]
GPT2 = [name for name in MODELS if "gpt2" in name]
NEO = [name for name in MODELS if "neo" in name]


def _folder(name: str, tmp_path: Path) -> Path:
    """The model's folder: the zoo's own, or a random HF model of the named shape saved to disk."""
    if name in EMBEDDED:
        return EMBEDDED[name]
    arch, seed, layers, heads, d_head, window = (int(p) if p.isdigit() else p for p in name.split("-"))
    hf = build_hf(hf_config(arch, layers=layers, heads=heads, d_head=d_head, vocab=257, n_ctx=128, window=window),
                  seed=seed, weight_scale=3.0)
    return save_hf(hf, tmp_path / name)


def _hf(folder: Path, attention: str, activation: str | None = None):
    """HF float32 with this attention implementation and (optionally) another activation_function."""
    config = AutoConfig.from_pretrained(folder)
    config.activation_function = activation or config.activation_function
    return AutoModelForCausalLM.from_pretrained(folder, config=config, attn_implementation=attention).eval()


def _hf_float32(folder: Path) -> dict[str, torch.nn.Module]:
    """Every HF float32 computation a user gets for this model on the CPU, by "attention/activation"."""
    config = AutoConfig.from_pretrained(folder)
    attentions = ["eager", "sdpa"] if config.model_type == "gpt2" else ["eager"]  # HF's GPT-Neo has no sdpa
    activations = [config.activation_function]
    if config.activation_function == "gelu_new":
        activations.append("gelu_pytorch_tanh")
    return {f"{a}/{act}": _hf(folder, a, act) for a in attentions for act in activations}


def _sample(d_vocab: int) -> list[torch.Tensor]:
    """Six batches of 4 x 128 uniform random token ids (sharp, varied attention), the same for every run."""
    g = torch.Generator().manual_seed(11)
    return [torch.randint(0, d_vocab, (4, 128), generator=g) for _ in range(6)]


def _padded(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, attention_mask): the rows left-padded by 0, 17, 64 and 100 positions."""
    mask = torch.ones_like(tokens)
    for row, pad in enumerate((0, 17, 64, 100)):
        mask[row, :pad] = 0
    return tokens, mask


def _errors(run, references, batches) -> tuple[float, float]:
    """(max, RMS) over every logit of `run(tokens)` against the float64 reference logits."""
    worst, squares = 0.0, 0.0
    with torch.no_grad():
        for tokens, reference in zip(batches, references):
            diff = (run(tokens).double() - reference).abs()  # (batch, pos, d_vocab)
            worst, squares = max(worst, float(diff.max())), squares + float(diff.pow(2).mean())
    return worst, (squares / len(batches)) ** 0.5


@pytest.fixture(scope="module", params=MODELS)
def measured(request, tmp_path_factory):
    """(fast path's (max, RMS), HF float32's envelope (max, RMS), each HF computation's, model name)."""
    folder = _folder(request.param, tmp_path_factory.mktemp("precision"))
    hfs, model = _hf_float32(folder), minineo.load(folder)
    hf64 = copy.deepcopy(next(iter(hfs.values()))).double()
    batches = _sample(model.config.d_vocab)
    with torch.no_grad():
        references = [hf64(tokens).logits for tokens in batches]  # (batch, pos, d_vocab) each
    hf_errors = {name: _errors(lambda t, hf=hf: hf(t).logits, references, batches) for name, hf in hfs.items()}
    envelope = (max(e[0] for e in hf_errors.values()), max(e[1] for e in hf_errors.values()))
    explicit = _errors(lambda t: model(t, explicit=True), references, batches)
    configured = hf_errors[f"eager/{model.config.act_fn}"]
    assert explicit == configured  # the explicit path is HF eager's float32 computation, bit for bit
    return _errors(model, references, batches), envelope, hf_errors, request.param


def _report(fast, envelope, hf_errors) -> str:
    runs = ", ".join(f"{name} {mx:.3g}/{rms:.4g}" for name, (mx, rms) in hf_errors.items())
    return f"fast path max/RMS {fast[0]:.3g}/{fast[1]:.4g}; envelope {envelope[0]:.3g}/{envelope[1]:.4g} ({runs})"


def test_fast_path_max_error_is_within_hf_float32s(measured):
    fast, envelope, hf_errors, _ = measured
    assert fast[0] <= envelope[0], _report(fast, envelope, hf_errors)


def test_fast_path_rms_error_is_within_hf_float32s(measured):
    fast, envelope, hf_errors, name = measured
    assert fast[1] <= envelope[1], _report(fast, envelope, hf_errors)


@pytest.mark.parametrize("name", GPT2)
def test_gpt2_fast_path_is_hf_float32_sdpa_with_its_tanh_gelu_kernel(name, tmp_path):
    """Bit for bit, unpadded and left-padded (real tokens; positions from the mask, as minineo's)."""
    folder = _folder(name, tmp_path)
    hf, model = _hf(folder, "sdpa", "gelu_pytorch_tanh"), minineo.load(folder)
    tokens = _sample(model.config.d_vocab)[0]
    tokens, mask = _padded(tokens)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        assert torch.equal(model(tokens), hf(tokens).logits)
        real = mask.bool()
        padded_hf = hf(tokens, attention_mask=mask, position_ids=positions).logits
        assert torch.equal(model(tokens, attention_mask=mask)[real], padded_hf[real])


@pytest.mark.parametrize("name", NEO)
def test_gpt_neo_fast_path_is_hf_float32_eager_with_its_tanh_gelu_kernel(name, tmp_path):
    """Bit for bit, unpadded and left-padded, whichever SDPA backend is the default (the fast path runs none)."""
    folder = _folder(name, tmp_path)
    hf, model = _hf(folder, "eager", "gelu_pytorch_tanh"), minineo.load(folder)
    tokens, mask = _padded(_sample(model.config.d_vocab)[0])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        assert torch.equal(model(tokens), hf(tokens).logits)
        real = mask.bool()
        padded_hf = hf(tokens, attention_mask=mask, position_ids=positions).logits
        assert torch.equal(model(tokens, attention_mask=mask)[real], padded_hf[real])


def test_the_precision_check_catches_a_wrong_gelu():
    """The erf GELU in place of GPT-2's tanh one (a plausible bug, ~1e-3 in the logits) is far outside the bound."""
    folder = EMBEDDED["tiny-gpt2"]
    hfs, model = _hf_float32(folder), minineo.load(folder)
    for block in model.blocks:
        block.mlp.fused_act = F.gelu
    batches = _sample(model.config.d_vocab)[:2]
    hf64 = copy.deepcopy(hfs["eager/gelu_new"]).double()
    with torch.no_grad():
        references = [hf64(tokens).logits for tokens in batches]
    errors = [_errors(lambda t, hf=hf: hf(t).logits, references, batches) for hf in hfs.values()]
    envelope = (max(e[0] for e in errors), max(e[1] for e in errors))
    wrong = _errors(model, references, batches)
    assert wrong[0] > 10 * envelope[0] and wrong[1] > 10 * envelope[1]
