"""The edge graph of circuit discovery, in EAP-IG's convention exactly (Hanna et al., COLM 2024; hannamw/EAP-IG).

Nodes (senders, EAP-IG's "forward" index): `input` (the token embedding only: the position embedding and every b_O
are the same in the clean and corrupted runs, so they are not nodes) = 0; head `a{l}.h{h}` (its own z @ W_O[h],
without b_O) = 1 + l(H+1) + h; MLP `m{l}` (its output, bias included) = 1 + l(H+1) + H.

Receivers (EAP-IG's "backward" index): head input `a{l}.h{h}<x>` for x = q, k, v (the residual before ln_1, one copy
per head: the sites `blocks.{l}.q_input` / `k_input` / `v_input`) = l(3H+1) + xH + h; MLP `m{l}` (`blocks.{l}.mlp_in`)
= l(3H+1) + 3H; `logits` (the last `resid_post`, before ln_final) = L(3H+1).

Edges: heads of layer l receive from `input` and from every head and MLP of layers < l, separately for q, k, v; MLP l
from `input`, layers < l and the heads of layer l; `logits` from every node. Names `"{sender}->{receiver}"`:
`input->a0.h1<q>`, `a0.h1->m0`, `m1->logits`. Count: E = (3H+1)(L + (H+1)L(L-1)/2) + LH + 1 + L(H+1)
(32,491 for 12 x 12; 110 for 2 x 4). The score and in-circuit matrices are (senders, receivers), as EAP-IG's.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import torch

from minineo import checks
from minineo.errors import UnknownNameError, UserError, WrongTypeError

if TYPE_CHECKING:
    from minineo.forward.model import Model

QKV = "qkv"


@checks.typed
def edge_count(n_layers: int, n_heads: int) -> int:
    """EAP-IG's edge count E = (3H+1)(L + (H+1)L(L-1)/2) + LH + 1 + L(H+1), computed from the rules, not the formula.

    Raises UserError for a count Graph refuses (n_layers or n_heads not a positive int), through the same check."""
    L, H = (checks.count(value, f"edge_count: {name}") for value, name in ((n_layers, "n_layers"), (n_heads, "n_heads")))
    heads = sum((1 + l * (H + 1)) * 3 * H for l in range(L))  # q, k, v of H heads, each from input + earlier layers
    mlps = sum(1 + l * (H + 1) + H for l in range(L))  # input, earlier layers, this layer's heads
    return heads + mlps + 1 + L * (H + 1)  # logits read every node


@dataclass
class Graph:
    """Every edge of a model's computational graph, its score and whether it is in the circuit.

    `scores` (n_senders, n_receivers) float32: an edge's score (0 where the pair is no edge); `in_graph` (n_senders,
    n_receivers) bool: the circuit's edges; `nodes_in_graph` (n_senders,) bool (EAP-IG's layout: `logits` is always in).
    `real_edges` (n_senders, n_receivers) bool marks which pairs are edges. `model` names the model the graph was made
    for (its hub id or folder; checked when a circuit file is read back); `model_asserted` is True when that name
    was given by the user for a file that carried none (not checked: files write it as `cfg.model_asserted`).

    `extras` is what a circuit file records beside EAP-IG's keys (minineo's "task": the method, score_unit and pairs
    the scores were computed on; "faithfulness": the curve; any other top-level key, e.g. "data"): `load_graph` /
    `from_json` / `from_pt` fill it, `save_graph` / `to_json` / `to_pt` write it back, and `copy` copies it. It
    describes the scores, so giving the graph new scores (assigning `graph.scores`, as `attribute` and `acdc` do)
    empties it: a rescored graph never carries another method's record. {} for a graph made here.
    """

    n_layers: int
    n_heads: int
    d_model: int
    model: str | None = None
    model_asserted: bool = field(default=False, kw_only=True)
    scores: torch.Tensor = field(init=False, repr=False)
    in_graph: torch.Tensor = field(init=False, repr=False)
    nodes_in_graph: torch.Tensor = field(init=False, repr=False)
    real_edges: torch.Tensor = field(init=False, repr=False)
    # (pos, n_senders, n_receivers) float32 per-(edge, position) scores, set by attribute(per_position=True); else None
    position_scores: torch.Tensor | None = field(default=None, init=False, repr=False)
    extras: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "scores" and "scores" in self.__dict__:  # new scores: the file's record of the old ones is stale
            self.__dict__["extras"] = {}
        super().__setattr__(name, value)

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model"):
            # edge_count checks n_layers, n_heads the same way; the int it returns is kept (a numpy size is a size)
            object.__setattr__(self, name, checks.count(getattr(self, name), f"Graph: {name}"))
        if self.model is not None and not (isinstance(self.model, str) and self.model.strip()):
            raise UserError(f"Graph: model must be the model's name (a non-empty str such as 'gpt2') or None (no "
                            f"identity), got {checks.describe(self.model)}; for a loaded model use "
                            "Graph.from_model(model)")
        if not isinstance(self.model_asserted, bool):
            raise WrongTypeError(f"Graph: model_asserted must be True or False (whether the user named the model of a "
                                 f"file that carried none), got {checks.describe(self.model_asserted)}")
        shape = (self.n_senders, self.n_receivers)
        # receiver r reads exactly the first senders_before(r) senders (the prefix _enumerate walks)
        reach = torch.tensor([self._senders_before(r) for r in range(self.n_receivers)])  # (n_receivers,)
        self.real_edges = torch.arange(self.n_senders)[:, None] < reach[None, :]  # (n_senders, n_receivers)
        self.scores = torch.zeros(shape, dtype=torch.float32)
        self.in_graph = torch.zeros(shape, dtype=torch.bool)
        self.nodes_in_graph = torch.zeros(self.n_senders, dtype=torch.bool)

    @classmethod
    @checks.typed
    def from_model(cls, model: Model, name: str | None = None) -> Graph:
        """The graph of `model` (GPT-2 or GPT-Neo: the same graph; a local layer's window lives inside its heads).

        `name` (the model's identity in circuit files) defaults to where `minineo.load` found the model."""
        cfg = model.config
        return cls(cfg.n_layers, cfg.n_heads, cfg.d_model, name if name is not None else getattr(model, "source", None))

    # ---- indices ------------------------------------------------------------------------------------

    @property
    def n_senders(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    @property
    def n_receivers(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1) + 1

    @property
    def n_edges(self) -> int:
        return edge_count(self.n_layers, self.n_heads)

    def _node(self, layer: int, head: int | None) -> None:
        """UserError unless layer (and head, when given) index this graph's layers and heads."""
        checks.layer(layer, self.n_layers)
        if head is not None:
            checks.head(head, self.n_heads)

    def sender_index(self, layer: int, head: int | None = None) -> int:
        """Forward index of head (layer, head), or of MLP `layer` when head is None. `input` is 0.

        Raises UserError for a layer or head outside the graph."""
        self._node(layer, head)
        return self._sender(layer, head)

    def _sender(self, layer: int, head: int | None) -> int:  # unchecked, for the loops over every edge
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if head is None else head)

    def receiver_index(self, layer: int, head: int | None = None, qkv: str | None = None) -> int:
        """Backward index of head (layer, head)'s q/k/v input, or of MLP `layer`'s input when head is None.

        Raises UserError for a layer or head outside the graph, or a head without its input letter qkv."""
        self._node(layer, head)
        if head is not None:
            checks.head_input(qkv, "qkv")
        elif qkv is not None:
            raise UserError(f"qkv={qkv!r} names a head's input, but no head is given; give head= too, or "
                            f"qkv=None for MLP {layer}'s input")
        return self._receiver(layer, head, qkv)

    def _receiver(self, layer: int, head: int | None, qkv: str | None) -> int:  # unchecked, for the loops
        base = layer * (3 * self.n_heads + 1)
        return base + 3 * self.n_heads if head is None else base + QKV.index(qkv) * self.n_heads + head

    @property
    def logits_index(self) -> int:
        return self.n_layers * (3 * self.n_heads + 1)

    def senders_before(self, receiver: int) -> int:
        """How many senders (a prefix of the forward index) can reach the receiver with backward index `receiver`.

        Raises UserError for an index outside 0..logits_index."""
        receiver = checks.integer(receiver, "receiver", low=0, high=self.logits_index,
                                  fix="a receiver's backward index in this graph (receiver_index gives one)")
        return self._senders_before(receiver)

    def _senders_before(self, receiver: int) -> int:  # unchecked, for the loop over every receiver
        if receiver == self.logits_index:
            return self.n_senders
        layer, rest = divmod(receiver, 3 * self.n_heads + 1)
        return 1 + layer * (self.n_heads + 1) + (self.n_heads if rest == 3 * self.n_heads else 0)

    @property
    def sender_names(self) -> list[str]:
        names = ["input"]
        for l in range(self.n_layers):
            names += [f"a{l}.h{h}" for h in range(self.n_heads)] + [f"m{l}"]
        return names

    @property
    def receiver_names(self) -> list[str]:
        names = []
        for l in range(self.n_layers):
            names += [f"a{l}.h{h}<{x}>" for x in QKV for h in range(self.n_heads)] + [f"m{l}"]
        return names + ["logits"]

    @property
    def node_names(self) -> list[str]:
        """Every node, in EAP-IG's order: the senders, then `logits`."""
        return self.sender_names + ["logits"]

    # ---- edges --------------------------------------------------------------------------------------

    def _enumerate(self) -> Iterator[tuple[str, int, int]]:
        """(name, sender index, receiver index) of every edge, in the order EAP-IG's Graph.from_model makes them."""
        senders, H = self.sender_names, self.n_heads
        for l in range(self.n_layers):
            upstream = [0] + list(range(1, 1 + l * (H + 1)))  # input, then every node of layers < l
            for s in upstream:
                for h in range(H):
                    for x in QKV:
                        r = self._receiver(l, h, x)
                        yield f"{senders[s]}->a{l}.h{h}<{x}>", s, r
            m = self._receiver(l, None, None)
            for s in upstream + [self._sender(l, h) for h in range(H)]:
                yield f"{senders[s]}->m{l}", s, m
        for s in range(self.n_senders):
            yield f"{senders[s]}->logits", s, self.logits_index

    def edges(self) -> list[tuple[str, int, int]]:
        """(name, sender index, receiver index) of every edge, in EAP-IG's order (that of its JSON files)."""
        return list(self._enumerate())

    @property
    def edge_names(self) -> list[str]:
        return [name for name, _, _ in self._enumerate()]

    def edge_index(self, name: str) -> tuple[int, int]:
        """(sender, receiver) indices of the edge called `name` (EAP-IG's spelling, e.g. `a0.h1->a1.h2<k>`).

        Raises UnknownNameError for a name that is no edge of this graph, WrongTypeError for one that is no string."""
        if not isinstance(name, str):
            raise WrongTypeError(f"edge name must be a string such as 'input->a0.h1<q>' or 'a0.h1->m0', got "
                                 f"{checks.describe(name)}")
        sender, arrow, receiver = name.partition("->")
        try:
            s, r = self.sender_names.index(sender), self.receiver_names.index(receiver)
        except ValueError:
            s = r = -1
        if not arrow or s < 0 or not self.real_edges[s, r]:
            raise UnknownNameError(
                f"edge name {name!r} is not an edge of this {self.n_layers}-layer, {self.n_heads}-head graph; edges are named "
                f"'SENDER->RECEIVER' as EAP-IG writes them (e.g. 'input->a0.h1<q>', 'a0.h1->m0', 'm{self.n_layers - 1}->logits')"
            )
        return s, r

    def score(self, name: str) -> float:
        s, r = self.edge_index(name)
        return float(self.scores[s, r])

    def edge_scores(self) -> dict[str, float]:
        """{edge name: score} in EAP-IG's order."""
        return {name: float(self.scores[s, r]) for name, s, r in self._enumerate()}

    @property
    def n_edges_in_graph(self) -> int:
        return int((self.in_graph & self.real_edges).sum())

    def copy(self) -> Graph:
        new = Graph(self.n_layers, self.n_heads, self.d_model, self.model, model_asserted=self.model_asserted)
        new.scores, new.in_graph, new.nodes_in_graph = self.scores.clone(), self.in_graph.clone(), self.nodes_in_graph.clone()
        new.position_scores = None if self.position_scores is None else self.position_scores.clone()
        new.extras = copy.deepcopy(self.extras)
        return new


def check_finite_scores(graph: Graph, what: str) -> None:
    """UserError naming the first edge (in EAP-IG's order) whose score is NaN or infinite: `what` (the function that
    asks) ranks or writes `graph.scores`, and a NaN compares false to everything (a ranking puts it anywhere; JSON has
    no NaN, and every reader of circuit files refuses one). Only real edges are read (graph.real_edges)."""
    bad = ~torch.isfinite(graph.scores.detach().cpu()) & graph.real_edges  # (n_senders, n_receivers)
    if not bool(bad.any()):
        return
    name, s, r = next((name, s, r) for name, s, r in graph.edges() if bad[s, r])
    count = int(bad.sum())
    others = f"the first of {count} non-finite scores" if count > 1 else "the only non-finite score"
    raise UserError(f"{what}: graph.scores holds {float(graph.scores[s, r])} for the edge {name!r} ({others}), and "
                    "edges are ranked and written by finite scores only; score the graph again (attribute(...)), or "
                    "replace those scores by finite numbers (e.g. torch.nan_to_num(graph.scores, nan=0.0))")
