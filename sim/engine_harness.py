"""Programs on the RTL engine and on the emulator: every byte of external memory and the status registers.

Compared exactly: status, error code, error pc (legal programs), instructions, MACs and external memory.
The performance counters (cycles, busy, stall) follow the cycle model, which tests/hw/test_engine_cycles.py
holds to the RTL within 2 %.

Two harnesses run the RTL, with the same memory model (latency, back-pressure, SLVERR) and the same host
sequence: ``compiled`` (the default; ``engine_compiled.py``, C++ around the Verilated engine, hundreds of
thousands of cycles/s) and ``cocotb`` (``engine_cocotb.py``, Python on every cycle, a few thousand).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import ErrorCode
from hw.spec.registers import STATUS_DONE, STATUS_ERROR, STATUS_NONFINITE
from sw.emulator import Emulator

from .checking import Mismatch
from .engine_compiled import Fault, run_compiled
from .engine_cocotb import run_with_cocotb
from .engine_run import EngineRun, Traffic, cycle_budget
from .runner import waves_requested

__all__ = ["Traffic", "EngineRun", "HARNESSES", "run_on_rtl", "run_on_emulator", "check_programs"]

HARNESSES = ("compiled", "cocotb")


def run_on_emulator(program, traffic: Traffic = Traffic()) -> tuple[EngineRun, object]:
    emulator = Emulator(program.config, bytes(program.dram[:program.dram_size]), memory_latency=traffic.latency)
    status = emulator.run(program.program_addr)
    return EngineRun(status.done, int(status.error), status.pc, {}, emulator.dram.tobytes()), status


def run_on_rtl(config: AcceleratorConfig, programs: list, work_dir: Path, traffic: Traffic = Traffic(),
               waves: bool = False, budgets: list[int] | None = None, *, harness: str = "compiled",
               fault: Fault | None = None) -> list[EngineRun | None]:
    """One simulation for all ``programs``; None for a program that did not end within its cycle budget.

    ``budgets``: cycles allowed per program; by default derived from an emulator run of each. ``waves`` (or
    ``WAVES=1``) records an FST waveform in ``work_dir``. ``fault`` (compiled harness, tests only) corrupts
    one result on purpose.
    """
    if harness not in HARNESSES:
        raise ValueError(f"Unknown harness {harness!r}; the harnesses are {', '.join(HARNESSES)}")
    if budgets is None:
        budgets = [cycle_budget(run_on_emulator(p, traffic)[1].cycles) for p in programs]
    waves = waves_requested(waves)
    if harness == "cocotb":
        if fault is not None:
            raise ValueError("Fault injection is a knob of the compiled testbench only")
        return run_with_cocotb(config, programs, work_dir, traffic, budgets, waves=waves)
    return run_compiled(config, programs, work_dir, traffic, budgets, waves=waves, fault=fault).runs


#: Errors the decoder finds in one instruction: both name that instruction's index (a run-time error's pc may
#: differ: the RTL names the instruction being dispatched, the emulator the one that caused it).
_DECODED = (ErrorCode.ILLEGAL_OPCODE, ErrorCode.ILLEGAL_DEPENDENCY, ErrorCode.BAD_FIELD, ErrorCode.SRAM_RANGE)


def _differences(name: str, program, rtl: EngineRun | None, status, emulated: EngineRun) -> list[str]:
    """What differs between the RTL's and the emulator's run of one program (nothing: an empty list)."""
    if rtl is None:
        return [f"{name}: the RTL did not stop within its cycle budget"]
    if rtl.error != int(status.error) or rtl.done != status.done:
        return [f"{name}: RTL ended with done={rtl.done} error={ErrorCode(rtl.error).name}, emulator "
                f"with done={status.done} error={status.error.name}"]
    problems = []
    if int(program.expected_error) != int(status.error):
        problems.append(f"{name}: expected {ErrorCode(int(program.expected_error)).name}, both gave "
                        f"{status.error.name}")
    if status.error != ErrorCode.NONE:
        if not rtl.registers["status"] & STATUS_ERROR:
            problems.append(f"{name}: error code set but the status error bit is not")
        if status.error in _DECODED and rtl.registers["error_pc"] != status.pc:
            problems.append(f"{name}: error_pc is {rtl.registers['error_pc']} on RTL, {status.pc} on the emulator")
        return problems
    expected_status = STATUS_DONE | (STATUS_NONFINITE if status.nonfinite else 0)
    for reg, expected in (("status", expected_status), ("error_code", 0), ("error_pc", status.pc),
                          ("instructions", status.instructions), ("macs_lo", status.macs & 0xFFFF_FFFF),
                          ("macs_hi", status.macs >> 32)):
        if rtl.registers[reg] != expected:
            problems.append(f"{name}: register {reg} is {rtl.registers[reg]} on RTL, {expected} on the emulator")
    if rtl.dram != emulated.dram:
        a, b = np.frombuffer(rtl.dram, np.uint8), np.frombuffer(emulated.dram, np.uint8)
        diff = np.flatnonzero(a != b)
        problems.append(f"{name}: {diff.size} bytes of external memory differ, first at 0x{diff[0]:x} "
                        f"(RTL 0x{a[diff[0]]:02x}, emulator 0x{b[diff[0]]:02x})")
    return problems


def check_programs(config: AcceleratorConfig, programs: list, work_dir: Path, traffic: Traffic = Traffic(), *,
                   harness: str = "compiled", fault: Fault | None = None) -> list:
    """Run ``programs`` on both; raise :class:`Mismatch` naming every difference. Returns (rtl, emulator)
    cycle pairs of the programs that completed."""
    emulated = [run_on_emulator(p, traffic) for p in programs]
    budgets = [cycle_budget(status.cycles) for _, status in emulated]
    rtl_runs = run_on_rtl(config, programs, work_dir, traffic, budgets=budgets, harness=harness, fault=fault)
    problems, cycles = [], []
    for i, (program, rtl, (emu, status)) in enumerate(zip(programs, rtl_runs, emulated)):
        found = _differences(f"program {i} ({program.description})", program, rtl, status, emu)
        problems += found
        if not found and status.error == ErrorCode.NONE:
            cycles.append((rtl.registers["cycles_lo"] | rtl.registers["cycles_hi"] << 32, status.cycles))
    if problems:
        waves = Path(work_dir) / "waves"
        if not os.environ.get("NO_WAVES_ON_FAILURE"):
            run_on_rtl(config, programs, waves, traffic, waves=True, budgets=budgets, harness=harness, fault=fault)
        raise Mismatch(f"{len(problems)} of {len(programs)} programs differ between RTL and emulator:\n  "
                       + "\n  ".join(problems[:15]) + f"\nwaveform of the whole batch: {waves / 'dump.fst'}")
    return cycles
