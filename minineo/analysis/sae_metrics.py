"""How much of the model survives an SAE spliced in at its site: the loss clean, spliced and ablated, L0, R².

    sae_metrics(model, sae, tokens, *, attention_mask=None, batch_size=8) -> SAEMetrics

Every loss is `Model.loss`'s (nats per predicted real token) over all the rows; the site is the SAE's
`hook_name` (TransformerLens spelling resolved, e.g. blocks.1.hook_resid_post).
- spliced: the site replaced by `sae.reconstruct(x)` (patch=);
- zero-ablated: the site replaced by zeros; mean-ablated: by its mean over every real token of `tokens`;
- loss_recovered = (zero_ablated - spliced) / (zero_ablated - clean) (1: as good as the model; 0: as bad as
  zeroing the site), as in SAELens's `ce_loss_score`;
- l0: mean number of non-zero features per real token; dead_features: features that never fired on them;
- explained_variance = 1 - E||x - x_hat||² / (E||x||² - ||E x||²) over real tokens (SAELens's streaming R²).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from minineo import checks
from minineo.errors import UserError
from minineo.forward.loss import next_token_nats
from minineo.record import sites

if TYPE_CHECKING:  # annotations only (@checks.typed knows minineo's classes by name)
    from minineo.forward.model import Model
    from minineo.sae import SAE


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
    n_tokens: int  # real token positions the SAE read
    site: str

    def to_dict(self) -> dict:
        return asdict(self)


@checks.typed
def sae_metrics(model: Model, sae: SAE, tokens, *, attention_mask: torch.Tensor | None = None, batch_size: int = 8) -> SAEMetrics:
    """The figures of `sae` spliced into `model` on `tokens` (batch, pos); see the module docstring."""
    if sae.hook_name is None:
        raise UserError("the SAE does not name its site (hook_name in cfg.json); set sae.hook_name, "
                        "e.g. 'blocks.6.hook_resid_post'")
    try:
        site = sites.resolve(sae.hook_name, model.config)
    except KeyError as err:
        raise UserError(f"the SAE's site {sae.hook_name!r} is not a site of this model: {err.args[0]}") from None
    tokens, attention_mask = model.token_batch(tokens, attention_mask)
    batch_size = checks.count(batch_size, "batch_size")
    chunks = [(tokens[i:i + batch_size], None if attention_mask is None else attention_mask[i:i + batch_size])
              for i in range(0, tokens.shape[0], batch_size)]
    nats = dict.fromkeys(("clean", "spliced", "zero", "mean"), 0.0)
    counted = n_real = 0
    active = torch.zeros(sae.d_sae, dtype=torch.bool, device=sae.W_enc.device)
    l0_sum, x_sum, x_sq, residual_sq = 0.0, 0.0, 0.0, 0.0
    with torch.inference_mode():
        for chunk, mask in chunks:
            logits, cache = model.run_with_cache(chunk, names=[site], attention_mask=mask)
            x = cache[site]  # (batch, pos, ...) the clean activation
            real = torch.ones(chunk.shape, dtype=torch.bool, device=chunk.device) if mask is None else mask.bool()
            features = sae.encode(x)[real]  # (real tokens, d_sae)
            x_real = x[real].flatten(1).double()  # (real tokens, d_in)
            x_hat = sae.reconstruct(x)[real].flatten(1).double()
            active |= (features != 0).any(0)
            l0_sum += float((features != 0).sum())
            x_sum = x_sum + x_real.sum(0)
            x_sq += float(x_real.pow(2).sum())
            residual_sq += float((x_real - x_hat).pow(2).sum())
            n_real += int(real.sum())
            clean, counts = next_token_nats(logits, chunk, mask)
            nats["clean"] += float(clean.double().sum())
            counted += int(counts.sum())
            nats["spliced"] += _nats(model, chunk, mask, {site: sae.reconstruct})
            nats["zero"] += _nats(model, chunk, mask, {site: torch.zeros_like})
        mean = (x_sum / n_real).to(x.dtype).view(x.shape[2:])  # the site's mean over every real token
        for chunk, mask in chunks:
            nats["mean"] += _nats(model, chunk, mask, {site: lambda value: mean.expand_as(value).clone()})
    loss = {key: value / counted for key, value in nats.items()}
    total_variance = x_sq / n_real - float((x_sum / n_real).pow(2).sum())
    return SAEMetrics(
        clean_loss=loss["clean"], spliced_loss=loss["spliced"], zero_ablated_loss=loss["zero"],
        mean_ablated_loss=loss["mean"],
        loss_recovered=(loss["zero"] - loss["spliced"]) / gap if (gap := loss["zero"] - loss["clean"]) else float("nan"),
        l0=l0_sum / n_real, explained_variance=1 - (residual_sq / n_real) / total_variance,
        dead_features=int((~active).sum()), d_sae=sae.d_sae, n_tokens=n_real, site=site)


def _nats(model, tokens: torch.Tensor, mask: torch.Tensor | None, patch: dict) -> float:
    """Total nats of the counted predictions with `patch` applied."""
    return float(model.loss(tokens, attention_mask=mask, patch=patch, per_token=True).double().sum())
