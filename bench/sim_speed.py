"""Simulation speed: RTL cycles per second on Verilator (8x8 and 16x16 engines), emulator MACs per second.

Usage (from the repository root, with the test extra installed)::

    python bench/sim_speed.py

The RTL runs a GEMM program through the cocotb testbench with the AXI memory models in Python (what the
regression uses); the time excludes the (cached) Verilator build but includes the simulator's start-up
(a few seconds), so the workloads are long enough for it to matter little. Writes ``bench/results/sim_speed.json``.
"""

from __future__ import annotations

import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import ROOT, progress, run, table, write  # noqa: E402
from hw.engine import InferenceEngine  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402
from sim import runner  # noqa: E402
from sim.engine_harness import Traffic, run_on_rtl  # noqa: E402
from sw.compiler.kernels import Requant, gemm_program  # noqa: E402
from sw.emulator import Emulator  # noqa: E402


def main() -> int:
    rows = []
    rng = np.random.default_rng(0)
    for r, m in ((8, 128), (16, 192)):
        config = AcceleratorConfig(rows=r, cols=r, weight_format="int8", act_format="int8", dma_bits=128)
        program = gemm_program(config, rng.integers(0, 256, (m, m)), rng.integers(0, 256, (m, m)),
                               Requant(np.zeros(m, int), np.full(m, 1 << 14), np.full(m, 30), 0, 0x80, 0x7F))
        progress(f"building the {r}x{r} engine ...")
        started = time.monotonic()
        runner.build(InferenceEngine(config), f"engine-{r}x{r}-int8-int8")
        build_s = time.monotonic() - started
        progress(f"simulating GEMM {m}^3 on the {r}x{r} engine ...")
        started = time.monotonic()
        run = run_on_rtl(config, [program], ROOT / "bench" / "work" / "sim_speed" / f"{r}", Traffic(latency=4))[0]
        seconds = time.monotonic() - started
        cycles = run.registers["cycles_lo"]
        rows.append({"what": f"RTL {r}x{r} engine (Verilator + cocotb)", "work": f"GEMM {m}^3, {cycles} cycles",
                     "seconds": seconds, "rate": cycles / seconds, "unit": "cycles/s", "build_s": build_s})
    config = AcceleratorConfig(rows=16, cols=16, weight_format="int8", act_format="int8", dma_bits=128)
    program = gemm_program(config, rng.integers(0, 256, (256, 256)), rng.integers(0, 256, (256, 256)),
                           Requant(np.zeros(256, int), np.full(256, 1 << 14), np.full(256, 30), 0, 0x80, 0x7F))
    started = time.monotonic()
    status = Emulator(config, bytes(program.dram)).run(0)
    seconds = time.monotonic() - started
    rows.append({"what": "emulator 16x16", "work": f"GEMM 256^3, {status.cycles} cycles", "seconds": seconds,
                 "rate": program.useful_macs / seconds, "unit": "MACs/s", "build_s": 0.0})
    print(table(rows, [("what", "what"), ("work", "work"), ("seconds", "seconds"), ("rate", "rate"),
                       ("unit", "unit"), ("build_s", "build s")]))
    print(f"wrote {write('sim_speed', rows).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
