"""safetensors -> minineo parameters: one conversion table per architecture, exact key accounting."""

from __future__ import annotations

from pathlib import Path

import torch

from minineo.config import Config
from minineo.errors import UserError
from minineo.checkpoints.weights import gpt2, gpt_neo
from minineo.checkpoints.weights.files import read_tensors
from minineo.checkpoints.weights.ledger import Ledger

CONVERTERS = {"gpt2": gpt2, "gpt_neo": gpt_neo}


def load_params(directory: Path, config: Config) -> dict[str, torch.Tensor]:
    """minineo's state dict (TransformerLens shapes, contiguous) from the folder's safetensors."""
    module = CONVERTERS[config.architecture]
    ledger = Ledger(read_tensors(directory), module.IGNORE)
    params = module.convert(ledger, config)
    if ledger.has("lm_head.weight"):
        lm_head = ledger.take("lm_head.weight", (config.d_vocab, config.d_model))
        if config.tie_unembed:
            if not torch.equal(lm_head, params["W_E"]):
                raise UserError("lm_head.weight differs from wte.weight but config.json says tie_word_embeddings=true")
        else:
            params["W_U_untied"] = lm_head.T
    elif not config.tie_unembed:
        raise UserError("config.json says tie_word_embeddings=false but the checkpoint has no lm_head.weight")
    ledger.finish()
    return {name: tensor.contiguous() for name, tensor in params.items()}
