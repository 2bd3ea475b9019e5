"""Issue 29 part 3, nothing silent: each case is tried as a user meets it, and each kind (not only the case named)
is an error that names both sides, or a message through minineo's own reporting, never a quiet wrong answer."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import minineo
from minineo import analysis, report
from minineo.analysis.tuned_lens import TunedLens
from minineo.checkpoints.hub import EMBEDDED_DIR
from minineo.cli import app, plots
from minineo.errors import UserError

PROMPT = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = PROMPT.replace("John gave", "Mary gave")
ANSWERS = ["--answer", " Mary", "--wrong", " John"]
DATA = Path(__file__).parent / "data"
SAE = DATA / "saelens_package" / "tiny_neo_resid_post_1"  # written by SAELens for tiny-neo's blocks.1 resid_post
PACKAGE_LENS = DATA / "tuned_lens_package" / "gpt2"  # written by the tuned-lens package itself


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=200)


def error_text(result, *fragments: str) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    text = " ".join(result.stderr.split())
    assert text.startswith("error:") and "Traceback" not in result.output, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return text


@pytest.fixture(scope="module")
def neo():
    return minineo.load()


@pytest.fixture(scope="module")
def gpt2():
    return minineo.load("tiny-gpt2")


# ---- an artefact made for another model is refused with both identities named ------------------------------

def test_a_tuned_lens_for_another_model_of_the_same_shape_is_refused_naming_both(neo, gpt2, tmp_path):
    assert (neo.config.n_layers, neo.config.d_model) == (gpt2.config.n_layers, gpt2.config.d_model)  # shapes agree
    TunedLens(neo).save(tmp_path / "lens")
    with pytest.raises(UserError) as caught:
        TunedLens.load(tmp_path / "lens", gpt2)
    message = str(caught.value)
    assert "tiny-neo" in message and "tiny-gpt2" in message and "unembed_hash" in message
    assert TunedLens.load(tmp_path / "lens", neo).identity["unembed_hash"] == analysis.tuned_lens.unembed_hash(neo)
    result = invoke("lens", "hi", "--model", "tiny-gpt2", "--tuned", str(tmp_path / "lens"))
    error_text(result, "tiny-neo", "tiny-gpt2")


def test_a_package_lens_checks_the_unembed_hash_the_package_recorded(tmp_path):
    """The oracle is the tuned-lens package's own hash in its config.json: its model passes, a model of the same
    shape with other weights is refused."""
    from hf_oracle import build_hf, save_hf
    from transformers import GPT2Config

    own = minineo.load(PACKAGE_LENS / "model")
    recorded = json.loads((PACKAGE_LENS / "lens" / "config.json").read_text())["unembed_hash"]
    assert analysis.tuned_lens.unembed_hash(own) == recorded
    TunedLens.load(PACKAGE_LENS / "lens", own)
    other = minineo.load(save_hf(build_hf(GPT2Config.from_pretrained(PACKAGE_LENS / "model"), seed=7), tmp_path / "m"))
    with pytest.raises(UserError, match=f"unembed_hash {recorded[:12]}.*this model is .*unembed_hash"):
        TunedLens.load(PACKAGE_LENS / "lens", other)


def test_an_sae_for_another_model_or_site_width_is_refused_naming_both(neo, gpt2, tmp_path):
    sae = minineo.sae.load(SAE)
    assert sae.check_model(neo) == "blocks.1.resid_post"
    with pytest.raises(UserError, match="trained on the model 'tiny-neo'.*this model is 'tiny-gpt2'"):
        sae.check_model(gpt2)  # the same width (128): only the recorded model tells them apart
    with pytest.raises(UserError, match="trained on the model 'tiny-neo'"):
        analysis.sae_metrics(gpt2, sae, gpt2.to_tokens(["hello there"]))
    narrow = minineo.sae.load(DATA / "saelens_package" / "standard")  # d_in 32
    with pytest.raises(UserError, match="d_in=32, but blocks.1.resid_post of tiny-neo is 128 wide"):
        narrow.check_model(neo)
    corpus = tmp_path / "c.txt"
    corpus.write_text("When Mary and John went to the store\n" * 8)
    error_text(invoke("sae-eval", str(SAE), str(corpus), "--model", "tiny-gpt2"), "tiny-neo", "tiny-gpt2")


@pytest.mark.parametrize("damage", ["nan", "inf", "int32", "int64"])
def test_non_finite_or_integer_sae_weights_are_refused(tmp_path, damage):
    folder = tmp_path / "sae"
    shutil.copytree(SAE, folder)
    tensors = load_file(str(folder / "sae_weights.safetensors"))
    if damage in ("nan", "inf"):
        tensors["W_dec"][3, 5] = float(damage)
        expected = "W_dec hold NaN or inf"
    else:
        tensors["b_enc"] = tensors["b_enc"].to(getattr(torch, damage))
        expected = f"b_enc is torch.{damage}, not a floating-point tensor"
    save_file(tensors, str(folder / "sae_weights.safetensors"))
    with pytest.raises(UserError, match=re.escape(expected)):
        minineo.sae.load(folder)


def test_a_tokenizer_with_ids_past_the_vocabulary_is_refused_at_load(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(EMBEDDED_DIR, folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    vocab_size = json.loads((folder / "config.json").read_text())["vocab_size"]
    tokenizer["added_tokens"].append({"id": vocab_size, "content": "<|pad|>", "single_word": False, "lstrip": False,
                                      "rstrip": False, "normalized": False, "special": True})
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(UserError, match=f"ids up to {vocab_size} .* has ids 0..{vocab_size - 1}"):
        minineo.load(folder)
    error_text(invoke("run", "hi", "--model", str(folder)), "tokenizer.json", f"vocab_size {vocab_size}")


def test_an_attention_mask_row_with_no_real_token_is_refused(neo):
    """Decided: refused, not warned. A row of zeros has no real token, so HF gives it numbers averaged over
    padding; there is no right answer to return for it."""
    tokens = neo.to_tokens(["a", "hello"])
    mask = tokens.attention_mask.clone()
    mask[0] = 0
    for call in (lambda: neo(tokens, attention_mask=mask), lambda: neo.run_with_cache(tokens, attention_mask=mask),
                 lambda: neo.generate(tokens, 2, attention_mask=mask), lambda: neo.loss(tokens, attention_mask=mask)):
        with pytest.raises(UserError, match="attention_mask row 0 \\(of 2\\) has no 1"):
            call()
    neo(tokens, attention_mask=tokens.attention_mask)  # left padding (rows with zeros and ones) is fine


# ---- dropped documents: counted on stderr by minineo itself, whatever the warning filters ------------------

def test_dropped_documents_are_reported_even_with_python_warnings_ignored(tmp_path):
    corpus = tmp_path / "c.jsonl"
    rows = [{"text": "When Mary and John went to the store. " * 3}, {"title": "no text"}, {"text": None}] * 3
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-W", "ignore", "-m", "minineo", "eval", str(corpus), "--context", "16"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stderr.split())
    assert said.startswith("warning: 6 of the 9 documents") and "--text-field" in said, said
    with report.collect() as said:
        assert len(list(minineo.corpus.read_documents(corpus))) == 3
    assert len(said) == 1 and "6 of the 9 documents" in said[0]
    empty = tmp_path / "none.jsonl"
    empty.write_text(json.dumps({"title": "x"}) + "\n" + json.dumps({"text": None}) + "\n")
    error_text(invoke("eval", str(empty)), "none of the 2 documents", "--text-field")


# ---- third-party chatter stays out -----------------------------------------------------------------------

def test_transformers_loading_bars_are_silenced(capfd):
    """minineo.zoo.behaviour.measure (the zoo scripts' HF check) loads with transformers after this call."""
    import transformers

    report.quiet_third_parties()
    transformers.GPTNeoForCausalLM.from_pretrained(EMBEDDED_DIR)
    out, err = capfd.readouterr()
    assert "Loading weights" not in out + err and "it/s" not in err, err[-500:]


@pytest.mark.parametrize("corpus_kind", ["jsonl", "saved"])
def test_a_command_reading_a_corpus_prints_only_minineo_lines(tmp_path, corpus_kind):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"text": [f"When Mary and John went to the store {i}." for i in range(30)]})
    path = {"jsonl": tmp_path / "c.jsonl", "saved": tmp_path / "saved"}[corpus_kind]
    {"jsonl": lambda: data.to_json(path), "saved": lambda: data.save_to_disk(str(path))}[corpus_kind]()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("HF_DATASETS_DISABLE_PROGRESS_BARS", "DATASETS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "minineo", "harvest", str(path), "--names", "blocks.0.resid_post",
                           "--out", str(tmp_path / "acts"), "--context", "16", "--max-tokens", "64"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # no datasets bars, log lines or Python warnings
    assert done.stdout.startswith("4 rows of 16 tokens"), done.stdout


# ---- list options: an unknown, empty or repeated item is an error --------------------------------------------

@pytest.mark.parametrize("args, fragments", [
    (["ablate", PROMPT, *ANSWERS, "--heads", "1.0,,1.1"], ["--heads", "item 2 of 3 is empty"]),
    (["ablate", PROMPT, *ANSWERS, "--heads", "1.0,"], ["--heads", "item 2 of 2 is empty"]),
    (["ablate", PROMPT, *ANSWERS, "--heads", "1.0,1.00"], ["--heads", "head 1.0 twice"]),
    (["ablate", PROMPT, *ANSWERS, "--heads", "1.0,7.0"], ["--heads", "head 7.0 does not exist"]),
    (["path-patch", PROMPT, CORRUPTED, *ANSWERS, "--receivers", "1.0:q,1.0:q"], ["--receivers", "twice"]),
    (["path-patch", PROMPT, CORRUPTED, *ANSWERS, "--receivers", "1.0:q,1.1:x"], ["'x'", "'q', 'k' or 'v'"]),
    (["path-patch", PROMPT, CORRUPTED, *ANSWERS, "--receivers", "1.0:q,"], ["--receivers", "is empty"]),
    (["harvest", "c.txt", "--names", "blocks.0.resid_post,,", "--out", "never"], ["--names", "is empty"]),
    (["harvest", "c.txt", "--names", "blocks.0.resid_post,blocks.0.bogus", "--out", "never"], ["blocks.0.bogus"]),
    (["harvest", "c.txt", "--names", "blocks.0.resid_post,blocks.0.hook_resid_post", "--out", "never"],
     ["blocks.0.resid_post a second time"]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_an_unknown_empty_or_repeated_item_of_a_list_option_is_an_error(tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    Path("c.txt").write_text("When Mary and John went to the store\n" * 20)
    error_text(invoke(*args), *fragments)
    assert not Path("never").exists()


# ---- nothing unscored ranked as a score ------------------------------------------------------------------------

def test_circuits_lists_only_the_scored_pairs(neo):
    result = invoke("circuits", "--top", "1000")
    assert result.exit_code == 0, result.output
    rows = re.findall(r"│ (L\dH\d) +│ (L\dH\d) +│ +(-?\d\.\d{3}) │", result.stdout)
    # composition is scored from each head to each head of a later layer: 4 x 4 pairs on 2 layers of 4 heads
    assert len(rows) == 16 and all(int(s[1]) < int(r[1]) for s, r, _ in rows), rows
    assert "-1.000" not in result.stdout and "nan" not in result.stdout.lower()
    assert "all 16 scored pairs listed" in " ".join(result.stdout.split())


def test_path_patching_to_receivers_no_sender_reaches_says_so(neo):
    error_text(invoke("path-patch", PROMPT, CORRUPTED, *ANSWERS, "--receivers", "0.1:q,0.2:k"),
               "no sender can reach the receivers", "layer 0")
    from minineo.analysis.path_patching import check_reach, check_senders

    with pytest.raises(UserError, match="no sender can reach"):
        check_reach(neo, check_senders(neo, [(1, 0)]), [(1, 2, "q")])
    check_reach(neo, check_senders(neo, "heads"), [(1, 2, "q")])  # layer 0's heads reach it
    result = invoke("path-patch", PROMPT, CORRUPTED, *ANSWERS, "--receivers", "1.1:q", "--top", "100")
    assert result.exit_code == 0, result.output
    ranked = re.findall(r"│ +(\d) │ +H(\d) │", result.stdout)
    assert sorted(ranked) == [("0", str(h)) for h in range(4)]  # layer 1's heads cannot reach a layer-1 input
    assert "4 heads of layer 1 and later have no path" in " ".join(result.stdout.split())


# ---- a user's long string is not echoed whole ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["attribute", "ablate", "patch", "path-patch"])
def test_a_15_kb_answer_is_not_echoed_whole(command):
    answer = " Mary" * 3000  # 15 000 characters
    prompts = [PROMPT] if command in ("attribute", "ablate") else [PROMPT, CORRUPTED]
    for wrong in (" John", answer):  # a result, and an error (no differing token)
        result = invoke(command, *prompts, "--answer", answer, "--wrong", wrong)
        assert len(result.output) < 4000, (command, len(result.output))
        assert "(15000 characters)" in result.output, result.output[-800:]


# ---- a plot labels what it shows ------------------------------------------------------------------------------

def test_a_head_and_position_patching_plot_labels_every_head(tmp_path, monkeypatch):
    seen = {}
    save = plots._save

    def keep_labels(fig, plt, path):
        ax = fig.axes[0]
        seen["rows"] = [t.get_text() for t in ax.get_yticklabels()]
        seen["columns"] = [t.get_text() for t in ax.get_xticklabels()]
        seen["axes"] = (ax.get_xlabel(), ax.get_ylabel())
        save(fig, plt, path)

    monkeypatch.setattr(plots, "_save", keep_labels)
    clean = "Mary and John left. John gave it to"
    result = invoke("patch", clean, clean.replace("John gave", "Mary gave"), *ANSWERS, "--site", "attn.z", "--per",
                    "head_pos", "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 0, result.output
    assert seen["rows"] == [f"L{layer}H{head}" for layer in range(2) for head in range(4)]
    assert seen["axes"] == ("position", "layer, head")
    assert not any(re.search(r"H\d$", label) for label in seen["columns"]), seen["columns"]
    assert "J/M" in seen["columns"]  # where the prompts differ (clean/corrupted token) is always labelled


def test_integer_typed_lens_weights_are_refused_like_model_and_sae_weights(neo, tmp_path):
    TunedLens(neo).save(tmp_path / "lens")
    tensors = load_file(str(tmp_path / "lens" / "lens.safetensors"))
    tensors["weight"] = tensors["weight"].to(torch.int32)
    save_file(tensors, str(tmp_path / "lens" / "lens.safetensors"))
    with pytest.raises(UserError, match="weight is torch.int32, not a floating-point tensor"):
        TunedLens.load(tmp_path / "lens", neo)
