"""Model: embed -> blocks -> ln_final -> unembed, every named site recorded or patched in place.

Parameters use TransformerLens's names and shapes. The q/k/v weights live once, fused, in
`W_QKV` (d_model, 3 * head * d_head) -- GPT-2's own c_attn layout -- and `W_Q`, `W_K`, `W_V`
are views of it, shaped (head, d_model, d_head).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from minineo import sites
from minineo.attention import allowed_keys, attend_explicit, attend_fused
from minineo.cache import Cache
from minineo.config import Config
from minineo.functional import ACTIVATION_FUNCTIONS
from minineo.recording import PatchValue, Recorder
from minineo.tokens import TokenInput, as_token_batch, positions_from_mask, validate_mask

if TYPE_CHECKING:
    from minineo.generate import KVCache
    from minineo.tokenizer import Tokenizer

Names = Union[None, str, Sequence[str], Callable[[str], bool]]


def affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight + bias with weight stored (in, out), as HF's Conv1D computes it (one addmm)."""
    flat = x.reshape(-1, x.shape[-1])
    out = torch.addmm(bias, flat, weight) if bias is not None else flat @ weight
    return out.view(*x.shape[:-1], weight.shape[-1])


class LayerNorm(nn.Module):
    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))

    def forward(self, x: torch.Tensor, rec: Recorder, prefix: str) -> torch.Tensor:
        scale_name, normalized_name = prefix + "scale", prefix + "normalized"
        if rec.wants(scale_name) or rec.wants(normalized_name):
            centred = x - x.mean(-1, keepdim=True)
            scale = rec(scale_name, (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())  # (batch, pos, 1)
            normalized = rec(normalized_name, centred / scale)  # (batch, pos, d_model)
            if scale_name in rec.patch or normalized_name in rec.patch:
                return normalized * self.w + self.b
        # F.layer_norm is exactly what HF computes; the parts above are only the record.
        return F.layer_norm(x, self.w.shape, self.w, self.b, self.eps)


class Attention(nn.Module):
    def __init__(self, config: Config, layer: int):
        super().__init__()
        self.config, self.layer = config, layer
        d_model, head, d_head = config.d_model, config.n_heads, config.d_head
        self.W_QKV = nn.Parameter(torch.zeros(d_model, 3 * head * d_head))
        self.b_QKV = nn.Parameter(torch.zeros(3 * head * d_head)) if config.qkv_bias else None
        self.W_O = nn.Parameter(torch.zeros(head, d_head, d_model))
        self.b_O = nn.Parameter(torch.zeros(d_model))

    def _qkv_view(self, index: int) -> torch.Tensor:
        head, d_head = self.config.n_heads, self.config.d_head
        return self.W_QKV.view(self.config.d_model, 3, head, d_head)[:, index].permute(1, 0, 2)

    @property
    def W_Q(self) -> torch.Tensor:  # (head, d_model, d_head), a view of W_QKV
        return self._qkv_view(0)

    @property
    def W_K(self) -> torch.Tensor:
        return self._qkv_view(1)

    @property
    def W_V(self) -> torch.Tensor:
        return self._qkv_view(2)

    def _bias_view(self, index: int) -> torch.Tensor:
        """(head, d_head); GPT-Neo has no q/k/v bias, so these are zeros there (not parameters)."""
        head, d_head = self.config.n_heads, self.config.d_head
        if self.b_QKV is None:
            return torch.zeros(head, d_head, dtype=self.W_QKV.dtype, device=self.W_QKV.device)
        return self.b_QKV.view(3, head, d_head)[index]

    @property
    def b_Q(self) -> torch.Tensor:
        return self._bias_view(0)

    @property
    def b_K(self) -> torch.Tensor:
        return self._bias_view(1)

    @property
    def b_V(self) -> torch.Tensor:
        return self._bias_view(2)

    def forward(
        self, x: torch.Tensor, rec: Recorder, mask: torch.Tensor | None, explicit: bool, kv: KVCache | None = None
    ) -> torch.Tensor:
        batch, pos, _ = x.shape
        cfg, p = self.config, f"blocks.{self.layer}.attn."
        qkv = affine(x, self.W_QKV, self.b_QKV).view(batch, pos, 3, cfg.n_heads, cfg.d_head)
        q, k, v = (rec(p + name, t) for name, t in zip("qkv", qkv.unbind(2)))  # each (batch, pos, head, d_head)
        if kv is not None:
            k, v = kv.update(self.layer, k, v)  # (batch, past + pos, head, d_head)
        scale, upcast = cfg.attn_scales[self.layer], cfg.upcast_attn
        if explicit or rec.wants(p + "scores") or rec.wants(p + "pattern"):
            z = attend_explicit(q, k, v, mask, scale, upcast, rec, p)
        else:
            z = attend_fused(q, k, v, mask, scale, upcast)
        z = rec(p + "z", z)  # (batch, pos, head, d_head)
        if rec.wants(p + "result"):
            result = rec(p + "result", torch.einsum("bphe,hed->bphd", z, self.W_O))  # (batch, pos, head, d_model)
            return result.sum(2) + self.b_O
        return affine(z.reshape(batch, pos, -1), self.W_O.view(-1, cfg.d_model), self.b_O)


class MLP(nn.Module):
    def __init__(self, config: Config, layer: int):
        super().__init__()
        self.layer, self.act = layer, ACTIVATION_FUNCTIONS[config.act_fn]
        self.W_in = nn.Parameter(torch.zeros(config.d_model, config.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(config.d_mlp))
        self.W_out = nn.Parameter(torch.zeros(config.d_mlp, config.d_model))
        self.b_out = nn.Parameter(torch.zeros(config.d_model))

    def forward(self, x: torch.Tensor, rec: Recorder) -> torch.Tensor:
        p = f"blocks.{self.layer}.mlp."
        pre = rec(p + "pre", affine(x, self.W_in, self.b_in))  # (batch, pos, d_mlp)
        post = rec(p + "post", self.act(pre))
        return affine(post, self.W_out, self.b_out)  # (batch, pos, d_model)


class Block(nn.Module):
    def __init__(self, config: Config, layer: int):
        super().__init__()
        self.layer = layer
        self.ln1 = LayerNorm(config.d_model, config.layer_norm_eps)
        self.attn = Attention(config, layer)
        self.ln2 = LayerNorm(config.d_model, config.layer_norm_eps)
        self.mlp = MLP(config, layer)

    def forward(
        self, x: torch.Tensor, rec: Recorder, mask: torch.Tensor | None, explicit: bool, kv: KVCache | None = None
    ) -> torch.Tensor:
        p = f"blocks.{self.layer}."
        resid_pre = rec(p + "resid_pre", x)
        attn_out = rec(p + "attn_out", self.attn(self.ln1(resid_pre, rec, p + "ln1."), rec, mask, explicit, kv))
        resid_mid = rec(p + "resid_mid", resid_pre + attn_out)
        mlp_out = rec(p + "mlp_out", self.mlp(self.ln2(resid_mid, rec, p + "ln2."), rec))
        return rec(p + "resid_post", resid_mid + mlp_out)


class Model(nn.Module):
    """A GPT-2 or GPT-Neo. `model(tokens)` gives logits; `run_with_cache` records named activations."""

    def __init__(self, config: Config, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.config, self.tokenizer = config, tokenizer
        self.W_E = nn.Parameter(torch.zeros(config.d_vocab, config.d_model))
        self.W_pos = nn.Parameter(torch.zeros(config.n_ctx, config.d_model))
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layers))
        self.ln_final = LayerNorm(config.d_model, config.layer_norm_eps)
        self.W_U_untied = None if config.tie_unembed else nn.Parameter(torch.zeros(config.d_model, config.d_vocab))

    @property
    def W_U(self) -> torch.Tensor:
        """(d_model, d_vocab); a view of W_E when the unembedding is tied."""
        return self.W_E.T if self.W_U_untied is None else self.W_U_untied

    # ---- the forward pass -------------------------------------------------------------------------

    def forward(
        self, tokens: TokenInput, *, patch: dict[str, PatchValue] | None = None,
        attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
        explicit: bool = False,
    ) -> torch.Tensor:
        """Logits (batch, pos, d_vocab). Records nothing; `patch` replaces named sites in place."""
        rec = Recorder(patch=self._resolve_patch(patch))
        return self._run(tokens, rec, attention_mask, position_ids, explicit)

    def run_with_cache(
        self, tokens: TokenInput, names: Names = None, *, patch: dict[str, PatchValue] | None = None,
        attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
        explicit: bool = False,
    ) -> tuple[torch.Tensor, Cache]:
        """(logits, Cache) with the named activations: all of them by default (`attn.result` only when named).

        `names` is a list of names, one name, or a predicate on names. Attention layers whose scores
        or pattern are not asked for still use the fused kernel unless `explicit=True`.
        """
        rec = Recorder(keep=self._resolve_names(names), patch=self._resolve_patch(patch))
        logits = self._run(tokens, rec, attention_mask, position_ids, explicit)
        W_O = [block.attn.W_O for block in self.blocks]
        return logits, Cache(rec.store, self.config, W_O, self.ln_final.w, self.ln_final.b)

    def _run(
        self, tokens: TokenInput, rec: Recorder, attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None, explicit: bool, kv: KVCache | None = None,
    ) -> torch.Tensor:
        if isinstance(tokens, str) or (isinstance(tokens, list) and tokens and isinstance(tokens[0], str)):
            tokens, text_mask = self._require_tokenizer().encode_batch(tokens, padding_side="left")
            attention_mask = text_mask if attention_mask is None else attention_mask
        device = self.W_E.device
        tokens = as_token_batch(tokens, self.config.d_vocab, device)  # (batch, pos)
        past = kv.length if kv is not None else 0
        if attention_mask is not None:
            attention_mask = validate_mask(attention_mask, tokens.shape, device, past)
        if position_ids is None:
            position_ids = (positions_from_mask(attention_mask)[:, past:] if attention_mask is not None
                            else torch.arange(past, past + tokens.shape[1], device=device)[None])
        position_ids = torch.as_tensor(position_ids, device=device)
        if past + tokens.shape[1] > self.config.n_ctx or int(position_ids.max()) >= self.config.n_ctx:
            raise ValueError(
                f"sequence of {past + tokens.shape[1]} positions is longer than the model's context "
                f"n_ctx={self.config.n_ctx}; truncate the input (e.g. tokens[:, -{self.config.n_ctx}:])"
            )
        embed = rec("embed", F.embedding(tokens, self.W_E))  # (batch, pos, d_model)
        pos_embed = rec("pos_embed", F.embedding(position_ids, self.W_pos).expand_as(embed))
        x = embed + pos_embed
        masks = self._masks(tokens.shape[1], past + tokens.shape[1], attention_mask, device)
        for block in self.blocks:
            x = block(x, rec, masks[self.config.windows[block.layer]], explicit, kv)
        x = self.ln_final(x, rec, "ln_final.")
        if kv is not None:
            kv.advance(tokens.shape[1])
        return rec("logits", F.linear(x, self.W_E) if self.W_U_untied is None else x @ self.W_U_untied)

    def _masks(
        self, q_len: int, k_len: int, key_mask: torch.Tensor | None, device: torch.device
    ) -> dict[int | None, torch.Tensor | None]:
        """One boolean mask per distinct window; None where plain causal attention is exact."""
        masks: dict[int | None, torch.Tensor | None] = {}
        k_index = torch.arange(k_len, device=device)
        for window in set(self.config.windows):
            plain = key_mask is None and (q_len == k_len or q_len == 1) and (window is None or k_len <= window)
            masks[window] = None if plain else allowed_keys(k_index[k_len - q_len:], k_index, window, key_mask)
        return masks

    # ---- names --------------------------------------------------------------------------------------

    def _resolve_names(self, names: Names) -> set[str]:
        if names is None:
            return set(sites.all_names(self.config))
        if callable(names):
            return {n for n in sites.all_names(self.config, include_on_request=True) if names(n)}
        if isinstance(names, str):
            names = [names]
        return {sites.resolve(n, self.config) for n in names}

    def _resolve_patch(self, patch: dict[str, PatchValue] | None) -> dict[str, PatchValue]:
        if not patch:
            return {}
        if not isinstance(patch, dict):
            raise TypeError("patch must be a dict {activation name: tensor or function(value) -> value}")
        return {sites.resolve(name, self.config): value for name, value in patch.items()}

    # ---- text ------------------------------------------------------------------------------------------

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError(
                "this model was loaded without a tokenizer (no tokenizer.json, or vocab.json + merges.txt, "
                "beside its weights); pass token ids instead of text"
            )
        return self.tokenizer

    def to_tokens(self, text: str | list[str], prepend_bos: bool = True, padding_side: str = "right") -> torch.Tensor:
        """LongTensor (batch, pos); a list of texts is padded with the pad (or end-of-text) token."""
        tokens, _ = self._require_tokenizer().encode_batch(text, prepend_bos=prepend_bos, padding_side=padding_side)
        return tokens.to(self.W_E.device)

    def to_str_tokens(self, tokens: str | torch.Tensor | Iterable[int], prepend_bos: bool = True) -> list[str]:
        """Each token as the string it stands for."""
        tokenizer = self._require_tokenizer()
        if isinstance(tokens, str):
            tokens = tokenizer.encode_batch(tokens, prepend_bos=prepend_bos)[0][0]
        ids = torch.as_tensor(tokens).flatten().tolist()
        return [tokenizer.decode([t]) for t in ids]

    def to_string(self, tokens: torch.Tensor | Iterable[int]) -> str | list[str]:
        """Text of a (pos,) sequence, or a list of texts for a (batch, pos) tensor."""
        tokenizer = self._require_tokenizer()
        tokens = torch.as_tensor(tokens)
        if tokens.ndim == 2:
            return [tokenizer.decode(row.tolist()) for row in tokens]
        return tokenizer.decode(tokens.tolist())

    def generate(self, tokens: TokenInput, max_new_tokens: int = 20, **kwargs) -> torch.Tensor:
        """Sample with a key/value cache; see minineo.generate.generate."""
        from minineo.generate import generate

        return generate(self, tokens, max_new_tokens=max_new_tokens, **kwargs)
