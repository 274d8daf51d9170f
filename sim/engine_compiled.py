"""Programs on the engine through the compiled testbench (``cpp/engine_tb.cpp``): Python only before and after.

The testbench is a separate executable driven through files, not a library loaded with ctypes or cffi:

- a crash (a Verilator ``$fatal``, a segmentation fault, an out-of-memory kill) ends the child, not pytest,
  and becomes a :class:`SimulatorError` naming the log; a stuck child is killed on a wall-clock limit and
  on Ctrl-C (``subprocess.run`` kills it when interrupted);
- every Verilated design is a class called ``Vtop`` with process-wide Verilator state: two configurations
  in one Python process (the regression uses a dozen) would clash as shared libraries;
- the cost is a file per program in and out, microseconds against the milliseconds to seconds a program
  simulates, and the files are there to inspect when something goes wrong.

The work folder holds ``programs.txt`` (one ``program_addr dram_size cycle_budget`` line per program),
``in-NNNNN.bin`` (the images), and after the run ``out-NNNNN.bin`` (the memories), ``results.jsonl`` (every
register per program, then a summary) and ``sim.log`` (the testbench's output).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hw.spec.config import AcceleratorConfig
from hw.spec.registers import STATUS_DONE

from .engine_run import EngineRun, Traffic, memory_size
from .engine_tb_build import DEFAULT_OPT, build_testbench

__all__ = ["SimulatorError", "Fault", "Batch", "run_compiled"]


class SimulatorError(RuntimeError):
    """The compiled testbench crashed, was killed, ran out of time, or saw a breach of the bus protocol."""


@dataclass(frozen=True)
class Fault:
    """Test-only: the testbench corrupts one result (a byte of a program's memory or a bit of a register)
    before writing it, so that a test can show the checker catches a wrong result."""

    program: int
    byte: int | None = None
    register: str | None = None

    def options(self) -> list[str]:
        out = []
        if self.byte is not None:
            out += ["--corrupt-byte", f"{self.program}:{self.byte}"]
        if self.register is not None:
            out += ["--corrupt-register", f"{self.program}:{self.register}"]
        return out


@dataclass
class Batch:
    """What one run of the testbench gave: per program a run (None: out of cycles), and its speed."""

    runs: list[EngineRun | None]
    cycles: int = 0                # clock cycles simulated, all programs and the host's accesses
    seconds: float = 0.0           # wall time of the simulation loop (start-up and file I/O excluded)
    log: Path = field(default=Path())


def _write_stimulus(programs: list, budgets: list[int], work_dir: Path) -> None:
    lines = []
    for i, (p, budget) in enumerate(zip(programs, budgets)):
        (work_dir / f"in-{i:05d}.bin").write_bytes(bytes(p.dram[:p.dram_size]))
        lines.append(f"{p.program_addr} {p.dram_size} {budget}\n")
    (work_dir / "programs.txt").write_text("".join(lines))
    for stale in ("results.jsonl", *(f.name for f in work_dir.glob("out-*.bin"))):
        (work_dir / stale).unlink(missing_ok=True)


def _read_results(work_dir: Path) -> tuple[list[EngineRun | None], dict, str | None]:
    """The runs, the summary and a fatal message, from whatever ``results.jsonl`` holds."""
    runs, summary, fatal = [], {}, None
    path = work_dir / "results.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        record = json.loads(line)
        if "fatal" in record:
            fatal = record["fatal"]
        elif "summary" in record:
            summary = record["summary"]
        elif record["timeout"]:
            runs.append(None)
        else:
            regs = record["registers"]
            dram = (work_dir / f"out-{record['program']:05d}.bin").read_bytes()
            runs.append(EngineRun(bool(regs["status"] & STATUS_DONE), regs["error_code"], regs["error_pc"], regs,
                                  dram))
    return runs, summary, fatal


def _wall_limit(budgets: list[int]) -> float:
    """Seconds before the child counts as stuck: far beyond the slowest build simulating every budget."""
    return 300.0 + sum(budgets) / 5_000


def run_compiled(config: AcceleratorConfig, programs: list, work_dir: Path, traffic: Traffic, budgets: list[int],
                 *, waves: bool = False, opt: str = DEFAULT_OPT, threads: int = 1,
                 fault: Fault | None = None) -> Batch:
    """One run of the compiled testbench for all ``programs``, with ``budgets`` cycles each at most."""
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    testbench = build_testbench(config, waves=waves, opt=opt, threads=threads)
    _write_stimulus(programs, budgets, work_dir)
    command = [str(testbench.executable), "--dir", str(work_dir), "--memory-size", str(memory_size(programs)),
               "--latency", str(traffic.latency), "--ready-stall", repr(traffic.ready_stall),
               "--valid-gap", repr(traffic.valid_gap), "--seed", str(traffic.seed)]
    if waves:
        command += ["--trace", str(work_dir / "dump.fst")]
    if fault is not None:
        command += fault.options()
    log = work_dir / "sim.log"
    with open(log, "w") as f:
        try:
            done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=work_dir,
                                  timeout=_wall_limit(budgets))
        except subprocess.TimeoutExpired:
            raise SimulatorError(f"the engine testbench ran longer than {_wall_limit(budgets):.0f} s and was "
                                 f"killed; see {log}") from None
    runs, summary, fatal = _read_results(work_dir)
    if done.returncode or fatal or len(runs) != len(programs):
        how = (f"was killed by signal {-done.returncode}" if done.returncode < 0
               else f"exited with status {done.returncode}")
        detail = f": {fatal}" if fatal else f" after {len(runs)} of {len(programs)} programs"
        raise SimulatorError(f"the engine testbench {how}{detail}; see {log}")
    return Batch(runs, summary.get("cycles", 0), summary.get("seconds", 0.0), log)
