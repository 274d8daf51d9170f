"""What the fault-injection suite shares: a compiled program, the tools run in-process or as processes, and the
contract every bad input must meet (exit status, one line, no traceback, nothing written, old output intact)."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "models" / "digits"
PROGS = {"hw.build": "python -m hw.build", "sw.compile": "python -m sw.compile", "sw.run": "python -m sw.run",
         "sw.evaluate": "python -m sw.evaluate", "sw.asm": "python -m sw.asm", "hw.explore": "python -m hw.explore",
         "boards.build": "python -m boards.build"}


@dataclass
class Outcome:
    status: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_tool(tool: str, *args) -> Outcome:
    """``python -m TOOL ARGS`` in this process (its ``main``), with its output captured."""
    main = importlib.import_module(tool).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in args])
    return Outcome(status, out.getvalue(), err.getvalue())


def run_process(tool: str, *args, timeout: float = 300) -> Outcome:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", tool, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)
    return Outcome(done.returncode, done.stdout, done.stderr)


def assert_clean_error(outcome: Outcome, tool: str, status: int = 2, *, contains: str | None = None) -> None:
    """The contract of a refused input: the status, exactly one line ``PROG: error: ...``, no traceback."""
    assert outcome.status == status, (outcome.status, outcome.stderr[-2000:])
    assert "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert len(outcome.lines) == 1, outcome.stderr[-2000:]
    assert outcome.lines[0].startswith(f"{PROGS[tool]}: error: "), outcome.lines[0]
    if contains is not None:
        assert contains in outcome.lines[0], outcome.lines[0]


def leftovers(folder: Path) -> list[str]:
    """Scratch or aside copies a tool left in ``folder``."""
    return sorted(p.name for p in Path(folder).iterdir() if ".partial-" in p.name or ".old-" in p.name)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def compiled(tmp_path_factory) -> Path:
    """The digits CNN compiled for a 4x4 int8 engine."""
    out = tmp_path_factory.mktemp("compiled") / "digits"
    result = run_tool("sw.compile", DIGITS / "digits_cnn.onnx", "--pe", "int8", "--rows", "4", "--calibrate",
                      DIGITS / "calibration.npy", "--out", out)
    assert result.status == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Path:
    """Four held-out digits as float32 (N, 1, 16, 16)."""
    path = tmp_path_factory.mktemp("inputs") / "in.npy"
    with np.load(DIGITS / "test_set.npz") as data:
        np.save(path, data["images"][:4].astype(np.float32))
    return path


@pytest.fixture(scope="session")
def reference_output(compiled, inputs, tmp_path_factory) -> np.ndarray:
    """The program's outputs on the inputs, before anything was damaged."""
    out = tmp_path_factory.mktemp("reference") / "out.npy"
    result = run_tool("sw.run", compiled, "--backend", "golden", "--input", inputs, "--output", out)
    assert result.status == 0, result.stderr
    return np.load(out)
