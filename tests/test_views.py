"""The views without a browser: packing round trips, what a page contains (model, prompt, version, no URL), the
circuit reader's checks of EAP-IG files, and the commands' errors. tests/test_views_browser.py drives the pages."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import minineo
from minineo import views
from minineo.cli import app
from minineo.errors import MissingFileError, UserError
from minineo.views.circuit import edge_count
from minineo.views.page import pack_float32, pack_quantised

EAP = Path(__file__).parent / "data" / "eap_ig"
PROMPT = "When Mary and John went to the store, John gave a drink to"


def test_16_bit_quantisation_is_within_half_a_step():
    values = torch.rand(1000)
    packed = pack_quantised(values, 0.0, 1.0)
    q = np.frombuffer(base64.b64decode(packed["data"]), dtype="<u2")  # what the page's dequantise reads
    decoded = packed["low"] + q * (packed["high"] - packed["low"]) / 65535
    assert np.abs(decoded - values.numpy()).max() <= 0.5 / 65535 + 1e-7


def test_float32_packing_is_exact():
    values = torch.randn(3, 5)
    back = np.frombuffer(base64.b64decode(pack_float32(values)), dtype="<f4").reshape(3, 5)
    assert np.array_equal(back, values.numpy())


@pytest.fixture(scope="module")
def model():
    return minineo.load()


def test_a_page_names_model_prompt_and_version_and_has_no_url(model):
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    pages = [views.attention(cache, tokens, model, name="tiny-neo", prompt=PROMPT),
             views.lens(model, PROMPT, name="tiny-neo"),
             views.attributions(model, PROMPT, "M", "J", name="tiny-neo"),
             views.patching(torch.zeros(2, tokens.shape[1]), "pos", model=model, tokens=tokens, name="tiny-neo",
                            prompt=PROMPT),
             views.circuit(EAP / "eap-ig-tiny-gpt2-ioi16-eap.json", name="tiny-gpt2")]
    for view in pages:
        html = view.html
        assert f"made by minineo <span id=\"version\">{minineo.__version__}</span>" in html
        assert "tiny-neo" in html or "tiny-gpt2" in html
        if view.kind != "circuit":
            assert PROMPT in html
        assert "default-src 'none'" in html  # the Content-Security-Policy forbids every request
        # no URL to fetch: no src/href attribute, no CSS url() or @import, no fetch/XHR/WebSocket in the scripts
        assert not re.search(r"\b(src|href)\s*=|url\(|@import|fetch\(|XMLHttpRequest|WebSocket|https?://(?!www\.w3\.org/2000/svg)",
                             html)
        assert "<iframe srcdoc=" in view._repr_html_()


def test_a_prompt_cannot_close_the_data_block(model):
    text = "</script><script>alert(1)</script>"
    html = views.lens(model, text).html
    assert html.count("</script>") == 3  # the data block and the two scripts; the prompt is escaped everywhere


def test_attention_refuses_a_cache_without_patterns_and_mismatched_tokens(model):
    tokens = model.to_tokens(PROMPT)
    _, partial = model.run_with_cache(tokens, names=["blocks.0.resid_pre"])
    with pytest.raises(UserError, match="blocks.0.attn.pattern"):
        views.attention(partial, tokens, model)
    _, cache = model.run_with_cache(tokens)
    with pytest.raises(UserError, match="3 tokens were given"):
        views.attention(cache, ["a", "b", "c"])
    with pytest.raises(UserError, match=r"batch must be in 0\.\.0, got 1"):
        views.attention(cache, tokens, model, batch=1)


def test_lens_and_attributions_refuse_bad_arguments(model):
    with pytest.raises(UserError, match=r"top_k must be in 1\.\.\d+, got 0"):
        views.lens(model, PROMPT, top_k=0)
    with pytest.raises(UserError, match="is 5 tokens"):
        views.attributions(model, PROMPT, " Mary")
    with pytest.raises(UserError, match=r"answer must be in 0\.\.\d+, got 999"):
        views.attributions(model, PROMPT, 999)
    with pytest.raises(UserError, match=r"position must be in -\d+\.\.\d+, got 100"):
        views.attributions(model, PROMPT, "M", position=100)
    with pytest.raises(UserError, match="per='head' needs values of 2"):
        views.patching(torch.zeros(2, 3, 4), "head")


def test_the_edge_count_formula_is_the_shared_readmes():
    assert edge_count(12, 12) == 32_491 and edge_count(2, 4) == 110
    assert len(json.loads((EAP / "eap-ig-tiny-gpt2-ioi16-eap.json").read_text())["edges"]) == edge_count(2, 4)


def graph_with(edges: dict, **extra) -> dict:
    """EAP-IG's own file of the 2 x 4 zoo shape (every one of its 110 edges), with `edges` scored (or added)."""
    document = json.loads((EAP / "eap-ig-tiny-gpt2-ioi16-eap.json").read_text())
    document["edges"].update({name: {"score": score, "in_graph": False} for name, score in edges.items()})
    return {**document, **extra}


@pytest.mark.parametrize("edge", [
    "a0.h1->a0.h2<q>",   # a head never reads its own layer
    "m1->m0",
    "a0.h9->m1",         # 4 heads
    "a0.h1->a3.h0<q>",   # 2 layers
    "a0.h1->a1.h0<x>",
    "a0.h1-->m1",
])
def test_circuit_refuses_edges_eap_ig_does_not_have(edge):
    with pytest.raises(UserError, match=re.escape(f"edge name {edge!r} is not an edge of this 2-layer, 4-head graph")):
        views.circuit(graph_with({edge: 0.1}))


def _refusal(call) -> str:
    with pytest.raises(UserError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize("change", ["delete an edge", "cfg model 12", "rename an edge", "score a string"])
def test_circuit_checks_a_graph_as_the_discovery_reader_does_one_check(tmp_path, change):
    """views.circuit (a dict or a file, JSON or .pt) and discovery.load_graph refuse the same graphs with the same
    message (finding 14): the one validator of minineo.discovery.files."""
    from minineo import discovery

    document = json.loads((EAP / "eap-ig-tiny-gpt2-ioi16-eap.json").read_text())
    first = next(iter(document["edges"]))
    if change == "delete an edge":
        del document["edges"][first]
    elif change == "cfg model 12":
        document["cfg"]["model"] = 12
    elif change == "rename an edge":
        document["edges"]["a1.h0->a0.h0<q>"] = document["edges"].pop(first)
    else:
        document["edges"][first]["score"] = "0.5"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    reader = _refusal(lambda: discovery.load_graph(path))
    assert _refusal(lambda: views.circuit(path)) == reader
    assert _refusal(lambda: views.circuit(document)) == reader.replace(str(path), "the graph")
    expected = {"delete an edge": f"1 of the 110 edges of a 2-layer, 4-head graph are missing (first: {first})",
                "cfg model 12": "model identity must be the model's name as a non-empty string",
                "rename an edge": "'a1.h0->a0.h0<q>' is not an edge", "score a string": "has the score '0.5'"}[change]
    assert expected in reader, reader


def test_circuit_refuses_a_top_level_model_that_is_not_a_name():
    with pytest.raises(UserError, match="\"model\" key must be the model's name as a string"):
        views.circuit(graph_with({}, model=12))


def test_circuit_reads_the_pt_files_discover_and_eap_ig_write(tmp_path):
    """EAP-IG's own .pt and .json of one graph give the same page (finding 11); so do discover --out x.pt's."""
    for stem in ("eap-ig-tiny-gpt2-ioi16-eap", "eap-ig-tiny-gpt2-ioi16-eap-top20"):
        from_pt, from_json = views.circuit(EAP / f"{stem}.pt"), views.circuit(EAP / f"{stem}.json")
        assert from_pt.html.replace(f"{stem}.pt", f"{stem}.json") == from_json.html
    out = tmp_path / "x.pt"
    result = CliRunner().invoke(app, ["discover", "--model", "tiny-gpt2", "--task", "ioi", "--n", "4", "--method",
                                      "eap", "--top", "10", "--out", str(out)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["view-circuit", str(out), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "x.html").read_text()
    assert '"faithfulness":{"n_edges":[0,0,0,1,2,5,11,22,55,110]' in page and "tiny-gpt2" in page
    (tmp_path / "x.txt").write_bytes(out.read_bytes())
    with pytest.raises(UserError, match="a circuit file is EAP-IG's .json or .pt, not '.txt'"):
        views.circuit(tmp_path / "x.txt")


def test_circuit_refuses_bad_files_and_keys(tmp_path):
    with pytest.raises(MissingFileError):
        views.circuit(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a JSON file"):
        views.circuit(tmp_path / "bad.json")
    with pytest.raises(UserError, match="needs the keys"):
        views.circuit({"edges": {}})
    with pytest.raises(UserError, match="score nan"):
        views.circuit(graph_with({"input->m0": float("nan")}))
    with pytest.raises(UserError, match="faithfulness"):
        views.circuit(graph_with({"input->m0": 1.0}, faithfulness={"n_edges": [1, 2], "faithfulness": [0.5]}))
    page = views.circuit(graph_with({"input->m0": 1.0}, faithfulness={"n_edges": [1], "faithfulness": [0.5]}))
    assert '"faithfulness":{"n_edges":[1]' in page.html


def test_view_save_refuses_a_folder_or_missing_parent(tmp_path):
    page = views.circuit(EAP / "eap-ig-tiny-gpt2-ioi16-eap.json")
    with pytest.raises(UserError, match="is a directory"):
        page.save(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        page.save(tmp_path / "no" / "c.html")
    assert page.save(tmp_path / "c.html").read_text(encoding="utf-8") == page.html


def test_commands_write_pages_and_refuse_bad_paths(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["view", PROMPT, "--out", str(tmp_path / "attn")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "attn.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    result = runner.invoke(app, ["view-circuit", str(EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json"), "--out",
                                 str(tmp_path / "c.html")])
    assert result.exit_code == 0 and (tmp_path / "c.html").is_file()
    for args in (["view", PROMPT, "--out", str(tmp_path / "a.png")],
                 ["lens", PROMPT, "--html", str(tmp_path / "nowhere" / "l.html")],
                 ["attribute", PROMPT, "--answer", " Mary", "--html", str(tmp_path)],
                 ["view-circuit", str(tmp_path / "missing.json"), "--out", str(tmp_path / "c.html")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output, args


def test_views_refuse_arguments_of_the_wrong_type(model):
    from minineo.errors import WrongTypeError

    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    for call in (lambda: views.attention(None, tokens), lambda: views.attention(cache, tokens, model="tiny-neo"),
                 lambda: views.attention(cache, object()), lambda: views.lens("tiny-neo", tokens),
                 lambda: views.lens(model, tokens, tuned="my-lens"), lambda: views.attributions(None, tokens, 1),
                 lambda: views.patching("values"), lambda: views.attention(cache, tokens, model, name=3)):
        with pytest.raises(WrongTypeError):
            call()
    with pytest.raises(UserError, match="centre=nan"):
        views.patching(torch.zeros(2, 3), centre=float("nan"))


# ---- a view's file is the format its name says: an HTML page, or a refusal that names the fix -------------------------

def every_view(model) -> list:
    """One page of each of the five views."""
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    return [views.attention(cache, tokens, model, name="tiny-neo", prompt=PROMPT), views.lens(model, PROMPT),
            views.attributions(model, PROMPT, "M", "J"),
            views.patching(torch.zeros(2, tokens.shape[1]), "pos", model=model, tokens=tokens),
            views.circuit(EAP / "eap-ig-tiny-gpt2-ioi16-eap.json")]


@pytest.mark.parametrize("suffix", [".png", ".PNG", ".svg", ".pdf", ".jpg", ".json", ".txt"])
def test_every_view_refuses_to_save_a_page_under_another_formats_name(model, tmp_path, suffix):
    for page in every_view(model):
        target = tmp_path / f"x{suffix}"
        with pytest.raises(UserError) as caught:
            page.save(target)
        message = str(caught.value)
        assert repr(suffix) in message and "x.html" in message, message  # the suffix, and the name to use
        if suffix.lower() in (".png", ".svg", ".pdf", ".jpg"):  # an image: the command drawing one, if any
            assert ("--plot x" in message) == (page.kind != "attention"), message
            assert page.kind != "attention" or "no static plot" in message, message
        assert not target.exists()


@pytest.mark.parametrize("name, written", [("x.html", "x.html"), ("x.HTM", "x.HTM"), ("x", "x.html")])
def test_every_view_saves_html_under_an_html_name(model, tmp_path, name, written):
    for page in every_view(model):
        path = page.save(tmp_path / name)
        assert path == tmp_path / written and path.read_text(encoding="utf-8") == page.html


def test_the_circuit_views_static_plot_command_draws_the_file(tmp_path):
    """The command a refused circuit.png names (`minineo discover --from ... --plot`, no --out: it is optional with
    --from) does draw the circuit and writes nothing else."""
    with pytest.raises(UserError) as caught:
        views.circuit(EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json").save(tmp_path / "circuit.png")
    assert "`minineo discover --from GRAPH.json --task TASK --plot circuit.png`" in str(caught.value)
    result = CliRunner().invoke(app, ["discover", "--model", "tiny-gpt2", "--from",
                                      str(EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json"), "--task",
                                      str(EAP / "tiny-gpt2-ioi16.jsonl"), "--plot", str(tmp_path / "circuit.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "circuit.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["circuit.png"]


@pytest.mark.parametrize("name, suggested", [("x.html.png", "x.html"), ("x.htm.pdf", "x.htm"), ("x.tar.png", "x.tar.html"),
                                             ("x.png", "x.html")])
def test_a_refused_name_suggests_its_stem_as_the_page(model, tmp_path, name, suggested):
    """The name to use is the stem with .html, unless the stem already is a page's name (x.html.png: x.html)."""
    for page in every_view(model):
        with pytest.raises(UserError) as caught:
            page.save(tmp_path / name)
        assert f"save it as {suggested};" in str(caught.value) or str(caught.value).endswith(f"save it as {suggested}")
        assert ".html.html" not in str(caught.value)


def test_a_name_that_is_only_an_extension_is_refused_and_a_trailing_dot_is_no_extension(model, tmp_path):
    for page in every_view(model):
        for name in (".html", ".HTM"):
            with pytest.raises(UserError, match="has no name before the extension"):
                page.save(tmp_path / name)
        assert page.save(tmp_path / "x.") == tmp_path / "x.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.html"]
    runner = CliRunner()
    result = runner.invoke(app, ["view-circuit", str(EAP / "eap-ig-tiny-gpt2-ioi16-eap.json"), "--out",
                                 str(tmp_path / ".html")])
    assert result.exit_code == 1 and "has no name before the extension" in result.output
    result = runner.invoke(app, ["view-circuit", str(EAP / "eap-ig-tiny-gpt2-ioi16-eap.json"), "--out",
                                 str(tmp_path / "y.")])
    assert result.exit_code == 0 and (tmp_path / "y.html").is_file(), result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.html", "y.html"]


COMMANDS_WRITING_A_VIEW = {
    "view": ["view", PROMPT, "--out"], "view-circuit": ["view-circuit", str(EAP / "eap-ig-tiny-gpt2-ioi16-eap.json"),
                                                        "--out"],
    "lens": ["lens", PROMPT, "--html"], "attribute": ["attribute", PROMPT, "--answer", " Mary", "--html"],
    "patch": ["patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), "--answer", " Mary", "--wrong", " John",
              "--html"],
    "path-patch": ["path-patch", PROMPT, PROMPT.replace("John gave", "Mary gave"), "--answer", " Mary", "--wrong",
                   " John", "--html"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS_WRITING_A_VIEW))
def test_every_command_writing_a_view_refuses_a_png_name_and_writes_nothing(tmp_path, command):
    target = tmp_path / "page.png"
    result = CliRunner().invoke(app, [*COMMANDS_WRITING_A_VIEW[command], str(target)])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "'.png'" in result.output and ".html" in result.output, result.output
    assert "Traceback" not in result.output and not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_attention_refuses_a_cache_recorded_on_another_model_of_the_same_shape(model):
    """The page named `model` and showed the other model's patterns: a cache now carries who recorded it."""
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    again = minineo.load()  # the same model loaded twice is the same model
    assert cache.model == again.identity() and cache.model.startswith("tiny-neo (weights ")
    views.attention(cache, tokens, again)
    other = minineo.Model(model.config, model.tokenizer)  # one shape, other weights
    with torch.no_grad():
        for p in other.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    with pytest.raises(UserError, match=re.escape(f"the cache was recorded on {cache.model}, but model is an unnamed "
                                                  "model (weights ")):
        views.attention(cache, tokens, other)
    with torch.no_grad():
        again.W_E[0, 0] += 1.0  # an in-place edit of a sampled weight changes the identity
    assert again.identity() != cache.model
    assert cache.to("cpu").model == cache.model
