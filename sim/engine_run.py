"""The vocabulary both engine harnesses share: the memory's traffic, what a run returns, how long it may take."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Traffic", "EngineRun", "memory_size", "cycle_budget"]


@dataclass(frozen=True)
class Traffic:
    """The memory's behaviour: latency, probability of a not-ready cycle, of a gap before a response beat."""

    latency: int = 4
    ready_stall: float = 0.0
    valid_gap: float = 0.0
    seed: int = 0


@dataclass
class EngineRun:
    """One program on the RTL: done and error as the status register says, every register, the memory after."""

    done: bool
    error: int
    error_pc: int
    registers: dict
    dram: bytes


def memory_size(programs) -> int:
    """Bytes of the simulated memory: the largest window, in whole 4 KiB pages (beyond it: SLVERR)."""
    size = max(p.dram_size for p in programs)
    return max(4096, -(-size // 4096) * 4096)


def cycle_budget(emulator_cycles: int) -> int:
    """Cycles the RTL may take before the testbench gives up on a program (it should never need them)."""
    return 20 * emulator_cycles + 5000
