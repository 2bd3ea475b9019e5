"""Cache: the named activations of one forward pass, plus stacking and residual decomposition.

It holds tensors only (the activations, each layer's W_O for lazy `attn.result`, and
ln_final's weight and bias), never the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors.torch import save_file

from minineo import checks, outputs
from minineo.record import lazy_sites
from minineo.record import sites
from minineo.config import Config
from minineo.errors import MissingFileError, UnknownNameError, UserError


class Cache(Mapping):
    """`cache["blocks.3.attn.pattern"]`, `cache["pattern", 3]` or `cache["blocks.3.attn.hook_pattern"]`."""

    def __init__(
        self, store: dict[str, torch.Tensor], config: Config, W_O: list[torch.Tensor],
        ln_final_w: torch.Tensor, ln_final_b: torch.Tensor, lazy: set[str] | frozenset[str] = frozenset(),
        attention_masks: list[torch.Tensor | None] | None = None, unlisted: set[str] | frozenset[str] = frozenset(),
        model: str | None = None, key_mask: torch.Tensor | None = None,
    ):
        self._store, self.config = store, config
        # the recorded run's (batch, pos) 0/1 attention mask (None: no padding); a (batch, pos, ...) site read from
        # the cache carries it as `.attention_mask`, which run_from uses when given none (as a to_tokens batch does)
        self.attention_mask = key_mask
        # who recorded it: the model's name and a fingerprint of its weights (Model.identity), so that a view or
        # an analysis handed another model of the same shape can refuse it; None for a cache built by hand
        self.model = model
        self._W_O, self._ln_w, self._ln_b = W_O, ln_final_w, ln_final_b
        # sites recomputed on access from recorded ones (minineo.record.lazy_sites; attn.scores and attn.pattern
        # with the explicit path's functions and the forward's masks), bit-identical to storing them
        self._masks = attention_masks or [None] * config.n_layers
        self._unlisted = frozenset(unlisted)  # inputs kept only for those recomputations: not listed as recorded
        self._lazy = frozenset(name for name in lazy if self._recomputable(name, frozenset(lazy)))

    # ---- mapping ------------------------------------------------------------------------------------

    def _key(self, key: str | tuple[str, int]) -> str:
        if isinstance(key, tuple):
            if len(key) != 2:
                raise UnknownNameError(f"cache[{', '.join(map(repr, key))}]: give a name, or a (site, layer) pair such "
                                       f"as cache['pattern', 0]")
            site, layer = key
            n_layers = self.config.n_layers
            if checks.is_integer(layer) and not isinstance(layer, bool) and int(layer) < 0:
                if int(layer) < -n_layers:  # TransformerLens's negative layers: -1 is the last
                    raise UnknownNameError(f"cache[{site!r}, {int(layer)}]: layer {int(layer)} does not exist; this "
                                           f"model has layers 0..{n_layers - 1} (or -{n_layers}..-1 from the end)")
                layer = int(layer) + n_layers
            key = f"blocks.{layer}.{sites.block_site(site)}"
        return sites.resolve(key, self.config)

    def __getitem__(self, key: str | tuple[str, int]) -> torch.Tensor:
        name = self._key(key)
        if name in self._store and name not in self._unlisted:
            return self._with_mask(self._store[name])
        compute = self._computable(name)
        if compute is None:
            raise UnknownNameError(
                f"{name!r} was not recorded in this cache; pass it in names= to run_with_cache "
                f"(recorded: {len(self)} names, e.g. {list(self)[:3]})"
            )
        return self._with_mask(compute())

    def _with_mask(self, value: torch.Tensor) -> torch.Tensor:
        """`value`, carrying the run's mask as `.attention_mask` when its leading axes are the run's (batch, pos)."""
        mask = self.attention_mask
        if mask is not None and value.ndim >= 2 and tuple(value.shape[:2]) == tuple(mask.shape):
            value.attention_mask = mask
        return value

    def _computable(self, name: str) -> Callable[[], torch.Tensor] | None:
        """How to compute a site that is not stored from what is: attn.scores and attn.pattern from q and
        k (with the explicit path's functions and the forward's mask), attn.result from z and W_O; None
        when it cannot be."""
        layer = int(name.split(".")[1]) if name.startswith("blocks.") else -1
        if name in self._lazy:
            return lambda: lazy_sites.recompute(name, self._value, self.config, self._masks)
        z_name = name.replace(".attn.result", ".attn.z")
        if name.endswith(".attn.result") and z_name in self._store:
            return lambda: torch.einsum("bphe,hed->bphd", self._store[z_name], self._W_O[layer])
        return None

    def _value(self, name: str) -> torch.Tensor:
        """A stored tensor (listed or not), or a lazy one computed: the inputs of a recomputation."""
        return self._store[name] if name in self._store else lazy_sites.recompute(name, self._value, self.config, self._masks)

    def _recomputable(self, name: str, lazy: frozenset[str]) -> bool:
        """Whether every input of lazy `name` was recorded (run_from and stop_at_layer skip some blocks)."""
        return all(n in self._store or (n in lazy and self._recomputable(n, lazy)) for n in lazy_sites.inputs(name, self.config))

    def __contains__(self, key: object) -> bool:
        try:
            name = self._key(key)  # type: ignore[arg-type]
        except KeyError:
            return False
        return (name in self._store and name not in self._unlisted) or self._computable(name) is not None

    def __iter__(self) -> Iterator[str]:
        """Names in forward order, the computed-on-access ones among them."""
        present = self._listed()
        yield from (name for name in sites.all_names(self.config, include_on_request=True) if name in present)

    def __len__(self) -> int:
        return len(self._listed())

    def _listed(self) -> set[str]:
        return (self._store.keys() - self._unlisted) | self._lazy

    def __repr__(self) -> str:
        return f"Cache({len(self)} activations: {', '.join(list(self)[:4])}, ...)"

    # ---- helpers -------------------------------------------------------------------------------------

    @checks.typed
    def stack(self, site: str) -> torch.Tensor:
        """One site of every layer stacked: cache.stack("attn.pattern") -> (layer, batch, head, q_pos, k_pos)."""
        site = sites.block_site(site)
        return torch.stack([self[f"blocks.{layer}.{site}"] for layer in range(self.config.n_layers)])

    @checks.typed
    def accumulated_resid(self, apply_ln: bool = False) -> tuple[torch.Tensor, list[str]]:
        """The residual stream before each block and after the last: (n_layers + 1, batch, pos, d_model).

        With `apply_ln`, each layer's residual goes through ln_final with its own LayerNorm scale
        (the logit lens), not the final layer's cached one.
        """
        n = self.config.n_layers
        resid = torch.stack([self[f"blocks.{layer}.resid_pre"] for layer in range(n)] + [self[f"blocks.{n - 1}.resid_post"]])
        labels = [f"{layer}_pre" for layer in range(n)] + ["final_post"]
        if apply_ln:
            resid = torch.nn.functional.layer_norm(resid, resid.shape[-1:], self._ln_w, self._ln_b, self.config.layer_norm_eps)
        return resid, labels

    @checks.typed
    def decompose_resid(self) -> tuple[torch.Tensor, list[str]]:
        """Every write to the residual stream: (component, batch, pos, d_model), summing to the final residual.

        Components: embed, pos_embed, then each layer's attn_out (b_O included) and mlp_out.
        """
        parts, labels = [self["embed"], self["pos_embed"]], ["embed", "pos_embed"]
        for layer in range(self.config.n_layers):
            parts += [self[f"blocks.{layer}.attn_out"], self[f"blocks.{layer}.mlp_out"]]
            labels += [f"{layer}_attn_out", f"{layer}_mlp_out"]
        return torch.stack(parts), labels

    @checks.typed
    def apply_ln_final(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """ln_final applied to x (..., batch, pos, d_model) with the final residual's cached scale.

        Linear in x: centre, divide by the cached scale, multiply by the weight. Summing over the
        components of `decompose_resid` (bias=False) and adding the bias once gives ln_final's output.
        """
        scale = self["ln_final.scale"]  # (batch, pos, 1)
        want = (*scale.shape[:2], self.config.d_model)
        if tuple(x.shape[-3:]) != want or not x.is_floating_point():
            raise UserError(f"x must be a float tensor of shape (..., batch, pos, d_model) = (..., {want[0]}, {want[1]}, "
                            f"{want[2]}) (this cache's tokens), got {checks.describe(x)}")
        out = (x - x.mean(-1, keepdim=True)) / scale * self._ln_w
        return out + self._ln_b if bias else out

    @checks.typed
    def save(self, path: str | Path) -> None:
        """Write every recorded tensor to a .safetensors file (atomically: no half-written file on failure).

        The data goes to a temporary file beside `path`, then replaces it (minineo.outputs.replacing): a save
        while another process saves to the same path raises UserError instead of replacing its file.
        """
        path = Path(path).expanduser()
        if path.is_dir():
            raise UserError(f"cannot save the cache to path {path}: it is a folder; give a file name such as "
                            f"{path / 'cache.safetensors'}")
        if path.suffix.lower() != ".safetensors":  # save("notes.txt") replaced the text with tensors
            raise UserError(f"cannot save the cache to path {path}: a cache is written as .safetensors, so the path "
                            f"must end in .safetensors (e.g. {path.with_suffix('.safetensors')}); nothing else is "
                            "replaced")
        if not path.parent.is_dir():
            raise MissingFileError(f"cannot save the cache to path {path}: the folder {path.parent} does not exist; "
                                   "create it first (e.g. Path(...).mkdir(parents=True)) or give another path")
        tensors = {name: self[name].detach().cpu().contiguous().clone() for name in self}
        with outputs.replacing(path, "the cache file") as tmp:
            save_file(tensors, str(tmp))

    @checks.typed
    def to(self, device: str | torch.device) -> Cache:
        """A copy of this cache with every tensor on `device`."""
        device = checks.device(device)
        masks = [None if m is None else m.to(device) for m in self._masks]
        return Cache({k: v.to(device) for k, v in self._store.items()}, self.config, [w.to(device) for w in self._W_O],
                     self._ln_w.to(device), self._ln_b.to(device), self._lazy, masks, self._unlisted, self.model)
