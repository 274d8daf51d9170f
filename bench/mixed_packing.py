"""One int4 convolution on a multi-format build that packs per layer: packed (COMPUTE.packed, two codes a slot, one
tile of 2*rows lines a kernel position) against the same layer unpacked (one code a slot, two chunks of rows).

Usage (from the repository root)::

    python bench/mixed_packing.py                 # emulator only (seconds)
    python bench/mixed_packing.py --rtl           # and the compiled Verilator testbench (a few minutes)

The layer: a 3x3 convolution, stride 1, padding 1, of an 8x8 map of ``2*rows`` int4 channels into ``cols`` int4
channels, on a ``rows`` x ``cols`` int4+int8+minifloat6 engine (``cols >= 2*rows``: it packs). Both programs load
the same codes and weights (laid out two codes a slot, or one) and store the layer's output; the outputs must be the
same bytes, those of the independent reference (``sim/programs/reference.py``) (and, with ``--rtl``, the RTL's
bytes and MAC counter those of the emulator). Prints the cycles of each
(the emulator's cycle model; the RTL's counter with ``--rtl``) and writes ``bench/results/mixed_packing.json``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from common import ROOT, run, table, write  # (importing common puts the repo on sys.path)

from hw.spec.cli import Parser, integer  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402
from hw.spec.formats import PACKED_INT_BITS  # noqa: E402
from hw.spec.isa import Buffer  # noqa: E402
from hw.spec.layout import line_bytes, output_line_bytes, pack_codes, pack_params  # noqa: E402
from sw.compiler.program import Program, ProgramBuilder  # noqa: E402

SIDE = 8                # the map's height and width


def layer_program(config: AcceleratorConfig, acts: np.ndarray, weights: np.ndarray, packed: bool) -> Program:
    """The convolution of ``acts`` (SIDE, SIDE, 2*rows int4 codes) by ``weights`` (3, 3, 2*rows, cols int4 codes):
    with ``packed``, one COMPUTE reading two codes a slot; else two COMPUTEs of rows channels each."""
    c, rows = config, config.rows
    rng = np.random.default_rng(5)
    b = ProgramBuilder(c, max_instructions=32)
    chunks = [range(2 * rows)] if packed else [range(0, rows), range(rows, 2 * rows)]
    bits = PACKED_INT_BITS if packed else c.act_slot_bits
    depth = len(chunks[0])
    regions = []
    for k, chunk in enumerate(chunks):
        a = b.region(f"acts{k}", pack_codes(acts[:, :, list(chunk)].reshape(-1, depth), bits,
                                                 line_bytes(Buffer.ACT, c)).tobytes())
        w = weights[:, :, list(chunk)].reshape(9 * depth, c.cols)
        lines = pack_codes(w, c.weight_slot_bits, line_bytes(Buffer.WEIGHT, c)).tobytes()
        regions.append((a, b.region(f"weights{k}", lines)))
    params = b.region("params", pack_params(rng.integers(-64, 64, (1, c.cols)), np.full((1, c.cols), 1 << 30),
                                            np.full((1, c.cols), 36), line_bytes(Buffer.PARAM, c)))
    out = b.region("out", size=SIDE * SIDE * output_line_bytes(c))
    b.emit("LOAD", buffer=Buffer.PARAM, sram_addr=0, dram_addr=params.addr, y_size=1, x_size=1)
    pitch = SIDE + 2
    for k, (a, w) in enumerate(regions):
        b.emit("LOAD", buffer=Buffer.WEIGHT, sram_addr=k * 9 * depth, dram_addr=w.addr, y_size=1, x_size=9 * depth)
        b.emit("LOAD", buffer=Buffer.ACT, sram_addr=k * pitch * pitch, dram_addr=a.addr, y_size=SIDE, x_size=SIDE,
               dram_stride=SIDE * line_bytes(Buffer.ACT, c), pad_top=1, pad_bottom=1, pad_left=1, pad_right=1,
               pad_value=0, push_next=int(k == len(regions) - 1))
    for k in range(len(regions)):
        b.emit("COMPUTE", acc_addr=0, act_addr=k * pitch * pitch, weight_addr=k * 9 * depth, out_h=SIDE, out_w=SIDE,
               act_pitch=pitch, stride=1, dilation=1, kh=3, kw=3, accumulate=int(k > 0), weight_format=0,
               act_format=0, packed=int(packed), pop_prev=int(k == 0), push_next=int(k == len(regions) - 1))
    b.emit("SETPP", zero_point=0, clamp_lo=8, clamp_hi=7, format=0)      # int4: -8 .. 7 (codes 8 .. 7)
    b.emit("STORE", acc_addr=0, dram_addr=out.addr, y_size=1, x_size=SIDE * SIDE, param_addr=0, pop_prev=1)
    b.emit("FINISH")
    return b.build(f"3x3 conv {SIDE}x{SIDE}x{2 * rows} -> {c.cols}, int4, {'packed' if packed else 'unpacked'}")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python bench/mixed_packing.py", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=integer(1, 64), default=4, help="PE rows (default 4; cols = 2 * rows)")
    parser.add_argument("--rtl", action="store_true", help="also run both programs on the Verilator testbench")
    args = parser.parse_args(argv)
    config = AcceleratorConfig(rows=args.rows, cols=2 * args.rows, formats=("int4", "int8", "minifloat6"),
                               act_buffer_depth=512, weight_buffer_depth=256, acc_buffer_depth=128,
                               param_buffer_depth=8, dma_bits=64)
    assert config.packed_pairs == ((0, 0),)
    rng = np.random.default_rng(13)
    acts = rng.integers(0, 16, (SIDE, SIDE, 2 * args.rows))
    weights = rng.integers(0, 16, (3, 3, 2 * args.rows, config.cols))
    programs = [layer_program(config, acts, weights, packed) for packed in (True, False)]

    from sim.engine_harness import Traffic, check_programs, run_on_emulator
    from sim.programs import reference_run
    records, outputs = [], []
    for program in programs:
        result, status = run_on_emulator(program, Traffic(latency=4))
        if not status.done or status.error:
            raise RuntimeError(f"{program.description}: {status}")
        records.append({"program": program.description, "instructions": len(program.words) - 1,
                        "emulator_cycles": status.cycles, "macs": status.macs})
        outputs.append(program.read(result.dram, "out"))
        # The golden side: the independent reference (sim/programs/reference.py), from the ISA's definitions.
        golden = reference_run(config, bytes(program.dram[:program.dram_size]), program.program_addr)
        if program.read(bytes(golden.dram), "out") != outputs[-1] or golden.macs != status.macs:
            raise RuntimeError(f"{program.description}: the emulator differs from the reference")
    if outputs[0] != outputs[1]:
        raise RuntimeError("the packed and unpacked programs stored different outputs")
    if args.rtl:
        with tempfile.TemporaryDirectory() as work:
            pairs = check_programs(config, programs, Path(work), Traffic(latency=4))    # raises on any difference
        for record, (rtl, _) in zip(records, pairs):
            record["rtl_cycles"] = rtl
    print(table([{k: f"{v:,}" if isinstance(v, int) else v for k, v in r.items()} for r in records],
                [(k, k) for k in records[0]]))
    speedup = records[1]["emulator_cycles"] / records[0]["emulator_cycles"]
    print(f"\npacked: {speedup:.2f}x fewer cycles; outputs identical, reference == emulator"
          f"{'; RTL == emulator (bytes, MACs)' if args.rtl else ''}")
    write("mixed_packing", records, config=config.to_dict(), speedup=round(speedup, 3),
          command="python bench/mixed_packing.py" + (" --rtl" if args.rtl else ""))
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
