"""Every ```python block of README.md runs as written, in order, in one namespace, on the embedded model.

Blocks marked `# needs gpt2` are left to tests/test_real_weights.py (which runs them where GPT-2 is cached).
"""

from __future__ import annotations

import pytest
import torch
from readme_blocks import needs_gpt2, python_blocks, run, write_corpus


def test_the_readme_has_python_blocks_and_marks_the_gpt2_ones():
    blocks = python_blocks()
    assert len(blocks) >= 5
    assert any(needs_gpt2(code) for _, code in blocks)
    for line, code in blocks:  # an unmarked block must not need a hub model
        if not needs_gpt2(code):
            assert 'load("gpt2"' not in code and "gpt-neo-125M" not in code, f"README.md line {line}: mark it `# needs gpt2`"


def test_every_python_block_runs_on_the_embedded_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # blocks write acts/ and my-lens/ beside the corpus
    write_corpus(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "readme"}
    ran = 0
    for line, code in python_blocks():
        if needs_gpt2(code):
            continue
        try:
            run(code, namespace, line)
        except Exception as err:  # say which block failed, with its own traceback below
            pytest.fail(f"README.md's python block at line {line} failed: {type(err).__name__}: {err}")
        ran += 1
    assert ran >= 5
    model = namespace["model"]
    assert model.config.n_layers == 2  # it ran on tiny-neo
    dla = namespace["dla"]  # the tour's own invariant: contributions sum (with the bias term) to the logit diff
    assert abs(float(dla.contributions.sum() + dla.ln_bias_term[0] - dla.logit[0])) < 1e-4
