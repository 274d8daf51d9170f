"""Outputs that appear whole or not at all, and never cost the previous output.

Every tool writes into a scratch sibling (``.NAME.partial-PID``) and swaps it into place in one step:
``os.replace`` for a file; for a folder, an atomic exchange of the two names (``renameat2(RENAME_EXCHANGE)`` on
Linux) and then the old one is deleted, or, where the kernel cannot exchange, a rename of the old folder aside
(``.NAME.old-PID``), the new one into place, and the old one deleted. Signals are held back during the swap.
A process killed outright (SIGKILL, power loss) may leave a scratch sibling or an aside copy: the next write to
the same output removes the one and restores the other.

Scratch siblings in progress are registered with :mod:`hw.spec.cli`, whose interrupt handling removes them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OutputError", "atomic_file", "atomic_folder", "check_output_path", "locked", "SCRATCH_MARK", "ASIDE_MARK"]

SCRATCH_MARK = ".partial-"
ASIDE_MARK = ".old-"
#: Longest scratch suffix we add to a name: "." + mark + a pid of up to 10 digits.
_EXTRA = 1 + len(SCRATCH_MARK) + 10

#: Paths being written right now (scratch siblings), for the interrupt handler of hw.spec.cli.
IN_PROGRESS: set[Path] = set()
#: Outputs swapped into place by this process.
COMMITTED: list[Path] = []


class OutputError(ValueError):
    """An output path that cannot be written: the message names the path and the reason."""


def check_output_path(out: Path, flag: str) -> Path:
    """``out`` resolved, or an :class:`OutputError` if it can never be written (bad parent, name too long).

    Missing parent folders are fine (they are created) as long as the nearest existing one is a folder.
    """
    out = Path(out).expanduser().absolute()
    for part in out.parts[1:]:
        limit = _name_max(out)
        if len(os.fsencode(part)) > limit:
            raise OutputError(f"{flag} {_short(out)}: the name {_short(part)} is longer than the {limit} bytes "
                              f"this file system allows")
    if len(os.fsencode(out.name)) + _EXTRA > _name_max(out):
        raise OutputError(f"{flag} {_short(out)}: the name is too long to write beside it (keep it under "
                          f"{_name_max(out) - _EXTRA} bytes)")
    ancestor = out.parent
    while not ancestor.exists() and not ancestor.is_symlink():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{flag} {_short(out)}: {_short(ancestor)} is not a folder")
    try:                            # try it: permissions alone say nothing for root or on special file systems
        os.rmdir(tempfile.mkdtemp(prefix=".write-test-", dir=ancestor))
    except OSError as e:
        raise OutputError(f"{flag} {_short(out)}: cannot write into {_short(ancestor)} ({e.strerror})") from None
    return out


@contextmanager
def atomic_file(out: Path) -> Iterator[Path]:
    """Yield a scratch path beside ``out`` (same suffix) to write; it replaces ``out`` when the block succeeds."""
    out = Path(out).absolute()
    scratch = out.with_name(f".{out.stem}{SCRATCH_MARK}{os.getpid()}{out.suffix}")
    with _in_place_of(out, scratch, os.replace):
        yield scratch


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield an empty scratch folder beside ``out``; it takes the place of ``out`` when the block succeeds."""
    out = Path(out).absolute()
    scratch = out.with_name(f".{out.name}{SCRATCH_MARK}{os.getpid()}")
    with _in_place_of(out, scratch, _swap_in, make=Path.mkdir):
        yield scratch


@contextmanager
def _in_place_of(out: Path, scratch: Path, swap: Callable[[Path, Path], None],
                 make: Callable[[Path], None] | None = None) -> Iterator[None]:
    """What both atomic writers do around the caller's block: parents created (and removed again on failure),
    stale scratch of killed writers cleaned, ``scratch`` made (``make``) and swapped into ``out`` with signals
    held; the scratch never outlives the block."""
    created = _make_parents(out.parent)
    _remove_stale(out)
    _remove(scratch)
    IN_PROGRESS.add(scratch)
    try:
        if make is not None:
            make(scratch)
        yield
        with _signals_held():
            swap(scratch, out)
            COMMITTED.append(out)
    except BaseException:
        _remove_created(created)
        raise
    finally:
        _remove(scratch)
        IN_PROGRESS.discard(scratch)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created with its folders): one process at a time fills a cache
    entry, the others wait and then find it filled."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- the swap ---------------------------------------------------------------------------------------------

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2); False where the kernel or libc cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(scratch: Path, out: Path) -> None:
    """Put ``scratch`` at ``out``; the old ``out`` (if any) ends at ``scratch`` and is then deleted."""
    if not out.exists() and not out.is_symlink():
        os.rename(scratch, out)
        return
    if out.is_dir() and not out.is_symlink() and _exchange(scratch, out):
        return                      # the old output now sits at scratch; the caller's finally removes it
    aside = out.with_name(f".{out.name}{ASIDE_MARK}{os.getpid()}")
    _remove(aside)
    os.rename(out, aside)
    try:
        os.rename(scratch, out)
    except BaseException:
        os.rename(aside, out)
        raise
    _remove(aside)


#: Signals that arrived while a swap was half done, for the handler of hw.spec.cli to defer (it records them
#: here instead of raising while ``CRITICAL`` is set); they are raised again once the swap is recorded.
DEFERRED: list[int] = []
CRITICAL = [False]


@contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM back while a swap is half done; they arrive right after.

    Blocking them in this thread is not enough where other threads run (the kernel delivers the signal to one of
    them and Python still runs its handler here), so the handler also defers while ``CRITICAL`` is set."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError):           # not the main thread, or no pthreads
        previous = None
    CRITICAL[0] = True
    try:
        yield
    finally:
        CRITICAL[0] = False
        if previous is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        if DEFERRED:
            signal.raise_signal(DEFERRED.pop(0))


# --- housekeeping -------------------------------------------------------------------------------------------

def _remove_stale(out: Path) -> None:
    """Clean up after a process that was killed outright: restore an aside copy, drop scratch siblings."""
    parent = out.parent
    if not parent.is_dir():
        return
    stem = out.name if out.suffix == "" else out.stem
    for entry in parent.iterdir():
        name = entry.name
        if name.startswith(f".{out.name}{ASIDE_MARK}") and _dead(name.rsplit("-", 1)[-1]):
            if not out.exists():
                os.rename(entry, out)
            else:
                _remove(entry)
        elif (name.startswith(f".{out.name}{SCRATCH_MARK}") or name.startswith(f".{stem}{SCRATCH_MARK}")) and \
                _dead(name[name.rindex(SCRATCH_MARK) + len(SCRATCH_MARK):].split(".")[0]):
            _remove(entry)


def _dead(pid_text: str) -> bool:
    if not pid_text.isdigit() or not pid_text.isascii():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _make_parents(folder: Path) -> list[Path]:
    """Create missing parent folders; the list of those created, deepest last."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir()
    return list(reversed(missing))


def _remove_created(created: list[Path]) -> None:
    for f in reversed(created):
        try:
            f.rmdir()
        except OSError:
            pass


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _name_max(path: Path) -> int:
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _short(path) -> str:
    text = str(path)
    return text if len(text) <= 80 else text[:38] + "..." + text[-38:]
