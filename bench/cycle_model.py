"""The emulator's cycle count against the RTL's cycle counter, on the same programs, side by side.

Usage (from the repository root, with the test extra installed)::

    python bench/cycle_model.py

Programs: random GEMM/convolution layers and random ISA programs (sim/), on two configurations, memory
latency 4 cycles and no bus stalls (the model assumes none). Writes ``bench/results/cycle_model.json``.
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from bench.common import ROOT, progress, run, table, write  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402
from sim.engine_harness import Traffic, check_programs  # noqa: E402
from sim.layer_programs import random_layer_program  # noqa: E402
from sim.programs import random_program  # noqa: E402

CONFIGS = [("int8", "int8", 4, 4, 64), ("minifloat6", "minifloat6", 8, 8, 64), ("int8", "int8", 8, 8, 128)]


def main() -> int:
    rows = []
    for weights, acts, r, c, bus in CONFIGS:
        config = AcceleratorConfig(rows=r, cols=c, weight_format=weights, act_format=acts, act_buffer_depth=512,
                                   weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8, dma_bits=bus)
        rng = np.random.default_rng(r * c)
        for kind, make in (("layers", random_layer_program), ("isa", random_program)):
            programs = [make(config, rng) for _ in range(40)]
            progress(f"{r}x{c} {acts} bus {bus}: 40 {kind} programs on RTL and emulator ...")
            pairs = check_programs(config, programs, ROOT / "bench" / "work" / "cycle_model" / f"{r}x{c}{kind}",
                                   Traffic(latency=4))
            rtl = np.array([p[0] for p in pairs], dtype=float)
            emu = np.array([p[1] for p in pairs], dtype=float)
            dev = (emu - rtl) / rtl
            rows.append({"config": f"{r}x{c} {weights}x{acts} bus {bus}", "programs": kind, "count": len(pairs),
                         "exact": int((rtl == emu).sum()), "max_abs_dev": float(np.abs(dev).max()),
                         "mean_dev": float(dev.mean()), "rtl_cycles": int(rtl.sum()), "emulator_cycles": int(emu.sum()),
                         "total_dev": float((emu.sum() - rtl.sum()) / rtl.sum())})
    print(table(rows, [("config", "configuration"), ("programs", "programs"), ("count", "n"), ("exact", "exact"),
                       ("max_abs_dev", "max |dev|"), ("total_dev", "total dev"), ("rtl_cycles", "RTL cycles"),
                       ("emulator_cycles", "emulator cycles")]))
    print(f"wrote {write('cycle_model', rows, memory_latency=4).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
