"""The fifth newcomer pass: a hand-edited ACDC state whose decisions contradict its own threshold is refused; an
SAE's loss-recovered fraction is flagged when zero-ablating the site does not raise the loss; the device check
measures each forward row once and prints no empty table."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from typer.testing import CliRunner

import minineo
from minineo.cli import app
from minineo.discovery import Graph
from minineo.discovery.acdc import acdc, acdc_order
from minineo.discovery.tasks import induction_pairs
from minineo.errors import UserError

acdc_module = importlib.import_module("minineo.discovery.acdc")  # the module (minineo.discovery.acdc is the function)

# --- ACDC: a state's decisions are checked against its own settings and scores ------------------------------------

MODES = {"metric": dict(threshold=0.05), "kl": dict(threshold=0.01, kl=True),
         "signed": dict(threshold=0.05, absolute=False)}


@pytest.fixture(scope="module")
def gpt2():
    return minineo.load("tiny-gpt2")


@pytest.fixture(scope="module")
def pairs(gpt2):
    return induction_pairs(gpt2, 2, seq_len=3)


@pytest.fixture(scope="module")
def runs(gpt2, pairs, tmp_path_factory):
    """mode -> (the straight run's circuit, every state it wrote, one per decision)."""
    found = {}
    write = acdc_module._write_state
    for mode, kw in MODES.items():
        written = []
        acdc_module._write_state = lambda path, state: (written.append(json.loads(json.dumps(state))),
                                                        write(path, state))
        try:
            graph = acdc(gpt2, pairs, state=tmp_path_factory.mktemp(mode) / "state.json", **kw)
        finally:
            acdc_module._write_state = write
        found[mode] = graph, written
    return found


def kinds_of_edges(graph: Graph, state: dict) -> dict[str, list[str]]:
    """The decided edges by how ACDC decided them, rebuilt from "removed" alone in visiting order: 'unmeasured' (the
    receiver's node has no outgoing edge left at the edge's turn), 'removed' and 'kept' (measured)."""
    names = {(s, r): name for name, s, r in graph.edges()}
    in_graph = graph.real_edges.clone()
    kinds = {"unmeasured": [], "removed": [], "kept": []}
    for edge in acdc_order(graph)[:state["done"]]:
        receiver = graph.receiver_names[edge[1]].split("<")[0]
        unreached = receiver != "logits" and not bool(in_graph[graph.sender_names.index(receiver)].any())
        name = names[edge]
        kinds["unmeasured" if unreached else "removed" if name in state["removed"] else "kept"].append(name)
        if name in state["removed"]:
            in_graph[edge] = False
    return kinds


@pytest.mark.parametrize("mode", MODES)
def test_an_untouched_state_partial_or_complete_resumes_to_the_straight_runs_circuit(gpt2, pairs, runs, mode,
                                                                                     tmp_path):
    straight, written = runs[mode]
    path = tmp_path / "state.json"
    for state in (written[0], written[40], written[90], written[-1]):
        path.write_text(json.dumps(state))
        resumed = acdc(gpt2, pairs, state=path, **MODES[mode])
        assert torch.equal(resumed.in_graph, straight.in_graph), state["done"]
        assert torch.equal(resumed.scores, straight.scores), state["done"]


def edits(graph: Graph, state: dict, big: float):
    """(what was edited, the edited state, what the refusal says) for each kind of contradiction that fits `state`;
    `big`, a change every mode's rule keeps (the signed rule keeps a large fall, and removes any rise)."""
    kinds = kinds_of_edges(graph, state)
    removed, scores = state["removed"], state["scores"]
    kept, gone = kinds["kept"][0], kinds["removed"][0]
    yield ("a kept edge added to 'removed' with its own score", {**state, "removed": {**removed, kept: scores[kept]}},
           f"'removed' has edge {kept!r}, whose recorded score")
    yield ("'removed' and 'scores' disagree", {**state, "removed": {**removed, gone: scores[gone] + 1.0}},
           f"edge {gone!r} has {scores[gone] + 1.0!r} in 'removed' but {scores[gone]!r} in 'scores'")
    yield ("a removed edge's score made big in both", {**state, "removed": {**removed, gone: big},
                                                       "scores": {**scores, gone: big}},
           f"'removed' has edge {gone!r}, whose recorded score {big:+g} the rule keeps")
    yield ("a removed edge taken out of 'removed'", {**state, "removed": {k: v for k, v in removed.items() if k != gone}},
           f"edge {gone!r} is kept (in 'scores', not in 'removed'), but the rule removes its recorded score")
    if kinds["unmeasured"]:
        late = kinds["unmeasured"][0]
        yield ("an unmeasured edge taken out of 'removed'",
               {**state, "removed": {k: v for k, v in removed.items() if k != late}},
               f"edge {late!r} is not in 'removed', but its receiver reaches nothing by its turn")
        yield ("an unmeasured edge given a score", {**state, "removed": {**removed, late: 0.001},
                                                    "scores": {**scores, late: 0.001}},
               f"'removed': edge {late!r} has 0.001, but its receiver reaches nothing by its turn")


@pytest.mark.parametrize("mode", MODES)
def test_a_hand_edited_state_contradicting_its_own_rule_is_refused_naming_the_edge(gpt2, pairs, runs, mode, tmp_path):
    graph = Graph.from_model(gpt2)
    _, written = runs[mode]
    path = tmp_path / "edited.json"
    seen = 0
    for state in (written[-1], written[60]):  # complete and partial
        for what, edited, said in edits(graph, state, -1e3 if mode == "signed" else 1e3):
            path.write_text(json.dumps(edited))
            with pytest.raises(UserError) as err:
                acdc(gpt2, pairs, state=path, **MODES[mode])
            message = str(err.value)
            assert message.startswith(f"{path}: the ACDC state's decisions contradict its own settings"), what
            assert said in message, (what, message)
            assert message.endswith("delete the state to start over, or give another state path"), what
            seen += 1
    assert seen >= 8  # each kind exercised (unmeasured edges: KL and signed modes only, at these thresholds)


def test_the_reported_repro_a_removed_edge_far_above_the_threshold_is_one_error_line(tmp_path):
    """The newcomer's command: `m1->logits` (KL change ~4 nats, threshold 0.01) added to "removed" by hand."""
    state, out = tmp_path / "st.json", tmp_path / "acdckl.json"
    args = ["discover", "--model", "tiny-gpt2", "--task", "induction", "--n", "2", "--method", "acdc", "--kl",
            "--out", str(out), "--state", str(state)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    saved = json.loads(state.read_text())
    assert saved["scores"]["m1->logits"] > 1.0 and "m1->logits" not in saved["removed"]
    for removed in (saved["scores"]["m1->logits"], 3.9):  # with its own score, and with another
        state.write_text(json.dumps({**saved, "removed": {**saved["removed"], "m1->logits": removed}}))
        result = CliRunner().invoke(app, args)
        assert result.exit_code != 0 and "Traceback" not in result.output, result.output
        assert f"error: {state}: the ACDC state's decisions contradict" in " ".join(result.output.split())
        assert "'m1->logits'" in result.output


# --- sae_metrics: loss recovered is flagged when zero-ablating the site does not raise the loss -------------------

SAE_FOLDER = "tests/data/saelens_package/tiny_neo_resid_post_1"  # an SAE sae-lens wrote at tiny-neo's last resid_post


@pytest.fixture(scope="module")
def uniform_when_zeroed():
    """tiny-neo with ln_final's bias zeroed (it has no unembedding bias): zeroing the last resid_post makes
    ln_final's output 0 and every logit 0, so the zero-ablated loss is ln(d_vocab) exactly, on any text."""
    model = minineo.load()
    assert model.b_U is None and model.config.n_layers == 2
    with torch.no_grad():
        model.ln_final.b.zero_()
    return model


def greedy_row(model, pick, length: int = 24) -> torch.Tensor:
    """(1, length) tokens each of which is `pick` (argmin or argmax) of the model's next-token logits."""
    row = [model.config.bos_token_id]
    with torch.no_grad():
        for _ in range(length - 1):
            row.append(int(pick(model(torch.tensor([row]))[0, -1])))
    return torch.tensor([row])


def test_loss_recovered_is_flagged_when_zero_ablation_beats_the_clean_run(uniform_when_zeroed):
    """Closed form: the zero-ablated loss is ln(V); every token the model's least likely next one makes the clean
    loss exceed ln(V) (each such token has probability <= 1/V), so ablation beats the clean run."""
    import math

    from minineo import analysis, report

    model = uniform_when_zeroed
    sae = minineo.sae.load(SAE_FOLDER)
    with report.collect() as said:
        got = analysis.sae_metrics(model, sae, greedy_row(model, torch.argmin))
    assert got.zero_ablated_loss == pytest.approx(math.log(model.config.d_vocab), abs=1e-5)
    assert got.clean_loss > got.zero_ablated_loss  # the case: ablating the site lowers the loss
    # the figure is kept, as SAELens's ce_loss_score computes it
    assert got.loss_recovered == pytest.approx((got.zero_ablated_loss - got.spliced_loss)
                                               / (got.zero_ablated_loss - got.clean_loss), rel=1e-12)
    flagged = [m for m in said if "loss recovered" in m]
    assert len(flagged) == 1, said
    assert flagged[0].startswith(f"loss recovered ({got.loss_recovered:.4f}) means nothing here: zero-ablating "
                                 f"blocks.1.resid_post gives a loss of {got.zero_ablated_loss:.4f} nats, below the "
                                 f"clean {got.clean_loss:.4f}")
    # the control: the model's most likely tokens make the clean loss fall below ln(V), and nothing is said
    with report.collect() as said:
        fine = analysis.sae_metrics(model, sae, greedy_row(model, torch.argmax))
    assert fine.clean_loss < fine.zero_ablated_loss - 0.1
    assert not [m for m in said if "loss recovered" in m], said


def test_sae_eval_says_it_on_the_newcomers_corpus(tmp_path):
    """The reported command: the doc's hand-written SAE on a corpus of random words, where zeroing tiny-neo's
    blocks.1.resid_post lowers the loss; the CLI says why its loss-recovered figure means nothing."""
    import random

    from safetensors.torch import save_file

    model = minineo.load()
    folder = tmp_path / "my-sae"
    folder.mkdir()
    d_in, d_sae = model.config.d_model, 4 * model.config.d_model
    torch.manual_seed(0)
    W_dec = torch.randn(d_sae, d_in) * 0.1
    save_file({"W_enc": W_dec.T.contiguous(), "b_enc": torch.zeros(d_sae), "W_dec": W_dec,
               "b_dec": torch.zeros(d_in)}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({
        "architecture": "topk", "k": 32, "d_in": d_in, "d_sae": d_sae, "apply_b_dec_to_input": True,
        "normalize_activations": "none", "metadata": {"hook_name": "blocks.1.hook_resid_post",
                                                      "model_name": "tiny-neo"}}))
    words = "the cat sat on a mat while Mary and John went to the store and gave drinks to friends".split()
    rng = random.Random(0)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": " ".join(rng.choice(words) for _ in range(40))}) + "\n"
                              for _ in range(200)))
    out = tmp_path / "sae.json"
    result = CliRunner().invoke(app, ["sae-eval", str(folder), str(corpus), "--model", "tiny-neo",
                                      "--max-tokens", "4096", "--json", str(out)])
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["zero_ablated_loss"] < figures["clean_loss"]
    said = " ".join(result.output.split())
    assert (f"warning: loss recovered ({figures['loss_recovered']:.4f}) means nothing here: zero-ablating "
            f"blocks.1.resid_post gives a loss of {figures['zero_ablated_loss']:.4f} nats, below the clean "
            f"{figures['clean_loss']:.4f}") in said, result.output
