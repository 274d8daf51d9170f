"""Interrupts at random points of a build and a compile: SIGINT or SIGTERM ends the process (and its children)
promptly with one line and exit status 130/143, and leaves either the previous output intact or nothing (or,
if the signal came after the swap, the whole new output), never a scratch folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import DIGITS, ROOT, leftovers, snapshot

SEED = 20261205
#: Seconds from the signal to the process's end that we accept on a loaded 2-core CI machine (the tools
#: themselves give the main thread 0.7 s before their watchdog ends the process).
PROMPT = 1.5

COMMANDS = {
    "compile": ["sw.compile", DIGITS / "digits_cnn.onnx", "--pe", "int8", "--rows", "4", "--calibrate",
                DIGITS / "calibration.npy"],
    "build": ["hw.build", "--pe", "int4", "--rows", "2", "--no-synth", "--no-network"],
}
MARKERS = {"compile": "manifest.json", "build": "report.json"}


def _start(tool: str, out: Path) -> subprocess.Popen:
    module, *args = COMMANDS[tool]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args), "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupt(process: subprocess.Popen, delay: float, signum: int) -> tuple[int, str, float]:
    time.sleep(delay)
    sent = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    return process.returncode, err, time.monotonic() - sent


def _trials(tool: str, existing: bool, count: int, duration: float):
    """(delay, signal) pairs: delays spread over the time an uninterrupted run takes on this machine."""
    rng = np.random.default_rng([SEED, len(tool), int(existing)])
    return [(float(rng.uniform(0.0, 0.95 * duration)), (signal.SIGINT, signal.SIGTERM)[i % 2])
            for i in range(count)]


def _complete(out: Path, marker: str) -> bool:
    """A whole output: a compiled folder whose digests hold, or a build with its report."""
    if marker == "manifest.json":
        from sw.runtime import load_program
        return load_program(out) is not None
    return (out / marker).is_file() and (out / "top.v").is_file()


def _check(status: int, err: str, seconds: float, signum: int, out: Path, marker: str, previous: dict | None):
    lines = [line for line in err.splitlines() if line.strip()]
    if status == 0:                                   # it finished before the signal: a whole new output
        assert (out / marker).is_file()
    elif status == -signum:
        # Outside the tool's own handling: in the first milliseconds of interpreter start-up (nothing written
        # yet) or after the tool finished (its output complete), the signal's default action ends the process
        # (a shell reports 128 + signal).
        assert "Traceback" not in err, err[-1500:]
        unchanged = (snapshot(out) == previous) if previous is not None else not out.exists()
        assert unchanged or _complete(out, marker)
    else:
        assert status == 128 + signum, (status, err[-1500:])
        assert "Traceback" not in err, err[-1500:]
        assert seconds <= PROMPT, seconds
        assert lines[-1].endswith("interrupted; nothing written") or "was written before the interrupt" in lines[-1]
        if lines[-1].endswith("nothing written"):
            if previous is None:
                assert not out.exists()
            else:
                assert snapshot(out) == previous, (status, err[-600:])     # the previous output, byte for byte
        else:
            assert (out / marker).is_file()
    assert leftovers(out.parent) == []


@pytest.mark.parametrize("tool", ["compile", "build"])
@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "over an earlier output"])
def test_interrupted_at_random_points(tool, existing, tmp_path):
    out = tmp_path / "out"
    started = time.monotonic()
    done = _start(tool, out)
    assert done.wait(timeout=300) == 0, done.stderr.read()
    duration = time.monotonic() - started
    previous = snapshot(out) if existing else None
    outcomes = []
    for delay, signum in _trials(tool, existing, 6, duration):
        if not existing:
            shutil.rmtree(out, ignore_errors=True)
        status, err, seconds = _interrupt(_start(tool, out), delay, signum)
        _check(status, err, seconds, signum, out, MARKERS[tool], previous)
        if existing:
            previous = snapshot(out)                  # whole (checked above): the next trial's previous output
        outcomes.append(status)
    assert sum(s != 0 for s in outcomes) >= 3, f"too few trials were interrupted: {outcomes}"


def _descendants_alive(marker: str) -> list[int]:
    """Processes whose command line mentions ``marker`` (a path unique to one test)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    alive.append(int(entry.name))
            except OSError:
                pass
    return alive


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_front_doors_child_ends_with_it(signum, tmp_path):
    """hw.build runs sw.evaluate as a child process: interrupting the build ends the child too."""
    out = tmp_path / "with_network"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "hw.build", "--pe", "int8", "--rows", "2", "--no-synth",
                                "--out", str(out)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not _descendants_alive(f"{out.name}.partial-") or not any(
            "sw.evaluate" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            for pid in _descendants_alive(f"{out.name}.partial-")):
        assert time.monotonic() < deadline and process.poll() is None, "sw.evaluate never started"
        time.sleep(0.05)
    status, err, seconds = _interrupt(process, 0.3, signum)
    assert status == 128 + signum and seconds <= PROMPT, (status, seconds, err[-800:])
    assert err.strip().splitlines()[-1] == "python -m hw.build: interrupted; nothing written"
    time.sleep(0.2)
    assert _descendants_alive(f"{out.name}.partial-") == []
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("committed", [True, False])
def test_a_signal_after_the_work_still_says_what_was_written(committed, tmp_path):
    """A tool whose main_guard has returned takes a late SIGINT with the interrupted line (its outputs named, or
    nothing written) and status 130, as an interrupt during the work would: the case a random interrupt once hit
    with an empty stderr."""
    code = ("import os, signal\n"
            "from hw.spec import cli, outputs\n"
            "cli.exit_on_signals_while_starting('tool')\n"
            f"cli.main_guard('tool', lambda: outputs.COMMITTED.append({str(tmp_path / 'out')!r}) or 0 "
            f"if {committed} else 0)\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "import time; time.sleep(5)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 128 + signal.SIGINT
    lines = done.stderr.strip().splitlines()
    assert lines == [f"tool: interrupted; {tmp_path / 'out'} was written before the interrupt" if committed
                     else "tool: interrupted; nothing written"]
