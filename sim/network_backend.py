"""The runtime's ``rtl`` backend: a compiled network's samples in runs of the compiled engine testbench
(``engine_compiled.py``: C++ around the Verilated engine, no Python in the loop), one run per engine program;
the host layers between programs run on the samples' memory in between, as a host would."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from hw.spec.isa import ErrorCode
from sw.compiler.network import CompiledNetwork
from sw.emulator import Emulator

from .engine_harness import run_on_rtl
from .engine_run import Traffic, cycle_budget

__all__ = ["NetworkRun", "NetworkFault", "run_network_on_rtl"]

#: A host layer on a batch: (layer name, read(tensor) -> codes (N, ...)) -> (address, bytes (N, n)) to write.
HostStep = Callable[[str, Callable[[str], np.ndarray]], tuple[int, np.ndarray]]


@dataclass
class NetworkRun:
    """One program run (a sample, or ``compiled.batch`` samples) through the whole network: external memory at the
    end, engine cycles of all its programs."""

    dram: bytearray
    cycles: int = 0


class NetworkFault(RuntimeError):
    """The RTL engine raised its error flag or did not stop within its cycle budget."""


def run_network_on_rtl(compiled: CompiledNetwork, codes, *, host: HostStep, work_dir=None,
                       traffic: Traffic = Traffic(), progress=None) -> list[NetworkRun]:
    """Every sample of input ``codes`` (N, *input_shape), N a multiple of ``compiled.batch``, through the network's
    steps, a run per ``compiled.batch`` samples; ``host`` runs host layers."""
    runs = [NetworkRun(dram) for dram in compiled.drams_with_inputs(codes)]
    if progress:
        progress(0, len(runs))
    with tempfile.TemporaryDirectory(prefix="rtl-run-") as tmp:
        folder = Path(work_dir) if work_dir is not None else Path(tmp)
        for step in compiled.steps:
            if step["kind"] == "host":
                addr, data = host(step["layer"], lambda t: compiled.read_runs([r.dram for r in runs], t))
                for run, row in zip(runs, data):
                    run.dram[addr:addr + row.size] = row.tobytes()
            else:
                _program(compiled, step, runs, folder, traffic)
    if progress:
        progress(len(runs), len(runs))
    return runs


def _program(compiled: CompiledNetwork, step: dict, runs: list[NetworkRun], folder: Path, traffic: Traffic) -> None:
    """One engine program on every sample's memory, in one run of the testbench."""
    addr = compiled.program_address(step)
    first = compiled.program.segments[step["program"]][0]
    programs = [replace(compiled.program, dram=run.dram, program_addr=addr) for run in runs]
    # Every sample takes the same path through the program: one emulation bounds them all.
    cycles = Emulator(compiled.config, bytes(runs[0].dram)).run(addr).cycles
    results = run_on_rtl(compiled.config, programs, folder, traffic, budgets=[cycle_budget(cycles)] * len(runs))
    for i, (run, result) in enumerate(zip(runs, results)):
        if result is None:
            raise NetworkFault(f"sample {i}: the RTL engine did not stop within its cycle budget")
        if not result.done or result.error:
            raise NetworkFault(f"sample {i}: the RTL engine stopped with {ErrorCode(result.error).name} at "
                               f"instruction {first + result.error_pc}")
        run.dram = bytearray(result.dram)
        regs = result.registers
        run.cycles += int(regs.get("cycles_lo", 0)) | int(regs.get("cycles_hi", 0)) << 32
