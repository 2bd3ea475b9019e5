"""A crash-safe folder of activation shards that reads as one `datasets.Dataset` once complete.

    out_dir/
      harvest.json                  the manifest: the arguments that fix the rows, then (when complete) the shards
      data-00000.arrow, ...         shard k holds rows [k * shard_rows, (k + 1) * shard_rows), corpus order
      dataset_info.json, state.json written last: `datasets.load_from_disk(out_dir)` reads the folder

A shard is written to a hidden temporary name, flushed to disk and renamed: the rename is its commit,
so a shard file either holds all its rows or does not exist. Several processes (one per rank) write
disjoint shards into the same folder; only rank 0 writes the manifest and the final index files.
The layout is SAELens's (CacheActivationsRunner): `token_ids` int32 (context,) and one
`Array2D((context, d))` column per TransformerLens hook name.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np

from minineo import checks
from minineo.errors import UserError

FORMAT = "minineo-harvest/1"
MANIFEST = "harvest.json"
_SHARD = re.compile(r"^data-(\d{5,})\.arrow$")
_INDEX_FILES = ("dataset_info.json", "state.json")


@checks.typed
def shard_name(index: int) -> str:
    return f"data-{index:05d}.arrow"


@checks.typed
def features(columns: dict[str, tuple[int, int]], context: int, dtype: str):
    """SAELens's columns: one Array2D((context, d)) per name, then token_ids int32 (context,)."""
    from datasets import Array2D, Features, Sequence, Value

    spec = {name: Array2D(shape=shape, dtype=dtype) for name, shape in columns.items()}
    spec["token_ids"] = Sequence(Value("int32"), length=context)
    return Features(spec)


class ShardFolder:
    """The output folder of one harvest, identified by its arguments (a JSON-able dict).

    `derived` names the arguments the user did not set but that follow from others, each with a note (where
    `{there}` is the folder's value) saying so: when another argument differs too they are its consequence
    and go unreported; alone, they are reported with the note.
    """

    @checks.typed
    def __init__(self, path: str | Path, arguments: dict, derived: dict[str, str] | None = None):
        self.path = Path(path).expanduser()
        self.arguments = json.loads(json.dumps(arguments))  # as it reads back from the manifest
        self.derived = derived or {}

    # ---- checks and start (check on every rank, start on rank 0) ------------------------------------

    @checks.typed
    def manifest(self) -> dict | None:
        file = self.path / MANIFEST
        if not file.is_file():
            return None
        try:
            return json.loads(file.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{file} is not valid JSON ({err}); it is not a harvest this version can continue, "
                            f"give another --out") from None

    @checks.typed
    def check(self) -> bool:
        """True when this folder already holds the complete harvest; raises if it holds anything else."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"the output {self.path} is a file; give a folder (new or empty) with --out")
        manifest = self.manifest()
        if manifest is None:
            if self.path.is_dir() and any(self.path.iterdir()):
                raise UserError(f"the output folder (out_dir) {self.path} holds files that are not a minineo harvest; "
                                f"give a new or empty folder with --out")
            return False
        if manifest.get("format") != FORMAT:
            raise UserError(f"{self.path} holds a harvest of format {manifest.get('format')!r}, not {FORMAT!r}; "
                            f"give another --out")
        if manifest["arguments"] != self.arguments:
            raise UserError(f"{self.path} holds a harvest with other arguments ({_differences(manifest['arguments'], self.arguments, self.derived)}); "
                            f"re-run with the same arguments to continue it, or give another --out")
        return bool(manifest.get("complete"))

    @checks.typed
    def start(self) -> None:
        """Write the manifest of a new harvest and remove temporary files a killed run left behind."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.manifest() is None:
            self._write_json(MANIFEST, {"format": FORMAT, "arguments": self.arguments, "complete": False})
        for stale in self.path.glob(".*.tmp"):
            stale.unlink(missing_ok=True)

    # ---- shards -------------------------------------------------------------------------------------

    @checks.typed
    def completed(self) -> set[int]:
        """Indices of the shards committed so far (by any process)."""
        return {int(m.group(1)) for f in os.listdir(self.path) if (m := _SHARD.match(f))}

    @checks.typed
    def write_shard(self, index: int, columns: dict[str, np.ndarray], features) -> None:
        """Write one shard under a temporary name, flush it to disk, then rename it: all rows or none."""
        from datasets.arrow_writer import ArrowWriter

        final = self.path / shard_name(index)
        temporary = self.path / f".{final.name}.{os.getpid()}.tmp"
        try:
            with ArrowWriter(features=features, path=str(temporary)) as writer:
                writer.write_batch(columns)
                writer.finalize()
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except OSError as err:  # disk full, quota, permissions: the user's machine, not a bug
            temporary.unlink(missing_ok=True)
            raise UserError(f"could not write shard {index} to {self.path} ({err.strerror or err}); free space or "
                            f"fix the folder, then re-run the same command: the {len(self.completed())} "
                            f"complete shards are kept") from None

    # ---- the end (rank 0) ---------------------------------------------------------------------------

    @checks.typed
    def finish(self, rows: int, shard_rows: int, features) -> None:
        """Check that every shard is there with its rows, then write the index files and mark the manifest complete."""
        from datasets import Dataset, DatasetInfo

        n_shards = -(-rows // shard_rows)
        shards = []
        for index in range(n_shards):
            expected = min(shard_rows, rows - index * shard_rows)
            file = self.path / shard_name(index)
            if not file.is_file():
                raise RuntimeError(f"shard {file} is missing at the end of the harvest")
            found = Dataset.from_file(str(file), in_memory=False).num_rows
            if found != expected:
                raise RuntimeError(f"shard {file} holds {found} rows, expected {expected}")
            shards.append({"filename": file.name, "rows": expected})
        fingerprint = hashlib.sha256(json.dumps([self.arguments, shards]).encode()).hexdigest()[:16]
        info = asdict(DatasetInfo(features=features))
        self._write_json("dataset_info.json", {key: info[key] for key in sorted(info)})
        self._write_json("state.json", {
            "_data_files": [{"filename": s["filename"]} for s in shards], "_fingerprint": fingerprint,
            "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
            "_split": None})
        manifest = self.manifest()
        manifest.update(complete=True, rows=rows, shards=shards)
        self._write_json(MANIFEST, manifest)  # last: complete only once the index files are in place

    def _write_json(self, name: str, value: dict) -> None:
        temporary = self.path / f".{name}.{os.getpid()}.tmp"
        try:
            with open(temporary, "w") as handle:
                json.dump(value, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path / name)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise UserError(f"could not write {self.path / name} ({err.strerror or err}); free space or fix the "
                            f"folder, then re-run the same command") from None


def _differences(old: dict, new: dict, derived: dict[str, str]) -> str:
    """The arguments that differ; derived ones only when nothing else does (then with their note)."""
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    keys = [k for k in keys if k not in derived] or keys
    return "; ".join(_model_difference(old.get(k), new.get(k)) if k == "model" else
                     f"{k}: {_short(old.get(k))} there, {_short(new.get(k))} now"
                     + (f" ({derived[k].format(there=old.get(k))})" if k in derived else "") for k in keys)


def _model_difference(old, new) -> str:
    """The model of a harvest is a fingerprint of its config and weights: say what differing means."""
    fingerprint = lambda v: v.get("sha256", v) if isinstance(v, dict) else v  # noqa: E731
    return (f"model: another model's config or weights (fingerprint {_short(fingerprint(old))} there, "
            f"{_short(fingerprint(new))} now: the folder was harvested from a different model or checkpoint)")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


@checks.typed
def load(out_dir: str | Path):
    """The complete harvest in `out_dir` as one `datasets.Dataset` (memory-mapped; corpus order), formatted for torch.

    Indexing gives tensors: `load(out)[0]["blocks.6.hook_resid_post"]` is a (context, d) tensor and
    `load(out)[:8]` stacks rows to (8, context, d) (unformatted, datasets gives nested Python lists, ~10x
    slower). `.with_format("numpy")` or `.with_format(None)` give the other views.
    """
    from minineo.data.corpus import require_datasets

    datasets = require_datasets()
    folder = ShardFolder(out_dir, {})
    manifest = folder.manifest()
    if manifest is None:
        raise UserError(f"out_dir {folder.path} holds no minineo harvest (no {MANIFEST}); give the --out folder of a harvest")
    if not manifest.get("complete"):
        raise UserError(f"the harvest in {folder.path} is not complete ({len(folder.completed())} shards so far); "
                        f"re-run the same `minineo harvest` command to finish it")
    return datasets.load_from_disk(str(folder.path)).with_format("torch")
