"""The fuzz harness's walk: every public function, class and method of minineo's public packages, found by introspection.

`entry_points()` lists them; a new public function is found without anyone adding it. To fuzz an argument the
harness needs one *valid* value for every other argument: `VALID` gives them by parameter name (built lazily on the
embedded tiny-neo), `VALID_FOR` by qualified name where a name means different things in different functions.
An entry point with a required argument that neither table knows fails the harness, saying what to add.
Opting out needs a reason (OPT_OUT, PACKAGES_NOT_FUZZED, INHERITED).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

import minineo

DATA = Path(__file__).parent / "data"
SAE_FOLDER = DATA / "saelens_package" / "tiny_neo_resid_post_1"

# Subpackages / modules of minineo that are not public API, each with why. Everything else that pkgutil finds under
# minineo/ is walked (minineo.discovery and minineo.views are fuzzed once they land).
PACKAGES_NOT_FUZZED = {
    "minineo.cli": "the command line: fuzzed command by command through the click app (tests/test_fuzz_cli.py)",
    "minineo.forward": "the forward pass's internals; its public face is minineo.Model (fuzzed, methods included)",
    "minineo.record": "site tables and the recorder; public face: minineo.Cache and minineo.all_names (fuzzed)",
    "minineo.checkpoints": "loading internals; public face: minineo.load and minineo.Tokenizer (fuzzed)",
    "minineo.zoo": "scripts run with python -m (their own error boundary, issue 29 part 8) and the card writer",
    "minineo.errors": "the exception classes themselves",
    "minineo.moved": "the old-import-path finder (tests/test_moved_imports.py)",
    "minineo.progress": "progress bars on stderr: no argument comes from a user",
    "minineo.checks": "the validator itself: tested directly with its named cases (tests/test_checks.py)",
    "minineo.config": "minineo.Config is re-exported at the top and fuzzed there",
    "minineo.__main__": "runs the command line when imported (python -m minineo)",
    "minineo.boundary": "the error boundary itself (print_error, run_script, ScriptParser): tested through the scripts "
                        "it wraps (tests/test_scripts_boundary.py) and the CLI (tests/test_fuzz_cli.py)",
    "minineo.outputs": "the one-writer-per-path claim every writer goes through: tested with real concurrent writers "
                       "of every command (tests/test_outputs.py)",
    "minineo.report": "minineo's own warning line on stderr: its argument is minineo's message, never a user's",
}

# Entry points left out, each with its reason.
OPT_OUT = {
    "minineo.Model.compile_fast_path": "runs torch.compile (minutes); covered by the slow tests",
    "minineo.Model.decode": "one decoding step on a KVCache the caller built with kv_cache(); generate() is the "
                            "user's entry point and is fuzzed",
    "minineo.Cache": "built by Model.run_with_cache, not by users (its methods are fuzzed on a real cache)",
    "minineo.Tokenizer": "wraps a `tokenizers` backend object built by from_dir / from_vocab (both fuzzed)",
    "minineo.data.harvest.init_distributed": "initialises torch.distributed for torchrun; a process-wide side effect",
    "minineo.data.corpus.require_datasets": "takes no argument",
    "minineo.analysis.train_tuned_lens": "each accepted call trains a lens (seconds); its arguments are fuzzed "
                                         "through `minineo tune-lens` and tests/test_checks.py",
    "minineo.analysis.ioi_analysis": "each accepted call runs the whole IOI study (seconds); fuzzed through "
                                     "`minineo ioi`",
    "minineo.data.shards.ShardFolder": "the crash-safe folder harvest() writes through, built from that run's own "
                                       "arguments; harvest() and minineo.data.shards.load are the entry points",
}

# Methods a class inherits from torch or Python (nn.Module.to, dict.get...) are not minineo's boundary.
INHERITED = "defined on a non-minineo base class"


def is_result_class(obj: Any) -> bool:
    """A dataclass an analysis returns (Attribution, HeadScores...): a record of numbers, not an input boundary.

    A dataclass users build is walked: one that checks its own fields (a __post_init__) or has a classmethod
    constructor (Config, Graph.from_model, Pairs.from_text); without this rule discovery's Graph and Pairs were left
    out although the harness had their valid values."""
    if not (inspect.isclass(obj) and dataclasses.is_dataclass(obj)):
        return False
    built_by_users = "__post_init__" in vars(obj) or any(isinstance(v, classmethod) for v in vars(obj).values())
    return not built_by_users and obj.__name__ != "Config"


def public_modules() -> list[types.ModuleType]:
    """minineo itself and every public subpackage / module pkgutil finds (not those in PACKAGES_NOT_FUZZED)."""
    found = [minineo]
    for info in pkgutil.iter_modules(minineo.__path__, "minineo."):
        if info.name in PACKAGES_NOT_FUZZED:
            continue
        module = importlib.import_module(info.name)
        found.append(module)
        if info.ispkg and not getattr(module, "__all__", None):  # a package without __all__: walk its modules
            found += [importlib.import_module(sub.name) for sub in pkgutil.iter_modules(module.__path__, info.name + ".")
                      if not sub.name.endswith(".__main__")]
    return found


def public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items() if not n.startswith("_") and callable(obj)
                 and getattr(obj, "__module__", None) == module.__name__]
    return sorted(names)


# Functions of packages left out above that are public all the same, each with why it is walked.
EXTRA_ENTRY_POINTS = {
    "minineo.forward.generate.generate": "Model.generate passes its keyword arguments (temperature, top_k, "
                                         "eos_token_id, pad_token_id...) here: its own signature is fuzzed",
}


def entry_points() -> list[tuple[str, Callable]]:
    """(qualified name, callable): functions, classes (their constructor) and classes' own public methods."""
    seen, found = set(), []
    for module in public_modules():
        for name in public_names(module):
            obj = getattr(module, name)
            if not callable(obj) or isinstance(obj, type) and issubclass(obj, BaseException) or id(obj) in seen:
                continue
            seen.add(id(obj))
            qualified = f"{module.__name__}.{name}"
            if is_result_class(obj):
                continue  # reason: is_result_class
            found.append((qualified, obj))
            if inspect.isclass(obj):
                for method_name, method in vars(obj).items():
                    if method_name.startswith("_") or method_name == "forward" and issubclass(obj, torch.nn.Module) \
                            and obj is minineo.Model:
                        continue  # Model.forward is model(...): fuzzed as the "minineo.Model.__call__" entry below
                    if isinstance(method, (staticmethod, classmethod)) or inspect.isfunction(method):
                        found.append((f"{qualified}.{method_name}", getattr(obj, method_name)))
                if obj is minineo.Model:
                    found.append(("minineo.Model.__call__", obj.forward))
    for qualified in EXTRA_ENTRY_POINTS:
        module, _, name = qualified.rpartition(".")
        found.append((qualified, getattr(importlib.import_module(module), name)))
    if any(q.startswith("minineo.data.shards.ShardFolder.") for q, _ in found):  # its methods go with it (OPT_OUT)
        found = [(q, f) for q, f in found if not q.startswith("minineo.data.shards.ShardFolder.")]
    return [(q, f) for q, f in found if q not in OPT_OUT]


# ---- valid values ------------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def model():
    return minineo.load()


@lru_cache(maxsize=None)
def tokens() -> torch.Tensor:
    return model().to_tokens("When Mary and John went")  # (1, pos)


@lru_cache(maxsize=None)
def corrupted() -> torch.Tensor:
    return model().to_tokens("When Lucy and John went")


@lru_cache(maxsize=None)
def cache():
    return model().run_with_cache(tokens())[1]


@lru_cache(maxsize=None)
def sae():
    import minineo.sae

    return minineo.sae.load(SAE_FOLDER)


@lru_cache(maxsize=None)
def ioi_data():
    from minineo.analysis import ioi_dataset

    return ioi_dataset(model(), n=2)


@lru_cache(maxsize=None)
def corpus_file() -> Path:
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="minineo-fuzz-")) / "corpus.txt"
    path.write_text("When Mary and John went to the store, John gave a drink to Mary.\n" * 8)
    return path


def metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[0, -1, 5] - logits[0, -1, 6]


@lru_cache(maxsize=None)
def discovery_pairs():
    from minineo.discovery import ioi_pairs

    return ioi_pairs(model(), 2)


@lru_cache(maxsize=None)
def scored_graph():
    """The embedded model's graph with EAP scores on two IOI pairs (a copy per call: selections change it)."""
    from minineo.discovery import Graph, attribute

    return attribute(model(), Graph.from_model(model()), discovery_pairs())


def graph_copy():
    return scored_graph().copy()


def circuit():
    from minineo.discovery import apply_topn

    return apply_topn(graph_copy(), 10)


@lru_cache(maxsize=None)
def graph_file() -> Path:
    from minineo.discovery import to_json

    out = fresh_folder().with_suffix(".json")
    to_json(circuit(), out)
    return out


def fresh_folder() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="minineo-fuzz-")) / "out"


def tuned_lens():
    from minineo.analysis import TunedLens

    return TunedLens(model())


VALID: dict[str, Callable[[], Any]] = {
    "model": model, "tokens": tokens, "clean_tokens": tokens, "corrupted_tokens": corrupted,
    "clean_cache": cache, "cache": cache, "metric": lambda: metric, "logits": lambda: model()(tokens()),
    "site": lambda: "resid_pre", "answer": lambda: 5, "wrong": lambda: 6, "heads": lambda: [(0, 1)],
    "W": lambda: model().W_E, "data": ioi_data, "lens": tuned_lens, "sae": sae, "corpus": corpus_file,
    "tokenizer_or_model": model, "tokenizer": lambda: model().tokenizer, "d_vocab": lambda: model().config.d_vocab,
    "documents": lambda: ["When Mary and John went to the store."] * 4, "context": lambda: 8,
    "rows": lambda: [tokens()[0]], "names": lambda: "blocks.0.resid_post", "out_dir": fresh_folder,
    "index": lambda: 0, "config": lambda: model().config, "kind": lambda: "q", "folder": lambda: SAE_FOLDER,
    "hf": lambda: model().config.to_hf(), "layer": lambda: 0, "resid_pre": lambda: cache()["blocks.0.resid_pre"],
    "text": lambda: "When Mary", "ids": lambda: [5, 6], "texts": lambda: ["When Mary", "and John"],
    "token_id": lambda: 5, "directory": lambda: minineo.load().source, "path": fresh_folder,
    "device": lambda: "cpu", "batch": lambda: 1, "max_len": lambda: 8, "x": lambda: cache()["blocks.1.resid_post"],
    "features": lambda: sae().encode(cache()["blocks.1.resid_post"]), "A": lambda: torch.randn(4, 3),
    "B": lambda: torch.randn(3, 5), "columns": lambda: {"blocks.0.resid_post": (8, 64)}, "dtype": lambda: torch.float32,
    "resid": lambda: cache().stack("resid_pre"),
    # minineo.discovery and minineo.views
    "graph": graph_copy, "circuit": circuit, "pairs": discovery_pairs, "n_layers": lambda: 2, "n_heads": lambda: 4,
    "n": lambda: 10, "nodes": lambda: ["input", "a0.h1", "m0", "logits"],
    "task": lambda: "ioi", "values": lambda: torch.randn(2, 6),
}

DEFAULT = object()  # in VALID_FOR: this argument's default is its valid value (the name means something else there)

# a parameter name that means something else in one entry point
VALID_FOR: dict[str, dict[str, Callable[[], Any]]] = {
    "minineo.data.harvest.column_name": {"name": lambda: "blocks.0.resid_post"},
    "minineo.data.harvest.load": {"out_dir": lambda: harvested()},
    "minineo.data.shards.load": {"out_dir": lambda: harvested()},
    "minineo.data.evaluation.token_byte_lengths": {"d_vocab": lambda: model().config.d_vocab},
    "minineo.Cache.stack": {"site": lambda: "resid_post"},
    "minineo.Cache.apply_ln_final": {"x": lambda: cache()["blocks.1.resid_post"]},
    "minineo.Cache.save": {"path": lambda: fresh_folder().with_suffix(".safetensors")},
    "minineo.Cache.get": {"key": lambda: "blocks.0.resid_pre"},
    "minineo.Model": {"config": lambda: model().config},
    "minineo.Config": {f.name: (lambda f=f: getattr(model().config, f.name)) for f in dataclasses.fields(minineo.Config)},
    "minineo.analysis.TunedLens.unembed": {"resid": lambda: cache()["blocks.1.resid_post"]},
    "minineo.data.shards.features": {"dtype": lambda: "float32"},
    "minineo.Model.decode": {},
    "minineo.Model.to_str_tokens": {"tokens": lambda: "When Mary"},
    "minineo.Model.to_string": {"tokens": lambda: tokens()[0]},
    "minineo.Model.to_tokens": {"text": lambda: "When Mary"},
    "minineo.Tokenizer.from_vocab": {"vocab": lambda: vocab_files()[0], "merges": lambda: vocab_files()[1]},
    "minineo.Tokenizer.decode": {"self": lambda: model().tokenizer},
    "minineo.analysis.TunedLens.load": {"path": lambda: saved_lens()},
    "minineo.analysis.TunedLens.logits": {"tokens": tokens},
    "minineo.analysis.apply_tuned_lens": {"tokens": tokens},
    "minineo.analysis.sae_metrics": {"tokens": tokens},
    "minineo.analysis.embedding_geometry": {"name": lambda: "W_E"},
    "minineo.sae.SAE": {
        "W_enc": lambda: sae().W_enc, "b_enc": lambda: sae().b_enc, "W_dec": lambda: sae().W_dec, "b_dec": lambda: sae().b_dec},
    "minineo.sae.SAE.decode": {"like": lambda: None},
    "minineo.sae.load": {"folder": lambda: SAE_FOLDER},
    "minineo.analysis.ioi_dataset": {"names": DEFAULT},
    **{f"minineo.discovery.{name}": {"metric": lambda: __import__("minineo.discovery", fromlist=["x"]).logit_diff}
       for name in ("attribute", "evaluate", "faithfulness", "faithfulness_curve", "mib_scores")},
    "minineo.discovery.acdc": {"pairs": lambda: discovery_pairs()[:1],
                               "metric": lambda: __import__("minineo.discovery", fromlist=["x"]).logit_diff},
    "minineo.views.attention": {"tokens": tokens, "batch": DEFAULT},
    "minineo.discovery.apply_threshold": {"threshold": lambda: 0.01},
    "minineo.views.patching": {"metric": DEFAULT, "values": lambda: torch.randn(2, tokens().shape[1])},
    "minineo.discovery.logit_diff": {"logits": lambda: model()(discovery_pairs().clean,
                                                               attention_mask=discovery_pairs().attention_mask)},
    "minineo.discovery.from_json": {"path": graph_file},
    "minineo.discovery.load_graph": {"path": graph_file},
    "minineo.discovery.from_pt": {"path": lambda: pt_file()},
    "minineo.discovery.to_json": {"path": lambda: fresh_folder().with_suffix(".json")},
    "minineo.discovery.to_pt": {"path": lambda: fresh_folder().with_suffix(".pt")},
    "minineo.discovery.save_graph": {"path": lambda: fresh_folder().with_suffix(".json")},
    "minineo.discovery.Pairs": {"clean": lambda: discovery_pairs().clean, "corrupted": lambda: discovery_pairs().corrupted,
                                "attention_mask": lambda: discovery_pairs().attention_mask,
                                "answer": lambda: discovery_pairs().answer, "wrong": lambda: discovery_pairs().wrong},
    "minineo.discovery.Graph": {"d_model": lambda: 64, "model": lambda: "tiny-neo"},
    "minineo.discovery.Graph.senders_before": {"receiver": lambda: 0},
    "minineo.discovery.Graph.edge_index": {"name": lambda: "input->a0.h1<q>"},
    "minineo.discovery.Graph.score": {"name": lambda: "a0.h1->m0"},
    "minineo.discovery.Graph.receiver_index": {"head": lambda: 1, "qkv": lambda: "k"},
    "minineo.discovery.Pairs.batches": {"size": lambda: 1},
    "minineo.discovery.Pairs.from_text": {"clean": lambda: ["When Mary and John went"],
                                          "corrupted": lambda: ["When Lucy and John went"],
                                          "answer": lambda: [" to"], "wrong": lambda: [" and"]},
    "minineo.discovery.Pairs.from_jsonl": {"path": lambda: pairs_file()},
    "minineo.views.circuit": {"graph": graph_file},
    "minineo.views.View": {"html_text": lambda: "<!doctype html><html><body>hi</body></html>", "kind": lambda: "test"},
    "minineo.views.View.save": {"path": lambda: fresh_folder().with_suffix(".html")},
}

# an instance to call each class's methods on
INSTANCES: dict[str, Callable[[], Any]] = {
    "minineo.Model": model, "minineo.Cache": cache, "minineo.Tokenizer": lambda: model().tokenizer,
    "minineo.Config": lambda: model().config, "minineo.analysis.TunedLens": tuned_lens, "minineo.sae.SAE": sae,
    "minineo.discovery.Graph": graph_copy, "minineo.discovery.Pairs": discovery_pairs,
    "minineo.views.View": lambda: __import__("minineo.views", fromlist=["circuit"]).circuit(graph_file()),
    "minineo.analysis.FactoredMatrix": lambda: __import__("minineo.analysis", fromlist=["ov_circuit"]).ov_circuit(model()),
}


@lru_cache(maxsize=None)
def pairs_file() -> Path:
    import json

    out = fresh_folder().with_suffix(".jsonl")
    out.write_text(json.dumps({"clean": "When Mary and John went", "corrupted": "When Lucy and John went",
                               "answer": " to", "wrong": " and"}) + "\n")
    return out


@lru_cache(maxsize=None)
def pt_file() -> Path:
    from minineo.discovery import to_pt

    out = fresh_folder().with_suffix(".pt")
    to_pt(circuit(), out)
    return out


@lru_cache(maxsize=None)
def harvested() -> Path:
    from minineo.data.harvest import harvest

    out = fresh_folder()
    harvest(model(), corpus_file(), "blocks.0.resid_post", out, context=8, batch_size=2, max_tokens=16)
    return out


@lru_cache(maxsize=None)
def saved_lens() -> Path:
    out = fresh_folder()
    tuned_lens().save(out) if hasattr(tuned_lens(), "save") else None
    return out


@lru_cache(maxsize=None)
def vocab_files() -> tuple[Path, Path]:
    """A GPT-2 style vocab.json + merges.txt: the embedded tokenizer's own, written out."""
    import json

    backend = json.loads((Path(model().source) / "tokenizer.json").read_text())["model"]
    folder = fresh_folder()
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(backend["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in backend.get("merges", [])]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    return folder / "vocab.json", folder / "merges.txt"


def valid_value(qualified: str, name: str) -> Callable[[], Any] | None:
    """How to make a valid value of this argument, or None: fuzz it from its default."""
    own = VALID_FOR.get(qualified, {}).get(name)
    return None if own is DEFAULT else own or VALID.get(name)
