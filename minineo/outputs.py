"""Writing an output file or folder: one writer at a time, whole or not at all.

Every command and function that writes a file the user named goes through here:

    with outputs.claim(path, "--plot"):       # an exclusive lock beside the target, or a UserError at once
        with outputs.replacing(path) as tmp:  # write `tmp` (same folder, same extension) ...
            fig.savefig(tmp)                   # ... renamed onto `path` only once it is complete

`claim` takes an exclusive `flock` on a lock file `.{name}.lock` beside the target (a folder target's lock
sits beside the folder, not in it). A second process that claims the same path while the first holds it
fails at once with a UserError naming the path and the process that writes it, before doing any work; the
CLI claims every output at the door and holds it until the command has reported, so no command reports
success for a file another one then replaced. Claims are re-entrant within a thread (a command's claim
covers the library write it calls); threads of one process take turns. The lock is the kernel's: a killed writer releases it, and the stale
lock file it leaves is reused. `replacing` writes beside the target and renames (os.replace, atomic on
POSIX), so a reader sees the old file or the new one, never half of one.

Same pattern as the harvest's shards (minineo/data/shards.py): temporary name, flush, rename.

What is replaced: `refuse_replacing(path, kind, what)`, called by every writing command at its door (before any
work), lets an existing path be replaced only when it holds the kind of artefact the command writes (KINDS: a plot
by --plot, a circuit file by discover, a model folder by train_tiny, a harvest folder by harvest, ...); anything
else is refused with the path, what it holds, and the fix (another path, or delete it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from minineo.errors import UserError

_held: dict[str, list] = {}  # resolved target -> [lock file descriptor, depth]: this process's claims
_turns: dict[str, threading.RLock] = {}  # resolved target -> the lock this process's threads take turns on
_guard = threading.Lock()


def _target(path: str | os.PathLike) -> Path:
    """The absolute path, its folder resolved (two spellings of one folder, through a symlink or `..`, are one
    target); the name itself is not followed, so a symlink is replaced, not written through."""
    path = Path(path).expanduser()
    return path.parent.resolve() / path.name


def lock_file(path: str | os.PathLike) -> Path:
    """The lock file of a target: `.{name}.lock` in the target's folder."""
    path = _target(path)
    return path.with_name(f".{path.name}.lock")


def _holder(lock: Path) -> str:
    """What the lock file says about the process that holds it ('pid 123: minineo patch ...'), or ''. The holder
    writes its pid just after taking the lock, so an empty file is read again for up to a second."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            text = lock.read_text().strip()
        except OSError:
            return ""
        if text or time.monotonic() > deadline:
            return f" (pid {text})" if text else ""
        time.sleep(0.02)


def _acquire(lock: Path, what: str, target: Path, wait: bool) -> int:
    """An open descriptor of `lock` holding its exclusive flock; a UserError if another process holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot write {what} {target}: the lock file {lock} cannot be created "
                            f"({err.strerror or err}); give a path in a folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise UserError(f"{what} {target} is being written by another process{_holder(lock)}; wait for it to "
                            f"finish or give another path (two writers of one file would replace each other's "
                            f"output)") from None
        # The holder before us may have unlinked the lock file between our open and our flock: then the lock
        # we hold is on a file nobody else will open. Retry until the path and our descriptor are one file.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:200]
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}: {command}".encode())
            return fd
        os.close(fd)


@contextlib.contextmanager
def claim(path: str | os.PathLike, what: str = "the output", wait: bool = False) -> Iterator[Path]:
    """Hold the exclusive right to write `path` (a file or a folder) for the duration of the block.

    Yields the target as an absolute Path. Raises UserError at once when another process holds it (`what`,
    e.g. "--plot", names the option in the message); `wait=True` waits for it instead (downloads, where the
    second writer finds the work done). Threads of one process take turns (a second thread waits for the
    first's block to end); within one thread claims nest. The folder holding `path` must exist.
    """
    target = _target(path)
    key = str(target)
    with _guard:
        turn = _turns.setdefault(key, threading.RLock())
    with turn:
        entry = _held.get(key)
        if entry is not None:  # this thread's own claim, one level up
            entry[1] += 1
            try:
                yield target
            finally:
                entry[1] -= 1
            return
        lock = lock_file(target)
        fd = _acquire(lock, what, target, wait)
        _held[key] = [fd, 1]
        try:
            yield target
        finally:
            del _held[key]
            with contextlib.suppress(OSError):
                os.unlink(lock)  # while still holding it: a waiter that opened it retries on the new file
            os.close(fd)


def holds(path: str | os.PathLike) -> bool:
    """True when this process holds the claim on `path`."""
    return str(_target(path)) in _held


@contextlib.contextmanager
def replacing(path: str | os.PathLike, what: str = "the output") -> Iterator[Path]:
    """Yield a temporary file beside `path` (same extension) to write; on success it replaces `path` atomically.

    On an exception the temporary file is removed and `path` is left as it was. Claims `path` for the block.
    """
    target = _target(path)
    with claim(target, what):
        handle, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
        os.close(handle)
        try:
            yield Path(tmp)
            os.chmod(tmp, normal_mode())  # mkstemp's private 0600 is for the temporary file only
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):  # never let the cleanup's own error hide the real one
                os.unlink(tmp)
            raise


def write_text(path: str | os.PathLike, text: str, what: str = "the output") -> None:
    """Write `text` to `path` whole or not at all, under a claim (see `replacing`)."""
    with replacing(path, what) as tmp:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def normal_mode(folder: bool = False) -> int:
    """The mode a plain `open(path, "w")` (or `mkdir`) gives a new file here: 0o666 (0o777 for a folder) less the
    process's umask. Temporary files and folders are private (0600 / 0700) until renamed; this is what they get."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


# ---- what an existing output holds: only the same kind of artefact is replaced -------------------------------------
#
# Every command that writes checks its outputs at the door, before any work (`refuse_replacing`): an existing path is
# replaced only when it already holds the kind of artefact the command writes (a plot by --plot, a circuit file by
# discover, a model folder by train_tiny...); anything else (a torch.save file, a JSON of corpus text, an SAE folder)
# is refused with the path, what it holds, and the fix. A missing path, an empty file and an empty folder are free.

_SNIFF = 1 << 20  # bytes read to recognise a text file (the page's header, an image's magic)
_MAX_DOCUMENT = 256 << 20  # a JSON document over this is no output of minineo's (they are kilobytes to megabytes)
_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "a PNG image", b"%PDF": "a PDF document", b"\xff\xd8\xff": "a JPEG image"}


def _head(path: Path, size: int = _SNIFF) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _image(path: Path) -> bool:
    head = _head(path, 4096)
    return any(head.startswith(magic) for magic in _IMAGE_MAGIC) or b"<svg" in head


def _json(path: Path) -> object:
    """The file's JSON document, or None when it is not one (or too large to be an output of minineo's)."""
    if path.stat().st_size > _MAX_DOCUMENT:
        return None
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError):
        return None


def _json_with(*keys: str, without: tuple[str, ...] = ()) -> Callable[[Path], bool]:
    def recognise(path: Path) -> bool:
        document = _json(path)
        return isinstance(document, dict) and all(k in document for k in keys) and not any(k in document for k in without)

    return recognise


def _safetensors_names(path: Path) -> list[str] | None:
    """The tensor names of a .safetensors file (its JSON header), or None when it is not one."""
    head = _head(path, 8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "little")
    if not 2 <= size <= min(path.stat().st_size - 8, 100 << 20):
        return None
    try:
        header = json.loads(_head(path, 8 + size)[8:])
    except (ValueError, UnicodeDecodeError):
        return None
    return [name for name in header if name != "__metadata__"] if isinstance(header, dict) else None


_CACHE_TOP = {"embed", "pos_embed", "ln_final.scale", "ln_final.normalized", "unembed.in", "logits"}


def _activation_cache(path: Path) -> bool:
    names = _safetensors_names(path)
    return bool(names) and all(n in _CACHE_TOP or n.startswith("blocks.") and not n.endswith((".weight", ".bias"))
                               for n in names)


def _circuit(path: Path) -> bool:
    """EAP-IG's graph file, as minineo.discovery.files writes it: JSON (cfg, nodes, edges) or torch.save (cfg, edges_scores)."""
    document = _json(path)
    if document is None and path.stat().st_size <= _MAX_DOCUMENT:
        import torch

        try:
            document = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - torch raises several types for a file that is not its archive
            return False
    if not isinstance(document, dict) or not isinstance(document.get("cfg"), dict):
        return False
    return "n_layers" in document["cfg"] and ("edges" in document or "edges_scores" in document)


def _page(path: Path) -> bool:
    return _head(path).lstrip()[:15].lower() == b"<!doctype html>" and b"made by minineo" in _head(path)


def _folder_with(*files: str) -> Callable[[Path], bool]:
    return lambda path: path.is_dir() and all((path / f).is_file() for f in files)


def _model_folder(path: Path) -> bool:
    document = _json(path / "config.json") if (path / "config.json").is_file() else None
    return (isinstance(document, dict) and document.get("model_type") in ("gpt2", "gpt_neo")
            and not (path / "cfg.json").exists())  # an SAE folder is not a model folder


# a tuned-lens folder's files (minineo.analysis.tuned_lens_files' META, PACKAGE_CONFIG, PACKAGE_PARAMS: named here, as
# this low-level module imports nothing of the analyses; tests/test_outputs.py checks that they agree)
TUNED_LENS_META, TUNED_LENS_PACKAGE = "lens.json", {"config.json", "params.pt"}


def _tuned_lens(path: Path) -> bool:
    return path.is_dir() and ((path / TUNED_LENS_META).is_file() or {p.name for p in path.iterdir()} <= TUNED_LENS_PACKAGE)


# kind -> (what it is, in a message; is it a folder; does an existing path hold one)
KINDS: dict[str, tuple[str, bool, Callable[[Path], bool]]] = {
    "plot": ("a plot image (PNG, PDF, SVG or JPEG)", False, _image),
    "page": ("an HTML page minineo wrote", False, _page),
    "cache": ("an activation cache (.safetensors of recorded activations)", False, _activation_cache),
    "circuit": ("a circuit file (EAP-IG's graph .json or .pt)", False, _circuit),
    "eval": ("a `minineo eval` JSON report", False, _json_with("model", "corpus", without=("sae",))),
    "sae-eval": ("a `minineo sae-eval` JSON report", False, _json_with("sae", "model", "corpus")),
    "harvest": ("a harvest folder (harvest.json and shards)", True, _folder_with("harvest.json")),
    "tuned-lens": ("a tuned-lens folder", True, _tuned_lens),
    "model": ("a model folder (config.json, model.safetensors, tokenizer.json)", True, _model_folder),
}


def _recognises(kind: str, path: Path) -> bool:
    try:
        return KINDS[kind][2](path)
    except OSError:
        return False


def holding(path: str | os.PathLike) -> str:
    """What an existing `path` holds, in words for a message: one of KINDS's descriptions when one recognises it,
    else what the file looks like ("a torch.save file", "a JSON file", "a folder of 3 files: a, b, c")."""
    path = Path(path)
    found = next((KINDS[kind][0] for kind in KINDS if KINDS[kind][1] == path.is_dir() and _recognises(kind, path)), None)
    if found is not None:
        return found
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir())
        if "cfg.json" in names and any(n.endswith(".safetensors") for n in names):
            return f"an SAE folder ({', '.join(names[:4])})"
        return (f"a folder of {len(names)} {'entry' if len(names) == 1 else 'entries'} ({', '.join(names[:4])}"
                f"{', ...' if len(names) > 4 else ''})")
    try:
        head = _head(path, 512)
    except OSError as err:
        return f"a file that cannot be read ({err.strerror or err})"
    if head[:2] == b"\x80\x02" or head.startswith(b"PK\x03\x04") and _torch_archive(path):
        return "a torch.save file"
    if _safetensors_names(path) is not None:
        return "a .safetensors file of other tensors"
    if _json(path) is not None:
        return "a JSON file"
    if any(head.startswith(magic) for magic in _IMAGE_MAGIC):
        return next(what for magic, what in _IMAGE_MAGIC.items() if head.startswith(magic))
    try:
        head.decode()
        return f"a text file ({path.stat().st_size} bytes)"
    except UnicodeDecodeError:
        return f"a file of {path.stat().st_size} bytes"


def _torch_archive(path: Path) -> bool:
    """A zip holding `.../data.pkl`: torch.save's format."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def refuse_replacing(path: str | os.PathLike, kind: str, what: str = "the output") -> Path:
    """`path`, unless it exists and holds something other than a `kind` artefact (see KINDS): then a UserError
    naming the option (`what`), the path, what it holds and the fix. Called at a command's door, before any work.

    A missing path, an empty file and an empty folder are free; a folder where a file is written (or the reverse)
    is refused like any other artefact.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}; one of {', '.join(KINDS)}")
    path = Path(path).expanduser()
    description, folder, _ = KINDS[kind]
    if not path.exists() and not path.is_symlink():
        return path
    if path.is_dir() == folder:
        empty = not any(path.iterdir()) if folder else path.stat().st_size == 0
        if empty or _recognises(kind, path):
            return path
    raise UserError(f"{what} {path} already holds {holding(path)}, not {description}, so it is not replaced; give "
                    f"another path, or delete {path} first if you mean to replace it")
