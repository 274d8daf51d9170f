"""The runtime's ``rtl`` backend: a compiled network's samples, one program each, in one run of the compiled
engine testbench (``engine_compiled.py``: C++ around the Verilated engine, no Python in the loop)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from sw.compiler.network import CompiledNetwork
from sw.emulator import Emulator

from .engine_harness import run_on_rtl
from .engine_run import EngineRun, Traffic, cycle_budget

__all__ = ["run_network_on_rtl"]


def run_network_on_rtl(compiled: CompiledNetwork, codes, *, work_dir=None, traffic: Traffic = Traffic(),
                       progress=None) -> list[EngineRun | None]:
    """Runs of every sample of input ``codes`` (N, *input_shape); None for a run that did not stop in time."""
    programs = [replace(compiled.program, dram=compiled.dram_with_input(sample)) for sample in codes]
    # Every sample takes the same path through the program: one emulation bounds them all.
    cycles = Emulator(compiled.config, bytes(programs[0].dram)).run(compiled.program.program_addr).cycles
    budgets = [cycle_budget(cycles)] * len(programs)
    if progress:
        progress(0, len(programs))
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="rtl-run-") as tmp:
            runs = run_on_rtl(compiled.config, programs, Path(tmp), traffic, budgets=budgets)
    else:
        runs = run_on_rtl(compiled.config, programs, Path(work_dir), traffic, budgets=budgets)
    if progress:
        progress(len(programs), len(programs))
    return runs
