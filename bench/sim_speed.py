"""Simulation speed: the cocotb harness and the compiled testbench side by side, build times, emulator MACs/s.

Usage (from the repository root, with the test extra installed)::

    python bench/sim_speed.py              # everything: about 25 minutes on 2 cores, most of it cold builds
    python bench/sim_speed.py --no-cold    # cached builds only (cold columns empty)

For the 8x8 and 16x16 int8 engines it runs the same GEMM program on

- the cocotb harness (``sim/engine_cocotb.py``: Python AXI models on every cycle), once;
- the compiled testbench (``sim/engine_compiled.py``) at ``-O0``, ``-O2``, ``-O3`` and ``-O2`` with
  Verilator's ``--threads 2``, the program repeated so that a run lasts seconds (2 M cycles; 200 k threaded).

cycles/s is the engine's cycle counter over the simulation's wall time: for cocotb the whole run (its start-up
is a few seconds of a minute), for the compiled testbench the simulation loop (``sim s``); ``wall s`` adds the
process start and the memory files. Build times: cold in a fresh ``SIM_BUILD_DIR`` with ``CCACHE_DISABLE=1``
(Verilog generation included), warm from the cache (what every later run pays before simulating). Writes
``bench/results/sim_speed.json``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import ROOT, progress, run, table, write  # noqa: E402
from hw.engine import InferenceEngine  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402
from sim import runner  # noqa: E402
from sim.engine_cocotb import run_with_cocotb  # noqa: E402
from sim.engine_compiled import run_compiled  # noqa: E402
from sim.engine_run import Traffic  # noqa: E402
from sim.engine_tb_build import build_testbench, engine_verilog  # noqa: E402
from sim.toolchain import patched_environ  # noqa: E402
from sw.compiler.kernels import Requant, gemm_program  # noqa: E402
from sw.emulator import Emulator  # noqa: E402

WORK = ROOT / "bench" / "work" / "sim_speed"
TRAFFIC = Traffic(latency=4)
SIZES = ((8, 128), (16, 192))                  # engine rows = cols, GEMM M = K = N
COMPILED = (("-O0", 1), ("-O2", 1), ("-O3", 1), ("-O2", 2))
TARGET_CYCLES = 2_000_000                      # per compiled run: the program repeated up to this
THREADED_CYCLES = 200_000                      # the same for --threads 2, up to 100x slower on a busy machine


def _config(rows: int) -> AcceleratorConfig:
    return AcceleratorConfig(rows=rows, cols=rows, weight_format="int8", act_format="int8", dma_bits=128)


def _gemm(config: AcceleratorConfig, m: int, rng):
    return gemm_program(config, rng.integers(0, 256, (m, m)), rng.integers(0, 256, (m, m)),
                        Requant(np.zeros(m, int), np.full(m, 1 << 14), np.full(m, 30), 0, 0x80, 0x7F))


def _timed(function) -> float:
    started = time.monotonic()
    function()
    return time.monotonic() - started


def _build_times(build, cold: bool) -> dict:
    """Seconds ``build`` takes cold (an empty build cache, ccache off) and warm (from the cache)."""
    times = {}
    if cold:
        with tempfile.TemporaryDirectory(prefix="sim-speed-cold-") as tmp:
            with patched_environ({"SIM_BUILD_DIR": tmp, "CCACHE_DISABLE": "1"}):
                times["cold_build_s"] = _timed(build)
    build()                              # into the real cache, if it is not there yet
    times["warm_build_s"] = _timed(build)
    return times


def _cycles(run) -> int:
    return run.registers["cycles_lo"] | run.registers["cycles_hi"] << 32


def _cocotb_row(config: AcceleratorConfig, program, cold: bool) -> dict:
    r = config.rows
    name = f"engine-{r}x{r}-int8-int8"
    times = _build_times(lambda: runner.build(InferenceEngine(config), name), cold)
    progress(f"  cocotb harness, one GEMM on {r}x{r} ...")
    started = time.monotonic()
    run = run_with_cocotb(config, [program], WORK / f"cocotb-{r}", TRAFFIC, [10 ** 9])[0]
    seconds = time.monotonic() - started
    return {"harness": "cocotb", "engine": f"{r}x{r}", "build": "-O0", "programs": 1, "cycles": _cycles(run),
            "sim_s": seconds, "wall_s": seconds, "cycles_per_s": _cycles(run) / seconds, **times, "dram": run.dram}


def _compiled_row(config: AcceleratorConfig, program, opt: str, threads: int, repeats: int, cold: bool) -> dict:
    r = config.rows

    def build():
        engine_verilog(config)
        build_testbench(config, opt=opt, threads=threads)

    times = _build_times(build, cold)
    progress(f"  compiled testbench {opt} threads={threads}, {repeats} x the GEMM on {r}x{r} ...")
    started = time.monotonic()
    batch = run_compiled(config, [program] * repeats, WORK / f"compiled-{r}", TRAFFIC, [10 ** 9] * repeats,
                         opt=opt, threads=threads)
    wall = time.monotonic() - started
    cycles = sum(_cycles(run) for run in batch.runs)
    return {"harness": "compiled", "engine": f"{r}x{r}", "build": opt + (f" --threads {threads}" if threads > 1 else ""),
            "programs": repeats, "cycles": cycles, "sim_s": batch.seconds, "wall_s": wall,
            "cycles_per_s": cycles / batch.seconds, **times, "dram": batch.runs[0].dram}


def _emulator_row(rng) -> dict:
    config = _config(16)
    program = _gemm(config, 256, rng)
    started = time.monotonic()
    status = Emulator(config, bytes(program.dram)).run(0)
    seconds = time.monotonic() - started
    return {"harness": "emulator", "engine": "16x16", "build": "", "programs": 1, "cycles": status.cycles,
            "sim_s": seconds, "wall_s": seconds, "macs_per_s": program.useful_macs / seconds,
            "work": "GEMM 256^3"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cold", action="store_true", help="skip the cold builds (minutes each)")
    parser.add_argument("--no-cocotb", action="store_true", help="skip the cocotb harness (a minute at 16x16)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    for r, m in SIZES:
        config = _config(r)
        program = _gemm(config, m, rng)
        cycles = Emulator(config, bytes(program.dram)).run(0).cycles
        progress(f"{r}x{r} engine, GEMM {m}^3 ({cycles} cycles on the emulator):")
        group = [] if args.no_cocotb else [_cocotb_row(config, program, not args.no_cold)]
        group += [_compiled_row(config, program, opt, threads,
                                max(1, (TARGET_CYCLES if threads == 1 else THREADED_CYCLES) // cycles),
                                not args.no_cold)
                  for opt, threads in COMPILED]
        reference = group[0]["dram"]
        for row in group:
            assert row.pop("dram") == reference, f"{row['harness']} {row['build']}: the memory differs"
            row["work"] = f"GEMM {m}^3"
        rows += group
    rows.append(_emulator_row(rng))
    print(table(rows, [("harness", "harness"), ("engine", "engine"), ("build", "build"), ("work", "work"),
                       ("programs", "programs"), ("cycles", "engine cycles"), ("sim_s", "sim s"),
                       ("wall_s", "wall s"), ("cycles_per_s", "cycles/s"), ("macs_per_s", "MACs/s"),
                       ("cold_build_s", "cold build s"), ("warm_build_s", "warm build s")]))
    print(f"wrote {write('sim_speed', rows, cpus=os.cpu_count(), load=os.getloadavg()).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
