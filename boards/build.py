"""Board builds: ``python -m boards.build --board icebreaker|ulx3s-85f [--pe FMT --rows R ...] --out DIR``.

Elaborates the board top (the inference engine, on-chip memory standing in for DRAM, the UART bridge) on the
board's amaranth-boards platform, synthesizes, places and routes it with the YoWASP tools (yosys, nextpnr; cached
like ``hw.build --targets``) at the board's oscillator clock, packs the bitstream (``ecppack`` for the ECP5,
``icepack`` for the iCE40), and writes it with nextpnr's timing report and log and a ``report.json`` (board,
configuration, fmax, resources, files) into DIR, all at once. A design that does not fit the FPGA gets the report
and the log, no bitstream, and exit status 2 naming what overflowed.
"""

from __future__ import annotations

from hw.spec.cli import exit_on_signals_while_starting

if __name__ == "__main__":     # before the imports below, which take a moment: Ctrl-C then still ends cleanly
    exit_on_signals_while_starting("python -m boards.build")

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hw.pnr import ROUTER_HELP, ROUTERS
from hw.spec.cli import Parser, UsageError, check_out_folder, integer, main_guard, run_child
from hw.spec.config import AcceleratorConfig, ConfigError
from hw.spec.flags import flag_error, format_flags
from hw.spec.formats import IntFormat, get_format
from hw.spec.outputs import atomic_folder

from .top import BOARDS, Board

__all__ = ["main", "build", "DEFAULT_BAUD"]

PROG = "python -m boards.build"
REPORT_SCHEMA = 1
DEFAULT_BAUD = 115200
#: The bridge drops a frame whose bytes stop for this long (and drains the line this long after a bad header).
IDLE_TIMEOUT_SECONDS = 0.05


def _parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[1])
    p.add_argument("--board", required=True, choices=sorted(BOARDS), help="the board to build for")
    p.add_argument("--pe", metavar="FMT", help="number format of weights and activations (default: the board's)")
    p.add_argument("--weights", metavar="FMT", help="weight format (overrides --pe)")
    p.add_argument("--acts", metavar="FMT", help="activation format (overrides --pe)")
    p.add_argument("--rows", type=integer(), help="PE rows (default: the board's)")
    p.add_argument("--cols", type=integer(), help="PE columns (default: --rows)")
    p.add_argument("--max-reduction", type=integer(), help="longest reduction the accumulators hold exactly")
    p.add_argument("--baud", type=integer(1200, 12_000_000), default=DEFAULT_BAUD,
                   help="UART baud rate of the bridge (default %(default)s)")
    p.add_argument("--out", metavar="DIR", type=Path, required=True, help="output folder")
    p.add_argument("--router", choices=ROUTERS, help=ROUTER_HELP + " (default router1)")
    return p


def board_config(board: Board, *, weights: str | None = None, acts: str | None = None, rows: int | None = None,
                 cols: int | None = None, max_reduction: int | None = None) -> AcceleratorConfig:
    """The board's default engine with the given fields replaced; the clock is the board's (its PLL's)."""
    fields = dict(board.default, clock_mhz=board.sync_mhz)
    if weights:
        fields["weight_format"] = weights
    if acts:
        fields["act_format"] = acts
    if rows is not None:
        fields["rows"] = fields["cols"] = rows
    if cols is not None:
        fields["cols"] = cols
    if max_reduction is not None:
        fields["max_reduction"] = max_reduction
    if fields.get("postprocess_serial") and not isinstance(get_format(fields.get("act_format", "int8")), IntFormat):
        fields["postprocess_serial"] = False        # integer outputs only: a minifloat lane keeps its barrel shifter
    return AcceleratorConfig(**fields)


def _config_from(args, board: Board) -> AcceleratorConfig:
    weights, acts = format_flags(args)
    try:
        return board_config(board, weights=weights, acts=acts, rows=args.rows, cols=args.cols,
                            max_reduction=args.max_reduction)
    except ConfigError as e:
        raise flag_error(e) from None


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def board_core(board: Board, config: AcceleratorConfig, baud: int):
    """The board core for ``config`` with the bridge at ``baud`` on the board's clock (its PLL's)."""
    from .top import BoardCore

    clock_hz = board.sync_mhz * 1e6
    return BoardCore(config, memory_bytes=board.memory_bytes, memory_kind=board.memory_kind,
                     clocks_per_bit=clocks_per_bit(board, baud), idle_timeout=int(clock_hz * IDLE_TIMEOUT_SECONDS))


def clocks_per_bit(board: Board, baud: int) -> int:
    """Clock cycles per UART bit at ``baud`` on the board's clock (its PLL's): at least 4, and the rate within 2 %
    (else a UsageError)."""
    clock_hz = board.sync_mhz * 1e6
    cycles = round(clock_hz / baud)
    if cycles < 4 or abs(clock_hz / cycles - baud) > 0.02 * baud:
        raise UsageError(f"--baud {baud}: the {board.sync_mhz:g} MHz clock cannot make it within 2 % "
                         f"with at least 4 clocks per bit; try 115200 or at most {int(clock_hz // 4)}")
    return cycles


def _elaborate(board: Board, core) -> tuple[str, str]:
    """The board top's Verilog (I/O buffers included) and its pin constraints, from amaranth-boards."""
    from .top import BoardTop

    os.environ.setdefault("OPENFPGALOADER", "true")      # amaranth-boards looks for it; building does not need it
    # No source locations: the Verilog, and so the place-and-route cache, is the same from every checkout.
    plan = board.make_platform().build(BoardTop(core, pll=board.pll), name="top", do_build=False, debug_verilog=True,
                                       emit_src=False)
    files = {name: (text if isinstance(text, str) else text.decode()) for name, text in plan.files.items()}
    return files["top.debug.v"], files[constraints_name(board)]


def _pack(board: Board, summary: dict, scratch: Path) -> str:
    """The bitstream from nextpnr's output, packed in ``scratch``; its file name."""
    from hw.synth import yowasp_command

    routed, bitstream = _routed_output(board)[1], "top" + board.bitstream
    shutil.copyfile(Path(summary["files"]) / routed, scratch / routed)
    command = yowasp_command(*board.packer)
    command += (["--compress", "--input", routed, "--bit", bitstream] if bitstream.endswith(".bit")
                else [routed, bitstream])
    done = run_child(command, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode or not (scratch / bitstream).is_file():
        raise RuntimeError(f"{board.packer[0]} failed (exit {done.returncode}): {(done.stdout or '').strip()[-200:]}")
    (scratch / routed).unlink()
    return bitstream


def build(board: Board, config: AcceleratorConfig, out: Path, *, baud: int = DEFAULT_BAUD,
          router: str | None = None) -> dict:
    """Build the bitstream of ``config`` on ``board`` into ``out``; returns the report (``fits`` False: no
    bitstream). ``router``: nextpnr's (:data:`hw.pnr.ROUTERS`; None: its default)."""
    from hw.pnr import place_and_route

    started = time.monotonic()
    with atomic_folder(Path(out)) as scratch:
        _say(f"[1/4] elaborating the board top for {board.name}: a {config.rows}x{config.cols} engine "
             f"({config.weights.name} x {config.acts.name}), {board.memory_bytes // 1024} KiB of "
             f"{board.memory_kind.upper()} memory, the UART bridge at {baud} baud ...")
        core = board_core(board, config, baud)
        verilog, constraints = _elaborate(board, core)
        _say(f"      Verilog: {len(verilog.splitlines())} lines in {time.monotonic() - started:.0f} s")
        _say(f"[2/4] synthesis, place and route on {board.device} at {board.sync_mhz:g} MHz{_pll_note(board)} "
             f"(yosys + nextpnr; cached by a digest of the Verilog) ...")
        summary = place_and_route(verilog, board.device, clock_mhz=board.sync_mhz,
                                  extra_args=(board.constraints, constraints_name(board), *_routed_output(board)),
                                  files={constraints_name(board): constraints}, router=router,
                                  progress=lambda message: _say(f"      {message}"))
        for name in ("nextpnr.log", "timing.json"):
            if (Path(summary["files"]) / name).is_file():
                shutil.copyfile(Path(summary["files"]) / name, scratch / name)
        # The engine's configuration, as python -m hw.build writes it: python -m sw.compile --config compiles for it.
        (scratch / "config.json").write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
        outputs = {"timing_report": "timing.json", "log": "nextpnr.log", "report": "report.json",
                   "config": "config.json"}
        if summary["fits"]:
            _say(f"[3/4] packing the bitstream ({board.packer[0]}) ...")
            outputs["bitstream"] = _pack(board, summary, scratch)
        else:
            _say("[3/4] no bitstream: the design does not fit")
        _say("[4/4] writing the report ...")
        report = _report(board, config, core, summary, baud, outputs, time.monotonic() - started)
        (scratch / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _pll_note(board: Board) -> str:
    return f" (the PLL's, from the {board.oscillator_mhz:g} MHz oscillator)" if board.pll else ""


def _clock(board: Board) -> dict:
    """The report's clock: the engine's, the oscillator's and the PLL's setting (None without one)."""
    pll = board.pll
    return {"mhz": board.sync_mhz, "oscillator_mhz": board.oscillator_mhz,
            "pll": None if pll is None else {"divr": pll.divr, "divf": pll.divf, "divq": pll.divq,
                                             "filter_range": pll.filter_range, "vco_mhz": pll.vco_mhz}}


def constraints_name(board: Board) -> str:
    return "top.lpf" if board.constraints == "--lpf" else "top.pcf"


def _routed_output(board: Board) -> tuple[str, str]:
    """nextpnr's option and file for the routed design the packer reads."""
    return ("--textcfg", "top.config") if board.bitstream == ".bit" else ("--asc", "top.asc")


def _report(board: Board, config: AcceleratorConfig, core, summary: dict, baud: int, outputs: dict,
            seconds: float) -> dict:
    keep = ("fits", "resources", "utilisation", "fmax_mhz", "target_mhz", "router", "critical_path", "overflow",
            "error", "tools", "cached", "built_seconds")
    return {
        "schema": REPORT_SCHEMA,
        "board": board.name,
        "device": summary["device"], "part": summary["part"],
        "config": config.to_dict(), "config_hash": config.hash,
        "memory": {"kind": board.memory_kind, "bytes": board.memory_bytes},
        "uart": {"baud": baud, "clocks_per_bit": core.bridge._clocks_per_bit,
                 "idle_timeout_cycles": core.bridge.idle_timeout},
        **{k: summary[k] for k in keep if k in summary},
        "clock": _clock(board),
        "timing_met": bool(summary["fits"] and summary["fmax_mhz"] and summary["fmax_mhz"] >= board.sync_mhz),
        "seconds": {**summary["seconds"], "total": round(seconds, 1)},
        "outputs": outputs,
    }


def main(argv: list[str] | None = None) -> int:
    return main_guard(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    from hw.pnr import outcome

    args = _parser().parse_args(argv)
    board = BOARDS[args.board]
    config = _config_from(args, board)
    clocks_per_bit(board, args.baud)
    out = check_out_folder(args.out, "report.json")
    try:
        report = build(board, config, out, baud=args.baud, router=args.router)
    except OSError as e:
        raise UsageError(f"--out {out}: {e.strerror or e}") from None
    r = report["resources"]
    used = ", ".join(f"{r[k]['used']}/{r[k]['available']} {k}" for k in ("luts", "flipflops", "dsps", "brams",
                                                                         "sprams") if k in r)
    if not report["fits"] and "overflow" not in report:
        raise RuntimeError(f"place and route on the {board.name}'s {report['part']} {outcome(report)}; report and "
                           f"nextpnr log in {out}")
    if not report["fits"]:
        raise UsageError(f"the {config.rows}x{config.cols} {config.weights.name} engine does not fit the "
                         f"{board.name}'s {report['part']} ({outcome(report)}); report and nextpnr log in {out}; "
                         f"choose a smaller configuration")
    timing = "" if report["timing_met"] else f" (below the {board.sync_mhz:g} MHz clock: timing not met)"
    print(f"Wrote {out}/{report['outputs']['bitstream']}, {out}/timing.json, {out}/report.json and {out}/config.json "
          f"(python -m sw.compile --config compiles for this engine)")
    print(f"  {board.name}: fmax {report['fmax_mhz']:.1f} MHz{timing}; {used}; "
          f"{report['seconds']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
