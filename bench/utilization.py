"""MAC utilization of the engine on real layer shapes, DMA included, from the emulator and from RTL.

Usage (from the repository root; the RTL rows need the test extra: pip install -e '.[test]')::

    python bench/utilization.py            # 16x16 on GEMM 256^3 and conv 56x56x64->64 (emulator), and
                                           # GEMM 128^3, conv 28x28x32->32 (16x16), smaller 8x8 cases (RTL too)
    python bench/utilization.py --no-rtl   # emulator rows only (seconds)

Writes ``bench/results/utilization.json``: a list of records with ``case``, ``rows``, ``cols``, ``macs`` (useful
multiply-accumulates of the layer), ``cycles``, ``utilization`` (macs / (cycles * rows * cols)) and ``source``
(``emulator`` or ``rtl``). Utilization counts everything from start to done: instruction fetch, DMA, compute,
post-processing and the final stores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from bench.common import ROOT, progress, run, table, write  # noqa: E402

from hw.spec.config import AcceleratorConfig  # noqa: E402
from sw.compiler.kernels import Requant, conv2d_program, gemm_program  # noqa: E402
from sw.emulator import Emulator  # noqa: E402

MEMORY_LATENCY = 4


def _requant(n: int) -> Requant:
    return Requant(np.zeros(n, int), np.full(n, 1 << 14), np.full(n, 30), 0, 0x80, 0x7F)


SIZES = {"large": ((256, 256, 256), (56, 56, 64, 64)), "medium": ((128, 128, 128), (28, 28, 32, 32)),
         "small": ((64, 64, 64), (14, 14, 16, 16))}


def cases(rows: int, cols: int, dma_bits: int, size: str):
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format="int8", act_format="int8", dma_bits=dma_bits)
    rng = np.random.default_rng(0)
    gemm, conv = SIZES[size]
    m, k, n = gemm
    yield config, f"gemm {m}x{k}x{n}", gemm_program(config, rng.integers(0, 256, (m, k)),
                                                      rng.integers(0, 256, (k, n)), _requant(n))
    h, w, cin, cout = conv
    yield config, f"conv3x3 {h}x{w}x{cin}->{cout}", conv2d_program(
        config, rng.integers(0, 256, (h, w, cin)), rng.integers(0, 256, (3, 3, cin, cout)), _requant(cout), padding=1)


def record(case, config, program, cycles, source):
    return {"case": case, "rows": config.rows, "cols": config.cols, "dma_bits": config.dma_bits,
            "format": f"{config.weights.name}x{config.acts.name}", "macs": program.useful_macs, "cycles": cycles,
            "utilization": program.useful_macs / (cycles * config.peak_macs_per_cycle), "source": source}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-rtl", action="store_true", help="skip the RTL simulations")
    args = parser.parse_args(argv)
    records = []
    # (rows, cols, bus bits, layer sizes, also on RTL): the large layers are too slow for RTL simulation here.
    points = ((16, 16, 128, "large", False), (16, 16, 64, "large", False), (16, 16, 128, "medium", True),
              (8, 8, 64, "small", True))
    for rows, cols, dma_bits, size, on_rtl in points:
        for config, case, program in cases(rows, cols, dma_bits, size):
            progress(f"emulator: {rows}x{cols} (bus {dma_bits} bits) {case} ...")
            status = Emulator(config, bytes(program.dram), memory_latency=MEMORY_LATENCY).run(program.program_addr)
            assert status.done, status
            records.append(record(case, config, program, status.cycles, "emulator"))
            if on_rtl and not args.no_rtl:
                from sim.engine_harness import Traffic, run_on_rtl
                progress(f"rtl (Verilator): {rows}x{cols} {case} ...")
                started = time.monotonic()
                work = ROOT / "bench" / "work" / "utilization" / f"{rows}x{cols}-{case.split()[0]}"
                run = run_on_rtl(config, [program], work, Traffic(latency=MEMORY_LATENCY))[0]
                assert run is not None and run.done, "the RTL did not finish"
                cycles = run.registers["cycles_lo"] | run.registers["cycles_hi"] << 32
                records.append(record(case, config, program, cycles, "rtl"))
                progress(f"  {cycles} cycles in {time.monotonic() - started:.0f} s (build included)")
    print(table(records, [("case", "case"), ("rows", "rows"), ("cols", "cols"), ("dma_bits", "bus bits"),
                          ("macs", "MACs"), ("cycles", "cycles"), ("utilization", "utilization"),
                          ("source", "source")]))
    path = write("utilization", records)
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
