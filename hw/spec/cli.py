"""The command-line contract every tool of this project keeps (hw.build, sw.compile, sw.run, sw.evaluate, sw.asm,
the benchmarks): exit statuses, the one-line error, argument types that refuse what they cannot mean, and
interrupts that end the process and its children promptly and leave nothing half-written.

Exit statuses (documented in the README):

====  ==========================================================================================
0     success
1     internal error: a bug of this tool (one line; ``CNN_ACCEL_TRACEBACK=1`` prints the traceback)
2     usage error: a mistake in the arguments or input files, named in one line with its fix
3     engine fault: the engine (emulated or RTL) raised its error flag or did not stop; names code and pc
130   interrupted by SIGINT (Ctrl-C); 143: terminated by SIGTERM. Outputs in progress are removed.
====  ==========================================================================================

The error line is ``PROG: error: MESSAGE`` on standard error, with nothing printed after it.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from . import outputs
from .outputs import OutputError, atomic_file, atomic_folder, check_output_path

__all__ = ["OK", "INTERNAL_ERROR", "USAGE_ERROR", "ENGINE_FAULT", "UsageError", "ToolError", "Interrupted",
           "Parser", "integer", "number", "main_guard", "exit_on_signals_while_starting", "run_child", "CHILDREN", "check_out_folder", "check_out_file",
           "write_folder", "write_file"]

OK, INTERNAL_ERROR, USAGE_ERROR, ENGINE_FAULT = 0, 1, 2, 3

#: Seconds the main thread gets to clean up after a signal before the watchdog does it and exits.
GRACE_SECONDS = 0.7


class ToolError(Exception):
    """An error that ends a tool with a one-line message and its own exit status."""

    status = INTERNAL_ERROR


class UsageError(ToolError):
    """A mistake of the user's (arguments, files, shapes): one line, exit status 2."""

    status = USAGE_ERROR


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwind (removing outputs in progress) and exit 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.status = 128 + signum


class Parser(argparse.ArgumentParser):
    """argparse whose mistakes are :class:`UsageError` (one line, status 2) rather than its own exit."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_NUMBER = re.compile(r"[+-]?([0-9]{1,12}(\.[0-9]{0,12})?|\.[0-9]{1,12})([eE][+-]?[0-9]{1,3})?")


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer written with ASCII digits (at most 18), within ``lo..hi`` when given (else the
    range is the caller's to check, with its own message)."""
    def parse(text: str) -> int:
        if not _INTEGER.fullmatch(text.strip()):
            _refuse(text, "an integer")
        value = int(text)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, not {value}")
        return value
    parse.__name__ = "int"          # argparse says "invalid int value: 'x'", as for type=int
    return parse


def number(lo: float, hi: float) -> Callable[[str], float]:
    """argparse type: a decimal number in ``lo..hi`` written with ASCII digits."""
    def parse(text: str) -> float:
        if not _NUMBER.fullmatch(text.strip()):
            _refuse(text, "a number")
        value = float(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be a number in {lo:g}..{hi:g}, not {value:g}")
        return value
    parse.__name__ = "float"
    return parse


def _refuse(text: str, what: str):
    if len(text) <= 24:
        raise ValueError(text)      # argparse: "invalid int value: 'x'"
    raise argparse.ArgumentTypeError(f"must be {what} written with ASCII digits, not {_short(text)}")


def _short(text: str) -> str:
    text = str(text)
    return repr(text) if len(text) <= 24 else repr(text[:20]) + f"... ({len(text)} characters)"


# --- children ----------------------------------------------------------------------------------------------

#: Child processes running now; an interrupt terminates them.
CHILDREN: set[subprocess.Popen] = set()


def run_child(command: Sequence[str], *, on_line: Callable[[str], None] | None = None,
              **options) -> subprocess.CompletedProcess:
    """``subprocess.run`` whose child is terminated (then killed) if this process is interrupted or fails.

    ``on_line``: the child's standard output and error, merged, are handed over line by line as they come (for
    progress from a long run); the result's ``stdout`` then holds the last 200 lines.
    """
    options.setdefault("start_new_session", False)
    if on_line is not None:
        options.update(stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    with subprocess.Popen(command, **options) as child:
        CHILDREN.add(child)
        try:
            if on_line is None:
                out, err = child.communicate()
            else:
                tail: deque[str] = deque(maxlen=200)
                for line in child.stdout:
                    tail.append(line)
                    on_line(line.rstrip("\n"))
                child.wait()
                out, err = "".join(tail), None
        except BaseException:
            _stop(child)
            raise
        finally:
            CHILDREN.discard(child)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def _stop(child: subprocess.Popen) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=0.3)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


# --- the guard around a tool's main ------------------------------------------------------------------------

def main_guard(prog: str, body: Callable[[], int], usage_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run a tool's ``body`` under the contract: signals, one-line errors, warnings, exit statuses.

    ``usage_errors``: exception types of the libraries the tool calls that are the user's to fix (a model the
    frontend refuses, a layer no tiling fits): one line and status 2, like :class:`UsageError`.
    """
    caught: list[warnings.WarningMessage] = []
    restore: Callable[[], None] = lambda: None
    try:
        # Inside the try: a signal in the instant the handlers go in is this guard's to report, not a traceback.
        restore = _install_signals(prog)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            status = body()
        for w in _unique(caught):
            print(f"{prog}: warning: {w}", file=sys.stderr)
        return status
    except Interrupted as e:
        return _end(_interrupted_line(prog), e.status)
    except ToolError as e:
        return _end(f"{prog}: error: {_one_line(e)}", e.status)
    except usage_errors as e:
        return _end(f"{prog}: error: {_one_line(e)}", USAGE_ERROR)
    except Exception as e:            # noqa: BLE001 - a bug: say so in one line, traceback on request
        interrupt = _interrupt_behind(e)
        if interrupt is not None:     # a library's cleanup failed on its way out of an interrupt
            return _end(_interrupted_line(prog), interrupt.status)
        if os.environ.get("CNN_ACCEL_TRACEBACK"):
            raise
        return _end(f"{prog}: internal error: {type(e).__name__}: {_one_line(e)} (a bug of this tool; rerun with "
                    f"CNN_ACCEL_TRACEBACK=1 for the traceback and report it)", INTERNAL_ERROR)
    finally:
        restore()


def _interrupt_behind(error: BaseException) -> Interrupted | None:
    """The interrupt an error was raised while handling (a ``with`` block's exit failing on the way out)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Interrupted):
            return error
        seen.add(id(error))
        error = error.__context__
    return None


def _end(line: str, status: int) -> int:
    """Clean up, print the one line, and keep anything else (warnings at shutdown) from following it."""
    _cleanup()
    print(line, file=sys.stderr, flush=True)
    warnings.simplefilter("ignore")
    return status


def exit_on_signals_while_starting(prog: str) -> None:
    """For a tool's ``__main__``, before its heavy imports: until :func:`main_guard` takes over, SIGINT and SIGTERM
    end the process at once with the interrupted line (nothing can have been written yet)."""
    def handler(signum, frame):
        print(f"{prog}: interrupted; nothing written", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    handler.starting = True
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, handler)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 600 else text[:597] + "..."


def _unique(caught) -> list[str]:
    seen = []
    for w in caught:
        text = f"{w.category.__name__}: {_one_line(w.message)}"
        if text not in seen:
            seen.append(text)
    return seen


def _interrupted_line(prog: str) -> str:
    if outputs.COMMITTED:
        return f"{prog}: interrupted; {', '.join(str(p) for p in outputs.COMMITTED)} was written before the interrupt"
    return f"{prog}: interrupted; nothing written"


def _cleanup() -> None:
    """Stop children and remove outputs in progress (idempotent; the watchdog may race the main thread)."""
    for child in list(CHILDREN):
        try:
            _stop(child)
        except OSError:
            pass
    for path in list(outputs.IN_PROGRESS):
        outputs._remove(path)


def _install_signals(prog: str) -> Callable[[], None]:
    """Python handlers that raise :class:`Interrupted`, and a watchdog that finishes the job if the main thread
    is stuck in native code (a wakeup fd tells it at once; after GRACE_SECONDS it cleans up and exits)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        if outputs.CRITICAL[0]:                        # a swap is half done: it finishes, then this is raised
            outputs.DEFERRED.append(signum)
            return
        for s in (signal.SIGINT, signal.SIGTERM):      # cleanup must not be interrupted by a second signal
            signal.signal(s, signal.SIG_IGN)
        raise Interrupted(signum)

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    old_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    finished = threading.Event()
    watchdog = threading.Thread(target=_watchdog, args=(read_fd, prog, finished), daemon=True,
                                name="interrupt-watchdog")
    watchdog.start()
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}     # last: all is ready

    def restore():
        finished.set()
        signal.set_wakeup_fd(old_wakeup)
        for s, h in previous.items():
            # A tool's process has done its work: a late signal ends it with the interrupted line, which names
            # what was written. In-process callers get their own handlers back.
            signal.signal(s, functools.partial(_late, prog) if getattr(h, "starting", False) else h)
        os.close(write_fd)          # the watchdog's read returns b"" and it ends
    return restore


def _late(prog: str, signum, frame):
    sys.stdout.flush()
    print(_interrupted_line(prog), file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _watchdog(read_fd: int, prog: str, finished: threading.Event) -> None:
    """Wait for signal numbers on the wakeup pipe; after GRACE_SECONDS without the main thread finishing, clean up
    and exit. The pipe stays open until the main thread closes its end (a closed read end would make the next
    signal's write fail)."""
    while data := os.read(read_fd, 1):
        if data[0] not in (signal.SIGINT, signal.SIGTERM) or finished.wait(GRACE_SECONDS):
            continue                # not ours, or the main thread cleaned up and is on its way out
        _cleanup()
        try:
            print(_interrupted_line(prog), file=sys.stderr, flush=True)
        finally:
            os._exit(128 + data[0])
    os.close(read_fd)


# --- outputs ------------------------------------------------------------------------------------------------

def check_out_folder(out: Path, marker: str, flag: str = "--out") -> Path:
    """``out`` resolved; refuse anything but a new folder, an empty one, or an earlier output of the same tool
    (recognised by ``marker``), and paths that could never be written."""
    try:
        out = check_output_path(out, flag)
    except OutputError as e:
        raise UsageError(str(e)) from None
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise UsageError(f"{flag} {out} exists and is not an earlier output of this tool (no {marker} in it); "
                         f"choose a new or empty folder")
    return out


def check_out_file(out: Path, flag: str, suffix: str | None = None) -> Path:
    """``out`` resolved, if it names a file (ending in ``suffix``, when given) that can be written."""
    out = Path(out)
    if suffix is not None and out.suffix != suffix:
        raise UsageError(f"{flag} {out} must end in {suffix}")
    try:
        out = check_output_path(out, flag)
    except OutputError as e:
        raise UsageError(str(e)) from None
    if out.is_dir():
        raise UsageError(f"{flag} {out} is a folder; name a file{'' if suffix is None else ' ' + suffix}")
    return out


def write_folder(out: Path, write: Callable[[Path], None], flag: str = "--out") -> None:
    """Write into a scratch folder beside ``out``, then swap it into place: never a half-written output, and the
    previous output stays until the new one is complete."""
    try:
        with atomic_folder(out) as scratch:
            write(scratch)
    except OSError as e:
        raise UsageError(f"{flag} {out}: {e.strerror or e}") from None


def write_file(out: Path, write: Callable[[Path], None], flag: str = "--output") -> None:
    """``write`` a scratch file beside ``out``, then replace ``out`` with it."""
    try:
        with atomic_file(out) as scratch:
            write(scratch)
    except OSError as e:
        raise UsageError(f"{flag} {out}: {e.strerror or e}") from None

