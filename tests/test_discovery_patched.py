"""The edge-patched forward (`evaluate`) against brute-force patches built only from `model(tokens, patch=...)`.

Oracles: the plain clean and corrupted runs (every edge in / none), and for one edge out a patch of the receiver's own
site (q/k/v input, mlp_in, the last resid_post) by the sender's clean - corrupted output, read from the clean and
corrupted caches; for a node out, the node's own output site replaced by its corrupted value. Random GPT-2 and GPT-Neo
shapes (hypothesis; local windows shorter than the prompts), padded batches, and the zoo models.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import minineo
from hf_oracle import build_hf, hf_config, save_hf
from minineo.discovery import Graph, Pairs, evaluate, logit_diff
from minineo.errors import UserError

DATA = Path(__file__).parent / "data" / "eap_ig"


def random_model(arch: str, seed: int, **shape) -> minineo.Model:
    with tempfile.TemporaryDirectory() as tmp:
        return minineo.load(save_hf(build_hf(hf_config(arch, **shape), seed=seed), Path(tmp) / arch))


def random_pairs(seed: int, n: int, pos: int, vocab: int = 97, padded: bool = False, shared: int = 0) -> Pairs:
    """n random pairs of pos tokens; the corrupted prompt differs at about a third of the positions from `shared` on
    (the first `shared` positions are a prefix both prompts share, as an IOI pair's opening)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, vocab, (n, pos), generator=g)
    corrupted = clean.clone()
    changed = shared + torch.randperm(pos - shared, generator=g)[: max(1, (pos - shared) // 3)]
    corrupted[:, changed] = torch.randint(0, vocab, (n, len(changed)), generator=g)
    mask = None
    if padded and n > 1:  # left padding of different lengths: rows of different prompt lengths
        mask = torch.ones(n, pos, dtype=torch.long)
        for row in range(n - 1):
            mask[row, : int(torch.randint(0, pos - 1, (1,), generator=g))] = 0
    answer, wrong = torch.randint(0, vocab, (n,), generator=g), torch.randint(0, vocab, (n,), generator=g)
    return Pairs(clean, corrupted, mask, answer, wrong)


def plain_metric(model, tokens, pairs, patch=None) -> torch.Tensor:
    with torch.no_grad():
        return logit_diff(model(tokens, attention_mask=pairs.attention_mask, patch=patch), pairs)


def sender_output(cache, graph: Graph, model, s: int) -> torch.Tensor:
    """Sender s's output (batch, pos, d_model) from a cache: the token embedding, a head's z @ W_O[h], an MLP's output."""
    if s == 0:
        return cache["embed"]
    layer, rest = divmod(s - 1, graph.n_heads + 1)
    if rest == graph.n_heads:
        return cache[f"blocks.{layer}.mlp_out"]
    return cache[f"blocks.{layer}.attn.z"][:, :, rest] @ model.blocks[layer].attn.W_O[rest]


def receiver_site(graph: Graph, r: int) -> tuple[str, int | None]:
    """(site name, head or None) of receiver r."""
    if r == graph.logits_index:
        return f"blocks.{graph.n_layers - 1}.resid_post", None
    layer, rest = divmod(r, 3 * graph.n_heads + 1)
    if rest == 3 * graph.n_heads:
        return f"blocks.{layer}.mlp_in", None
    x, head = divmod(rest, graph.n_heads)
    return f"blocks.{layer}.{'qkv'[x]}_input", head


def caches(model, pairs: Pairs):
    with torch.no_grad():
        return tuple(model.run_with_cache(tokens, attention_mask=pairs.attention_mask)[1]
                     for tokens in (pairs.clean, pairs.corrupted))


def one_edge_out_brute_force(model, graph: Graph, pairs: Pairs, s: int, r: int, runs=None) -> torch.Tensor:
    """m(clean run with only s -> r carrying the corrupted output): the receiver's own site minus (clean - corrupted)
    output of the sender (the sender runs upstream of the receiver, so its output in that run is the clean one)."""
    clean, corrupted = runs or caches(model, pairs)
    delta = sender_output(clean, graph, model, s) - sender_output(corrupted, graph, model, s)  # (batch, pos, d_model)
    site, head = receiver_site(graph, r)

    def patch(x):
        x = x.clone()
        if head is None:
            return x - delta
        x[:, :, head] -= delta
        return x

    return plain_metric(model, pairs.clean, pairs, {site: patch})


def node_out_brute_force(model, graph: Graph, pairs: Pairs, s: int) -> torch.Tensor:
    """m(clean run with sender s's output replaced by its corrupted-run output at its own site)."""
    with torch.no_grad():
        _, corrupted = model.run_with_cache(pairs.corrupted, attention_mask=pairs.attention_mask)
    if s == 0:
        return plain_metric(model, pairs.clean, pairs, {"embed": corrupted["embed"]})
    layer, rest = divmod(s - 1, graph.n_heads + 1)
    if rest == graph.n_heads:
        return plain_metric(model, pairs.clean, pairs, {f"blocks.{layer}.mlp_out": corrupted[f"blocks.{layer}.mlp_out"]})
    z_corrupted = corrupted[f"blocks.{layer}.attn.z"]

    def patch(z):
        z = z.clone()
        z[:, :, rest] = z_corrupted[:, :, rest]
        return z

    return plain_metric(model, pairs.clean, pairs, {f"blocks.{layer}.attn.z": patch})


def full(graph: Graph) -> Graph:
    graph = graph.copy()
    graph.in_graph[:] = graph.real_edges
    return graph


def close(actual: torch.Tensor, expected: torch.Tensor, scale: float, what: str) -> None:
    """float32 agreement at 1e-5 of the metric's scale (per pair)."""
    bound = 1e-5 * max(scale, 1.0)
    diff = float((actual - expected).abs().max())
    assert diff <= bound, f"{what}: max |diff| {diff:.3g} > {bound:.3g}"


def check_model(model, pairs: Pairs, data) -> None:
    graph = Graph.from_model(model)
    clean, corrupted = plain_metric(model, pairs.clean, pairs), plain_metric(model, pairs.corrupted, pairs)
    scale = float(torch.cat([clean, corrupted]).abs().max())
    both = evaluate(model, [full(graph), graph], pairs)  # (2, n): the circuits share the corrupted forward
    close(both[0], clean, scale, "every edge in")
    close(both[1], corrupted, scale, "no edge")
    close(evaluate(model, full(graph), pairs), clean, scale, "every edge in")
    edges = graph.edges()
    for index in data.draw(st.lists(st.integers(0, len(edges) - 1), min_size=1, max_size=3, unique=True), "edges"):
        name, s, r = edges[index]
        circuit = full(graph)
        circuit.in_graph[s, r] = False
        close(evaluate(model, circuit, pairs, batch_size=2), one_edge_out_brute_force(model, graph, pairs, s, r),
              scale, f"{name} out")
    s = data.draw(st.integers(0, graph.n_senders - 1), "node")
    circuit = full(graph)
    circuit.in_graph[s] = False
    close(evaluate(model, circuit, pairs), node_out_brute_force(model, graph, pairs, s), scale,
          f"node {graph.sender_names[s]} out")


@settings(max_examples=6, deadline=None)
@given(layers=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), act=st.sampled_from(["gelu_new", "relu"]),
       pos=st.integers(2, 12), padded=st.booleans(), seed=st.integers(0, 2**16), data=st.data())
def test_gpt2_random_shapes(layers, heads, act, pos, padded, seed, data):
    model = random_model("gpt2", seed, layers=layers, heads=heads, d_head=8, act=act)
    shared = data.draw(st.integers(0, pos - 1), "shared prefix")  # positions both prompts share: runs skip them
    check_model(model, random_pairs(seed, 3, pos, padded=padded, shared=shared), data)


@settings(max_examples=6, deadline=None)
@given(layers=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), window=st.integers(1, 5),
       pos=st.integers(2, 12), padded=st.booleans(), seed=st.integers(0, 2**16), data=st.data())
def test_neo_random_shapes_and_windows(layers, heads, window, pos, padded, seed, data):
    kinds = data.draw(st.lists(st.sampled_from(["global", "local"]), min_size=layers, max_size=layers), "kinds")
    model = random_model("gpt_neo", seed, layers=layers, heads=heads, d_head=8, window=window, kinds=kinds)
    shared = data.draw(st.integers(0, pos - 1), "shared prefix")
    check_model(model, random_pairs(seed, 3, pos, padded=padded, shared=shared), data)


@pytest.mark.parametrize("name, receiver", [("tiny-gpt2", "logits"), ("tiny-neo", "a1.h2<k>")])
def test_zoo_ioi_pairs_every_edge_one_at_a_time_for_a_receiver(name, receiver):
    """On the zoo's IOI pairs (left-padded rows of different lengths): every edge into one receiver, each out alone,
    against the brute force; batches of 3 and 1 give what one batch gives."""
    model = minineo.load(name)
    pairs = Pairs.from_jsonl(model, DATA / "tiny-gpt2-ioi16.jsonl")[:4]
    assert pairs.attention_mask is not None and not bool(pairs.attention_mask.all())
    graph = Graph.from_model(model)
    scale = float(plain_metric(model, pairs.clean, pairs).abs().max())
    runs = caches(model, pairs)
    for r in (graph.receiver_names.index(receiver),):
        for s in range(graph.senders_before(r)):
            circuit = full(graph)
            circuit.in_graph[s, r] = False
            close(evaluate(model, circuit, pairs, batch_size=3),
                  one_edge_out_brute_force(model, graph, pairs, s, r, runs), scale, f"{graph.sender_names[s]} -> {graph.receiver_names[r]} out")


def test_receiver_node_out_is_its_corrupted_input():
    """Every edge into MLP 1 out = mlp_in replaced by the corrupted run's mlp_in."""
    model = minineo.load("tiny-neo")
    pairs = random_pairs(3, 4, 10, vocab=model.config.d_vocab, padded=True)
    graph = Graph.from_model(model)
    circuit = full(graph)
    circuit.in_graph[:, graph.receiver_index(1)] = False
    with torch.no_grad():
        _, corrupted = model.run_with_cache(pairs.corrupted, attention_mask=pairs.attention_mask, names=["blocks.1.mlp_in"])
    expected = plain_metric(model, pairs.clean, pairs, {"blocks.1.mlp_in": corrupted["blocks.1.mlp_in"]})
    close(evaluate(model, circuit, pairs), expected, float(expected.abs().max()), "m1's inputs out")


def test_bad_arguments():
    model = minineo.load("tiny-gpt2")
    pairs = random_pairs(0, 2, 5, vocab=model.config.d_vocab)
    with pytest.raises(UserError, match="3-layer, 4-head"):
        evaluate(model, Graph(3, 4, 128), pairs)
    with pytest.raises(UserError, match="Graph"):
        evaluate(model, "circuit", pairs)
    with pytest.raises(UserError, match="batch_size"):
        evaluate(model, Graph.from_model(model), pairs, batch_size=0)
    with pytest.raises(UserError, match="one value per pair"):
        evaluate(model, Graph.from_model(model), pairs, metric=lambda logits, p: logit_diff(logits, p).mean())


def any_circuit_brute_force(model, graph: Graph, pairs: Pairs, in_graph: torch.Tensor) -> torch.Tensor:
    """m(clean run through any circuit), edge by edge: every receiver's site is replaced by its corrupted-run value plus,
    for each in-circuit edge, (the sender's output in this run - its corrupted output), the senders' outputs read from
    `model(tokens, patch=...)` functions as they are produced in this run. One Python term per edge: slow, plain."""
    with torch.no_grad():
        _, corrupted = model.run_with_cache(pairs.corrupted, attention_mask=pairs.attention_mask,
                                            names=lambda name: "attn.result" not in name)
    current: dict[int, torch.Tensor] = {}
    H = graph.n_heads
    patch = {}

    def tap(s):
        def fn(x):
            current[s] = x
            return x
        return fn

    def tap_heads(layer):
        def fn(z):
            for h in range(H):
                current[graph.sender_index(layer, h)] = z[:, :, h] @ model.blocks[layer].attn.W_O[h]
            return z
        return fn

    def rebuild(r, head):
        site = receiver_site(graph, r)[0]
        def value():
            x = corrupted[site.replace("q_input", "resid_pre").replace("k_input", "resid_pre").replace("v_input", "resid_pre")]
            for s in range(graph.senders_before(r)):
                if in_graph[s, r] and graph.real_edges[s, r]:
                    x = x + current[s] - sender_output(corrupted, graph, model, s)
            return x
        return value

    patch["embed"] = tap(0)
    for layer in range(graph.n_layers):
        patch[f"blocks.{layer}.attn.z"] = tap_heads(layer)
        patch[f"blocks.{layer}.mlp_out"] = tap(graph.sender_index(layer))
        for x, site in enumerate(("q_input", "k_input", "v_input")):
            heads = [rebuild(graph.receiver_index(layer, h, "qkv"[x]), h) for h in range(H)]
            patch[f"blocks.{layer}.{site}"] = lambda t, heads=heads: torch.stack([f() for f in heads], 2)
        patch[f"blocks.{layer}.mlp_in"] = lambda t, f=rebuild(graph.receiver_index(layer), None): f()
    patch[f"blocks.{graph.n_layers - 1}.resid_post"] = lambda t, f=rebuild(graph.logits_index, None): f()
    return plain_metric(model, pairs.clean, pairs, patch)


def some_circuits(graph: Graph, seed: int) -> list[torch.Tensor]:
    """Random circuits of several densities, one with no edge into layer 0's receivers (the run starts later), one
    with none into the logits (the corrupted metric), and one with whole heads' and MLPs' inputs full or empty."""
    g = torch.Generator().manual_seed(seed)
    out = [torch.rand(graph.scores.shape, generator=g) < p for p in (0.02, 0.3, 0.9)]
    whole = (torch.rand(graph.n_receivers, generator=g) < 0.5)[None].expand(graph.n_senders, -1).clone()
    whole[:, torch.rand(graph.n_receivers, generator=g) < 0.3] = torch.rand(graph.n_senders, 1, generator=g) < 0.5
    late = whole.clone()
    late[:, : 3 * graph.n_heads + 1] = False  # layer 0's q/k/v and MLP receive nothing
    no_logits = torch.rand(graph.scores.shape, generator=g) < 0.5
    no_logits[:, graph.logits_index] = False
    return [*out, late, no_logits, whole]


@settings(max_examples=6, deadline=None)
@given(arch=st.sampled_from(["gpt2", "gpt_neo"]), layers=st.integers(2, 3), heads=st.sampled_from([1, 2, 4]),
       pos=st.integers(2, 10), padded=st.booleans(), seed=st.integers(0, 2**16), data=st.data())
def test_any_circuit_equals_the_edge_by_edge_brute_force(arch, layers, heads, pos, padded, seed, data):
    """Sparse, dense, late-starting and logits-less circuits (mixed, full and empty receivers side by side), padded
    batches and GPT-Neo windows, against the edge-by-edge brute force; a list shares one corrupted run."""
    shape = dict(layers=layers, heads=heads, d_head=8)
    if arch == "gpt_neo":
        window = data.draw(st.integers(1, 4), "window")
        kinds = data.draw(st.lists(st.sampled_from(["global", "local"]), min_size=layers, max_size=layers), "kinds")
        shape.update(window=window, kinds=kinds)
    model = random_model(arch, seed, **shape)
    pairs = random_pairs(seed, 3, pos, padded=padded, shared=data.draw(st.integers(0, pos - 1), "shared prefix"))
    graph = Graph.from_model(model)
    scale = float(plain_metric(model, pairs.clean, pairs).abs().max())
    circuits = []
    for in_graph in some_circuits(graph, seed):
        circuit = graph.copy()
        circuit.in_graph = in_graph
        circuits.append(circuit)
    together = evaluate(model, circuits, pairs, batch_size=2)  # (n_circuits, n)
    for i, circuit in enumerate(circuits):
        close(together[i], any_circuit_brute_force(model, graph, pairs, circuit.in_graph), scale, f"circuit {i}")
