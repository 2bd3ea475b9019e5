"""The one instrument: every named site of the forward pass goes through `rec(name, value)`.

No hooks: the forward pass itself asks the recorder whether a site is wanted, replaces
the value if it is patched, and stores it if it is recorded (after the patch).
"""

from __future__ import annotations

from typing import Callable, Union

import torch

from minineo.errors import UserError, WrongTypeError

PatchValue = Union[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]


class Recorder:
    """Records the sites in `keep` and replaces the sites in `patch` (canonical names).

    `exact` names sites that are not kept but will be recomputed from kept ones (minineo.record.lazy_sites):
    the forward computes them by the explicit formula, as if they were recorded.
    """

    def __init__(
        self, keep: set[str] | frozenset[str] = frozenset(), patch: dict[str, PatchValue] | None = None,
        exact: set[str] | frozenset[str] = frozenset(),
    ):
        self.keep, self.exact = keep, exact
        self.patch = patch or {}
        self.store: dict[str, torch.Tensor] = {}
        self.attention_masks: dict[int | None, torch.Tensor | None] = {}  # per window, set by the forward
        self.key_mask: torch.Tensor | None = None  # the run's (batch, pos) 0/1 mask, set by the forward
        # per patched floating site: a 0-dim bool, True when the patch holds a NaN or an infinity and the forward's own
        # value held none (a sum is non-finite exactly then: one fast pass each); read once by check_patches, so no
        # device sync per site
        self._from_patch: list[tuple[str, torch.Tensor]] = []

    def wants(self, name: str) -> bool:
        """True when the site must be materialised (recorded or patched)."""
        return name in self.keep or name in self.patch or name in self.exact

    def fixed(self, name: str) -> bool:
        """True when the site is patched with a tensor: whatever the forward computes for it is discarded."""
        return isinstance(self.patch.get(name), torch.Tensor)

    def wants_any(self, prefixes: tuple[str, ...]) -> bool:
        """True when some site whose name starts with one of `prefixes` must be materialised."""
        return any(name.startswith(prefixes) for names in (self.keep, self.patch, self.exact) for name in names)

    @property
    def idle(self) -> bool:
        return not self.keep and not self.patch

    def __call__(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if name in self.patch:
            new = _apply_patch(name, self.patch[name], value)
            if new.is_floating_point():
                self._from_patch.append((name, ~torch.isfinite(new.sum(dtype=torch.float32))
                                         & torch.isfinite(value.sum(dtype=torch.float32))))
            value = new
        if name in self.keep:
            self.store[name] = value
        return value

    def check_patches(self, output: torch.Tensor) -> None:
        """UserError when `output` (the forward's logits or residual) is not finite and a patch put NaN or infinite
        values into a site whose forward value was finite: the patch made every value computed from it NaN,
        silently. The first such site is named. A -inf attention score that blocks a position leaves the output
        finite and passes. Called at the end of each forward that takes `patch=`; one device sync."""
        if not self._from_patch:
            return
        names = [name for name, _ in self._from_patch]
        flags = torch.stack([flag for _, flag in self._from_patch]).cpu()  # (n_patched,)
        self._from_patch = []
        if not bool(flags.any()) or bool(torch.isfinite(output).all()):
            return
        name = names[int(flags.to(torch.uint8).argmax())]
        what = "patch tensor for" if isinstance(self.patch[name], torch.Tensor) else "patch function for"
        raise UserError(f"{what} {name!r} put NaN or infinite values into the site, where the forward's values were "
                        "finite, and the output (the logits) is no longer finite; give finite values (e.g. "
                        "torch.nan_to_num; a -inf attention score that blocks a position is fine)")

def _apply_patch(name: str, patch: PatchValue, value: torch.Tensor) -> torch.Tensor:
    if callable(patch):
        new = patch(value)
        if not isinstance(new, torch.Tensor):
            raise WrongTypeError(f"patch function for {name!r} returned {type(new).__name__}; it must return the new tensor")
        what = "patch function for"
    else:
        new, what = patch, "patch tensor for"
    if new.shape != value.shape:
        raise UserError(
            f"{what} {name!r} has shape {tuple(new.shape)} but the site has shape {tuple(value.shape)}; "
            "give a tensor of exactly the site's shape"
        )
    if new.device != value.device:
        raise UserError(
            f"{what} {name!r} is on {new.device} but the model runs on {value.device}; move it there first "
            f"(.to({str(value.device)!r}))"
        )
    if new.dtype != value.dtype:
        exact = new.is_floating_point() and torch.promote_types(new.dtype, value.dtype) == value.dtype
        if not exact:  # an integer, bool or wider float would be rounded or reinterpreted without a word
            site_dtype = str(value.dtype).removeprefix("torch.")
            raise UserError(
                f"{what} {name!r} is {str(new.dtype).removeprefix('torch.')} but the site holds {site_dtype}, which "
                f"cannot hold every value of it exactly; convert it yourself (.to(torch.{site_dtype}))"
            )
        new = new.to(value.dtype)
    return new
