"""Programs on the RTL engine and on the emulator: every byte of external memory and the status registers.

Compared exactly: status, error code, error pc (legal programs), instructions, MACs and external memory.
The performance counters (cycles, busy, stall) follow the cycle model, which tests/hw/test_engine_cycles.py
holds to the RTL within 2 %.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.engine import InferenceEngine
from hw.spec.config import AcceleratorConfig
from hw.spec.isa import ErrorCode
from hw.spec.registers import STATUS_DONE, STATUS_ERROR, STATUS_NONFINITE
from sw.emulator import Emulator

from . import runner
from .checking import Mismatch

__all__ = ["Traffic", "EngineRun", "run_on_rtl", "run_on_emulator", "check_programs"]


@dataclass(frozen=True)
class Traffic:
    """The memory's behaviour: latency, probability of a not-ready cycle, of a gap before a response beat."""

    latency: int = 4
    ready_stall: float = 0.0
    valid_gap: float = 0.0
    seed: int = 0


@dataclass
class EngineRun:
    done: bool
    error: int
    error_pc: int
    registers: dict
    dram: bytes


def _memory_size(programs) -> int:
    size = max(p.dram_size for p in programs)
    return max(4096, -(-size // 4096) * 4096)


def run_on_emulator(program, traffic: Traffic = Traffic()) -> tuple[EngineRun, object]:
    emulator = Emulator(program.config, bytes(program.dram[:program.dram_size]), memory_latency=traffic.latency)
    status = emulator.run(program.program_addr)
    return EngineRun(status.done, int(status.error), status.pc, {}, emulator.dram.tobytes()), status


def _budget(emulator_cycles: int) -> int:
    """Cycles the RTL may take before the testbench gives up on a program (it should never need them)."""
    return 20 * emulator_cycles + 5000


def run_on_rtl(config: AcceleratorConfig, programs: list, work_dir: Path, traffic: Traffic = Traffic(),
               waves: bool = False, budgets: list[int] | None = None) -> list[EngineRun | None]:
    """One simulation for all ``programs``; None for a program that did not end within its cycle budget.

    ``budgets``: cycles allowed per program; by default derived from an emulator run of each.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if budgets is None:
        budgets = [_budget(run_on_emulator(p, traffic)[1].cycles) for p in programs]
    batch = {
        "memory_size": _memory_size(programs),
        "traffic": {"latency": traffic.latency, "ready_stall": traffic.ready_stall, "valid_gap": traffic.valid_gap,
                    "seed": traffic.seed},
        "programs": [{"dram": bytes(p.dram[:p.dram_size]), "program_addr": p.program_addr,
                      "dram_size": p.dram_size, "cycle_budget": b} for p, b in zip(programs, budgets)],
    }
    with open(work_dir / "stimulus.pkl", "wb") as f:
        pickle.dump(batch, f)
    design = runner.build(InferenceEngine(config), f"engine-{config.rows}x{config.cols}-{config.weights.name}-"
                                                   f"{config.acts.name}", waves=waves)
    runner.run(design, "sim.tb.engine_tb", work_dir, env={
        "TB_STIMULUS": str(work_dir / "stimulus.pkl"), "TB_RESULT": str(work_dir / "result.pkl")})
    with open(work_dir / "result.pkl", "rb") as f:
        results = pickle.load(f)
    runs = []
    for r in results:
        if r["timeout"]:
            runs.append(None)
            continue
        regs = r["registers"]
        runs.append(EngineRun(bool(regs["status"] & STATUS_DONE), regs["error_code"], regs["error_pc"], regs,
                              r["dram"]))
    return runs


def check_programs(config: AcceleratorConfig, programs: list, work_dir: Path, traffic: Traffic = Traffic()) -> list:
    """Run ``programs`` on both; raise :class:`Mismatch` naming every difference. Returns (rtl, emulator)
    cycle pairs of the programs that completed."""
    emulated = [run_on_emulator(p, traffic) for p in programs]
    budgets = [_budget(status.cycles) for _, status in emulated]
    rtl_runs = run_on_rtl(config, programs, work_dir, traffic, budgets=budgets)
    problems, cycles = [], []
    for i, (program, rtl, (emu, status)) in enumerate(zip(programs, rtl_runs, emulated)):
        name = f"program {i} ({program.description})"
        if rtl is None:
            problems.append(f"{name}: the RTL did not stop within its cycle budget")
            continue
        if rtl.error != int(status.error) or rtl.done != status.done:
            problems.append(f"{name}: RTL ended with done={rtl.done} error={ErrorCode(rtl.error).name}, emulator "
                            f"with done={status.done} error={status.error.name}")
            continue
        if int(program.expected_error) != int(status.error):
            problems.append(f"{name}: expected {ErrorCode(int(program.expected_error)).name}, both gave "
                            f"{status.error.name}")
        if status.error != ErrorCode.NONE:
            if not rtl.registers["status"] & STATUS_ERROR:
                problems.append(f"{name}: error code set but the status error bit is not")
            continue
        expected_status = STATUS_DONE | (STATUS_NONFINITE if status.nonfinite else 0)
        for reg, expected in (("status", expected_status), ("error_code", 0), ("error_pc", status.pc),
                              ("instructions", status.instructions), ("macs_lo", status.macs & 0xFFFF_FFFF),
                              ("macs_hi", status.macs >> 32)):
            if rtl.registers[reg] != expected:
                problems.append(f"{name}: register {reg} is {rtl.registers[reg]} on RTL, {expected} on the emulator")
        if rtl.dram != emu.dram:
            a, b = np.frombuffer(rtl.dram, np.uint8), np.frombuffer(emu.dram, np.uint8)
            diff = np.flatnonzero(a != b)
            problems.append(f"{name}: {diff.size} bytes of external memory differ, first at 0x{diff[0]:x} "
                            f"(RTL 0x{a[diff[0]]:02x}, emulator 0x{b[diff[0]]:02x})")
        cycles.append((rtl.registers["cycles_lo"] | rtl.registers["cycles_hi"] << 32, status.cycles))
    if problems:
        waves = Path(work_dir) / "waves"
        if not os.environ.get("NO_WAVES_ON_FAILURE"):
            run_on_rtl(config, programs, waves, traffic, waves=True, budgets=budgets)
        raise Mismatch(f"{len(problems)} of {len(programs)} programs differ between RTL and emulator:\n  "
                       + "\n  ".join(problems[:15]) + f"\nwaveform of the whole batch: {waves / 'dump.fst'}")
    return cycles
