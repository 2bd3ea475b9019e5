"""Repo id or local directory -> a local folder with config.json and *.safetensors (huggingface_hub)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

from minineo.errors import MissingFileError, UserError

# Only what minineo reads: never pytorch_model.bin or other frameworks' weights.
ALLOW_PATTERNS = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                  "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json"]
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # minineo/
PROJECT_ROOT = PACKAGE_DIR.parent
EMBEDDED_NAME = "tiny-neo"  # the default model
EMBEDDED_DIR = PACKAGE_DIR / "zoo" / EMBEDDED_NAME
# The models trained in this repository and shipped inside the package (minineo/zoo/NAME/).
EMBEDDED = {name: PACKAGE_DIR / "zoo" / name for name in (EMBEDDED_NAME, "tiny-gpt2")}


def default_cache_dir() -> Path:
    """$MININEO_CACHE, else the project's weights_cache/ (a source checkout), else ~/.cache/minineo."""
    if os.environ.get("MININEO_CACHE"):
        return Path(os.environ["MININEO_CACHE"]).expanduser()
    if (PROJECT_ROOT / "weights_cache").is_dir():
        return PROJECT_ROOT / "weights_cache"
    return Path.home() / ".cache" / "minineo"


def offline() -> bool:
    """HF_HUB_OFFLINE (read at call time, so it can be set after import)."""
    return os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", "")).lower() in ("1", "true", "yes", "on")


def resolve(
    name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, revision: str | None = None,
) -> Path:
    """A local folder holding the model's files: the directory itself, the embedded model, or a hub snapshot.

    Raises UserError for an empty name (Path('') is the current folder), MissingFileError for no such folder."""
    if not str(name_or_path).strip():
        raise UserError(f"model {str(name_or_path)!r} is empty; give one of the embedded models "
                        f"{' / '.join(EMBEDDED)}, a hub id like 'gpt2', or a folder with config.json and *.safetensors")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    name = str(name_or_path)
    if name in EMBEDDED:
        return EMBEDDED[name]
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        what = "is a file, not a directory" if path.exists() else f"is not a directory (no such folder: {path.resolve()})"
        raise MissingFileError(
            f"model {name!r} {what}; give a folder with config.json and *.safetensors, a hub id like 'gpt2', "
            f"or one of the embedded models {' / '.join(EMBEDDED)}"
        )
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        source = "the cache_dir argument" if cache_dir is not None else (
            "MININEO_CACHE" if os.environ.get("MININEO_CACHE") else "the default cache")
        raise UserError(
            f"the hub cache {cache} (from {source}) is a file, not a folder; point it at a folder "
            "(e.g. unset MININEO_CACHE, or set it to an empty or existing cache directory)"
        )
    close = difflib.get_close_matches(name, list(EMBEDDED), n=1, cutoff=0.8)  # "tiny-gpt3" -> "tiny-gpt2"
    no_folder = (f"there is no folder {path.resolve()} either, so check the spelling"
                 + (f" (did you mean the embedded model {close[0]!r}?)" if close else "") + "; ")
    with _downloading(cache, name):
        return _snapshot(name, revision, cache, no_folder)


def _downloading(cache: Path, name: str):
    """One download of a model into a cache at a time (the second waits, then finds the files there): a claim
    on the model's `models--org--name` folder (minineo.outputs), where the cache can be written to."""
    import contextlib

    from minineo import outputs

    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
    if not os.access(cache, os.W_OK):
        return contextlib.nullcontext()  # a read-only cache: nothing can be written there, nothing to serialise
    return outputs.claim(cache / f"models--{name.replace('/', '--')}", f"the hub cache's copy of {name}", wait=True)


class NotCachedOffline(MissingFileError):
    """A hub model that is not in the cache while the hub cannot be reached (`name`, the `cache` folder, why:
    `offline_reason`); `minineo download` words its own message from these."""

    def __init__(self, name: str, cache: Path, message: str) -> None:
        super().__init__(message)
        self.name, self.cache = name, cache
        self.offline_reason = "HF_HUB_OFFLINE is set" if offline() else "no network"


def _snapshot(name: str, revision: str | None, cache: Path, no_folder: str) -> Path:
    try:
        folder = snapshot_download(
            name, revision=revision, cache_dir=cache, allow_patterns=ALLOW_PATTERNS, local_files_only=offline(),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MissingFileError(
            f"model {name!r} (revision {revision or 'main'}) is not a model on the hub ({first_line}) and {no_folder}"
            f"give a folder with config.json and *.safetensors, a hub id like 'gpt2', or an embedded model ({' / '.join(EMBEDDED)})"
        ) from err
    except LocalEntryNotFoundError as err:
        raise NotCachedOffline(name, cache, 
            f"model {name!r} is not in the hub cache {cache} and the hub could not be reached "
            f"({'HF_HUB_OFFLINE is set' if offline() else 'no network'}); {no_folder}if it is a hub id, "
            f"on a machine with network run "
            f"`minineo download {name}` (or copy its models--{name.replace('/', '--')} folder into {cache}), "
            "or point MININEO_CACHE at a hub cache that holds it."
        ) from err
    finally:
        _remove_incomplete(cache, name)
    return Path(folder)


def _remove_incomplete(cache: Path, name: str) -> None:
    """Leave nothing half-written in the cache after a failed or interrupted download of `name` (only its own
    files: another model's download may be running; this one's is serialised by `_downloading`)."""
    if cache.is_dir():
        for partial in cache.glob(f"models--{name.replace('/', '--')}/blobs/*.incomplete"):
            partial.unlink(missing_ok=True)
