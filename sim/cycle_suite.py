"""Short programs whose RTL cycle counts are pinned in a committed fixture, so that the emulator's cycle model is
checked against the RTL by tests that need no Verilator (tests/sw/test_cycle_fixture.py), and the fixture is
checked against the RTL by tests that do (tests/hw/test_engine_cycles.py).

The suite: every instruction kind alone, and seeded random layers and random programs, at memory latencies 1
and 4, on a small int8 engine. Short programs make the fetch cadence and the fixed costs of each instruction
visible: a change of one cycle in any of them moves the totals.

Regenerate the fixture after a deliberate change of the RTL's timing (it runs the RTL)::

    python -m sim.cycle_suite
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.spec.config import AcceleratorConfig
from sw.compiler.program import ProgramBuilder

__all__ = ["CONFIG", "FIXTURE", "Case", "suite", "digest", "load_fixture"]

CONFIG = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", act_buffer_depth=512,
                           weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8)
FIXTURE = Path(__file__).resolve().parent / "cycle_fixture.json"
LATENCIES = (1, 4)


@dataclass
class Case:
    name: str
    latency: int
    program: object


def _single(name, opcode, **fields):
    b = ProgramBuilder(CONFIG, max_instructions=8)
    data = b.region("data", bytes(8192))
    if "dram_addr" in fields:
        fields["dram_addr"] += data.addr
    b.emit(opcode, **fields)
    return b.build(name)


def one_instruction_programs() -> list:
    """One instruction of every kind (and the variants that cost differently), then FINISH."""
    compute = dict(act_pitch=0, stride=1, dilation=1, kh=1, kw=1, acc_addr=0, act_addr=0, weight_addr=0, out_h=1)
    return [
        _single("load", "LOAD", buffer=0, sram_addr=0, dram_addr=0, y_size=4, x_size=16, dram_stride=256),
        _single("load with padding", "LOAD", buffer=0, sram_addr=0, dram_addr=0, y_size=4, x_size=16,
                dram_stride=256, pad_top=1, pad_bottom=1, pad_left=1, pad_right=1),
        _single("weights", "LOAD", buffer=1, sram_addr=0, dram_addr=0, y_size=1, x_size=16),
        _single("compute", "COMPUTE", **compute, out_w=32),
        _single("compute 3x3", "COMPUTE", **{**compute, "kh": 3, "kw": 3, "act_pitch": 10, "out_h": 4}, out_w=8),
        _single("store", "STORE", acc_addr=0, dram_addr=0, y_size=4, x_size=8, dram_stride=256, acc_stride=8),
        _single("store negative_param", "STORE", acc_addr=0, dram_addr=0, y_size=4, x_size=8, dram_stride=256,
                acc_stride=8, negative_param=1),
        _single("alu", "ALU", op=1, dst_addr=0, src_addr=64, y_size=2, x_size=16, src_step=1, dst_stride=16,
                src_stride=16),
        # The ALU's pipeline (operands and result registered): independent elements, a chain (each reads the line the
        # one before wrote) and one destination updated every other element, for MUL, MAX and ADD.
        _single("alu mul", "ALU", op=3, dst_addr=0, src_addr=64, y_size=2, x_size=16, src_step=1, dst_stride=16,
                src_stride=16),
        _single("alu mul chain", "ALU", op=3, dst_addr=1, src_addr=0, y_size=1, x_size=16, src_step=1),
        _single("alu mul repeated", "ALU", op=3, dst_addr=0, src_addr=64, y_size=8, x_size=2, src_step=1,
                dst_stride=1, src_stride=2),
        _single("alu max chain", "ALU", op=0, dst_addr=1, src_addr=0, y_size=1, x_size=16, src_step=1),
        _single("alu add repeated", "ALU", op=1, dst_addr=0, src_addr=64, y_size=8, x_size=2, src_step=1,
                dst_stride=1, src_stride=2),
    ]


def suite() -> list[Case]:
    """The pinned programs, deterministically (seeded)."""
    from sim.layer_programs import random_layer_program
    from sim.programs import random_program

    cases = [Case(p.description, latency, p) for latency in LATENCIES for p in one_instruction_programs()]
    rng = np.random.default_rng(20261205)
    for i in range(6):
        cases.append(Case(f"layer {i}", 4, random_layer_program(CONFIG, rng)))
    for i in range(6):
        cases.append(Case(f"program {i}", 1 + 3 * (i % 2), random_program(CONFIG, rng, max_instructions=24)))
    cases.append(Case("layer stacked", 4, _stacked_layer(np.random.default_rng(20261206))))
    return cases


def _stacked_layer(rng: np.random.Generator):
    """A 1x1 convolution the compiler runs in ``stack`` order (sw/compiler/stacking.py: 4 channel blocks as the taps
    of one COMPUTE, 5 output blocks, the next chunk's patches loaded ahead)."""
    from sim.layer_programs import random_requant
    from sw.compiler.kernels import conv2d_program

    x = rng.integers(0, 256, (12, 8, 16))
    w = rng.integers(0, 256, (1, 1, 16, 20))
    return conv2d_program(CONFIG, x, w, random_requant(CONFIG, 20, rng))


def digest(program) -> str:
    """What a case's cycles depend on: its memory image and start address."""
    h = hashlib.sha256(bytes(program.dram[:program.dram_size]))
    h.update(program.program_addr.to_bytes(8, "little"))
    return h.hexdigest()[:16]


def load_fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def measure() -> dict:
    """Run every case on the RTL (one simulation per latency) and return the fixture's contents."""
    import tempfile

    from sim.engine_harness import Traffic, run_on_rtl

    cases = suite()
    entries = []
    with tempfile.TemporaryDirectory(prefix="cycle-suite-") as tmp:
        for latency in LATENCIES:
            chosen = [c for c in cases if c.latency == latency]
            runs = run_on_rtl(CONFIG, [c.program for c in chosen], Path(tmp) / f"latency{latency}",
                              Traffic(latency=latency))
            for case, run in zip(chosen, runs):
                if run is None or not run.done or run.error:
                    raise RuntimeError(f"{case.name}: the RTL did not finish cleanly")
                entries.append({"name": case.name, "latency": latency, "digest": digest(case.program),
                                "rtl_cycles": run.registers["cycles_lo"] | run.registers["cycles_hi"] << 32})
    order = {(c.name, c.latency): i for i, c in enumerate(cases)}
    entries.sort(key=lambda e: order[(e["name"], e["latency"])])
    return {"config": CONFIG.to_dict(), "regenerate": "python -m sim.cycle_suite", "cases": entries}


def main() -> int:
    from hw.spec.outputs import atomic_file

    contents = measure()
    with atomic_file(FIXTURE) as scratch:
        scratch.write_text(json.dumps(contents, indent=1) + "\n")
    print(f"wrote {FIXTURE} ({len(contents['cases'])} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
