"""Model: embed -> blocks -> ln_final -> unembed, every named site recorded or patched in place.

Parameters use TransformerLens's names and shapes (see minineo.forward.blocks for the per-block ones).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from minineo import checks, report
from minineo.record import lazy_sites
from minineo.record import sites
from minineo.forward.attention import window_masks
from minineo.forward.blocks import Block, LayerNorm, affine
from minineo.record.cache import Cache
from minineo.config import Config, GenerationConfig
from minineo.errors import UserError, WrongTypeError
from minineo.forward.generate import MODEL_EOS, _ModelEos, generate
from minineo.forward.kv_cache import KVCache
from minineo.forward.loss import next_token_loss
from minineo.record.recording import PatchValue, Recorder
from minineo.checkpoints.tokens import TokenInput, as_token_batch, positions_from_mask, validate_mask, validate_positions

if TYPE_CHECKING:
    from minineo.checkpoints.tokenizer import Tokenizer

Names = Union[None, str, Sequence[str], Callable[[str], bool]]


class Model(nn.Module):
    """A GPT-2 or GPT-Neo. `model(tokens)` gives logits; `run_with_cache` records named activations."""

    @checks.typed
    def __init__(self, config: Config, tokenizer: Tokenizer | None = None):
        super().__init__()
        self.config, self.tokenizer = config, tokenizer
        self.generation_config = GenerationConfig.from_config(config)  # generate's defaults; load reads the folder's
        self.W_E = nn.Parameter(torch.zeros(config.d_vocab, config.d_model))
        self.W_pos = nn.Parameter(torch.zeros(config.n_ctx, config.d_model))
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layers))
        self.ln_final = LayerNorm(config.d_model, config.layer_norm_eps, config.ln_weights)
        self.W_U_untied = None if config.tie_unembed else nn.Parameter(torch.zeros(config.d_model, config.d_vocab))
        # GPT-2 and GPT-Neo have no unembedding bias; fold_ln creates one (model.processed)
        self.b_U = nn.Parameter(torch.zeros(config.d_vocab)) if config.unembed_bias else None
        self._compiled: Callable | None = None
        self._compiled_decode: Callable | None = None

    @property
    def W_U(self) -> torch.Tensor:
        """(d_model, d_vocab); a view of W_E when the unembedding is tied."""
        return self.W_E.T if self.W_U_untied is None else self.W_U_untied

    # ---- the forward pass -------------------------------------------------------------------------

    @checks.typed(own=("stop_at_layer",))  # _stop_layer: the range for a wrong type too
    def forward(
        self, tokens: TokenInput, *, patch: dict[str, PatchValue] | None = None,
        attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
        explicit: bool = False, stop_at_layer: int | None = None,
    ) -> torch.Tensor:
        """Logits (batch, pos, d_vocab). Records nothing; `patch` replaces named sites in place.

        `stop_at_layer=L` runs blocks 0..L-1 only and returns the residual `blocks.L.resid_pre`
        (batch, pos, d_model) instead (L = n_layers: the last resid_post, before ln_final; -1: before the last block).
        """
        stop = self._stop_layer(stop_at_layer)
        rec = Recorder(patch=self._check_reached(self._resolve_patch(patch), stop, stop_at_layer, "patch"))
        out = self._run(tokens, rec, attention_mask, position_ids, explicit, stop)
        rec.check_patches(out)
        return out

    @checks.typed(own=("stop_at_layer",))  # _stop_layer: the range for a wrong type too
    def run_with_cache(
        self, tokens: TokenInput, names: Names = None, *, patch: dict[str, PatchValue] | None = None,
        attention_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
        explicit: bool = False, stop_at_layer: int | None = None,
    ) -> tuple[torch.Tensor, Cache]:
        """(logits, Cache) with the named activations: all of them by default (`attn.result` only when named).

        `names` is a list of names, one name, or a predicate on names. Every attention layer uses the
        fused kernel unless `explicit=True` or its scores/pattern are patched: patterns, scores, normalised
        residuals, resid_mid and mlp.post are computed on access, bit-identically (minineo.record.lazy_sites). With
        `stop_at_layer` (see `forward`) the residual replaces the logits and only the sites that ran are recorded:
        names=None or a predicate keeps what ran; names listed explicitly (and patches) at sites that never run
        before that layer are a UserError.
        """
        stop = self._stop_layer(stop_at_layer)
        keep = self._resolve_names(names)
        if names is not None and not callable(names):
            self._check_reached(keep, stop, stop_at_layer, "names")
        patch = self._check_reached(self._resolve_patch(patch), stop, stop_at_layer, "patch")
        rec, lazy, helpers = self._recorder(keep, patch)
        logits = self._run(tokens, rec, attention_mask, position_ids, explicit, stop)
        rec.check_patches(logits)
        return logits, self._cache(rec, lazy, helpers)

    @checks.typed
    def loss(
        self, tokens: TokenInput, *, attention_mask: torch.Tensor | None = None,
        patch: dict[str, PatchValue] | None = None, per_token: bool = False,
    ) -> torch.Tensor:
        """Next-token cross-entropy in nats: the mean over predicted positions of real tokens (a scalar).

        Position j's logits predict token j + 1, as in HF's `model(input_ids, labels=input_ids).loss` and
        TransformerLens's `return_type="loss"`; a prediction counts when the tokens at j and j + 1 are both
        real (mask 1), so a left-padded row has the loss of the unpadded one, and a batch's loss is the mean
        over all its counted predictions. `per_token=True`: (batch, pos - 1), 0 at uncounted positions.
        `patch` as for `forward`; with nothing patched it runs on the fast path. See minineo.forward.loss.
        """
        tokens, attention_mask = self.token_batch(tokens, attention_mask)
        if tokens.shape[1] < 2:
            raise UserError(f"the loss needs at least 2 positions (a token and the next one to predict), got "
                            f"{tokens.shape[1]}; give a longer sequence")
        if attention_mask is not None and not bool((attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()).any()):
            raise UserError("attention_mask leaves no two adjacent real tokens, so there is nothing to predict; "
                            "check the mask (1 = real token, 0 = pad)")
        logits = self(tokens, attention_mask=attention_mask, patch=patch)  # (batch, pos, d_vocab)
        return next_token_loss(logits, tokens, attention_mask, per_token)

    def _recorder(
        self, keep: set[str], patch: dict[str, PatchValue], stored_anyway: frozenset[str] = frozenset(),
    ) -> tuple[Recorder, set[str], set[str]]:
        """A Recorder for `keep`, and which of those names the Cache computes on access (minineo.record.lazy_sites).

        attn.scores and attn.pattern are recomputed from the recorded q and k, so their layers stay on the
        fused kernel; normalised residuals, resid_mid and mlp.post from their inputs. A patched site (or
        one computed from a patched site, like a pattern from patched scores) is kept as patched; a patched
        score or pattern forces the explicit path for its layer.
        """
        stored, lazy, helpers = lazy_sites.plan(keep, patch, self.config, stored_anyway)
        rec = Recorder(keep=stored, patch=patch, exact=lazy_sites.forward_exact(lazy, self.config))
        return rec, lazy, helpers

    def _cache(self, rec: Recorder, lazy: set[str] = frozenset(), helpers: set[str] = frozenset()) -> Cache:
        W_O = [block.attn.W_O for block in self.blocks]
        masks = [rec.attention_masks.get(window) for window in self.config.windows]
        return Cache(rec.store, self.config, W_O, self.ln_final.w, self.ln_final.b, key_mask=rec.key_mask,
                     lazy=lazy, attention_masks=masks, unlisted=helpers, model=self.identity())

    def identity(self) -> str:
        """Who this model is, cheaply: its name (as given to minineo.load) and a fingerprint of its weights (sha256 of
        ~1000 evenly spaced values of every parameter: ~10 ms at GPT-2 size, where a pass over every weight takes
        seconds), so that two models of one shape tell apart. Recomputed only after a weight changes (torch counts
        in-place writes in `_version`); an in-place edit between sampled values is not seen."""
        import hashlib

        tensors = list(self.parameters())
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if getattr(self, "_identity", (None,))[0] != key:
            with torch.no_grad():
                samples = [t.reshape(-1)[::max(1, t.numel() // 1024)][:1024].to(torch.float32) for t in tensors]
                values = torch.cat(samples).cpu().numpy()
            self._identity = (key, hashlib.sha256(values.tobytes()).hexdigest()[:12])
        name = getattr(self, "name", None) or "an unnamed model"
        return f"{name} (weights {self._identity[1]})"

    def _run(
        self, tokens: TokenInput, rec: Recorder, attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None, explicit: bool, stop_at_layer: int | None = None,
    ) -> torch.Tensor:
        tokens, attention_mask, position_ids = self._prepare(tokens, attention_mask, position_ids)
        rec.key_mask = attention_mask  # (batch, pos) or None: the Cache hands it on with its (batch, pos, ...) sites
        if rec.idle and not explicit and stop_at_layer is None and self._compiled is not None:
            try:
                return self._compiled(tokens, position_ids, attention_mask)
            except Exception as err:  # a compiler failure must never cost the user their forward pass
                report.warn(f"torch.compile failed ({type(err).__name__}: {err}); running eagerly from now on")
                self._compiled = None
        return self._core(tokens, position_ids, attention_mask, rec, explicit, stop_at_layer)

    def _stop_layer(self, stop_at_layer: int | None) -> int | None:
        """stop_at_layer validated and made non-negative (TransformerLens's meaning: -1 stops before the last block)."""
        if stop_at_layer is None:
            return None
        return checks.layer_boundary(stop_at_layer, self.config.n_layers, "stop_at_layer")

    def _check_reached(self, names, stop: int | None, stop_at_layer: int | None, what: str):
        """`names` (canonical site names, or a patch dict keyed by them) unchanged, or a UserError naming those a
        forward stopped before block `stop` never computes (blocks stop.. and everything after them)."""
        if stop is None or not names:
            return names
        def runs(name: str) -> bool:
            return int(name.split(".")[1]) < stop if name.startswith("blocks.") else name in ("embed", "pos_embed")
        order = sites.all_names(self.config, include_on_request=True)
        missed = sorted((name for name in names if not runs(name)), key=order.index)
        if missed:
            ran = f"blocks 0..{stop - 1} run" if stop > 0 else "no block runs"
            effect = "they would never be recorded" if what == "names" else "their patches would never be applied"
            raise UserError(f"{what}: {missed} never run with stop_at_layer={stop_at_layer} ({ran}, then "
                            f"blocks.{stop}.resid_pre is returned), so {effect}; drop them, or stop at a later "
                            f"layer (stop_at_layer=None runs to the logits)")
        return names

    @checks.typed
    def token_batch(
        self, tokens: TokenInput, attention_mask: torch.Tensor | None = None, name: str = "tokens",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validated (tokens (batch, pos), attention_mask (batch, pos) or None) on the model's device.

        `name` is the argument's name in messages (e.g. "clean_tokens"). Text is tokenized and left-padded with its mask; a padded `to_tokens` batch brings its own mask.
        """
        if isinstance(tokens, str) or (isinstance(tokens, list) and tokens and isinstance(tokens[0], str)):
            tokens, text_mask = self._require_tokenizer().encode_batch(tokens, padding_side="left")
            attention_mask = text_mask if attention_mask is None else attention_mask
        if attention_mask is None and isinstance(tokens, torch.Tensor):
            attention_mask = getattr(tokens, "attention_mask", None)  # set by to_tokens on a padded batch
        device = self.W_E.device
        tokens = as_token_batch(tokens, self.config.d_vocab, device, name)  # (batch, pos)
        if attention_mask is not None:
            attention_mask = validate_mask(attention_mask, tokens.shape, device)
        return tokens, attention_mask

    def _prepare(
        self, tokens: TokenInput, attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None,
        name: str = "tokens",
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Validated (tokens, attention_mask, position_ids) on the model's device; text goes through the tokenizer."""
        tokens, attention_mask = self.token_batch(tokens, attention_mask, name)
        device = self.W_E.device
        if position_ids is None:
            position_ids = (positions_from_mask(attention_mask) if attention_mask is not None
                            else torch.arange(tokens.shape[1], device=device)[None])
        if tokens.shape[1] > self.config.n_ctx:
            raise UserError(
                f"{name}: a sequence of {tokens.shape[1]} positions is longer than the model's context "
                f"n_ctx={self.config.n_ctx}; truncate the input (e.g. tokens[:, -{self.config.n_ctx}:])"
            )
        position_ids = validate_positions(position_ids, tokens.shape, self.config.n_ctx, device)
        return tokens, attention_mask, position_ids

    def _core(
        self, tokens: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
        rec: Recorder | None = None, explicit: bool = False, stop_at_layer: int | None = None,
    ) -> torch.Tensor:
        """The forward pass proper, on validated inputs. Returns logits (batch, pos, d_vocab), or with
        `stop_at_layer` (0..n_layers) the residual before that block (batch, pos, d_model)."""
        rec = rec if rec is not None else Recorder()
        embed = rec("embed", F.embedding(tokens, self.W_E))  # (batch, pos, d_model)
        pos_embed = rec("pos_embed", F.embedding(position_ids, self.W_pos).expand_as(embed))
        masks = self._masks(tokens.shape[1], tokens.shape[1], attention_mask, tokens.device)
        x = self._blocks(embed + pos_embed, 0, rec, masks, explicit, None, stop_at_layer)
        return x if stop_at_layer is not None else self._unembed(x, rec)

    def _blocks(
        self, x: torch.Tensor, start: int, rec: Recorder, masks: dict[int | None, torch.Tensor | None],
        explicit: bool, kv: KVCache | None, stop: int | None = None,
    ) -> torch.Tensor:
        """Blocks start..stop-1 (default: to the last) on the residual x (batch, pos, d_model); returns their last resid_post."""
        rec.attention_masks = masks  # the Cache recomputes attn.scores with them
        for block in self.blocks[start:stop]:
            x = block(x, rec, masks[self.config.windows[block.layer]], explicit, kv)
        return x

    def _unembed(self, x: torch.Tensor, rec: Recorder) -> torch.Tensor:
        """ln_final then W_U: logits (..., d_vocab) from the final residual (..., d_model)."""
        x = rec("unembed.in", self.ln_final(x, rec, "ln_final."))  # (..., d_model)
        if self.W_U_untied is None:
            return rec("logits", F.linear(x, self.W_E, self.b_U))
        return rec("logits", x @ self.W_U_untied if self.b_U is None else affine(x, self.W_U_untied, self.b_U))

    @checks.typed(own=("stop_at_layer",))  # _stop_layer: the range for a wrong type too
    def run_from(
        self, layer: int, resid_pre: torch.Tensor, *, patch: dict[str, PatchValue] | None = None,
        names: Names | bool = False, attention_mask: torch.Tensor | None = None, explicit: bool = False,
        kv: KVCache | None = None, logits_at: torch.Tensor | None = None, stop_at_layer: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Cache]:
        """Continue the forward pass at block `layer` from `resid_pre` (batch, pos, d_model).

        The same block loop as `forward`: `run_from(L, cache[f"blocks.{L}.resid_pre"])` equals `model(tokens)`
        (positions enter only through pos_embed, already in the residual). Returns logits (batch, pos, d_vocab),
        or (logits, Cache) when `names` is given (True: every site from `layer` on). `attention_mask`
        (batch, past + pos) as for `forward`; `kv` holds keys/values of earlier positions (then resid_pre
        holds only the later positions, as in generation). `logits_at`, a (batch, pos) bool mask, unembeds
        only those positions: logits (selected, d_vocab) in row-major order. `stop_at_layer` (as for `forward`,
        after `layer`) runs blocks layer..stop_at_layer-1 and returns that residual instead of logits.
        A residual read from the Cache of a padded batch carries that run's mask (`.attention_mask`, as a padded
        `to_tokens` batch does), used when no `attention_mask` and no `kv` are given; slicing drops it.
        """
        carried = getattr(resid_pre, "attention_mask", None) if attention_mask is None and kv is None else None
        n_layers = self.config.n_layers
        fix = f"this model has layers 0..{n_layers - 1} (or -{n_layers}..-1 counting from the end)"
        if checks.is_integer(layer) and not isinstance(layer, bool) and int(layer) < 0:  # TransformerLens's: -1 is the last
            layer = checks.integer(layer, "run_from: layer", low=-n_layers, high=-1, fix=fix) + n_layers
        layer = checks.layer(layer, n_layers, "run_from: layer", fix=fix)
        resid_pre = checks.tensor(resid_pre, f"run_from: resid_pre (pass a cached blocks.{layer}.resid_pre)",
                                  (None, None, self.config.d_model), dtype=self.W_E.dtype, cast=True,
                                  dims="(batch, pos, d_model)")
        stop = self._stop_layer(stop_at_layer)
        if stop is not None and stop <= layer:
            raise UserError(f"run_from: stop_at_layer={stop_at_layer} is not after the start layer {layer}")
        batch, pos, _ = resid_pre.shape
        if isinstance(carried, torch.Tensor) and tuple(carried.shape) == (batch, pos):
            attention_mask = carried  # the mask of the run the residual was recorded in
        past = kv.length if kv is not None else 0
        if kv is not None and past + pos > kv.max_len:
            raise UserError(f"run_from: the key/value cache holds max_len={kv.max_len} positions; {past} are used and "
                            f"resid_pre's {pos} more do not fit: make it larger (model.kv_cache(batch, {past + pos}))")
        if attention_mask is not None:
            attention_mask = validate_mask(attention_mask, torch.Size((batch, pos)), resid_pre.device, past)
        record = names is not False and names is not None
        keep = self._resolve_names(None if names is True else names) if record else set()
        # with logits_at, ln_final sees only the selected positions: its parts cannot come from resid_post
        final = frozenset({"ln_final.normalized"}) if logits_at is not None else frozenset()
        rec, lazy, helpers = self._recorder(keep, self._resolve_patch(patch), final)
        masks = self._masks(pos, past + pos, attention_mask, resid_pre.device)
        x = self._blocks(resid_pre, layer, rec, masks, explicit, kv, stop)  # (batch, pos, d_model)
        logits = x if stop is not None else self._unembed(x if logits_at is None else x[logits_at], rec)
        rec.check_patches(logits)
        if kv is not None:
            kv.advance(pos)
        return (logits, self._cache(rec, lazy, helpers)) if record else logits

    def compile_fast_path(self, mode: str | None = None) -> Model:
        """Run `model(tokens)` (nothing recorded or patched) and the decode step under torch.compile.

        On CUDA the default mode is "reduce-overhead" (CUDA graphs); the decode step then runs on a
        static-shape key/value cache (see `kv_cache`). A compiler failure falls back to eager
        execution with a warning.
        """
        mode = mode or ("reduce-overhead" if self.W_E.is_cuda else None)
        self._compiled = torch.compile(self._core, mode=mode)
        self._compiled_decode = torch.compile(self._decode_core, mode=mode, dynamic=False)
        return self

    @checks.typed
    def processed(
        self, *, fold_ln: bool = True, center_writing_weights: bool = True, center_unembed: bool = True,
        fold_value_biases: bool = True,
    ) -> Model:
        """A new Model with TransformerLens's processed weights (its `from_pretrained` defaults); this one is unchanged.

        log_softmax(logits) is the same (the logits themselves too with `center_unembed=False`); the
        residual stream loses its mean over d_model. See minineo.forward.processing for the definitions.
        """
        from minineo.forward.processing import processed

        return processed(self, fold_ln=fold_ln, center_writing_weights=center_writing_weights,
                         center_unembed=center_unembed, fold_value_biases=fold_value_biases)

    # ---- decoding with a key/value cache --------------------------------------------------------------

    @checks.typed
    def kv_cache(self, batch: int, max_len: int, static: bool | None = None) -> KVCache:
        """An empty key/value cache for `decode`; static shapes (CUDA-graph friendly) by default when compiled."""
        batch, max_len = checks.count(batch, "batch"), checks.count(max_len, "max_len")
        static = self._compiled_decode is not None if static is None else static
        return KVCache(self.config, batch, max_len, device=self.W_E.device, dtype=self.W_E.dtype, static=static)

    def decode(
        self, tokens: torch.Tensor, kv: KVCache, position_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Continue the sequence held in `kv` by `tokens` (batch, n) at `position_ids` (batch, n).

        Their keys and values are written into `kv`; returns the logits of the last position (batch, d_vocab).
        `attention_mask` (batch, n) marks padding among these tokens. For speed (generate calls this every token)
        only the shapes are checked, O(1) comparisons with no device sync: tokens (batch, n) of the cache's batch,
        position_ids (batch or 1, n), attention_mask (batch, n), and that n more positions fit in the cache's
        max_len; the values (token ids below d_vocab, positions below n_ctx) are trusted.
        """
        if not (isinstance(tokens, torch.Tensor) and isinstance(position_ids, torch.Tensor) and tokens.dim() == 2
                and position_ids.dim() == 2 and position_ids.shape[1] == tokens.shape[1]
                and tokens.shape[0] == kv.key_mask.shape[0] and position_ids.shape[0] in (1, tokens.shape[0])
                and (attention_mask is None or attention_mask.shape == tokens.shape)):
            self._decode_shape_error(tokens, kv, position_ids, attention_mask)
        masks = kv.masks(tokens.shape[1], attention_mask)
        if kv.static and self._compiled_decode is not None:
            try:
                if tokens.is_cuda:  # each step is a new CUDA-graph replay: the last step's logits are consumed
                    torch.compiler.cudagraph_mark_step_begin()
                logits = self._compiled_decode(tokens, position_ids, masks, kv)
            except Exception as err:  # a compiler failure must never cost the user their generation
                report.warn(f"torch.compile failed ({type(err).__name__}: {err}); decoding eagerly from now on")
                self._compiled_decode = None
                logits = self._decode_core(tokens, position_ids, masks, kv)
        else:
            logits = self._decode_core(tokens, position_ids, masks, kv)
        kv.advance(tokens.shape[1])
        return logits

    def _decode_shape_error(self, tokens, kv: KVCache, position_ids, attention_mask) -> None:
        """The UserError for decode's inputs of the wrong shapes (the check itself stays inline, cheap)."""
        batch = kv.key_mask.shape[0]
        for name, value in (("tokens", tokens), ("position_ids", position_ids)):
            if not isinstance(value, torch.Tensor) or value.dim() != 2:
                raise UserError(f"decode: {name} must be a (batch, n) tensor, got {checks.describe(value)}; e.g. "
                                f"tokens[:, -1:] and position_ids of the same shape")
        if tokens.shape[0] != batch:
            raise UserError(f"decode: tokens {tuple(tokens.shape)} have {tokens.shape[0]} rows but the key/value cache "
                            f"was made for batch={batch}; make it with model.kv_cache({tokens.shape[0]}, max_len)")
        if position_ids.shape[1] != tokens.shape[1] or position_ids.shape[0] not in (1, tokens.shape[0]):
            raise UserError(f"decode: position_ids {tuple(position_ids.shape)} do not match tokens "
                            f"{tuple(tokens.shape)}; give one position per token, (batch or 1, {tokens.shape[1]}), "
                            f"e.g. torch.arange(past, past + {tokens.shape[1]})[None]")
        raise UserError(f"decode: attention_mask {checks.describe(attention_mask)} does not match tokens "
                        f"{tuple(tokens.shape)}; give one (batch, n) mask of 1 (real) and 0 (padding), or None")

    def _decode_core(
        self, tokens: torch.Tensor, position_ids: torch.Tensor, masks: dict[int | None, torch.Tensor | None], kv: KVCache,
    ) -> torch.Tensor:
        x = F.embedding(tokens, self.W_E) + F.embedding(position_ids, self.W_pos)  # (batch, n, d_model)
        x = self._blocks(x, 0, Recorder(), masks, False, kv)
        x = self.ln_final(x[:, -1], Recorder(), "ln_final.")  # (batch, d_model): only the last position is unembedded
        if self.W_U_untied is not None:
            return x @ self.W_U_untied if self.b_U is None else torch.addmm(self.b_U, x, self.W_U_untied)  # (batch, d_vocab)
        if self.b_U is not None:
            return F.linear(x, self.W_E, self.b_U)
        # W_E (d_vocab, d_model) times x's columns: on CPU ~2x faster than F.linear(x, W_E) for the few rows
        # of a decode step (8 rows: 19 vs 42 ms at GPT-2 size; benchmarks/README.md), the same products.
        return torch.mm(self.W_E, x.T).T.contiguous()  # (batch, d_vocab)

    def _masks(
        self, q_len: int, k_len: int, key_mask: torch.Tensor | None, device: torch.device
    ) -> dict[int | None, torch.Tensor | None]:
        """One boolean mask per distinct window; None where plain causal attention is exact."""
        return window_masks(q_len, k_len, self.config.windows, key_mask, device)

    # ---- names --------------------------------------------------------------------------------------

    def _resolve_names(self, names: Names) -> set[str]:
        if names is None:
            return set(sites.all_names(self.config))
        if callable(names):
            return {n for n in sites.all_names(self.config, include_on_request=True) if names(n)}
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, Iterable):
            raise WrongTypeError(f"names must be an activation name, a list of them or a function name -> bool, got "
                                 f"{checks.describe(names)}")
        try:
            return {sites.resolve(n, self.config) for n in names}
        except UserError as err:
            raise type(err)(f"names: {err}") from None

    def _resolve_patch(self, patch: dict[str, PatchValue] | None) -> dict[str, PatchValue]:
        if not patch:
            return {}
        if not isinstance(patch, dict):
            raise WrongTypeError(f"patch must be a dict {{activation name: tensor or function(value) -> value}}, got "
                                 f"{checks.describe(patch)}; e.g. patch={{'blocks.0.attn.z': lambda z: z * 0}}")
        for name, value in patch.items():
            if not (isinstance(value, torch.Tensor) or callable(value)):
                raise UserError(
                    f"patch value for {name!r} is a {type(value).__name__} ({value!r}); give a tensor of the site's "
                    f"shape or a function of the site's value, e.g. patch={{{name!r}: lambda x: x * 0}} to zero it"
                )
        return {sites.resolve(name, self.config): value for name, value in patch.items()}

    # ---- text ------------------------------------------------------------------------------------------

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            source = getattr(self, "source", None)
            raise UserError(
                f"the model {'from ' + source + ' ' if source else ''}has no tokenizer (no tokenizer.json, or "
                "vocab.json + merges.txt, beside its weights), so it cannot read text; put the tokenizer files "
                "in its folder, or pass token ids instead of text"
            )
        return self.tokenizer

    @checks.typed
    def to_tokens(self, text: str | list[str], prepend_bos: bool = True, padding_side: str = "left") -> torch.Tensor:
        """LongTensor (batch, pos); a list of texts is left-padded with the pad (or end-of-text) token.

        A padded batch carries its 0/1 mask as `tokens.attention_mask`, which `model(tokens)`,
        `run_with_cache` and `generate` use when no `attention_mask` is given, so each row's logits
        equal those of the row alone. The attribute does not survive slicing or `.to()`: pass
        `attention_mask=` yourself then. Left padding keeps every row's last token at position -1.
        """
        tokens, mask = self._require_tokenizer().encode_batch(text, prepend_bos=prepend_bos, padding_side=padding_side)
        tokens = tokens.to(self.W_E.device)
        if not bool(mask.all()):
            tokens.attention_mask = mask.to(self.W_E.device)
        return tokens

    @checks.typed
    def to_str_tokens(
        self, tokens: str | torch.Tensor | Iterable[int], prepend_bos: bool = True
    ) -> list[str] | list[list[str]]:
        """Each token as the string it stands for; a (batch, pos) tensor gives one list per row."""
        tokenizer = self._require_tokenizer()
        if isinstance(tokens, str):
            tokens = tokenizer.encode_batch(tokens, prepend_bos=prepend_bos)[0][0]
        ids = self._ids(tokens)
        if ids.ndim == 2:
            return [[tokenizer.decode([t]) for t in row] for row in ids.tolist()]
        return [tokenizer.decode([t]) for t in ids.flatten().tolist()]

    @checks.typed
    def to_string(self, tokens: torch.Tensor | Iterable[int]) -> str | list[str]:
        """Text of a (pos,) sequence, or a list of texts for a (batch, pos) tensor."""
        tokenizer = self._require_tokenizer()
        tokens = self._ids(tokens)
        if tokens.ndim == 2:
            return [tokenizer.decode(row.tolist()) for row in tokens]
        return tokenizer.decode(tokens.tolist())

    def _ids(self, tokens) -> torch.Tensor:
        """Token ids to decode, checked (as_token_batch), with their own shape: (pos,) or (batch, pos)."""
        one_row = not isinstance(tokens, torch.Tensor) or tokens.ndim == 1
        if isinstance(tokens, Iterable) and not isinstance(tokens, (torch.Tensor, list, tuple, str)):
            tokens = list(tokens)
        ids = as_token_batch(tokens, self.config.d_vocab, torch.device("cpu"))
        return ids[0] if one_row and ids.shape[0] == 1 and not (isinstance(tokens, list) and tokens
                                                                and isinstance(tokens[0], (list, tuple))) else ids

    @checks.typed(own=("eos_token_id", "pad_token_id"))  # generate's messages: the accepted kinds and the vocabulary
    def generate(
        self, tokens: TokenInput, max_new_tokens: int = 20, *, temperature: float = 1.0, top_k: int | None = None,
        do_sample: bool = False, attention_mask: torch.Tensor | None = None,
        eos_token_id: int | Sequence[int] | torch.Tensor | None | _ModelEos = MODEL_EOS,
        pad_token_id: int | None = None, generator: torch.Generator | None = None, static: bool | None = None,
    ) -> torch.Tensor:
        """Greedy decoding (or sampling with `do_sample=True`) with a key/value cache: prompt plus new tokens,
        (batch, pos + new). The arguments are spelled out (not **kwargs) so that their types are checked and the
        fuzz harness sees them; see minineo.forward.generate.generate for what each does."""
        return generate(self, tokens, max_new_tokens, temperature=temperature, top_k=top_k, do_sample=do_sample,
                        attention_mask=attention_mask, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                        generator=generator, static=static)
