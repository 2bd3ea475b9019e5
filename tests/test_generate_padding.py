"""generate refuses a right-padded attention_mask (HF only warns): every row continues from the last position, so
the fix is to pad on the left; left padding (and no padding) is unchanged."""

from __future__ import annotations

import pytest
import torch

import minineo
from minineo.errors import UserError


@pytest.fixture(scope="module")
def model():
    return minineo.load("tiny-neo")


def test_a_right_padded_mask_is_refused_with_the_row_and_the_fix(model):
    tokens = model.to_tokens("hello there")  # (1, pos)
    mask = torch.ones_like(tokens)
    mask[0, -2:] = 0  # [1, 1, ..., 1, 0, 0]: right padding
    with pytest.raises(UserError, match=rf"attention_mask row 0 is right-padded \(a 0 at position "
                                        rf"{tokens.shape[1] - 2} after real tokens.*pad on the left"):
        model.generate(tokens, 3, attention_mask=mask)


def test_the_second_row_is_named(model):
    tokens = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 8]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 1]])
    with pytest.raises(UserError, match=r"row 1 has padding between real tokens \(a 0 at position 2"):
        model.generate(tokens, 2, attention_mask=mask)  # [1, 1, 0, 1]: a gap, not right padding


def test_left_padding_still_generates_what_the_unpadded_row_generates(model):
    """The invariant left padding keeps: a left-padded row continues as the same prompt alone does."""
    prompt = model.to_tokens("hello")
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), prompt], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(prompt)], 1)
    alone = model.generate(prompt, 5, eos_token_id=None)[0, prompt.shape[1]:]
    left = model.generate(padded, 5, attention_mask=mask, eos_token_id=None)[0, padded.shape[1]:]
    assert torch.equal(alone, left)
