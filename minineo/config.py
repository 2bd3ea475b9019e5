"""Config: the one place that knows HuggingFace's config.json field names.

GPT-2 and GPT-Neo differences are resolved here into plain per-layer values
(attention scale, window, q/k/v bias), so the forward pass never asks which
architecture it is running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from minineo import checks
from minineo.errors import UserError

ACTIVATIONS = ("gelu_new", "gelu", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish", "tanh")

# Fields that do not change the inference math (dropout, init, tokens, bookkeeping).
_IGNORED_COMMON = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "task_specific_params",
    "_name_or_path", "id2label", "label2id", "tokenizer_class", "return_dict", "output_hidden_states",
    "output_attentions", "torchscript", "is_decoder", "is_encoder_decoder", "problem_type",
    "chunk_size_feed_forward", "gradient_checkpointing", "classifier_dropout", "summary_type",
    "summary_use_proj", "summary_activation", "summary_proj_to_labels", "summary_first_dropout",
    "n_ctx", "prefix", "decoder_start_token_id", "tie_word_embeddings", "num_labels", "finetuning_task", "max_length", "do_sample", "temperature",
    "tf_legacy_loss", "use_bfloat16", "pruned_heads", "add_cross_attention", "cross_attention_hidden_size",
    "chunk_size", "output_scores", "return_dict_in_generate", "attn_implementation",
    "text_config", "_attn_implementation_autoset",
}
_IGNORED_GPT2 = {"resid_pdrop", "embd_pdrop", "attn_pdrop"}
_IGNORED_NEO = {"resid_dropout", "embed_dropout", "attention_dropout", "gradient_checkpointing"}


@dataclass(frozen=True)
class Config:
    """Model hyper-parameters. Build with `Config.from_hf(config_json_dict)`."""

    architecture: str  # "gpt2" or "gpt_neo" (informational: the forward never branches on it)
    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    n_ctx: int
    d_vocab: int
    act_fn: str = "gelu_new"
    layer_norm_eps: float = 1e-5
    attn_scales: tuple[float, ...] = ()  # per layer: multiplies q.k (GPT-2 1/sqrt(d_head), GPT-Neo 1.0)
    windows: tuple[int | None, ...] = ()  # per layer: None = global, W = sees keys i-W < j <= i
    qkv_bias: bool = True  # GPT-Neo's q/k/v projections have no bias
    upcast_attn: bool = False  # compute q.k and softmax in float32 (GPT-Neo always; GPT-2 with reorder_and_upcast_attn)
    # the fast path's attention by HF eager's operations, not SDPA's fused kernel (GPT-Neo: HF runs only eager
    # attention, so this keeps the fast path HF float32 bit for bit; tests/test_fast_path_precision.py)
    eager_attention: bool = False
    tie_unembed: bool = True  # W_U is W_E.T
    ln_weights: bool = True  # LayerNorms have a weight w and bias b (False after fold_ln: TransformerLens's LNPre)
    unembed_bias: bool = False  # the logits add b_U (d_vocab,): fold_ln creates it from ln_final's bias
    bos_token_id: int | None = None
    eos_token_id: int | None = None  # the first, when config.json lists several
    eos_token_ids: tuple[int, ...] = ()  # every id config.json lists as eos_token_id (generate stops on any)
    pad_token_id: int | None = None  # generate's filler for finished rows (None: the eos id, as in HF)

    def __post_init__(self) -> None:
        checks.fields(self)
        for name in ("d_model", "n_layers", "n_heads", "d_mlp", "n_ctx", "d_vocab"):
            checks.count(getattr(self, name), name)
        checks.number(self.layer_norm_eps, "layer_norm_eps", low=0, low_open=True)
        if self.d_model % self.n_heads:
            raise UserError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.act_fn not in ACTIVATIONS:
            raise UserError(f"act_fn: activation_function {self.act_fn!r} is not supported; use one of {ACTIVATIONS}")
        if not self.attn_scales:
            object.__setattr__(self, "attn_scales", (1 / math.sqrt(self.d_head),) * self.n_layers)
        if not self.windows:
            object.__setattr__(self, "windows", (None,) * self.n_layers)
        if len(self.attn_scales) != self.n_layers or len(self.windows) != self.n_layers:
            raise UserError(f"attn_scales and windows need one entry per layer (n_layers={self.n_layers}), got "
                            f"{len(self.attn_scales)} and {len(self.windows)}")
        for scale in self.attn_scales:
            checks.number(scale, "attn_scales item", low=0, low_open=True)
        for w in self.windows:
            if w is not None:
                checks.integer(w, "windows item (window_size)", low=1)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    @checks.typed
    def from_hf(cls, hf: dict[str, Any]) -> Config:
        """Build from a HuggingFace config.json dict (`model_type` "gpt2" or "gpt_neo")."""
        model_type = hf.get("model_type")
        if model_type == "gpt2":
            return _from_gpt2(hf)
        if model_type == "gpt_neo":
            return _from_gpt_neo(hf)
        raise UserError(
            f"unsupported model_type {model_type!r} in config.json: minineo implements 'gpt2' and 'gpt_neo'"
        )

    @checks.typed
    def to_hf(self) -> dict[str, Any]:
        """The config.json dict HF would write for this model (gpt_neo or gpt2), dropout 0 (minineo has none,
        and the zoo models were trained without: GPT-2's HF default of 0.1 would apply in HF's train mode)."""
        common = {"vocab_size": self.d_vocab, "activation_function": self.act_fn,
                  "layer_norm_epsilon": self.layer_norm_eps, "tie_word_embeddings": self.tie_unembed,
                  "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id}
        if len(self.eos_token_ids) > 1:  # HF's config holds the whole list; one id stays an int
            common["eos_token_id"] = list(self.eos_token_ids)
        if self.pad_token_id is not None:
            common["pad_token_id"] = self.pad_token_id
        if self.architecture == "gpt_neo":
            kinds = ["global" if w is None else "local" for w in self.windows]
            window = next((w for w in self.windows if w is not None), 256)
            return {"model_type": "gpt_neo", "architectures": ["GPTNeoForCausalLM"], "hidden_size": self.d_model,
                    "num_layers": self.n_layers, "num_heads": self.n_heads, "intermediate_size": self.d_mlp,
                    "max_position_embeddings": self.n_ctx, "window_size": window,
                    "attention_types": [[[k], 1] for k in kinds], "attention_layers": kinds,
                    "embed_dropout": 0.0, "attention_dropout": 0.0, "resid_dropout": 0.0, **common}
        return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": self.d_model,
                "n_layer": self.n_layers, "n_head": self.n_heads, "n_inner": self.d_mlp,
                "n_positions": self.n_ctx, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0, **common}


def _check_known(hf: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(hf) - known - _IGNORED_COMMON)
    if unknown:
        raise UserError(
            f"config.json has fields minineo does not know how to honour: {unknown}. "
            "If they do not change the forward pass, add them to the ignored set in minineo/config.py."
        )


def _int(hf: dict[str, Any], key: str) -> int:
    """A size field of config.json: a whole number >= 1 (a bool or 12.0 is refused, naming the field)."""
    return checks.json_integer(hf, key, "config.json", low=1)


def _eps(hf: dict[str, Any]) -> float:
    return checks.json_number(hf, "layer_norm_epsilon", "config.json", low=0, low_open=True, default=1e-5)


def _activation(hf: dict[str, Any]) -> str:
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise UserError(f"config.json activation_function {act!r} is not supported; use one of {ACTIVATIONS}")
    return act


def _from_gpt2(hf: dict[str, Any]) -> Config:
    _check_known(hf, {"vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
                      "layer_norm_epsilon", "scale_attn_weights", "scale_attn_by_inverse_layer_idx",
                      "reorder_and_upcast_attn"} | _IGNORED_GPT2)
    if hf.get("add_cross_attention"):
        raise UserError("config.json add_cross_attention=true (an encoder-decoder GPT-2) is not supported")
    d_model, n_layers, n_heads = _int(hf, "n_embd"), _int(hf, "n_layer"), _int(hf, "n_head")
    if d_model % n_heads:
        raise UserError(f"n_embd={d_model} is not divisible by n_head={n_heads}")
    base = (d_model // n_heads) ** -0.5 if hf.get("scale_attn_weights", True) else 1.0
    inverse = bool(hf.get("scale_attn_by_inverse_layer_idx", False))
    scales = tuple(base / (layer + 1) if inverse else base for layer in range(n_layers))
    return Config(
        architecture="gpt2", d_model=d_model, n_layers=n_layers, n_heads=n_heads,
        d_mlp=hf.get("n_inner") or 4 * d_model, n_ctx=_int(hf, "n_positions"), d_vocab=_int(hf, "vocab_size"),
        act_fn=_activation(hf), layer_norm_eps=_eps(hf),
        attn_scales=scales, qkv_bias=True, upcast_attn=bool(hf.get("reorder_and_upcast_attn", False)),
        tie_unembed=bool(hf.get("tie_word_embeddings", True)),
        bos_token_id=hf.get("bos_token_id"), eos_token_id=_first(hf.get("eos_token_id")),
        eos_token_ids=_all(hf.get("eos_token_id")), pad_token_id=hf.get("pad_token_id"),
    )


def _from_gpt_neo(hf: dict[str, Any]) -> Config:
    _check_known(hf, {"vocab_size", "max_position_embeddings", "hidden_size", "num_layers", "num_heads",
                      "intermediate_size", "activation_function", "layer_norm_epsilon", "attention_types",
                      "attention_layers", "window_size"} | _IGNORED_NEO)
    n_layers = _int(hf, "num_layers")
    kinds = _neo_attention_layers(hf, n_layers)
    window = _int(hf, "window_size") if "local" in kinds else hf.get("window_size", 256)
    return Config(
        architecture="gpt_neo", d_model=_int(hf, "hidden_size"), n_layers=n_layers, n_heads=_int(hf, "num_heads"),
        d_mlp=hf.get("intermediate_size") or 4 * _int(hf, "hidden_size"),
        n_ctx=_int(hf, "max_position_embeddings"), d_vocab=_int(hf, "vocab_size"), act_fn=_activation(hf),
        layer_norm_eps=_eps(hf),
        attn_scales=(1.0,) * n_layers,  # GPT-Neo does not scale q.k by 1/sqrt(d_head)
        windows=tuple(window if kind == "local" else None for kind in kinds),
        qkv_bias=False, upcast_attn=True, eager_attention=True, tie_unembed=bool(hf.get("tie_word_embeddings", True)),
        bos_token_id=hf.get("bos_token_id"), eos_token_id=_first(hf.get("eos_token_id")),
        eos_token_ids=_all(hf.get("eos_token_id")), pad_token_id=hf.get("pad_token_id"),
    )


def _neo_attention_layers(hf: dict[str, Any], n_layers: int) -> list[str]:
    """Per-layer "global"/"local": an explicit attention_layers list, else the attention_types expansion.

    As in HF transformers 5, an explicit attention_layers wins over attention_types when they differ.
    """
    expanded = None
    if hf.get("attention_types") is not None:
        try:
            expanded = [kind for kinds, repeat in hf["attention_types"] for _ in range(repeat) for kind in kinds]
        except (TypeError, ValueError) as err:
            raise UserError(
                f"config.json attention_types {hf['attention_types']!r} is malformed: "
                "expected a list like [[['global', 'local'], 6]]"
            ) from err
    explicit = hf.get("attention_layers")
    if explicit is not None and not isinstance(explicit, list):
        raise UserError(f"config.json attention_layers {explicit!r} must be a list like ['global', 'local']")
    if explicit is None and expanded is None:
        expanded = ["global", "local"] * 12  # HF's default attention_types: [[["global", "local"], 12]]
    kinds = list(explicit if explicit is not None else expanded)
    if len(kinds) != n_layers:
        raise UserError(
            f"config.json gives {len(kinds)} attention layer types but num_layers={n_layers}; "
            "fix attention_types (or attention_layers) so there is one per layer"
        )
    bad = sorted({k for k in kinds if k not in ("global", "local")})
    if bad:
        raise UserError(f"config.json attention type(s) {bad} are not supported: use 'global' or 'local'")
    return kinds


def _first(token_id: Any) -> int | None:
    return token_id[0] if isinstance(token_id, list) and token_id else token_id


def _all(token_id: Any) -> tuple[int, ...]:
    if token_id is None:
        return ()
    return tuple(token_id) if isinstance(token_id, list) else (token_id,)


@dataclass(frozen=True)
class GenerationConfig:
    """`generate`'s default stop and pad ids, as HF's GenerationConfig holds them: from the folder's
    generation_config.json when it has one (HF then reads nothing of config.json's), else from config.json.
    Build with `GenerationConfig.from_hf(generation_config_json_dict)` or `GenerationConfig.from_config(config)`."""

    eos_token_ids: tuple[int, ...] = ()  # a row stops at the first of them it produces; () = never stops early
    pad_token_id: int | None = None  # the filler of finished rows (None: the first stop id, as in HF)
    source: str = "config.json"  # the file they come from, for messages and docs

    @classmethod
    def from_config(cls, config: Config) -> GenerationConfig:
        """What HF builds from config.json when a folder has no generation_config.json."""
        return cls(config.eos_token_ids, config.pad_token_id, "config.json")

    @classmethod
    @checks.typed
    def from_hf(cls, hf: dict[str, Any]) -> GenerationConfig:
        """From a generation_config.json dict: its `eos_token_id` (an id, a list of ids, or null/absent: no stopping)
        and `pad_token_id`. Sampling settings (do_sample, temperature, ...) are not taken: minineo's `generate` is
        greedy unless told otherwise. Raises UserError for an id that is not a whole number >= 0 (a bool, a float,
        a string) or an empty list."""
        eos = hf.get("eos_token_id")
        ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
        if isinstance(eos, list) and not eos:
            raise UserError("generation_config.json: eos_token_id is an empty list; give an id, a list of ids, or "
                            "null (never stop early)")
        for token_id in [*ids, hf.get("pad_token_id")]:
            if token_id is not None and (isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0):
                raise UserError(f"generation_config.json: token id {token_id!r} (eos_token_id {eos!r}, pad_token_id "
                                f"{hf.get('pad_token_id')!r}) is not a whole number >= 0; fix the file")
        return cls(tuple(ids), hf.get("pad_token_id"), "generation_config.json")
