"""The boards' bitstreams, built as a user builds them: ``python -m boards.build --board BOARD --out DIR`` for each
board (the documented command, in a child process, timed), then a table of what each build gives.

Usage: python bench/board_builds.py [--runs icebreaker,icebreaker-1x1,ulx3s-85f-4x4,ulx3s-85f]
[--router router1|router2]
(default: the iCEBreaker with its own engine and its 30 MHz 1x1 board ``icebreaker-1x1``, the ULX3S-85F with
``--rows 4``; ulx3s-85f is the ULX3S's own int8 8x8)

Per run: the engine, fits (or what overflows), resources, fmax against the board's clock (its oscillator's, or the
iCEBreaker's PLL's) and whether it meets it, GMAC/s and digits-CNN inferences/s at the board's clock (the clock the
bitstream runs at), whether the digits CNN's memory image
fits the board's memory, and the build's time (``report.json``'s; place and route is cached by a digest of the
Verilog, so a second build takes seconds and is marked cached). Writes bench/results/board_builds.json and rewrites the
table between the board-table markers of README.md; each build's outputs go to bench/work/boards/RUN/.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

# (importing common puts the repo on sys.path)
from common import ROOT, fits_cell, path_cell, progress, run, table, update_readme, write

from boards.build import board_config  # noqa: E402
from boards.top import BOARDS  # noqa: E402
from hw.pnr import ROUTER_HELP, ROUTERS  # noqa: E402
from hw.spec.cli import Parser, UsageError, run_child  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402

#: run name -> (board, extra arguments of ``python -m boards.build``).
RUNS = {"icebreaker": ("icebreaker", ()), "icebreaker-1x1": ("icebreaker-1x1", ()),
        "ulx3s-85f-4x4": ("ulx3s-85f", ("--rows", "4")), "ulx3s-85f": ("ulx3s-85f", ())}
#: The ULX3S's own engine (int8 8x8) takes over an hour of place and route here: asked for by name.
DEFAULT_RUNS = ("icebreaker", "icebreaker-1x1", "ulx3s-85f-4x4")
WORK = ROOT / "bench" / "work" / "boards"
MARKERS = ("<!-- board-table: python bench/board_builds.py -->", "<!-- end board-table -->")


def _config(board: str, extra: tuple[str, ...]) -> AcceleratorConfig:
    rows = int(extra[extra.index("--rows") + 1]) if "--rows" in extra else None
    return board_config(BOARDS[board], rows=rows)


def _digits(config: AcceleratorConfig) -> tuple[int | None, int | None]:
    """The digits CNN's cycles per inference (the emulator's cycle model, 8 images: cycles do not depend on data)
    and its memory image's bytes; (None, None) when it does not compile for the engine."""
    from sw.compiler.network import CompileError
    from sw.evaluate import evaluate

    try:
        result = evaluate(config, images=8, log=lambda *a: None)
    except CompileError:
        return None, None
    return result["cycles_per_inference"], result["image_bytes"]


def _build(name: str, router: str | None) -> tuple[dict, float]:
    """``python -m boards.build`` for run ``name`` into its work folder: its report and the command's wall time."""
    board, extra = RUNS[name]
    out = WORK / name
    command = [sys.executable, "-m", "boards.build", "--board", board, *extra, "--out", str(out)]
    command += ["--router", router] if router else []
    progress(f"{name}: {' '.join(command[1:])}")
    started = time.monotonic()
    done = run_child(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=None, text=True)
    seconds = time.monotonic() - started
    if not (out / "report.json").is_file():
        raise RuntimeError(f"{name}: python -m boards.build wrote no report (exit {done.returncode})")
    return json.loads((out / "report.json").read_text()), seconds


def _record(name: str, report: dict, seconds: float, cycles: int | None, image: int | None) -> dict:
    board, extra = RUNS[name]
    config, clock = _config(board, extra), BOARDS[board].sync_mhz
    r = report["resources"]
    record = {"run": name, "board": board, "device": report["device"],
              "engine": f"{config.weights.name} {config.rows}x{config.cols}", "fits": report["fits"],
              "overflow": report.get("overflow"),
              **{k: r[k]["used"] for k in ("luts", "flipflops", "dsps", "brams", "sprams") if k in r},
              "available": {k: r[k]["available"] for k in r}, "fmax_mhz": report.get("fmax_mhz"),
              "clock_mhz": clock, "oscillator_mhz": BOARDS[board].oscillator_mhz, "timing_met": report["timing_met"],
              "router": report.get("router"),
              "gmacs_at_clock": round(config.peak_macs_per_cycle * clock / 1e3, 4),
              "digits_cycles": cycles, "digits_image_bytes": image, "memory_bytes": BOARDS[board].memory_bytes,
              "command_seconds": round(seconds, 1), "build_seconds": report["seconds"].get("total"),
              "cached": report.get("cached", False),
              "first_build_seconds": round(sum(report.get("built_seconds", {}).values()), 1) or None,
              "bitstream": report["outputs"].get("bitstream"),
              "critical_path": report.get("critical_path")}
    if cycles:
        record["digits_inferences_per_second"] = round(clock * 1e6 / cycles, 1)
    return record


def _seconds(r: dict) -> str:
    if not r["cached"]:
        return f"{r['build_seconds']:.0f}"
    first = r.get("first_build_seconds")
    return f"cached (synthesis, place and route {first:.0f} when built)" if first else "cached"


def _clock_cell(r: dict) -> str:
    """The board's clock, where it comes from (a PLL from the oscillator, or the oscillator), and whether fmax meets
    it."""
    oscillator = r.get("oscillator_mhz", r["clock_mhz"])
    source = f"PLL from {oscillator:g}" if oscillator != r["clock_mhz"] else "oscillator"
    met = "timing met" if r["timing_met"] else "timing not met"
    return f"{r['clock_mhz']:g} ({source}; {met})" if r["fits"] else f"{r['clock_mhz']:g} ({source})"


def _readme_table(records: list[dict]) -> str:
    lines = ["| board | engine | device | fits | logic (LUT4 / cells) | FF | DSP | BRAM | fmax (MHz) | board clock "
             "(MHz) | GMAC/s at the clock | digits CNN inferences/s at the clock | digits image / memory (KiB) | "
             "bitstream | build (s) | critical path |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|"]
    for r in records:
        a = r["available"]
        fits = fits_cell(r)
        image = (f"{r['digits_image_bytes'] / 1024:.0f} / {r['memory_bytes'] // 1024}"
                 if r["digits_image_bytes"] else f"- / {r['memory_bytes'] // 1024}")
        cells = [r["run"], r["engine"], r["device"], fits, f"{r.get('luts', '-')}/{a.get('luts', '-')}",
                 str(r.get("flipflops", "-")), str(r.get("dsps", "-")), str(r.get("brams", "-")),
                 f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] else "-", _clock_cell(r),
                 *((str(r["gmacs_at_clock"]), str(r.get("digits_inferences_per_second", "-"))) if r["fits"]
                   else ("-", "-")), image,
                 "yes" if r["bitstream"] else "no",
                 _seconds(r),
                 path_cell(r["critical_path"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python bench/board_builds.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", help="comma-separated from " + ", ".join(RUNS) + " (default: " +
                   ", ".join(DEFAULT_RUNS) + ")")
    p.add_argument("--router", choices=ROUTERS, help=ROUTER_HELP + " (default router1)")
    args = p.parse_args(argv)
    runs = [r.strip() for r in (args.runs or ",".join(DEFAULT_RUNS)).split(",") if r.strip()]
    bad = [r for r in runs if r not in RUNS]
    if bad or not runs:
        raise UsageError(f"--runs: unknown {', '.join(bad)[:80] or '(none)'}; choose from {', '.join(RUNS)}")
    results = ROOT / "bench" / "results" / "board_builds.json"
    previous = {r["run"]: r for r in json.loads(results.read_text())["records"]} if results.is_file() else {}
    for name in runs:
        report, seconds = _build(name, args.router)
        progress(f"{name}: the digits CNN's cycles and memory image ...")
        previous[name] = _record(name, report, seconds, *_digits(_config(*RUNS[name])))
    records = [previous[name] for name in RUNS if name in previous]
    print(table(records, [("run", "board"), ("engine", "engine"), ("fits", "fits"), ("luts", "LUT4/cells"),
                          ("fmax_mhz", "fmax MHz"), ("clock_mhz", "clock MHz"), ("command_seconds", "command s")]))
    print(f"wrote {write('board_builds', records).relative_to(ROOT)}; the builds' outputs are in "
          f"{WORK.relative_to(ROOT)}/")
    update_readme(MARKERS, _readme_table(records))
    print("updated the table in README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
