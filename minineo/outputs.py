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
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

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
    """What the lock file says about the process that holds it ('pid 123: minineo patch ...'), or ''."""
    try:
        text = lock.read_text().strip()
    except OSError:
        return ""
    return f" (pid {text})" if text else ""


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
