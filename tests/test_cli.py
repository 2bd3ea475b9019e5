"""The `minineo` command on the embedded model, offline."""

from __future__ import annotations

import re
import shutil

import pytest
from hf_oracle import build_hf, hf_config, save_hf
from safetensors.torch import load_file
from typer.testing import CliRunner

from minineo.cli import plots
from minineo.record import sites
from minineo.cli import app  # importing the package registers every command
from minineo.checkpoints.hub import EMBEDDED_DIR

runner = CliRunner()
PROMPT = "When Mary and John went to the store, John gave a drink to"


def invoke(*args):
    result = runner.invoke(app, list(args), catch_exceptions=False, terminal_width=200)
    return result


def test_run_prints_next_tokens_and_the_tokens_seen():
    result = invoke("run", PROMPT, "--top-k", "5")
    assert result.exit_code == 0, result.output
    assert "next token" in result.output and "probability" in result.output and "tiny-neo" in result.output
    assert "greedy continuation" in result.output


def test_cache_lists_every_name_and_saves(tmp_path):
    out = tmp_path / "cache.safetensors"
    result = invoke("cache", "Hello", "--save", str(out))
    assert result.exit_code == 0, result.output
    assert "blocks.1.attn.pattern" in result.output and "ln_final.scale" in result.output
    saved = load_file(out)
    assert saved["blocks.0.attn.pattern"].shape[-1] == 6  # BOS + 5 bytes
    assert not list(tmp_path.glob("*.tmp"))


def test_download_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("download", "gpt2", "--cache-dir", str(tmp_path))
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "could not download 'gpt2': the hub cannot be reached (HF_HUB_OFFLINE is set)" in text
    assert "run this command on a machine with network" in text and "models--gpt2" in text
    # not the loading message: it told this very command to run itself, and looked for a folder named gpt2
    assert "minineo download gpt2" not in text and "no folder" not in text


def test_unknown_model_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["run", "hi", "--model", "./no/such/folder"])
    assert result.exit_code == 1 and "not a directory" in " ".join(result.output.split())


@pytest.mark.parametrize("args", [
    ["embeddings"],
    ["lens", PROMPT],
    ["heads", "--seq-len", "20", "--n-seqs", "4", "--prompt", "abcabc"],
    ["attribute", PROMPT, "--answer", " Mary", "--wrong", " John"],
    ["ablate", PROMPT, "--answer", " Mary", "--wrong", " John", "--heads", "0.1,1.2"],
    ["ioi", "--n", "8"],
])
def test_analysis_commands_print_tables_and_write_plots(tmp_path, args):
    plot = tmp_path / "plot.png"
    result = invoke(*args, "--plot", str(plot))
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", text)]


def test_attribute_compares_multi_token_answers_on_their_first_differing_token():
    result = invoke("attribute", PROMPT, "--answer", " Mary", "--wrong", " John")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "share their first token ␣;" in text and "comparing M against J" in text
    assert "direct logit attribution to M - J" in text
    true_difference = float(re.search(r"true logit difference ([-+]\d+\.\d+)", text).group(1))
    assert abs(true_difference) > 0.5  # a real comparison, not the all-zero table of ' ' against ' '
    assert max(abs(x) for x in numbers(text.split("sum of all")[0])) > 0.1


def test_whitespace_tokens_are_visible():
    result = invoke("run", PROMPT, "--top-k", "3", "--generate", "0")
    assert result.exit_code == 0, result.output
    assert "saw 59 tokens" in result.output and "␣|" in result.output  # the prompt's spaces
    first_row = next(line for line in result.output.splitlines() if re.match(r"│\s+1 │", line))
    assert first_row.split("│")[2].strip() == "␣"  # the default model's top next token is a space


def test_cache_lists_names_in_forward_order_with_finite_norms():
    result = invoke("cache", "Hello")
    assert result.exit_code == 0, result.output
    rows = [line.split("│") for line in result.output.splitlines() if line.startswith("│")]
    names = [row[1].strip() for row in rows]
    order = sites.all_names(load_default_config())
    assert names == [n for n in order if n in names] and len(names) == len(order)
    assert names.index("blocks.0.attn.scores") < names.index("blocks.0.attn.pattern")
    norms = {row[1].strip(): row[4].strip() for row in rows}
    assert "inf" not in " ".join(norms.values()) and "nan" not in " ".join(norms.values())
    assert norms["blocks.0.attn.scores"].endswith("(finite entries)")


def load_default_config():
    import minineo

    return minineo.load().config


def lens_rows(output: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in output.splitlines() if line.startswith("│")]


@pytest.mark.parametrize("width", [80, 200])
def test_lens_reads_at_80_columns(width):
    result = runner.invoke(app, ["lens", PROMPT], terminal_width=width)
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= width
    rows = lens_rows(result.output)  # one table, or several side by side when the columns need more room
    assert len(rows) % 59 == 0 and len(rows) // 59 == result.output.count("the lens's top token"), len(rows)
    # every cell filled, but for "next" (column 2) at each table's last position, which has no next token
    assert all(cell for p, row in enumerate(rows) for i, cell in enumerate(row) if i != 2 or p % 59 < 58), rows
    assert all(label in result.output for label in ("0_pre", "1_pre", "final_post"))


def test_lens_splits_many_layers_into_tables_that_fit_80_columns(tmp_path):
    folder = save_hf(build_hf(hf_config("gpt2", layers=12, vocab=257, n_ctx=128, bos_token_id=256, eos_token_id=256)), tmp_path / "deep")
    shutil.copy(EMBEDDED_DIR / "tokenizer.json", folder / "tokenizer.json")
    result = runner.invoke(app, ["lens", "Hello world", "--model", str(folder)], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= 80
    rows = lens_rows(result.output)
    assert len(rows) > 12 and all(all(row[:3]) and all(row[3:]) for row in rows if row[0] != "11")
    assert all(f"{layer}_pre" in result.output for layer in range(12)) and "final_post" in result.output


def test_ablate_table_sign_matches_its_wording():
    result = invoke("ablate", PROMPT, "--answer", " Mary", "--wrong", " John", "--top", "8")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "most negative = most needed" in " ".join(text.split()) and "change in metric" in text
    table = text.split("change in metric")[1].split("backup heads")[0]
    values = numbers(table)
    assert len(values) == 8 and values == sorted(values)  # most needed first, same sign as the column


class Captured:
    def __init__(self, monkeypatch):
        self.figures = []
        monkeypatch.setattr(plots, "_save", lambda fig, plt, path: self.figures.append(fig))


def test_heads_plot_has_integer_ticks_the_prompt_scores_and_an_unclipped_title(tmp_path, monkeypatch):
    captured = Captured(monkeypatch)
    long_folder = tmp_path / ("a_model_folder_with_a_long_name_" * 3)
    shutil.copytree(EMBEDDED_DIR, long_folder)
    result = invoke("heads", "--seq-len", "10", "--n-seqs", "2", "--prompt", "abcdabcd", "--model", str(long_folder),
                    "--plot", str(tmp_path / "h.png"))
    assert result.exit_code == 0, result.output
    (fig,) = captured.figures
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    titles = [ax.get_title() for ax in visible]
    assert sum("on the prompt" in t for t in titles) == 3 and sum("repeated" in t for t in titles) == 3
    for ax in visible:
        assert list(ax.get_xticks()) == [0, 1, 2, 3] and list(ax.get_yticks()) == [0, 1]
    fig.canvas.draw()
    title = fig._suptitle
    assert str(long_folder) in title.get_text().replace("\n", "")
    box = title.get_window_extent(fig.canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
