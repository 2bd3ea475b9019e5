"""How much of the model survives an SAE spliced in at its site: the loss clean, spliced and ablated, L0, R².

    sae_metrics(model, sae, tokens, *, attention_mask=None, batch_size=8, exclude_special_tokens=False) -> SAEMetrics

Every loss is `Model.loss`'s (nats per counted prediction) over all the rows; the site is the SAE's
`hook_name` (TransformerLens spelling resolved, e.g. blocks.1.hook_resid_post).
- spliced: the site replaced by `sae.reconstruct(x)` (patch=);
- zero-ablated: the site replaced by zeros; mean-ablated: by its mean over every counted token of `tokens`;
- loss_recovered = (zero_ablated - spliced) / (zero_ablated - clean) (1: as good as the model; 0: as bad as
  zeroing the site), as in SAELens's `ce_loss_score` (nan when the two losses are equal, where SAELens divides by
  zero). The fraction reads as a share of the loss that zeroing the site costs, so it means something only when
  zero ablation clearly raises the loss: when zero_ablated - clean <= GAP_MARGIN times the clean loss (ablation
  as good as the clean run, or better: an untrained model, text it predicts worse than uniform), it is kept (as
  SAELens computes it, so the numbers stay comparable) and a minineo.report warning names both losses and says
  the figure means nothing here. The mean-ablated loss is reported, not made into a fraction;
- l0: mean number of non-zero features per SAE input (per counted token; per token and head on a per-head
  site); dead_features: features that never fired on them;
- explained_variance = 1 - E||x - x_hat||² / (E||x||² - ||E x||²) over counted tokens (SAELens's streaming R²).

Which tokens count. By default every real token (mask 1), BOS included: the SAE is spliced at every
position, and L0, R² and the losses count them all; this is SAELens's `run_evals(...,
exclude_special_tokens=False)`. `exclude_special_tokens=True` is SAELens's default convention
(sae_lens/evals.py, `get_recons_loss` and `get_sparsity_and_variance_metrics`): positions holding a
special token (the model's BOS / EOS / PAD ids, or the ids given as a list) keep their clean activation
when the SAE is spliced; they are left out of L0, R², dead features and the site's mean; and the
predictions made *at* them are left out of every loss (a prediction *of* a special token still counts).
Zero and mean ablation replace every position, as SAELens's zero ablation does. The conventions differ
most on models whose BOS activation is an outlier (GPT-2's first position): the prediction made at BOS
(with no context) is typically among the costliest, and R² no longer weighs the outlier.
tests/test_sae_run_evals.py checks both conventions against numbers SAELens's own run_evals gave.

A site with a head dimension (the per-head inputs `blocks.L.q_input` / `k_input` / `v_input` /
`attn_in`, (batch, pos, head, d_model), for an SAE of d_in = d_model) is read as splicing reads it: the
SAE encodes each head's vector (L0 per token and head), R² is over the site's whole activation, and the
mean ablation uses each head's own mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from minineo import checks, report
from minineo.errors import UserError
from minineo.forward.loss import next_token_nats

if TYPE_CHECKING:  # annotations only (@checks.typed knows minineo's classes by name)
    from minineo.forward.model import Model
    from minineo.sae import SAE


# zero_ablated - clean must exceed this fraction of the clean loss for loss_recovered to mean something (a smaller
# gap divides by what a different batch of text, or float rounding, would move; a negative one flips the sign)
GAP_MARGIN = 1e-3


@dataclass(frozen=True)
class SAEMetrics:
    clean_loss: float
    spliced_loss: float
    zero_ablated_loss: float
    mean_ablated_loss: float
    loss_recovered: float
    l0: float
    explained_variance: float
    dead_features: int
    d_sae: int
    n_tokens: int  # token positions the SAE read and the figures count
    site: str
    excluded_token_ids: tuple[int, ...] = ()  # the special tokens left out (exclude_special_tokens), else ()

    def to_dict(self) -> dict:
        """The figures as JSON-ready values (excluded_token_ids a list)."""
        return {**asdict(self), "excluded_token_ids": list(self.excluded_token_ids)}


@checks.typed
def sae_metrics(model: Model, sae: SAE, tokens, *, attention_mask: torch.Tensor | None = None,
                batch_size: int = 8, exclude_special_tokens: bool | Sequence[int] = False) -> SAEMetrics:
    """The figures of `sae` spliced into `model` on `tokens` (batch, pos); see the module docstring.

    `exclude_special_tokens`: False (default: every real token counts), True (SAELens's run_evals default:
    the model's BOS/EOS/PAD ids neither spliced nor counted), or a list of token ids to treat so.
    Raises UserError for an SAE without a site, a site the model lacks, batch_size < 1, a bad id list, or
    tokens that leave nothing to count.
    """
    site = sae.check_model(model)  # the SAE's site in this model; refuses an SAE made for another model
    tokens, attention_mask = model.token_batch(tokens, attention_mask)
    batch_size = checks.count(batch_size, "batch_size")
    excluded = _excluded_ids(model, exclude_special_tokens)
    chunks = [(tokens[i:i + batch_size], None if attention_mask is None else attention_mask[i:i + batch_size])
              for i in range(0, tokens.shape[0], batch_size)]
    nats = dict.fromkeys(("clean", "spliced", "zero", "mean"), 0.0)
    counted = n_real = n_inputs = 0
    active = torch.zeros(sae.d_sae, dtype=torch.bool, device=sae.W_enc.device)
    l0_sum, x_sum, x_sq, residual_sq = 0.0, 0.0, 0.0, 0.0
    with torch.inference_mode():
        for chunk, mask in chunks:
            logits, cache = model.run_with_cache(chunk, names=[site], attention_mask=mask)
            x = cache[site]  # (batch, pos, ...) the clean activation
            keep = _kept(chunk, mask, excluded)  # (batch, pos) bool: the positions spliced and counted
            features = sae.encode(x)[keep]  # (kept tokens, d_sae), or (kept tokens, head, d_sae) per head
            x_real = x[keep].flatten(1).double()  # (kept tokens, d_in or head * d_in)
            x_hat = sae.reconstruct(x)[keep].flatten(1).double()
            active |= (features != 0).reshape(-1, sae.d_sae).any(0)
            l0_sum += float((features != 0).sum())
            x_sum = x_sum + x_real.sum(0)
            x_sq += float(x_real.pow(2).sum())
            residual_sq += float((x_real - x_hat).pow(2).sum())
            n_real += int(keep.sum())
            n_inputs += features.shape[:-1].numel()
            clean, counts = next_token_nats(logits, chunk, mask)
            counts = counts & keep[:, :-1]  # (batch, pos - 1): predictions made at kept positions
            nats["clean"] += float(clean.double()[counts].sum())
            counted += int(counts.sum())
            splice = _splice_kept(sae, keep) if excluded else sae.reconstruct
            nats["spliced"] += _nats(model, chunk, mask, {site: splice}, counts)
            nats["zero"] += _nats(model, chunk, mask, {site: torch.zeros_like}, counts)
        if n_real == 0 or counted == 0:
            raise UserError(f"no prediction is left to count: the positions hold padding or the excluded special "
                            f"tokens {list(excluded)} (exclude_special_tokens); give longer rows of text")
        mean = (x_sum / n_real).to(x.dtype).view(x.shape[2:])  # the site's mean over every counted token
        for chunk, mask in chunks:
            counts = _counted(chunk, mask, excluded)
            nats["mean"] += _nats(model, chunk, mask, {site: lambda value: mean.expand_as(value).clone()}, counts)
    loss = {key: value / counted for key, value in nats.items()}
    gap = loss["zero"] - loss["clean"]
    recovered = (loss["zero"] - loss["spliced"]) / gap if gap else float("nan")
    if gap <= GAP_MARGIN * abs(loss["clean"]):
        report.warn(f"loss recovered ({recovered:.4f}) means nothing here: zero-ablating {site} gives a loss of "
                    f"{loss['zero']:.4f} nats, {'below' if gap < 0 else 'not clearly above'} the clean "
                    f"{loss['clean']:.4f} (zero_ablated - clean = {gap:+.4g}; it must exceed {GAP_MARGIN:g} of the "
                    "clean loss), and the fraction (zero_ablated - spliced) / (zero_ablated - clean) divides by "
                    "that gap; compare the spliced loss with the clean one instead, or evaluate on text the model "
                    "predicts well (a trained model, real text)")
    total_variance = x_sq / n_real - float((x_sum / n_real).pow(2).sum())
    return SAEMetrics(
        clean_loss=loss["clean"], spliced_loss=loss["spliced"], zero_ablated_loss=loss["zero"],
        mean_ablated_loss=loss["mean"],
        loss_recovered=recovered,
        l0=l0_sum / n_inputs, explained_variance=1 - (residual_sq / n_real) / total_variance,
        dead_features=int((~active).sum()), d_sae=sae.d_sae, n_tokens=n_real, site=site,
        excluded_token_ids=excluded)


def _excluded_ids(model, exclude_special_tokens: object) -> tuple[int, ...]:
    """The token ids whose positions are neither spliced nor counted: () by default."""
    if exclude_special_tokens is False:
        return ()
    if exclude_special_tokens is True:  # SAELens: the tokenizer's structural special ids (BOS, EOS, PAD)
        config, tokenizer = model.config, model.tokenizer
        ids = {config.bos_token_id, config.eos_token_id, config.pad_token_id, *config.eos_token_ids}
        if tokenizer is not None:
            ids |= {tokenizer.bos_token_id, tokenizer.pad_token_id}
        ids = {i for i in ids if isinstance(i, int) and 0 <= i < config.d_vocab}
        if not ids:
            raise UserError("exclude_special_tokens=True: this model names no BOS/EOS/PAD token (config.json, "
                            "tokenizer); pass the ids to exclude as a list, e.g. exclude_special_tokens=[50256]")
        return tuple(sorted(ids))
    if isinstance(exclude_special_tokens, (list, tuple)) and exclude_special_tokens:
        d_vocab = model.config.d_vocab
        for i in exclude_special_tokens:
            if not checks.is_integer(i) or not 0 <= int(i) < d_vocab:
                raise UserError(f"exclude_special_tokens: {i!r} is not a token id of this model; give whole "
                                f"numbers in 0..{d_vocab - 1}, or True for the model's BOS/EOS/PAD ids")
        return tuple(sorted({int(i) for i in exclude_special_tokens}))
    raise UserError(f"exclude_special_tokens must be False, True or a non-empty list of token ids, got "
                    f"{exclude_special_tokens!r}")


def _kept(tokens: torch.Tensor, mask: torch.Tensor | None, excluded: tuple[int, ...]) -> torch.Tensor:
    """(batch, pos) bool: real positions not holding an excluded token."""
    keep = torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device) if mask is None else mask.bool()
    if excluded:
        keep = keep & ~torch.isin(tokens, torch.tensor(excluded, device=tokens.device))
    return keep


def _counted(tokens: torch.Tensor, mask: torch.Tensor | None, excluded: tuple[int, ...]) -> torch.Tensor:
    """(batch, pos - 1) bool: predictions counted in the losses (both tokens real, made at a kept position)."""
    real = torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device) if mask is None else mask.bool()
    return real[:, 1:] & real[:, :-1] & _kept(tokens, mask, excluded)[:, :-1]


def _splice_kept(sae, keep: torch.Tensor):
    """The SAE's reconstruction at kept positions, the clean activation elsewhere (SAELens's replacement hook)."""
    def splice(value: torch.Tensor) -> torch.Tensor:
        where = keep.view(*keep.shape, *([1] * (value.dim() - 2)))  # (batch, pos, 1, ...)
        return torch.where(where, sae.reconstruct(value), value)
    return splice


def _nats(model, tokens: torch.Tensor, mask: torch.Tensor | None, patch: dict, counts: torch.Tensor) -> float:
    """Total nats of the `counts` predictions (batch, pos - 1) with `patch` applied."""
    nats = model.loss(tokens, attention_mask=mask, patch=patch, per_token=True)  # (batch, pos - 1)
    return float(nats.double()[counts].sum())
