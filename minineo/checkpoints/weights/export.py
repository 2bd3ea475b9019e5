"""minineo parameters -> HuggingFace checkpoint keys (the inverse of the conversion tables)."""

from __future__ import annotations

import torch

from minineo.forward.model import Model


def to_hf_gpt_neo(model: Model) -> dict[str, torch.Tensor]:
    """GPTNeoForCausalLM's state dict (`transformer.`-prefixed, nn.Linear (out, in) weights)."""
    cfg = model.config
    if cfg.architecture != "gpt_neo" or not cfg.tie_unembed:
        raise ValueError("to_hf_gpt_neo exports GPT-Neo models with a tied unembedding only")
    out = {"transformer.wte.weight": model.W_E, "transformer.wpe.weight": model.W_pos,
           "transformer.ln_f.weight": model.ln_final.w, "transformer.ln_f.bias": model.ln_final.b}
    for layer, block in enumerate(model.blocks):
        hf, attn = f"transformer.h.{layer}.", block.attn
        q, k, v = block.attn.W_QKV.T.chunk(3, dim=0)  # each (d_model out, d_model in)
        out |= {
            hf + "ln_1.weight": block.ln1.w, hf + "ln_1.bias": block.ln1.b,
            hf + "attn.attention.q_proj.weight": q, hf + "attn.attention.k_proj.weight": k,
            hf + "attn.attention.v_proj.weight": v,
            hf + "attn.attention.out_proj.weight": attn.W_O.reshape(-1, cfg.d_model).T,
            hf + "attn.attention.out_proj.bias": attn.b_O,
            hf + "ln_2.weight": block.ln2.w, hf + "ln_2.bias": block.ln2.b,
            hf + "mlp.c_fc.weight": block.mlp.W_in.T, hf + "mlp.c_fc.bias": block.mlp.b_in,
            hf + "mlp.c_proj.weight": block.mlp.W_out.T, hf + "mlp.c_proj.bias": block.mlp.b_out,
        }
    return {name: t.detach().float().contiguous().clone() for name, t in out.items()}


def to_hf_gpt2(model: Model) -> dict[str, torch.Tensor]:
    """GPT2LMHeadModel's state dict (`transformer.`-prefixed; Conv1D keeps (in, out), minineo's own layout)."""
    cfg = model.config
    if cfg.architecture != "gpt2" or not cfg.tie_unembed or not cfg.qkv_bias:
        raise ValueError("to_hf_gpt2 exports GPT-2 models with q/k/v biases and a tied unembedding only")
    out = {"transformer.wte.weight": model.W_E, "transformer.wpe.weight": model.W_pos,
           "transformer.ln_f.weight": model.ln_final.w, "transformer.ln_f.bias": model.ln_final.b}
    for layer, block in enumerate(model.blocks):
        hf, attn = f"transformer.h.{layer}.", block.attn
        out |= {
            hf + "ln_1.weight": block.ln1.w, hf + "ln_1.bias": block.ln1.b,
            hf + "attn.c_attn.weight": attn.W_QKV, hf + "attn.c_attn.bias": attn.b_QKV,  # (d_model, 3 d_model)
            hf + "attn.c_proj.weight": attn.W_O.reshape(-1, cfg.d_model), hf + "attn.c_proj.bias": attn.b_O,
            hf + "ln_2.weight": block.ln2.w, hf + "ln_2.bias": block.ln2.b,
            hf + "mlp.c_fc.weight": block.mlp.W_in, hf + "mlp.c_fc.bias": block.mlp.b_in,
            hf + "mlp.c_proj.weight": block.mlp.W_out, hf + "mlp.c_proj.bias": block.mlp.b_out,
        }
    return {name: t.detach().float().contiguous().clone() for name, t in out.items()}
