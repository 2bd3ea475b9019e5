"""The views in a real headless browser (Debian's Chromium through Playwright): each page loads with no console
error and no network request, hovering shows the value the model computed (read back from the DOM, compared
with the cache or an independent computation to 1e-3), the circuit slider changes the drawn edge count, and a
page opens in under 2 s at GPT-2 small's sizes (12 x 12 heads, 64 tokens; 32,491 edges).

The GPT-2-small-shaped model is a random HF GPT-2 (12 layers x 12 heads, d_model 768, d_mlp 3072) with a
1000-token vocabulary, saved with save_pretrained and loaded by minineo: no view depends on the vocabulary
size except the lens, whose cost it keeps small. It has no tokenizer, so its tokens show as #id.
Screenshots go to docs/images/ (docs/views.md shows them).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from playwright.sync_api import sync_playwright
from safetensors.torch import load_file
from typer.testing import CliRunner

import minineo
from minineo import analysis, views
from minineo.cli import app
from view_browser import launch, open_page, screenshot
from hf_oracle import build_hf, hf_config, save_hf

PROMPT = "When Mary and John went to the store, John gave a drink to "
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to "
EAP = Path(__file__).parent / "data" / "eap_ig"
TUNED = Path(__file__).parent / "data" / "tuned_lens_package" / "gpt2"  # written by the tuned-lens package itself


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def gpt2_small(tmp_path_factory):
    """A random GPT-2-small-shaped model (12 x 12, 768) with a 1000-token vocabulary, via HF save_pretrained."""
    folder = tmp_path_factory.mktemp("gpt2_small")
    save_hf(build_hf(hf_config("gpt2", layers=12, heads=12, d_head=64, d_mlp=3072, vocab=1000, n_ctx=128,
                                    bos_token_id=0, eos_token_id=0)), folder)
    return minineo.load(str(folder))


@pytest.fixture(scope="module")
def models(gpt2_small):
    return {"tiny-neo": minineo.load("tiny-neo"), "tiny-gpt2": minineo.load("tiny-gpt2"), "gpt2-small-shape": gpt2_small}


def prompt_tokens(model, n: int = 64) -> torch.Tensor:
    """The IOI prompt on the zoo models; n random ids on the GPT-2-small-shaped one (64: the issue's page size)."""
    if model.tokenizer is not None:
        return model.to_tokens(PROMPT)
    return torch.randint(0, model.config.d_vocab, (1, n), generator=torch.Generator().manual_seed(0))


def hover_values(page, selector: str) -> list:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.dataset.value === undefined ? null : "
                                               "parseFloat(e.dataset.value))")


MODELS = ["tiny-neo", "tiny-gpt2", "gpt2-small-shape"]


# ---- attention ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", MODELS)
def test_attention_hover_shows_the_cached_pattern(browser, models, which, tmp_path):
    model = models[which]
    tokens = prompt_tokens(model)
    _, cache = model.run_with_cache(tokens)
    view = views.attention(cache, tokens, model, name=which)
    path = view.save(tmp_path / "attention.html")
    if which == "gpt2-small-shape":
        assert tokens.shape[1] == 64 and len(view.html.encode()) < 2_000_000  # the size budget
    opened = open_page(browser, path)
    if which == "gpt2-small-shape":
        assert opened.seconds < 2.0, f"the 12 x 12-head, 64-token page took {opened.seconds:.2f} s to open"
    page, n = opened.page, tokens.shape[1]
    assert page.inner_text("#model") == which and page.inner_text("#version") == minineo.__version__
    assert page.locator("canvas.thumb").count() == model.config.n_layers * model.config.n_heads
    for layer, head in [(0, 1), (model.config.n_layers - 1, model.config.n_heads - 1)]:
        page.click(f"canvas.thumb[data-layer='{layer}'][data-head='{head}']")
        pattern = cache[f"blocks.{layer}.attn.pattern"][0, head]  # (q_pos, k_pos)
        for query in (n // 3, n - 1):
            page.hover(f".tok[data-pos='{query}']")
            shown = hover_values(page, ".tok")
            assert all(v is None for v in shown[query + 1:])
            assert torch.allclose(torch.tensor(shown[:query + 1], dtype=torch.float32), pattern[query, :query + 1], atol=1e-3)
        page.click("#mode-to")
        key = n // 4
        page.hover(f".tok[data-pos='{key}']")
        shown = hover_values(page, ".tok")
        assert torch.allclose(torch.tensor(shown[key:], dtype=torch.float32), pattern[key:, key], atol=1e-3)
        page.click("#mode-from")
        box, cell = page.locator("#big").bounding_box(), int(page.get_attribute("#big", "data-cell"))
        for query, key in [(n - 1, 0), (n // 2, n // 2 - 1)]:
            page.mouse.move(box["x"] + (key + 0.5) * cell, box["y"] + (query + 0.5) * cell)
            readout = page.locator("#readout")
            assert (int(readout.get_attribute("data-query")), int(readout.get_attribute("data-key"))) == (query, key)
            assert abs(float(readout.get_attribute("data-value")) - float(pattern[query, key])) < 1e-3
    opened.check_clean(path.resolve().as_uri())
    if which in ("tiny-neo", "gpt2-small-shape"):
        page.click("canvas.thumb[data-layer='1'][data-head='2']" if which == "tiny-neo" else "canvas.thumb[data-layer='5'][data-head='1']")
        page.hover(f".tok[data-pos='{n - 2}']")
        screenshot(opened, f"attention-{which}.png")


def test_attention_marks_gpt_neo_local_windows(browser, models, tmp_path):
    model = models["tiny-neo"]
    window = model.config.windows[0]
    assert window is not None and model.config.windows[1] is None
    tokens = prompt_tokens(model)
    _, cache = model.run_with_cache(tokens)
    opened = open_page(browser, views.attention(cache, tokens, model).save(tmp_path / "a.html"))
    page = opened.page
    assert f"window {window}" in page.inner_text(".layer-label[data-layer='0']")
    assert "window" not in page.inner_text(".layer-label[data-layer='1']")
    page.click("canvas.thumb[data-layer='0'][data-head='0']")
    query = 30
    page.hover(f".tok[data-pos='{query}']")
    outside = page.eval_on_selector_all(".tok.outside", "els => els.map(e => +e.dataset.pos)")
    assert outside == list(range(query - window + 1))  # keys j <= i - W are outside GPT-Neo's window
    assert all(v == 0 for v in hover_values(page, ".tok.outside"))
    page.click("canvas.thumb[data-layer='1'][data-head='0']")
    page.hover(f".tok[data-pos='{query}']")
    assert page.locator(".tok.outside").count() == 0


def test_attention_repr_html_displays_in_an_iframe(browser, models):
    model = models["tiny-gpt2"]
    tokens = prompt_tokens(model)
    _, cache = model.run_with_cache(tokens)
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_content(views.attention(cache, tokens, model)._repr_html_())
    frame = page.frame_locator("iframe")
    frame.locator("body[data-ready='1']").wait_for(timeout=20_000)
    assert frame.locator("canvas.thumb").count() == 8 and not errors
    page.close()


# ---- lens -----------------------------------------------------------------------------------------------

def oracle_lens(model, tokens) -> torch.Tensor:
    """Probabilities (layer + 1, pos, d_vocab) of each resid_pre and the final residual through ln_final and W_U,
    computed here with F.layer_norm on the residual itself (the lens uses the cached scale)."""
    _, cache = model.run_with_cache(tokens)
    n = model.config.n_layers
    resid = [cache[f"blocks.{layer}.resid_pre"][0] for layer in range(n)] + [cache[f"blocks.{n - 1}.resid_post"][0]]
    ln = model.ln_final
    normed = F.layer_norm(torch.stack(resid), (model.config.d_model,), ln.w, ln.b, model.config.layer_norm_eps)
    return (normed @ model.W_U).softmax(-1)


def check_lens_cells(page, probs: torch.Tensor, tokens: torch.Tensor, cells) -> None:
    for layer, pos in cells:
        page.hover(f".cell[data-layer='{layer}'][data-pos='{pos}']")
        rows = page.eval_on_selector_all("#tooltip tr.top", "els => els.map(e => [+e.dataset.tokenId, "
                                                            "parseFloat(e.dataset.prob)])")
        top = probs[layer, pos].topk(5)
        assert [r[0] for r in rows] == top.indices.tolist()
        assert torch.allclose(torch.tensor([r[1] for r in rows], dtype=torch.float32), top.values, atol=1e-3)
        if pos < tokens.shape[1] - 1:
            nxt = page.locator("#tooltip .next")
            target = int(tokens[0, pos + 1])
            assert int(nxt.get_attribute("data-rank")) == int((probs[layer, pos] > probs[layer, pos, target]).sum())
            assert abs(float(nxt.get_attribute("data-prob")) - float(probs[layer, pos, target])) < 1e-3


@pytest.mark.parametrize("which", MODELS)
def test_lens_hover_shows_each_layers_top_tokens(browser, models, which, tmp_path):
    model = models[which]
    tokens = prompt_tokens(model, 24)
    opened = open_page(browser, views.lens(model, tokens, name=which).save(tmp_path / "lens.html"))
    n_layers, n = model.config.n_layers, tokens.shape[1]
    assert opened.page.locator(".cell").count() == (n_layers + 1) * n
    check_lens_cells(opened.page, oracle_lens(model, tokens), tokens, [(0, 3), (n_layers // 2, n - 2), (n_layers, n - 1)])
    if which == "tiny-gpt2":
        opened.page.hover(f".cell[data-layer='1'][data-pos='{n - 12}']")
        screenshot(opened, "lens-tiny-gpt2.png")


def test_tuned_lens_view_shows_the_tuned_lens_packages_own_probabilities(browser, tmp_path):
    model = minineo.load(str(TUNED / "model"))
    lens = analysis.TunedLens.load(TUNED / "lens", model)
    expected = load_file(str(TUNED / "expected.safetensors"))  # the tuned-lens package's logits (layer + 1, pos, vocab)
    tokens = expected["tokens"]
    opened = open_page(browser, views.lens(model, tokens, lens).save(tmp_path / "tuned.html"))
    page = opened.page
    page.click("#lens-tuned-lens")
    check_lens_cells(page, expected["logits"].softmax(-1), tokens, [(0, 0), (1, 4), (2, 8), (3, 9)])
    page.click("#lens-logit-lens")
    check_lens_cells(page, oracle_lens(model, tokens), tokens, [(1, 4)])


# ---- attributions and patching --------------------------------------------------------------------------

@pytest.mark.parametrize("which", MODELS)
def test_attribution_bars_show_dla_and_sort(browser, models, which, tmp_path):
    model = models[which]
    tokens = prompt_tokens(model, 24)
    answer, wrong = ("M", "J") if model.tokenizer is not None else (5, 7)
    view = views.attributions(model, tokens, answer, wrong, name=which)
    opened = open_page(browser, view.save(tmp_path / "dla.html"))
    page = opened.page
    a, w = [model.tokenizer.encode(x)[0] for x in (answer, wrong)] if model.tokenizer is not None else (answer, wrong)
    dla = analysis.direct_logit_attribution(model, tokens, a, w)
    values = dla.contributions[:, 0]
    shown = dict(zip(page.eval_on_selector_all(".bar-row", "els => els.map(e => e.dataset.label)"),
                     hover_values(page, ".bar-row")))
    assert list(shown) == dla.labels
    assert torch.allclose(torch.tensor(list(shown.values()), dtype=torch.float32), values, atol=1e-3)
    logits = model(tokens)[0, -1]
    true_diff = float(logits[a] - logits[w])  # the sum line states the model's own logit difference
    assert f"{true_diff:+.3f}" in page.inner_text("#sum")
    page.click("#sort-abs")
    order = page.eval_on_selector_all(".bar-row", "els => els.map(e => e.dataset.label)")
    assert order == [dla.labels[i] for i in values.abs().argsort(descending=True, stable=True).tolist()]
    page.hover(".bar-row >> nth=1")
    second = values.abs().argsort(descending=True, stable=True)[1]
    assert page.get_attribute("#tooltip", "data-label") == dla.labels[second]
    assert abs(float(page.get_attribute("#tooltip", "data-value")) - float(values[second])) < 1e-3
    page.click("#sort-value")
    order = page.eval_on_selector_all(".bar-row", "els => els.map(e => e.dataset.label)")
    assert order == [dla.labels[i] for i in values.argsort(descending=True, stable=True).tolist()]
    if which == "tiny-neo":
        page.click("#sort-abs")
        screenshot(opened, "attributions-tiny-neo.png")


@pytest.mark.parametrize("which", MODELS)
def test_patching_heatmap_hover_shows_each_cell(browser, models, which, tmp_path):
    model = models[which]
    if model.tokenizer is not None:
        clean, corrupted = model.to_tokens(PROMPT), model.to_tokens(CORRUPTED)
        a, w = model.tokenizer.encode("M")[0], model.tokenizer.encode("J")[0]
    else:
        clean = torch.randint(0, 1000, (1, 16), generator=torch.Generator().manual_seed(1))
        corrupted = clean.clone()
        corrupted[0, 3] = (corrupted[0, 3] + 1) % 1000
        a, w = 5, 7

    def metric(logits):
        return logits[0, -1, a] - logits[0, -1, w]

    _, clean_cache = model.run_with_cache(clean)
    if which == "gpt2-small-shape":  # one backward pass: the first-order estimate, (layer, pos, head)
        values, per = analysis.attribution_patching(model, corrupted, clean_cache, metric, "attn.z", per="head_pos"), "head_pos"
    else:
        values, per = analysis.activation_patching(model, corrupted, clean_cache, metric, "resid_pre", per="pos"), "pos"
    opened = open_page(browser, views.patching(values, per, model=model, tokens=clean, name=which,
                                               metric="logit difference").save(tmp_path / "p.html"))
    page = opened.page
    grid = values.reshape(values.shape[0], -1)
    assert page.locator("td.hm").count() == grid.numel()
    for row, col in [(0, 0), (grid.shape[0] - 1, grid.shape[1] - 1), (grid.shape[0] // 2, grid.shape[1] // 3)]:
        page.hover(f"td.hm[data-row='{row}'][data-col='{col}']")
        assert (page.get_attribute("#tooltip", "data-row"), page.get_attribute("#tooltip", "data-col")) == (str(row), str(col))
        assert abs(float(page.get_attribute("#tooltip", "data-value")) - float(grid[row, col])) < 1e-3


def test_path_patch_html_shows_what_path_patching_computes(browser, tmp_path):
    out = tmp_path / "paths.html"
    result = CliRunner().invoke(app, ["path-patch", PROMPT.strip(), CORRUPTED.strip(), "--answer", " Mary", "--wrong",
                                      " John", "--html", str(out)])
    assert result.exit_code == 0, result.output
    model = minineo.load()
    clean, corrupted = model.to_tokens(PROMPT), model.to_tokens(CORRUPTED)  # the CLI appends the shared space
    M, J = model.tokenizer.encode("M")[0], model.tokenizer.encode("J")[0]
    ld = lambda logits: logits[0, -1, M] - logits[0, -1, J]
    clean_ld, corrupted_ld = float(ld(model(clean))), float(ld(model(corrupted)))
    grid = analysis.path_patching(model, clean, corrupted, lambda l: (ld(l) - corrupted_ld) / (clean_ld - corrupted_ld))
    opened = open_page(browser, out)
    page = opened.page
    for layer, head in [(0, 3), (1, 1), (1, 3)]:
        page.hover(f"td.hm[data-row='{layer}'][data-col='{head}']")
        assert (page.get_attribute("#tooltip", "data-row"), page.get_attribute("#tooltip", "data-col")) == (str(layer), str(head))
        assert abs(float(page.get_attribute("#tooltip", "data-value")) - float(grid[layer, head])) < 1e-3
    page.hover("td.hm[data-row='1'][data-col='3']")
    screenshot(opened, "path-patching-tiny-neo.png")


def test_patch_html_per_position(browser, tmp_path):
    out = tmp_path / "patch.html"
    result = CliRunner().invoke(app, ["patch", PROMPT.strip(), CORRUPTED.strip(), "--answer", " Mary", "--wrong",
                                      " John", "--html", str(out)])
    assert result.exit_code == 0, result.output
    opened = open_page(browser, out)
    n = len(minineo.load().to_tokens(PROMPT)[0])
    assert opened.page.locator("td.hm").count() == 2 * n
    opened.page.hover(f"td.hm[data-row='1'][data-col='{n - 21}']")  # the subject's first letter (J/M)
    assert opened.page.get_attribute("#tooltip", "data-col") == str(n - 21)
    screenshot(opened, "patching-tiny-neo.png")


# ---- circuits -------------------------------------------------------------------------------------------

def all_edges(n_layers: int, n_heads: int) -> list[str]:
    """Every edge of EAP-IG's graph, enumerated from the rules of /work/shared/discovery/README.md."""
    senders_before = lambda layer: ["input"] + [f"a{l}.h{h}" for l in range(layer) for h in range(n_heads)] + \
        [f"m{l}" for l in range(layer)]
    edges = []
    for layer in range(n_layers):
        for head in range(n_heads):
            edges += [f"{s}->a{layer}.h{head}<{x}>" for s in senders_before(layer) for x in "qkv"]
        edges += [f"{s}->m{layer}" for s in senders_before(layer) + [f"a{layer}.h{h}" for h in range(n_heads)]]
    edges += [f"{s}->logits" for s in senders_before(n_layers)]
    return edges


def drawn(page) -> int:
    return page.locator("path.edge").count()


def set_slider(page, n: int) -> None:
    page.eval_on_selector("#keep", "(e, n) => { e.value = n; e.dispatchEvent(new Event('input')); }", n)


def listed(page) -> dict[str, float]:
    rows = page.eval_on_selector_all("#edge-list tr.edge-row", "els => els.map(e => [e.dataset.edgeName, "
                                                               "parseFloat(e.dataset.score)])")
    return dict(rows)


def top_edges(edges: dict, n: int) -> list[str]:
    return sorted(edges, key=lambda e: -abs(edges[e]["score"]))[:n]


@pytest.mark.parametrize("name", ["eap-ig-tiny-gpt2-ioi16-eap.json", "eap-ig-tiny-gpt2-ioi16-eap-top20.json"])
def test_circuit_of_eap_igs_own_files(browser, name, tmp_path):
    graph = json.loads((EAP / name).read_text())
    assert sorted(graph["edges"]) == sorted(all_edges(2, 4))  # EAP-IG's edge set: 110 edges
    opened = open_page(browser, views.circuit(EAP / name).save(tmp_path / "c.html"))
    page = opened.page
    in_graph = sum(e["in_graph"] for e in graph["edges"].values())
    assert drawn(page) == (in_graph or 50)
    for n in (5, 110, 0, 37):
        set_slider(page, n)
        assert drawn(page) == n
    page.fill("#keep-number", "12")
    page.press("#keep-number", "Enter")
    assert drawn(page) == 12
    set_slider(page, 30)
    page.click(".node[data-node='a1.h0']")
    rows = listed(page)
    expected = [e for e in top_edges(graph["edges"], 30) if "a1.h0" in e.replace("<", "->").split("->")]
    assert list(rows) == expected
    for edge, score in rows.items():
        assert abs(score - graph["edges"][edge]["score"]) < 1e-6
    if name.endswith("top20.json"):
        page.click("#file-circuit")
        page.click(".node[data-node='m0']")
        screenshot(opened, "circuit-tiny-gpt2.png")


def test_circuit_page_draws_the_layers_upwards_as_the_png_does(browser, tmp_path):
    """Input at the bottom, logits on top, layer L above layer L - 1, each layer's MLP above its heads, every edge
    running upwards from its sender to its receiver: the orientation of `discover --plot`'s PNG (which draws input at
    the bottom), so the two pictures of one circuit read the same way."""
    opened = open_page(browser, views.circuit(EAP / "eap-ig-tiny-gpt2-ioi16-eap.json").save(tmp_path / "c.html"))
    page = opened.page
    y = dict(page.eval_on_selector_all(".node", "els => els.map(e => [e.dataset.node, "
                                                   "+e.querySelector('rect').getAttribute('y')])"))
    assert y["logits"] < y["m1"] < y["a1.h0"] < y["m0"] < y["a0.h0"] < y["input"]  # smaller y is higher on screen
    set_slider(page, 110)
    ends = page.eval_on_selector_all("path.edge", "els => els.map(e => { const n = e.getAttribute('d')"
                                                  ".match(/-?[0-9.]+/g).map(Number); return [n[1], n[n.length - 1]]; })")
    assert len(ends) == 110 and all(end < start for start, end in ends)


def drawn_names(page) -> list[str]:
    return page.eval_on_selector_all("path.edge", "els => els.map(e => e.dataset.name)")


@pytest.mark.parametrize("source", ["EAP-IG's pruned top-20", "discover's pruned top-30", "discover's ACDC",
                                    "hand-picked small edges"])
def test_circuit_opens_on_exactly_the_files_in_graph_edges(browser, tmp_path, source):
    """The page opens drawing the file's own circuit, its in_graph edges and no other (finding 7: a pruned top-N or
    an ACDC circuit is no top-N by |score|); the slider is a separate choice (top N), and the button returns."""
    if source == "EAP-IG's pruned top-20":
        path = EAP / "eap-ig-tiny-gpt2-ioi16-eap-top20.json"
    elif source == "hand-picked small edges":  # a circuit chosen by other means than |score| (as ACDC's may be)
        document = json.loads((EAP / "eap-ig-tiny-gpt2-ioi16-eap.json").read_text())
        for name in sorted(document["edges"], key=lambda e: abs(document["edges"][e]["score"]))[:12]:
            document["edges"][name]["in_graph"] = True
            for node in name.split("->"):  # a consistent file: the edge's two nodes are in (files.read_file checks)
                document["nodes"][node.split("<")[0]]["in_graph"] = True
        path = tmp_path / "picked.json"
        path.write_text(json.dumps(document))
    else:
        path = tmp_path / "circuit.json"
        method = ["--method", "acdc", "--model", "tiny-neo"] if "ACDC" in source else \
            ["--method", "eap-ig-inputs", "--top", "30", "--model", "tiny-gpt2"]
        result = CliRunner().invoke(app, ["discover", "--task", "ioi", "--n", "8", *method, "--out", str(path)])
        assert result.exit_code == 0, result.output
    edges = json.loads(path.read_text())["edges"]
    circuit = {name for name, edge in edges.items() if edge["in_graph"]}
    size = len(circuit)
    assert size > 0
    if "ACDC" not in source:  # ACDC's kept edges may happen to be its top |score| ones (they are on tiny-neo's IOI)
        assert circuit != set(top_edges(edges, size)), "the case needs a circuit that is not a top-N"
    page = open_page(browser, views.circuit(path).save(tmp_path / "c.html")).page
    assert sorted(drawn_names(page)) == sorted(circuit)
    assert page.get_attribute("#graph", "data-mode") == "file" and f"{size} in_graph edges" in page.inner_text("#status")
    set_slider(page, size)  # the slider: the top N by |score|, another set of the same size
    assert sorted(drawn_names(page)) == sorted(top_edges(edges, size))
    page.click("#file-circuit")
    assert sorted(drawn_names(page)) == sorted(circuit)
    page.click(".node[data-node='logits']")  # the list of a clicked node holds the circuit's edges into it
    assert set(listed(page)) == {e for e in circuit if e.endswith("->logits")}
    if source.startswith("discover"):  # discover --out writes its |score| curve, and the page shows it (finding 16)
        curve = json.loads(path.read_text())["faithfulness"]
        k, f = curve["n_edges"][-2], curve["faithfulness"][-2]
        set_slider(page, k)
        assert page.inner_text("#faith").startswith(f"faithfulness {f:.3f} at {k} edges (edges ranked by absolute")


def test_circuit_at_gpt2_small_size_draws_the_top_edges_and_opens_fast(browser, tmp_path):
    edges = all_edges(12, 12)
    assert len(edges) == 32_491  # GPT-2 small's count in EAP-IG's convention
    rng = random.Random(0)
    scores = {e: rng.gauss(0, 1) * rng.random() ** 3 for e in edges}  # a few large, many small
    sizes = [max(1, int(p * len(edges))) for p in (.001, .002, .005, .01, .02, .05, .1, .2, .5, 1)]  # MIB's fractions
    graph = {"cfg": {"n_layers": 12, "n_heads": 12, "parallel_attn_mlp": False, "d_model": 768},
             "nodes": {n: {"in_graph": False} for n in ["input", "logits"]},
             "edges": {e: {"score": s, "in_graph": False} for e, s in scores.items()},
             "faithfulness": {"n_edges": sizes, "faithfulness": [min(1.0, 0.2 + k / 2000) for k in sizes]},
             "model": "random scores on GPT-2 small's graph"}
    path = tmp_path / "gpt2-small-random-graph.json"
    path.write_text(json.dumps(graph))
    opened = open_page(browser, views.circuit(path).save(tmp_path / "c.html"))
    assert opened.seconds < 2.0, f"the 32,491-edge page took {opened.seconds:.2f} s to open"
    page = opened.page
    assert drawn(page) == 50
    set_slider(page, 32_491)
    assert drawn(page) == 3000 and page.get_attribute("#graph", "data-kept") == "32491"
    assert "only the 3,000 largest" in page.inner_text("#status")
    set_slider(page, 200)
    assert drawn(page) == 200
    assert page.inner_text("#faith").startswith(f"faithfulness {min(1.0, 0.2 + 162 / 2000):.3f} at 162 edges")
    set_slider(page, 5000)
    page.click(".node[data-node='a11.h5']")
    rows = listed(page)
    expected = [e for e in top_edges(graph["edges"], 5000) if "a11.h5" in e.replace("<", "->").split("->")]
    assert list(rows) == expected and len(rows) > 0
    for edge, score in rows.items():
        assert abs(score - scores[edge]) < 1e-6
    page.click(".node[data-node='a11.h5']")  # a second click on the same node clears the focus
    assert page.locator("#edge-list tr").count() == 0
    set_slider(page, 300)
    page.click(".node[data-node='a6.h6']")
    screenshot(opened, "circuit-gpt2-small-random.png")


@pytest.mark.parametrize("run", ["acdc --kl", "clean-corrupted"])
def test_circuit_page_words_the_colours_for_the_files_unit_and_names_its_method(browser, tmp_path, run):
    """With ACDC's --kl a score is the rise of the KL divergence from the clean run (higher is worse): ACDC keeps an
    edge only when removing it raises the KL by the threshold or more, so every edge the page draws of its circuit is
    red, and the page's words must call red the needed colour. With a logit difference, blue is the needed one. The
    page names the recorded method either way."""
    path = tmp_path / "c.json"
    args = ["--task", "induction", "--method", "acdc", "--kl"] if run == "acdc --kl" else \
        ["--task", "ioi", "--method", "clean-corrupted", "--top", "10"]
    result = CliRunner().invoke(app, ["discover", "--model", "tiny-neo", "--n", "4", *args, "--out", str(path)])
    assert result.exit_code == 0, result.output
    page = open_page(browser, views.circuit(path).save(tmp_path / "c.html")).page
    text = " ".join(page.inner_text("main").split())
    if run == "acdc --kl":
        assert ("blue: score < 0, removing the edge lowers the KL divergence from the clean run; red: score > 0, "
                "removing the edge raises the KL divergence from the clean run: an edge the circuit needs") in text
        assert "Scores are ACDC's (method acdc, with --kl)" in text and "the metric" not in text
        strokes = page.eval_on_selector_all("path.edge", "els => els.map(e => e.getAttribute('stroke'))")
        assert strokes and set(strokes) == {"#b2182b"}  # the circuit, all red: the colour the words call needed
    else:
        assert ("blue: score < 0, removing the edge lowers the logit difference: an edge the circuit needs; red: "
                "score > 0, removing the edge raises the logit difference") in text
        assert "Scores are by method clean-corrupted, estimated" in text


def test_circuit_curve_labels_its_bounds_as_they_are_never_minus_zero(browser, tmp_path):
    """The small faithfulness curve's lower bound -0.0457 once read "-0.0": each bound is labelled at a precision
    that tells it from 0, and a faithfulness that rounds to zero reads 0.000."""
    document = json.loads((EAP / "eap-ig-tiny-gpt2-ioi16-eap.json").read_text())
    document["faithfulness"] = {"n_edges": [0, 5, 11, 22, 110],
                                "faithfulness": [0.0, -0.00004, -0.0457, 0.1664, 1.0000003]}
    page = open_page(browser, views.circuit(document).save(tmp_path / "c.html")).page
    labels = page.eval_on_selector_all("#curve text", "els => els.map(e => e.textContent)")
    high, low = labels[0], labels[1]  # the upper, then the lower bound of the value axis
    assert low != "-0.0" and float(low) < 0 and abs(float(low) - -0.0457) <= 0.0005, labels
    assert abs(float(high) - 1.0000003) <= 0.005 and not high.startswith("-"), labels
    set_slider(page, 5)
    assert page.inner_text("#faith").startswith("faithfulness 0.000 at 5 edges"), page.inner_text("#faith")


def test_lens_html_with_tuned_shows_both_lenses(browser, tmp_path):
    """`minineo lens --tuned DIR --html`: an untrained tuned lens (A = 0, b = 0) is the logit lens, so both tabs
    must show the oracle's numbers."""
    model = minineo.load("tiny-neo")
    analysis.TunedLens(model).save(tmp_path / "identity-lens")
    out = tmp_path / "lens.html"
    result = CliRunner().invoke(app, ["lens", PROMPT.strip(), "--tuned", str(tmp_path / "identity-lens"), "--html", str(out)])
    assert result.exit_code == 0, result.output
    tokens = model.to_tokens(PROMPT.strip())
    opened = open_page(browser, out)
    probs = oracle_lens(model, tokens)
    opened.page.click("#lens-tuned-lens")
    check_lens_cells(opened.page, probs, tokens, [(0, 5), (1, 20)])
    opened.page.click("#lens-logit-lens")
    check_lens_cells(opened.page, probs, tokens, [(2, 30)])


def test_minineo_view_writes_the_attention_page_of_the_prompt(browser, tmp_path):
    out = tmp_path / "attention.html"
    result = CliRunner().invoke(app, ["view", PROMPT, "--model", "tiny-gpt2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = minineo.load("tiny-gpt2")
    tokens = model.to_tokens(PROMPT)
    _, cache = model.run_with_cache(tokens)
    opened = open_page(browser, out)
    page = opened.page
    assert page.inner_text("#model") == "tiny-gpt2" and page.inner_text("#prompt") == PROMPT
    page.click("canvas.thumb[data-layer='1'][data-head='0']")
    query = tokens.shape[1] - 1
    page.hover(f".tok[data-pos='{query}']")
    shown = torch.tensor(hover_values(page, ".tok"), dtype=torch.float32)
    assert torch.allclose(shown, cache["blocks.1.attn.pattern"][0, 0, query], atol=1e-3)


def test_the_pages_number_format_never_shows_a_negative_zero(browser, tmp_path):
    """page.js's fmt / fmt3 (every score, probability and difference on every page): a value that rounds to zero at 3
    digits reads 0.000, never -0.000; other values keep their sign."""
    opened = open_page(browser, views.circuit(EAP / "eap-ig-tiny-gpt2-ioi16-eap.json").save(tmp_path / "c.html"))
    shown = opened.page.evaluate("[fmt(-0.00004), fmt3(-0.00004), fmt(0), fmt(-0.0006), fmt(0.25), fmt3(-1.5)]")
    assert shown == ["+0.000", "0.000", "+0.000", "-0.001", "+0.250", "-1.500"]
