"""The fuzz harness over the public API (issue 29 part 2): every public function, class and method that
tests/fuzz_walk.py discovers gets, argument by argument, wrong types, out-of-range values, bools and floats for
integers, NaN, empty and mis-shaped tensors, while every other argument holds a valid value.

The only acceptable outcomes are a value, or minineo's UserError family whose message names the argument. Some bad
values must be refused (a bool or float for an integer, an object of no sensible type, a float tensor of token ids,
NaN for a number): returning for those is a silent wrong answer and fails too. Any other exception (IndexError,
RuntimeError, AttributeError, TypeError, AssertionError...) fails, with the argument and the value in the report.
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzz_walk
from minineo.errors import UserError

ENTRY_POINTS = fuzz_walk.entry_points()
_NOTHING = object()


class Unrelated:
    """A value of no type any minineo argument takes."""

    def __repr__(self) -> str:
        return "<Unrelated>"


def annotation_of(param: inspect.Parameter) -> str:
    if param.annotation is inspect.Parameter.empty:
        return ""
    return param.annotation if isinstance(param.annotation, str) else inspect.formatannotation(param.annotation)


def alternatives(annotation: str) -> set[str]:
    return {part.strip().split("[")[0] for part in re.split(r"[|,\[\]]", annotation.replace("Optional[", "None|")) if part.strip()}


def bad_values(param: inspect.Parameter, valid: Any, qualified: str = "") -> list[tuple[Any, bool, str]]:
    """(value, must it be refused, label) for one argument."""
    kinds = alternatives(annotation_of(param))
    intlike = ("int" in kinds and "float" not in kinds) or (not kinds - {"None"} and type(valid) is int)
    floatlike = "float" in kinds or (not kinds - {"None"} and type(valid) is float)
    out = [(Unrelated(), not ({"Any", "object"} & kinds), "an unrelated object")]
    if intlike:
        out += [(True, "bool" not in kinds, "a bool for an int"), (0.7, True, "a float for an int"), (float("nan"), True, "NaN"),
                (-1, False, "-1"), (0, False, "0")]
        if param.name in INDEX_NAMES:  # an index, not a size: a huge one is out of range, never work to do
            out += [(10**9, True, "10**9")]
    if floatlike:
        out += [(float("nan"), param.name not in NAN_IS_A_VALUE, "NaN"), (float("inf"), False, "inf"),
                (True, True, "a bool for a number")]
    if "bool" in kinds and not intlike:
        out += [("yes", True, "a string for a bool")]
    if "str" in kinds or isinstance(valid, str):
        out += [("no-such-thing", False, "an unknown string"), ("", False, "an empty string")]
    if isinstance(valid, torch.Tensor):
        out += [(valid.flatten()[:0], False, "an empty tensor"), (valid[None, None], False, "two extra axes")]
        if valid.is_floating_point():
            out += [(torch.full_like(valid, float("nan")), False, "a NaN tensor"),
                    (valid.to(torch.int64), False, "an integer tensor")]
        elif param.name == "attention_mask":  # 0/1, HF's float masks included; a row needs a real token
            out += [(valid.float(), False, "a float 0/1 mask"), (valid + 2, True, "values other than 0 and 1"),
                    (torch.zeros_like(valid), True, "rows with no real token")]
        else:
            out += [(valid.float(), True, "a float tensor of ids"),
                    (valid + 10**6, param.name not in IDS_WITHOUT_A_MODEL.get(qualified, ()), "ids out of range"),
                    (valid - 10**6, True, "negative ids")]
    if isinstance(valid, (list, tuple)) and valid:
        out += [(type(valid)(), False, "an empty collection")]
    if isinstance(valid, list) and valid and isinstance(valid[0], tuple):
        out += [([(0.7, 3)], True, "a pair holding a float"), ([(True, 0)], True, "a pair holding a bool"),
                ([(99, 0)], True, "a layer out of range"), ([(0, -1)], True, "a negative head")]
    return out


# integer arguments that index something (so 10**9 is out of range); counts and sizes are not fuzzed with huge
# values (a large count is valid work, only slow)
INDEX_NAMES = {"layer", "head", "position", "answer", "wrong", "token_id", "stop_at_layer"}

# an argument for which NaN is a meaningful value (say why)
NAN_IS_A_VALUE = {"fill": "composition_scores(fill=nan) marks unscored pairs as NaN, as a user may want"}


# ids held by an object that knows no model (so no vocabulary bound): refused where they meet one, each with where
IDS_WITHOUT_A_MODEL = {
    "minineo.discovery.Pairs": {name: "a Pairs holds no model: attribute / evaluate check its ids against the model's "
                                      "vocabulary (tests/test_discovery_boundary.py)"
                                for name in ("clean", "corrupted", "answer", "wrong")},
}

# how a message may name an argument besides its own name, each with why
ALIASES = {
    "name_or_path": ("model",),  # load's first argument is the model: its messages say "model ...", as --model does
}


def names_the_argument(message: str, name: str) -> bool:
    spelled = {name, name.replace("_", " "), name.replace("_", "-"), "--" + name.replace("_", "-"), *ALIASES.get(name, ())}
    return any(re.search(rf"(?<![\w]){re.escape(s)}(?![\w])", message) for s in spelled)


def signature_of(target) -> inspect.Signature:
    return inspect.signature(target)


def call_arguments(qualified: str, target) -> tuple[dict[str, Any], list[str], str | None]:
    """(valid keyword arguments, the fuzzable argument names, a problem) for one entry point."""
    kwargs, names = {}, []
    for name, param in signature_of(target).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or name in ("self", "cls"):
            continue
        make = fuzz_walk.valid_value(qualified, name)
        if make is None:
            if param.default is inspect.Parameter.empty:
                return {}, [], (f"{qualified}: no valid value known for its required argument {name!r}; add one to "
                                "VALID or VALID_FOR in tests/fuzz_walk.py (or opt it out in OPT_OUT, with the reason)")
            names.append(name)  # fuzzed, with its default as the valid value
            continue
        kwargs[name] = make()
        names.append(name)
    return kwargs, names, None


def bound_target(qualified: str, target):
    """A function to call: methods are bound to a real instance of their class."""
    owner = qualified.rsplit(".", 1)[0]
    if owner in fuzz_walk.INSTANCES and not inspect.isclass(target) and qualified.rsplit(".", 1)[1] != "__call__":
        instance = fuzz_walk.INSTANCES[owner]()
        attribute = getattr(type(instance), qualified.rsplit(".", 1)[1])
        if isinstance(inspect.getattr_static(type(instance), qualified.rsplit(".", 1)[1]), staticmethod):
            return attribute
        return getattr(instance, qualified.rsplit(".", 1)[1])
    if qualified == "minineo.Model.__call__":
        return fuzz_walk.model()
    return target


def judge(call, kwargs: dict, name: str, value: Any, must_refuse: bool, label: str) -> str | None:
    """None when the outcome is acceptable, else what went wrong."""
    arguments = dict(kwargs, **{name: value})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call(**arguments)
    except UserError as err:
        if not names_the_argument(str(err), name):
            return f"{name}={label}: {type(err).__name__} does not name {name!r}: {str(err)[:300]}"
        return None
    except Exception as err:  # noqa: BLE001 (every other exception is what the harness looks for)
        return f"{name}={label}: raw {type(err).__name__}: {str(err)[:300]}"
    if must_refuse:
        return f"{name}={label}: accepted (returned a value for a value that must be refused)"
    return None


def fuzz_report(qualified: str, target) -> list[str]:
    kwargs, names, problem = call_arguments(qualified, target)
    if problem:
        return [problem]
    call = bound_target(qualified, target)
    signature = signature_of(target).parameters
    problems = []
    for name in names:
        valid = kwargs.get(name, signature[name].default)
        for value, must_refuse, label in bad_values(signature[name], valid, qualified):
            problem = judge(call, kwargs, name, value, must_refuse, label)
            if problem:
                problems.append(problem)
    return problems


@pytest.mark.parametrize("qualified,target", ENTRY_POINTS, ids=[q for q, _ in ENTRY_POINTS])
def test_fuzz_entry_point(qualified, target, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a bad path such as "no-such-thing" may be a file to write: never in the checkout
    problems = fuzz_report(qualified, target)
    assert not problems, f"{qualified}:\n  " + "\n  ".join(problems)


def test_the_walk_finds_the_public_api():
    found = {q for q, _ in ENTRY_POINTS}
    for expected in ("minineo.load", "minineo.Model.run_with_cache", "minineo.analysis.path_patching",
                     "minineo.sae.load", "minineo.data.evaluation.evaluate", "minineo.Cache.stack"):
        assert expected in found, expected


def _integer_arguments() -> list[tuple[str, str]]:
    """(entry point, argument) for every integer-annotated argument that has a valid call to vary."""
    found = []
    for qualified, target in ENTRY_POINTS:
        kwargs, names, problem = call_arguments(qualified, target)
        if problem:
            continue
        params = signature_of(target).parameters
        for name in names:
            kinds = alternatives(annotation_of(params[name]))
            if "int" in kinds and "float" not in kinds:
                found.append((qualified, name))
    return found


INTEGER_ARGUMENTS = _integer_arguments()
TARGETS = dict(ENTRY_POINTS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_integer_arguments_with_drawn_values(data):
    """Hypothesis draws an integer argument and a value: indices anywhere in +-10**12, sizes and counts in -5..40
    (a large count is valid work, only slow); floats with an integral value (3.0) are never integers."""
    qualified, name = data.draw(st.sampled_from(INTEGER_ARGUMENTS), label="argument")
    big = name in INDEX_NAMES
    value = data.draw(st.one_of(st.integers(-10**12, 10**12) if big else st.integers(-5, 40),
                                st.integers(-5, 40).map(float)), label="value")
    kwargs, _, _ = call_arguments(qualified, TARGETS[qualified])
    problem = judge(bound_target(qualified, TARGETS[qualified]), kwargs, name, value, isinstance(value, float),
                    repr(value))
    assert problem is None, f"{qualified}: {problem}"


def _integer_arguments_with_an_int() -> list[tuple[str, str]]:
    """(entry point, argument) for every integer-annotated argument whose valid value (or default) is a plain int."""
    found = []
    for qualified, name in INTEGER_ARGUMENTS:
        kwargs, _, _ = call_arguments(qualified, TARGETS[qualified])
        if type(kwargs.get(name, signature_of(TARGETS[qualified]).parameters[name].default)) is int:
            found.append((qualified, name))
    return found


def _outcome(call, arguments: dict) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call(**arguments)
    except Exception as err:  # noqa: BLE001 (compared, not judged: the other tests judge errors)
        return err


# entry points that still refuse a numpy / 0-d tensor integer, each with where the fix lies; the test fails when one
# of them starts to work (take it out then)
NUMPY_INTEGERS_PENDING: dict[tuple[str, str], str] = {}  # (function, argument): why it does not take them yet


def test_numpy_integers_and_0d_tensors_are_integers_everywhere():
    """docs/boundary.md: a numpy integer or a 0-d integer tensor is an integer wherever minineo takes one (a token id,
    a count, a layer, an index, a seed). For every integer argument whose valid value is an int, np.int64(value),
    np.int32(value) and torch.tensor(value) must do what the int does: return (the same tensor, where a tensor comes
    back) whenever the int returns."""
    import numpy as np

    arguments = _integer_arguments_with_an_int()
    assert len(arguments) > 30, arguments  # layer, head, answer, n, top_k, context, seed, max_new_tokens, ...
    problems = []
    for qualified, name in arguments:
        kwargs, _, _ = call_arguments(qualified, TARGETS[qualified])
        value = kwargs.get(name, signature_of(TARGETS[qualified]).parameters[name].default)
        call = bound_target(qualified, TARGETS[qualified])
        expected = _outcome(call, dict(kwargs, **{name: value}))
        if isinstance(expected, Exception):
            continue
        failed = []
        for other in (np.int64(value), torch.tensor(value)):
            got = _outcome(call, dict(kwargs, **{name: other}))
            if isinstance(got, Exception):
                failed.append(f"{qualified}({name}={other!r}): {type(got).__name__}: {str(got)[:200]}")
            elif isinstance(expected, torch.Tensor) and not (isinstance(got, torch.Tensor) and torch.equal(got, expected)):
                failed.append(f"{qualified}({name}={other!r}): a different tensor than for {value!r}")
        if (qualified, name) in NUMPY_INTEGERS_PENDING:
            if not failed:
                problems.append(f"{qualified}({name}=...) now takes numpy integers: remove it from NUMPY_INTEGERS_PENDING")
            continue
        problems += failed
    assert not problems, "\n  ".join(problems)
