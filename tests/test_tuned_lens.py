"""The tuned lens: identity start, training beats the logit lens, files, the tuned-lens package's folders."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import minineo
from minineo import analysis, report
from minineo.analysis.tuned_lens import TunedLens, lens_kl, train_tuned_lens
from minineo.cli import app  # importing the package registers every command
from minineo.errors import UserError

PACKAGE_FIXTURES = Path(__file__).parent / "data" / "tuned_lens_package"  # written by the real tuned-lens package
NAMES = ["Mary", "John", "Alice", "Bob", "Tom", "Anna", "Paul", "Kate", "Mark", "Lucy"]
PLACES = ["store", "park", "school", "garden", "office", "beach"]
OBJECTS = ["a drink", "a book", "the keys", "a letter", "an apple", "the ball"]


def sentences(seed: int, n: int) -> list[str]:
    r = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = r.sample(NAMES, 2)
        place, obj = r.choice(PLACES), r.choice(OBJECTS)
        out.append(r.choice([f"When {a} and {b} went to the {place}, {b} gave {obj} to {a}.",
                             f"{a} and {b} walked to the {place}. Later {b} sent {obj} to {a}."]))
    return out


@pytest.fixture(scope="module")
def neo():
    return minineo.load()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "train.txt"
    path.write_text("\n".join(sentences(0, 600)) + "\n")
    return path


@pytest.fixture(scope="module")
def held_out(neo) -> torch.Tensor:
    """Rows of 64 tokens (batch, 64) from sentences the lens never sees (another seed)."""
    ids = neo.to_tokens(" ".join(sentences(1, 20)))[0]
    return ids[: len(ids) // 64 * 64].view(-1, 64)


@pytest.fixture(scope="module")
def trained(neo, corpus) -> TunedLens:
    return train_tuned_lens(neo, corpus, steps=20, batch_size=8, context=64)


def package_case(arch: str):
    folder = PACKAGE_FIXTURES / arch
    return minineo.load(folder / "model"), folder / "lens", load_file(folder / "expected.safetensors")


# ---- the lens --------------------------------------------------------------------------------------

def test_untrained_tuned_lens_equals_the_logit_lens_exactly(neo, held_out):
    lens = TunedLens(neo)
    tokens = held_out[:2]
    assert not lens.weight.detach().any() and not lens.bias.detach().any()
    logits = lens.logits(neo, tokens)  # (layer + 1, batch, pos, d_vocab)
    assert logits.shape == (neo.config.n_layers + 1, 2, 64, neo.config.d_vocab)
    for row in range(2):
        assert torch.equal(logits[:, row], analysis.logit_lens(neo, tokens[row:row + 1]).logits)
    _, cache = neo.run_with_cache(tokens, names=lambda name: "resid" in name)
    assert torch.equal(lens(cache), logits)
    assert torch.equal(logits[-1], neo(tokens))  # the last row is the model's output, read as is


def test_trained_tuned_lens_has_lower_kl_than_the_logit_lens_on_held_out_text(neo, trained, held_out):
    logit_kl, tuned_kl = lens_kl(neo, held_out), lens_kl(neo, held_out, trained)
    assert (tuned_kl[:-1] < logit_kl[:-1]).all(), (tuned_kl, logit_kl)
    assert float(tuned_kl[-1]) == float(logit_kl[-1]) and float(tuned_kl[-1]) < 1e-6  # final row: no translator
    tuned, logit = analysis.apply_tuned_lens(trained, held_out[:1]), analysis.logit_lens(neo, held_out[:1])
    assert tuned.labels == logit.labels and tuned.kl_to_final.shape == logit.kl_to_final.shape
    torch.testing.assert_close(tuned.kl_to_final.mean(-1), lens_kl(neo, held_out[:1], trained), atol=1e-5, rtol=1e-5)


def test_training_leaves_the_model_untouched(neo, corpus):
    before = {name: p.clone() for name, p in neo.state_dict().items()}
    neo.requires_grad_(True)  # even a model that asks for gradients gets none from the lens
    try:
        train_tuned_lens(neo, corpus, steps=2, batch_size=2, context=32)
    finally:
        neo.requires_grad_(False)
    assert all(torch.equal(before[name], p) for name, p in neo.state_dict().items())
    assert all(p.grad is None for p in neo.parameters())


def test_token_rows_iterator_that_runs_out_ends_training_with_a_warning(neo):
    rows = iter([torch.randint(0, 256, (16,)) for _ in range(4)])
    with report.collect() as said:
        lens = train_tuned_lens(neo, rows, steps=5, batch_size=2, optimizer="adam")
    assert len(said) == 1 and "ran out after 2 of 5 steps" in said[0]
    assert lens.weight.detach().any()


# ---- files -----------------------------------------------------------------------------------------

def test_save_and_load_round_trip(neo, trained, held_out, tmp_path):
    trained.save(tmp_path / "lens")
    meta = json.loads((tmp_path / "lens" / "lens.json").read_text())
    assert (meta["n_layers"], meta["d_model"], meta["architecture"]) == (2, 128, "gpt_neo")
    loaded = TunedLens.load(tmp_path / "lens", neo)
    assert torch.equal(loaded.logits(neo, held_out[:2]), trained.logits(neo, held_out[:2]))
    trained.save(tmp_path / "lens")  # replacing a lens is fine, and leaves nothing beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens"]


def test_a_failed_save_leaves_the_old_lens_whole(neo, trained, tmp_path, monkeypatch):
    TunedLens(neo).save(tmp_path / "lens")
    before = (tmp_path / "lens" / "lens.safetensors").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("minineo.analysis.tuned_lens_files.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        trained.save(tmp_path / "lens")
    assert (tmp_path / "lens" / "lens.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lens"]


def test_a_lens_for_another_model_shape_is_refused(neo, tmp_path):
    gpt2, package_lens, _ = package_case("gpt2")
    with pytest.raises(UserError, match="3 layers of width 16.*2 layers of width 128"):
        TunedLens.load(package_lens, neo)
    TunedLens(neo).save(tmp_path / "lens")
    with pytest.raises(UserError, match="2 layers of width 128.*3 layers of width 16"):
        TunedLens.load(tmp_path / "lens", gpt2)
    with pytest.raises(UserError, match="2 layers of width 128"):
        TunedLens(neo).logits(gpt2, torch.tensor([[1, 2, 3]]))


@pytest.mark.parametrize("damage", ["truncated weights", "garbage json", "no weights", "wrong shape"])
def test_a_corrupt_minineo_lens_is_a_clear_error(neo, tmp_path, damage):
    folder = tmp_path / "lens"
    TunedLens(neo).save(folder)
    weights, meta = folder / "lens.safetensors", folder / "lens.json"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage json":
        meta.write_text("{not json")
    elif damage == "no weights":
        weights.unlink()
    else:
        data = json.loads(meta.read_text())
        TunedLens(minineo.load(PACKAGE_FIXTURES / "gpt2" / "model")).save(tmp_path / "other")
        shutil.copy(tmp_path / "other" / "lens.safetensors", weights)
        meta.write_text(json.dumps(data))
    with pytest.raises(UserError, match="train or download it again"):
        TunedLens.load(folder, neo)


def test_a_folder_that_is_not_a_lens_is_a_clear_error(neo, tmp_path):
    with pytest.raises(UserError, match="is not a tuned-lens folder"):
        TunedLens.load(tmp_path, neo)


# ---- the tuned-lens package's folders (fixtures written by the package itself: make_fixture.py) -----

@pytest.mark.parametrize("arch", ["gpt2", "gpt_neo"])
def test_a_lens_saved_by_the_tuned_lens_package_gives_the_packages_logits(arch):
    model, folder, expected = package_case(arch)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "params.pt"]
    lens = TunedLens.load(folder, model)
    assert float(lens.weight.detach().abs().max()) > 0.1  # random translators, not the identity
    logits = lens.logits(model, expected["tokens"])[:, 0]  # (layer + 1, pos, d_vocab)
    assert logits.shape == expected["logits"].shape
    torch.testing.assert_close(logits, expected["logits"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("damage", ["truncated params", "pickled object", "missing layer", "bad config"])
def test_a_corrupt_package_lens_is_a_clear_error(tmp_path, damage):
    model, source, _ = package_case("gpt2")
    folder = tmp_path / "lens"
    shutil.copytree(source, folder)
    params, config = folder / "params.pt", folder / "config.json"
    if damage == "truncated params":
        params.write_bytes(params.read_bytes()[:200])
    elif damage == "pickled object":  # weights_only=True refuses it: nothing is unpickled
        torch.save({"0.weight": Path("not a tensor")}, params)
    elif damage == "missing layer":
        state = torch.load(params, weights_only=True)
        del state["2.weight"]
        torch.save(state, params)
    else:
        config.write_text('{"d_model": 16}')
    with pytest.raises(UserError, match="download"):
        TunedLens.load(folder, model)


def assert_user_error(result, message: str) -> None:
    """The command line's error boundary: exit 1 and one `error:` paragraph naming the problem, no traceback."""
    text = " ".join(result.stderr.split())
    assert result.exit_code == 1 and text.startswith("error: ") and message in text, (result.exit_code, result.output)
    assert "Traceback" not in result.output


# ---- bad corpora -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [("Hi.\n", "not enough for one row"),  # minineo.data.corpus says so
                                           ("\n".join(sentences(2, 4)), "too few tokens for one step: a step needs 8 rows of 64")])
def test_a_corpus_too_small_for_one_step_is_a_clear_error_and_writes_nothing(tmp_path, text, message):
    small = tmp_path / "small.txt"
    small.write_text(text)  # 4 sentences: about 3 rows of 64 tokens
    out = tmp_path / "lens"
    result = CliRunner().invoke(app, ["tune-lens", str(small), "--out", str(out), "--context", "64", "--batch-size", "8"])
    assert_user_error(result, message)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["small.txt"]


def test_tune_lens_refuses_an_output_path_that_is_not_a_lens_before_training(tmp_path, corpus):
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["tune-lens", str(corpus), "--out", str(tmp_path)])
    assert_user_error(result, "(notes.txt), not a tuned-lens folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"


# ---- the command line ------------------------------------------------------------------------------

def test_tune_lens_then_lens_tuned_shows_both_lenses(corpus, tmp_path):
    out = tmp_path / "lens"
    runner = CliRunner()
    result = runner.invoke(app, ["tune-lens", str(corpus), "--out", str(out), "--steps", "3", "--batch-size", "2",
                                 "--context", "32"], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert (out / "lens.safetensors").is_file() and (out / "lens.json").is_file()
    result = runner.invoke(app, ["lens", "When Mary and John went to the store, John gave", "--tuned", str(out)],
                           catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "logit lens vs tuned lens" in result.output
    for label in ("0_pre", "1_pre", "final_post"):
        assert label in result.output.split("logit lens vs tuned lens")[1]


def test_lens_with_a_wrong_tuned_folder_fails_before_printing_anything(tmp_path):
    (tmp_path / "notes.txt").write_text("not a lens")
    result = CliRunner().invoke(app, ["lens", "When Mary and John", "--tuned", str(tmp_path)])
    assert_user_error(result, str(tmp_path))
    assert "logit lens" not in result.stdout, result.stdout


def test_a_lens_in_memory_for_another_model_of_the_same_shape_is_refused_at_use():
    """tiny-gpt2 and tiny-neo share their shapes; a lens made for one was applied to the other silently (only a lens
    read from a file checked its identity). Each use with another model now names both."""
    import minineo
    from minineo import views
    from minineo.analysis import TunedLens
    from minineo.errors import UserError

    neo, gpt2 = minineo.load("tiny-neo"), minineo.load("tiny-gpt2")
    lens, tokens = TunedLens(gpt2), neo.to_tokens("When Mary and John")
    for use in (lambda: lens.logits(neo, tokens), lambda: lens(neo.run_with_cache(tokens)[1], neo),
                lambda: views.lens(neo, tokens, lens)):
        with pytest.raises(UserError, match=r"made for tiny-gpt2 \(architecture gpt2.*this model is tiny-neo"):
            use()
    assert TunedLens(neo).logits(minineo.load("tiny-neo"), tokens).shape[0] == 3  # the same model loaded twice: fine
