"""Circuits on the weights (Elhage et al. 2021, "A Mathematical Framework for Transformer Circuits").

Each head's QK circuit W_Q W_K^T and OV circuit W_V W_O are (d_model x d_model) matrices of rank
d_head, kept as their factors (`FactoredMatrix`), in TransformerLens's row-vector convention: a
residual x (row) is written as x W_V W_O, a query q and key k score q W_Q W_K^T k^T. From them:

- `composition_scores(model, kind)`: how much head 2 reads what head 1 writes, through its queries
  ("q": W_OV^1 W_QK^2), keys ("k": W_OV^1 (W_QK^2)^T) or values ("v": W_OV^1 W_OV^2), as
  ||A B||_F / (||A||_F ||B||_F), the paper's composition score and TransformerLens's
  `all_composition_scores` (same operand order).
- `copying_scores(model)`: per head, sum(eigenvalues) / sum(|eigenvalues|) of the full OV circuit
  W_E W_V W_O W_U (d_vocab x d_vocab): 1 when every eigenvalue is positive real (the head copies the
  token it attends to into the logits). The paper's summary statistic for copying ("Detecting
  copying behaviour"), computed as in TransformerLens's Main_Demo ("Eigenvalue Copying Scores").

Scores are of the weights the model holds: raw by default, TransformerLens's processed ones with
`model.processed()` (TransformerLens reports them on processed weights). No d_vocab x d_vocab matrix
is ever formed. The arithmetic runs in float64.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from minineo import checks
from minineo.errors import UserError, WrongTypeError

if TYPE_CHECKING:
    from minineo.forward.model import Model

KINDS = ("q", "k", "v")


class FactoredMatrix:
    """The product A @ B kept as its factors: A (..., m, r), B (..., r, n); leading dimensions are a batch.

    Norms, singular values and eigenvalues come from (r x r)-sized work (QR of each factor, or B @ A),
    never from the (m x n) product. `@` with a tensor or another FactoredMatrix stays factored (a tensor
    is cast to the factors' dtype: the circuits below are float64).
    """

    @checks.typed
    def __init__(self, A: torch.Tensor, B: torch.Tensor):
        for name, factor in (("A", A), ("B", B)):
            if factor.ndim < 2:
                raise UserError(f"FactoredMatrix: {name} must have at least 2 dimensions (..., rows, columns), got "
                                f"{checks.describe(factor)}")
        if A.shape[-1] != B.shape[-2]:
            raise UserError(f"FactoredMatrix: A {tuple(A.shape)} and B {tuple(B.shape)} do not chain "
                            f"(A's last dimension must equal B's second to last)")
        self.A, self.B = A, B

    @property
    def shape(self) -> torch.Size:
        """(..., m, n), the shape of the product."""
        return torch.broadcast_shapes(self.A.shape[:-2], self.B.shape[:-2]) + (self.A.shape[-2], self.B.shape[-1])

    @property
    def AB(self) -> torch.Tensor:
        """The product itself (..., m, n): memory m x n per batch element."""
        return self.A @ self.B

    @property
    def BA(self) -> torch.Tensor:
        """(..., r, r): it has the nonzero eigenvalues of AB (square products only)."""
        m, n = self.A.shape[-2], self.B.shape[-1]
        if m != n:
            r = self.A.shape[-1]
            raise UserError(f"FactoredMatrix: eigenvalues (and BA) need the product AB to be square; AB is {(m, n)}, "
                            f"not square (BA, {(r, r)}, is computed from factors A {tuple(self.A.shape)} and "
                            f"B {tuple(self.B.shape)}, and has AB's eigenvalues only when AB is square)")
        return self.B @ self.A

    @property
    def T(self) -> FactoredMatrix:
        """The transpose, (..., n, m): B^T A^T."""
        return FactoredMatrix(self.B.transpose(-2, -1), self.A.transpose(-2, -1))

    def __matmul__(self, other: torch.Tensor | FactoredMatrix) -> torch.Tensor | FactoredMatrix:
        """`M @ v` of a vector v (n,) is the tensor A (B v): (..., m), as in TransformerLens; `M @ X` of a
        matrix X (..., n, k) or a FactoredMatrix stays factored. A UserError when the inner sizes differ."""
        if isinstance(other, FactoredMatrix):  # keep the smaller inner dimension
            _check_inner(self.shape, other.shape, "@")
            if self.A.shape[-1] <= other.A.shape[-1]:
                return FactoredMatrix(self.A, (self.B @ other.A) @ other.B)
            return FactoredMatrix(self.A @ (self.B @ other.A), other.B)
        other = _as_tensor(other, "@").to(self.B.dtype)
        if other.dim() == 1:
            _check_inner(self.shape, other.shape + (1,), "@")
            return (self.A @ (self.B @ other[:, None]))[..., 0]  # (..., m)
        _check_inner(self.shape, other.shape, "@")
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other: torch.Tensor) -> torch.Tensor | FactoredMatrix:
        """`v @ M` of a vector v (m,) is the tensor (v A) B: (..., n); `X @ M` of a matrix X (..., k, m) stays factored."""
        other = _as_tensor(other, "@").to(self.A.dtype)
        if other.dim() == 1:
            _check_inner((1,) + other.shape, self.shape, "@")
            return ((other[None, :] @ self.A) @ self.B)[..., 0, :]  # (..., n)
        _check_inner(other.shape, self.shape, "@")
        return FactoredMatrix(other @ self.A, self.B)

    def __len__(self) -> int:
        """The size of the first batch dimension (layers, for qk_circuit / ov_circuit), as a tensor's len."""
        batch = tuple(self.shape[:-2])
        if not batch:
            raise WrongTypeError(f"FactoredMatrix of shape {tuple(self.shape)} has no batch dimension, so no len() "
                                 f"and no iteration; use it whole (its .AB, .svd(), @ ...)")
        return batch[0]

    def __iter__(self):
        """The FactoredMatrix of each index of the first batch dimension: `for layer in ov_circuit(model)`."""
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index) -> FactoredMatrix:
        """Index the batch dimensions: `ov[layer, head]` is one head's (d_model x d_model) circuit.

        A UserError for an index out of range (naming the dimension and its range), or one that reaches
        into the matrix's own two dimensions."""
        index = index if isinstance(index, tuple) else (index,)
        batch = tuple(self.shape[:-2])
        if len(index) > len(batch) or Ellipsis in index or None in index:
            raise UserError(f"FactoredMatrix of shape {tuple(self.shape)}: indexing selects its {len(batch)} batch "
                            f"dimension(s) only (e.g. ov[layer, head] of qk_circuit / ov_circuit), got {index!r}")
        for dim, (i, size) in enumerate(zip(index, batch)):
            if isinstance(i, bool) or isinstance(i, float):
                raise UserError(f"FactoredMatrix index {i!r} for batch dimension {dim} is not a whole number")
            if checks.is_integer(i) and not -size <= int(i) < size:  # numpy and 0-d tensor indices too
                what = ("layer", "head")[dim] + " " if len(batch) == 2 else ""
                raise UserError(f"FactoredMatrix index {i} for batch dimension {dim} ({what}of {size}) is out of "
                                f"range: give 0..{size - 1} (or -{size}..-1)")
        try:
            A = self.A.expand(batch + tuple(self.A.shape[-2:]))[index]
            B = self.B.expand(batch + tuple(self.B.shape[-2:]))[index]
        except (IndexError, TypeError, RuntimeError) as error:
            raise UserError(f"FactoredMatrix of shape {tuple(self.shape)}: index {index!r} does not select its batch "
                            f"dimensions ({error})") from None
        return FactoredMatrix(A, B)

    def _triangular(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Q_A, R_A, Q_B, R_B) with A = Q_A R_A and B^T = Q_B R_B (reduced QR), so AB = Q_A (R_A R_B^T) Q_B^T."""
        Q_A, R_A = torch.linalg.qr(self.A)
        Q_B, R_B = torch.linalg.qr(self.B.transpose(-2, -1))
        return Q_A, R_A, Q_B, R_B

    @checks.typed
    def norm(self) -> torch.Tensor:
        """Frobenius norm of the product (...,): ||AB||_F^2 = tr(A^T A B B^T), from two (r x r) Gram matrices."""
        return _gram_trace(gram(self.A), gram(self.B.transpose(-2, -1))).sqrt()

    @checks.typed
    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U (..., m, k), S (..., k), V (..., n, k)), k = min(m, n, r), with U diag(S) V^T == AB
        (V, not V^T, as in TransformerLens's FactoredMatrix.svd); S descending."""
        Q_A, R_A, Q_B, R_B = self._triangular()
        U, S, Vh = torch.linalg.svd(R_A @ R_B.transpose(-2, -1), full_matrices=False)
        return Q_A @ U, S, Q_B @ Vh.transpose(-2, -1)

    @checks.typed
    def eigenvalues(self) -> torch.Tensor:
        """(..., r) complex: the eigenvalues of BA, which are AB's nonzero eigenvalues (AB's others are 0)."""
        return torch.linalg.eigvals(self.BA)

    def __repr__(self) -> str:
        return f"FactoredMatrix(shape={tuple(self.shape)}, inner={self.A.shape[-1]})"


def _as_tensor(other: object, op: str) -> torch.Tensor:
    if not isinstance(other, torch.Tensor):
        raise UserError(f"FactoredMatrix {op} needs a tensor or a FactoredMatrix, got {type(other).__name__}")
    if other.dim() == 0:
        raise UserError(f"FactoredMatrix {op} needs a vector or a matrix, got a 0-dimensional tensor (a scalar)")
    return other


def _check_inner(left: tuple[int, ...], right: tuple[int, ...], op: str) -> None:
    """Matrix-product shapes (..., m, n) and (..., n, k) must chain."""
    if left[-1] != right[-2]:
        raise UserError(f"FactoredMatrix {op}: shapes {tuple(left)} and {tuple(right)} do not chain (the left operand's "
                        f"last size {left[-1]} must equal the right one's {'only' if len(right) == 1 else 'second to last'} "
                        f"size {right[-2]})")


def _stack(model: Model, name: str) -> torch.Tensor:
    """One attention weight of every layer, float64: (layer, head, ...)."""
    return torch.stack([getattr(block.attn, name).detach() for block in model.blocks]).double()


@checks.typed
def qk_circuit(model: Model) -> FactoredMatrix:
    """Each head's QK circuit W_Q W_K^T: (layer, head, d_model, d_model), factors (d_model, d_head) x (d_head, d_model)."""
    return FactoredMatrix(_stack(model, "W_Q"), _stack(model, "W_K").transpose(-2, -1))


@checks.typed
def ov_circuit(model: Model) -> FactoredMatrix:
    """Each head's OV circuit W_V W_O: (layer, head, d_model, d_model), factors (d_model, d_head) x (d_head, d_model)."""
    return FactoredMatrix(_stack(model, "W_V"), _stack(model, "W_O"))


def gram(X: torch.Tensor) -> torch.Tensor:
    """X^T X (..., r, r) of X (..., m, r)."""
    return X.transpose(-2, -1) @ X


def _gram_trace(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """tr(left @ right) of symmetric (..., r, r) matrices, clamped at 0 (a squared norm)."""
    return (left * right).sum((-2, -1)).clamp_min(0)


@checks.typed
def composition_scores(model: Model, kind: str, fill: float = 0.0) -> torch.Tensor:
    """(layer, head, layer, head): [l1, h1, l2, h2] is how much head (l2, h2) composes with head (l1, h1)'s output.

    kind "q": ||W_OV^1 W_QK^2||_F / (||W_OV^1||_F ||W_QK^2||_F) (head 2's queries read head 1's output);
    "k": the same with (W_QK^2)^T (its keys); "v": with W_OV^2 (its values). Elhage et al. (2021);
    TransformerLens's `all_composition_scores(kind.upper())`. Where head 2 is not in a later layer
    than head 1 (it cannot read head 1's output) the score is `fill`: 0 by default, as in
    TransformerLens (pass float("nan") to tell those cells from a real zero). float32 on the model's
    device, computed in float64.

    With A1 B1 = W_OV^1 and A2 B2 the receiver's matrix, ||A1 B1 A2 B2||_F^2 = tr(G1 M H2 M^T) where
    M = B1 A2 (d_head x d_head), G1 = A1^T A1 and H2 = B2 B2^T: every sender x later receiver pair
    is one (d_head x d_head) block of one product per sender layer, and no factorisation is needed.
    """
    kind = checks.one_of(kind, "kind", KINDS, "the composition kind: 'q' (queries), 'k' (keys) or 'v' (values)")
    ov = ov_circuit(model)
    right = {"q": qk_circuit(model), "k": qk_circuit(model).T, "v": ov}[kind]
    G1, H2 = gram(ov.A), gram(right.B.transpose(-2, -1))  # (layer, head, d_head, d_head)
    left_norm = _gram_trace(G1, gram(ov.B.transpose(-2, -1))).sqrt()  # (layer, head): ||W_OV^1||_F
    right_norm = _gram_trace(gram(right.A), H2).sqrt()
    n_layers, n_heads, r, d_model = ov.B.shape
    scores = torch.full((n_layers, n_heads, n_layers, n_heads), fill, dtype=torch.float64, device=ov.A.device)
    for sender in range(n_layers - 1):  # receivers in later layers only
        later = n_layers - sender - 1
        rows = ov.B[sender].reshape(n_heads * r, d_model)  # B1 of each sender head
        cols = right.A[sender + 1:].permute(2, 0, 1, 3).reshape(d_model, later * n_heads * r)  # A2 of each receiver
        M = (rows @ cols).view(n_heads, r, later, n_heads, r)  # M[h1, :, l2, h2, :] = B1 A2
        GM = torch.einsum("hij,hjlgk->hilgk", G1[sender], M)
        MH = torch.einsum("hilgk,lgkm->hilgm", M, H2[sender + 1:])
        norms = (GM * MH).sum((1, 4)).clamp_min(0).sqrt()  # (head, later layer, head)
        scores[sender, :, sender + 1:] = norms / (left_norm[sender][:, None, None] * right_norm[sender + 1:][None])
    return scores.float()


@checks.typed
def copying_scores(model: Model) -> torch.Tensor:
    """(layer, head): sum(λ) / sum(|λ|) over the eigenvalues λ of the full OV circuit W_E W_V W_O W_U, in [-1, 1].

    The eigenvalues come from d_head x d_head matrices: the nonzero eigenvalues of W_E (W_V W_O W_U)
    are those of (W_V W_O W_U) W_E, whose are those of W_O (W_U W_E) W_V; W_U W_E (d_model x d_model)
    is formed once. Elhage et al. (2021)'s copying statistic; TransformerLens's Main_Demo computes it
    as `full_OV_circuit.eigenvalues` summed, real part, over their absolute values summed.
    """
    gram = model.W_U.detach().double() @ model.W_E.detach().double()  # (d_model, d_model)
    eigenvalues = (ov_circuit(model) @ gram).eigenvalues()  # (layer, head, d_head)
    return (eigenvalues.sum(-1).real / eigenvalues.abs().sum(-1)).float()
