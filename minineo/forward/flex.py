"""Block-sparse attention for GPT-Neo's local layers: flex attention with a block mask built from the
same boolean mask the other two bodies use (causal + window + padding), so it cannot disagree with them.

At long contexts a local layer's mask is mostly False (1 x 2048 keys, window 256: 82% of the 128 x 128
blocks are empty). scaled_dot_product_attention with that mask still computes every (query, key) pair;
flex attention's compiled kernel skips the empty blocks and applies the mask only inside the partly
filled ones. Uncompiled, flex attention computes the dense product instead (and is slower than SDPA),
so the fast path calls it only while torch.compile traces the model (`use_block_sparse`); the numbers
are in benchmarks/README.md ("Block-sparse local attention").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCK_SIZE = 128  # flex attention's default tile: (query block, key block)


def use_block_sparse(window: int | None, allowed: torch.Tensor | None, q_len: int, k_len: int) -> bool:
    """Whether the fast path should run this layer through flex attention.

    Only local layers (a window) of a full forward (as many queries as keys, not a decode step) whose
    mask exists (longer than the window, or padded), and only under torch.compile: eager flex attention
    materialises the dense scores and is ~20x slower than SDPA on CPU. On the CPU, Inductor's flex kernel
    (torch 2.13) fails to compile ("NoValidChoicesError") for lengths that are not whole blocks (padding q, k, v
    to whole blocks inside the graph failed the same way) and for a padding mask (one mask per batch row)
    built inside the graph, so there it serves unpadded batches of whole blocks; the rest keeps SDPA.
    """
    if window is None or allowed is None or q_len != k_len or q_len <= window:
        return False
    return torch.compiler.is_compiling() and (allowed.is_cuda or (q_len % BLOCK_SIZE == 0 and allowed.shape[0] == 1))


def block_mask(allowed: torch.Tensor, block_size: int = BLOCK_SIZE):
    """A flex attention BlockMask for the boolean mask `allowed` (batch or 1, 1, q_pos, k_pos).

    Blocks where `allowed` is all True are "full" (no mask applied), blocks with some True are
    "partial" (the mask is read there), blocks with none are skipped. Lengths need not be multiples of
    `block_size`: the mask is padded with False (but Inductor's CPU kernel compiles only whole blocks).
    """
    from torch.nn.attention.flex_attention import BlockMask

    batch, _, q_len, k_len = allowed.shape
    q_blocks, k_blocks = -(-q_len // block_size), -(-k_len // block_size)
    padded = F.pad(allowed, (0, k_blocks * block_size - k_len, 0, q_blocks * block_size - q_len))
    tiles = padded.view(batch, 1, q_blocks, block_size, k_blocks, block_size)
    any_allowed = tiles.any(5).any(3)  # (batch, 1, q_blocks, k_blocks)
    full = tiles.all(5).all(3)
    partial = any_allowed & ~full

    def ordered(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # per query block: how many key blocks, and their indices first (stable: in key order)
        return blocks.sum(-1, dtype=torch.int32), torch.argsort(~blocks, dim=-1, stable=True).to(torch.int32)

    def mask_mod(b, h, q_index, k_index):
        return padded[b if batch > 1 else 0, 0, q_index, k_index]

    kv_num, kv_index = ordered(partial)
    full_num, full_index = ordered(full)
    return BlockMask.from_kv_blocks(kv_num, kv_index, full_num, full_index, BLOCK_SIZE=block_size,
                                    mask_mod=mask_mod, seq_lengths=(q_len, k_len))


def attend_block_sparse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float, upcast: bool,
    block_size: int = BLOCK_SIZE,
) -> torch.Tensor:
    """The fused body's attention through flex attention and `block_mask(allowed)`.

    q, k, v: (batch, pos, head, d_head); allowed: (batch or 1, 1, q_pos, k_pos). Returns z (batch, q_pos, head, d_head).
    """
    from torch.nn.attention.flex_attention import flex_attention

    dtype = v.dtype
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (batch, head, pos, d_head)
    if upcast and dtype == torch.float16:  # as attend_fused: GPT-Neo's unscaled q.k overflows float16
        q, k, v = q.float(), k.float(), v.float()
    z = flex_attention(q, k, v, block_mask=block_mask(allowed, block_size), scale=scale)
    return z.transpose(1, 2).to(dtype)  # (batch, q_pos, head, d_head)
