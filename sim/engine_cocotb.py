"""Programs on the engine through the cocotb testbench (``tb/engine_tb.py``): Python AXI models on every cycle.

Slow (a few thousand cycles/s) but every cycle passes through Python; kept to cross-check the compiled
testbench's C++ memory model against ``axi.py`` and for benches that need Python in the loop.
"""

from __future__ import annotations

import pickle
from pathlib import Path

from hw.engine import InferenceEngine
from hw.spec.config import AcceleratorConfig
from hw.spec.registers import STATUS_DONE

from . import runner
from .engine_run import EngineRun, Traffic, memory_size

__all__ = ["run_with_cocotb"]


def run_with_cocotb(config: AcceleratorConfig, programs: list, work_dir: Path, traffic: Traffic,
                    budgets: list[int], waves: bool = False) -> list[EngineRun | None]:
    """One cocotb simulation for all ``programs``; None for a program that did not end within its budget."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    batch = {
        "memory_size": memory_size(programs),
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
