"""Edge scores (`attribute`) against independent oracles.

- EAP on the zoo's tiny-gpt2 and 16 IOI pairs = the scores EAP-IG itself wrote (tests/data/eap_ig);
- EAP = a float64 central finite difference of the metric along the edge's direction, built from `model(patch=...)`;
- `exact` = the one-edge-out brute force of tests/test_discovery_patched.py (receiver site moved by the sender's
  corrupted - clean output), i.e. evaluate with every edge but one;
- an edge out of a head whose W_O is zero scores exactly 0 by every method;
- EAP-IG-inputs converges to the exact score where integrated gradients is provably exact: a model whose blocks write
  nothing (every W_O and W_out zero), so the logits' input is the embedding plus constants; moving the embedding from
  the corrupted to the clean one moves the logits' input along the straight line of the edge input -> logits, and the
  mean gradient over k/m, k = 0..m-1, is a Riemann sum of that line integral (error O(1/m)) while ln_final keeps the
  metric non-linear (EAP, one end point, stays off);
- per_position scores sum to the whole-edge scores; the logits' input has a gradient only at the last position;
- torchrun with 2 processes gives the 1-process scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import minineo
from hf_oracle import build_hf, hf_config, save_hf
from minineo.discovery import Graph, Pairs, attribute, logit_diff
from minineo.discovery.attribution import METHODS
from minineo.errors import UserError
from test_discovery_patched import caches, close, one_edge_out_brute_force, random_pairs, receiver_site, sender_output

DATA = Path(__file__).parent / "data" / "eap_ig"
ROOT = Path(__file__).resolve().parent.parent


def random_model(arch: str, seed: int, dtype=torch.float32, **shape) -> minineo.Model:
    with tempfile.TemporaryDirectory() as tmp:
        return minineo.load(save_hf(build_hf(hf_config(arch, **shape), seed=seed), Path(tmp) / arch), dtype=dtype)


def test_eap_reproduces_the_scores_eap_ig_wrote():
    model = minineo.load("tiny-gpt2")
    pairs = Pairs.from_jsonl(model, DATA / "tiny-gpt2-ioi16.jsonl")
    graph = attribute(model, Graph.from_model(model), pairs, method="eap", batch_size=5)
    written = json.loads((DATA / "eap-ig-tiny-gpt2-ioi16-eap.json").read_text())["edges"]
    ours = graph.edge_scores()
    expected = torch.tensor([edge["score"] for edge in written.values()])
    actual = torch.tensor([ours[name] for name in written])
    assert float((actual - expected).abs().max()) <= 1e-6 * float(expected.abs().max())
    pt = torch.load(DATA / "eap-ig-tiny-gpt2-ioi16-eap.pt")["edges_scores"]
    assert float((graph.scores - pt).abs().max()) <= 1e-6 * float(pt.abs().max())


def moved_metric(model, graph, pairs, s, r, eps, runs, metric=None) -> float:
    """Mean metric of the clean run with receiver r's input moved by eps * (corrupted - clean output of sender s);
    `metric(logits, pairs)` -> (n,), by default the logit difference at the last position."""
    clean, corrupted = runs
    delta = sender_output(corrupted, graph, model, s) - sender_output(clean, graph, model, s)
    site, head = receiver_site(graph, r)

    def patch(x):
        x = x.clone()
        if head is None:
            return x + eps * delta
        x[:, :, head] += eps * delta
        return x

    with torch.no_grad():
        logits = model(pairs.clean, attention_mask=pairs.attention_mask, patch={site: patch})
    if metric is not None:
        return float(metric(logits, pairs).mean())
    return float((logits[:, -1, pairs.answer] .diagonal() - logits[:, -1, pairs.wrong].diagonal()).mean())


@settings(max_examples=6, deadline=None)
@given(arch=st.sampled_from(["gpt2", "gpt_neo"]), layers=st.integers(1, 2), heads=st.sampled_from([1, 2]),
       padded=st.booleans(), shared=st.integers(0, 6), seed=st.integers(0, 2**16), data=st.data())
def test_eap_is_a_finite_difference_directional_derivative(arch, layers, heads, padded, shared, seed, data):
    """`shared`: a prefix both prompts share, which every run skips (minineo.discovery.prefix)."""
    model = random_model(arch, seed, torch.float64, layers=layers, heads=heads, d_head=8, window=3)
    pairs = random_pairs(seed, 3, 7, padded=padded, shared=shared)
    graph = attribute(model, Graph.from_model(model), pairs, method="eap")
    runs = caches(model, pairs)
    edges = graph.edges()
    eps = 1e-5
    for index in data.draw(st.lists(st.integers(0, len(edges) - 1), min_size=3, max_size=6, unique=True)):
        name, s, r = edges[index]
        derivative = (moved_metric(model, graph, pairs, s, r, eps, runs)
                      - moved_metric(model, graph, pairs, s, r, -eps, runs)) / (2 * eps)
        assert abs(float(graph.scores[s, r]) - derivative) <= 1e-4 * max(1.0, abs(derivative)), name


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-neo"])
def test_an_edge_out_of_a_head_with_zero_W_O_scores_zero_by_every_method(name):
    model = minineo.load(name)
    with torch.no_grad():
        model.blocks[0].attn.W_O[2] = 0
    pairs = random_pairs(4, 2, 10, vocab=model.config.d_vocab, padded=True)
    graph = Graph.from_model(model)
    s = graph.sender_index(0, 2)
    for method in METHODS:
        attribute(model, graph, pairs, method=method, **({"ig_steps": 2} if method.startswith("eap-ig") else {}))
        assert bool((graph.scores[s] == 0).all()), method
        assert bool(graph.scores[graph.sender_index(0, 1)].ne(0).any()), method  # the other heads still score


@settings(max_examples=4, deadline=None)
@given(arch=st.sampled_from(["gpt2", "gpt_neo"]), layers=st.integers(1, 2), heads=st.sampled_from([1, 2]),
       window=st.integers(1, 4), padded=st.booleans(), shared=st.integers(0, 7), seed=st.integers(0, 2**16),
       data=st.data())
def test_exact_is_the_one_edge_out_brute_force(arch, layers, heads, window, padded, shared, seed, data):
    """`shared`: a prefix both prompts share, which every variant skips (its keys and values the clean run's)."""
    model = random_model(arch, seed, layers=layers, heads=heads, d_head=8, window=window)
    pairs = random_pairs(seed, 3, 8, padded=padded, shared=shared)
    graph = attribute(model, Graph.from_model(model), pairs, method="exact", batch_size=2)
    runs = caches(model, pairs)
    with torch.no_grad():
        logits = model(pairs.clean, attention_mask=pairs.attention_mask)
    clean = logits[:, -1, pairs.answer].diagonal() - logits[:, -1, pairs.wrong].diagonal()
    scale = float(clean.abs().max())
    edges = graph.edges()
    for index in data.draw(st.lists(st.integers(0, len(edges) - 1), min_size=4, max_size=8, unique=True)):
        name, s, r = edges[index]
        brute = (one_edge_out_brute_force(model, graph, pairs, s, r, runs) - clean).mean()
        close(graph.scores[s, r], brute, scale, name)


def test_eap_ig_inputs_converges_to_exact_where_integrated_gradients_is_exact():
    model = minineo.load("tiny-gpt2")
    with torch.no_grad():
        for block in model.blocks:  # the blocks write nothing: the residual is the embedding plus constants
            block.attn.W_O.zero_()
            block.mlp.W_out.zero_()
    pairs = random_pairs(3, 3, 8, vocab=model.config.d_vocab)
    pairs.corrupted[:, -1] = (pairs.clean[:, -1] + 7) % model.config.d_vocab  # the logits read the last token's slot
    graph = Graph.from_model(model)
    s, r = 0, graph.logits_index
    with torch.no_grad():
        logits = model(pairs.clean)
    clean = logits[:, -1, pairs.answer].diagonal() - logits[:, -1, pairs.wrong].diagonal()
    exact = float((one_edge_out_brute_force(model, graph, pairs, s, r) - clean).mean())
    eap = float(attribute(model, graph, pairs, method="eap").scores[s, r])
    errors = [abs(float(attribute(model, graph, pairs, method="eap-ig-inputs", ig_steps=m).scores[s, r]) - exact)
              for m in (2, 8, 64)]
    assert abs(exact) > 0.5 and abs(eap - exact) > 0.2 * abs(exact)  # the edge matters; first order is far off
    assert errors[1] <= errors[0] / 2 and errors[2] <= errors[1] / 4  # a Riemann sum's O(1/m) error
    assert errors[2] <= 0.05 * abs(eap - exact) and errors[2] <= 0.02 * abs(exact)


@pytest.mark.parametrize("method", ["eap", "eap-ig-inputs", "eap-ig-activations", "clean-corrupted"])
def test_per_position_scores_sum_to_the_edge_scores(method):
    model = minineo.load("tiny-neo")
    pairs = random_pairs(1, 3, 9, vocab=model.config.d_vocab)
    steps = {"ig_steps": 2} if method.startswith("eap-ig") else {}
    whole = attribute(model, Graph.from_model(model), pairs, method=method, **steps).scores
    graph = attribute(model, Graph.from_model(model), pairs, method=method, per_position=True, **steps)
    assert graph.position_scores.shape == (9, graph.n_senders, graph.n_receivers)
    assert float((graph.position_scores.sum(0) - whole).abs().max()) <= 1e-5 * float(whole.abs().max())
    into_logits = graph.position_scores[:, :, graph.logits_index]  # the metric reads the last position only
    assert bool((into_logits[:-1] == 0).all()) and bool(into_logits[-1].ne(0).any())


def test_torchrun_two_processes_give_the_one_process_scores(tmp_path):
    script = tmp_path / "score.py"
    script.write_text(
        "import sys, torch, minineo\n"
        "from minineo.data.harvest import init_distributed\n"
        "from minineo.discovery import Graph, Pairs, attribute\n"
        "rank, world, _ = init_distributed('cpu')\n"
        "model = minineo.load('tiny-neo')\n"
        f"pairs = Pairs.from_jsonl(model, {str(DATA / 'tiny-gpt2-ioi16.jsonl')!r})[:7]\n"
        "out = {m: attribute(model, Graph.from_model(model), pairs, method=m, batch_size=2).scores\n"
        "       for m in ('eap', 'exact')}\n"
        "torch.save(out, sys.argv[1] + f'.{rank}')\n"
        "if torch.distributed.is_initialized():  # leave the group before exit (gloo aborts a process that does not)\n"
        "    torch.distributed.barrier()\n"
        "    torch.distributed.destroy_process_group()\n"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stdout + two.stderr
    a = torch.load(tmp_path / "one.0")
    for rank in (0, 1):
        b = torch.load(tmp_path / f"two.{rank}")
        for method in a:
            scale = float(a[method].abs().max())
            assert float((a[method] - b[method]).abs().max()) <= 1e-6 * scale, (method, rank)


def test_bad_arguments():
    model = minineo.load("tiny-gpt2")
    pairs = random_pairs(0, 2, 5, vocab=model.config.d_vocab, padded=True)
    graph = Graph.from_model(model)
    with pytest.raises(UserError, match="method='acdc'"):
        attribute(model, graph, pairs, method="acdc")
    for bad in (0, 2.5, True):
        with pytest.raises(UserError, match="ig_steps"):
            attribute(model, graph, pairs, method="eap-ig-inputs", ig_steps=bad)
    with pytest.raises(UserError, match="gradient methods"):
        attribute(model, graph, pairs, method="exact", per_position=True)
    with pytest.raises(UserError, match="one token length"):
        attribute(model, graph, pairs, per_position=True)
    with pytest.raises(UserError, match="3-layer"):
        attribute(model, Graph(3, 4, 128), pairs)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-neo"])
def test_exact_every_edge_of_a_zoo_model_is_the_brute_force(name):
    """All 110 edges, so every path of exact's last block is taken (queries alone from the clean keys; keys and values
    moved at the earlier positions; the last MLP's and the logits' inputs at the last position; earlier receivers), on
    the zoo's IOI pairs (left-padded rows of different lengths; tiny-neo's local windows), a few variants per forward."""
    from minineo.discovery import exact as exact_module

    model = minineo.load(name)
    pairs = Pairs.from_jsonl(model, DATA / "tiny-gpt2-ioi16.jsonl")[:4]
    assert pairs.attention_mask is not None and not bool(pairs.attention_mask.all())
    budget = exact_module.VARIANT_FLOATS
    exact_module.VARIANT_FLOATS = 3 * len(pairs) * pairs.clean.shape[1] * model.config.d_model  # several chunks
    try:
        graph = attribute(model, Graph.from_model(model), pairs, method="exact")
    finally:
        exact_module.VARIANT_FLOATS = budget
    runs = caches(model, pairs)
    with torch.no_grad():
        clean = logit_diff(model(pairs.clean, attention_mask=pairs.attention_mask), pairs)
    scale = float(clean.abs().max())
    for edge, s, r in graph.edges():
        close(graph.scores[s, r], (one_edge_out_brute_force(model, graph, pairs, s, r, runs) - clean).mean(), scale, edge)


def _progress_descriptions(monkeypatch):
    from contextlib import contextmanager

    from minineo import progress

    seen = []
    real = progress.task

    @contextmanager
    def task(description, total=None, delay=0.0):
        seen.append(description)
        with real(description, total, delay) as advance:
            yield advance

    monkeypatch.setattr(progress, "task", task)
    return seen


@pytest.mark.parametrize("method", ["exact", "eap", "eap-ig-activations"])
def test_the_progress_line_says_each_thing_once_and_fits_80_columns(monkeypatch, method):
    """Finding 18: "exact edge scores: 110 edges, 4 pairs, 110 edges, about 64 forward passes of… …"."""
    import io

    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from minineo.discovery import attribute, induction_pairs

    model = minineo.load("tiny-gpt2")
    seen = _progress_descriptions(monkeypatch)
    attribute(model, Graph.from_model(model), induction_pairs(model, 4, seq_len=3), method=method)
    (description,) = [d for d in seen if d.startswith(method)]
    words = description.replace(",", " ").split()
    assert len(words) == len(set(words)), description  # no word said twice ("edges", "pairs")
    assert "4 pairs" in description
    # drawn as a terminal draws it, 80 columns wide with minineo's columns: whole, not cut
    out = io.StringIO()
    display = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("110/110"),
                       TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                       console=Console(file=out, width=80, force_terminal=True, color_system=None))
    display.add_task(description, total=10)
    display.console.print(display.make_tasks_table(display.tasks))
    assert description in out.getvalue() and "\u2026" not in out.getvalue(), out.getvalue()


def test_ig_steps_are_bounded_and_a_long_run_says_its_cost_up_front(monkeypatch):
    """Finding 17: ig_steps=1000000 ran ~10 minutes with no word (and no bar outside a terminal)."""
    from minineo import report
    from minineo.discovery import attribute, induction_pairs

    model = minineo.load("tiny-gpt2")
    pairs = induction_pairs(model, 2, seq_len=3)
    for bad in (1001, 10**6, 0):
        with pytest.raises(UserError, match=r"ig_steps must be in 1\.\.1000, got"):
            attribute(model, Graph.from_model(model), pairs, method="eap-ig-inputs", ig_steps=bad)
    with report.collect() as said:
        attribute(model, Graph.from_model(model), pairs, method="eap-ig-inputs", ig_steps=5)
    assert said == []  # EAP-IG's default: nothing to say
    with report.collect() as said:
        attribute(model, Graph.from_model(model), pairs, method="eap-ig-inputs", ig_steps=150)
    assert len(said) == 1 and "ig_steps=150" in said[0] and "about 150 forward and backward passes" in said[0], said
