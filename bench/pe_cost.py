"""What a MAC costs in each number format: one PE and one 8x8 array, side by side, from one synthesis run.

Usage (from the repository root)::

    python bench/pe_cost.py                       # every point, PE and 8x8 array (several minutes)
    python bench/pe_cost.py --only int8,fp8_e4m3  # a few points
    python bench/pe_cost.py --no-array            # PEs only (seconds)

Each point is synthesized twice by YoWASP yosys (see ``hw/synth.py``): to generic gates, weighted in NAND2
equivalents (an ASIC proxy), and to iCE40 with DSPs. A full run writes ``bench/results/pe_cost.json``;
a partial run writes ``bench/work/pe_cost_partial.json`` unless ``--out`` says otherwise, so that it never
replaces the committed results by accident. Scratch synthesis folders go to ``bench/work/``.
"""

from __future__ import annotations

import pathlib
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from amaranth.back import verilog  # noqa: E402

from bench.common import run, write_json  # noqa: E402
from hw.array import SystolicArray  # noqa: E402
from hw.pe import ProcessingElement  # noqa: E402
from hw.spec.cli import Parser, UsageError  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402
from hw.spec.formats import accumulator_bits, format_names, get_format, product_of  # noqa: E402
from hw.synth import GE_WEIGHTS, synthesize, yosys_version  # noqa: E402

WORK = ROOT / "bench" / "work" / "pe_cost"
DEFAULT_OUT = ROOT / "bench" / "results" / "pe_cost.json"
PARTIAL_OUT = ROOT / "bench" / "work" / "pe_cost_partial.json"
#: A PE is measured as it sits in a column of this many rows (its partial sum holds that many products).
PE_COLUMN_ROWS = 16
ARRAY_ROWS = ARRAY_COLS = 8
WORKERS = 2


@dataclass(frozen=True)
class Point:
    """One weight format x activation format pair."""

    weights: str
    acts: str

    @property
    def name(self) -> str:
        return self.weights if self.weights == self.acts else f"{self.weights}x{self.acts}"


POINTS = [Point(name, name) for name in format_names()] + [
    Point("int4", "int8"),
    Point("fp8_e4m3", "minifloat6"),
]


def _design(point: Point, kind: str):
    """The component to synthesize and the width of its partial sums."""
    w, a = get_format(point.weights), get_format(point.acts)
    if kind == "pe":
        psum_bits = accumulator_bits(a, w, PE_COLUMN_ROWS)
        return ProcessingElement(w, a, psum_bits), psum_bits
    config = AcceleratorConfig(rows=ARRAY_ROWS, cols=ARRAY_COLS, weight_format=w.name, act_format=a.name)
    return SystolicArray(config), config.psum_bits


def _measure(point: Point, kind: str, start: float) -> dict:
    """Worker: Verilog for one design, then both syntheses. Prints one line per step with elapsed time."""
    label = f"{point.name} {kind}"

    def say(message: str) -> None:
        print(f"[{time.time() - start:7.1f} s] {label}: {message}", flush=True)

    say("verilog ...")
    t = time.monotonic()
    component, psum_bits = _design(point, kind)
    text = verilog.convert(component, name="top", emit_src=False)
    say(f"verilog done in {time.monotonic() - t:.1f} s")
    result = synthesize(text, WORK / point.name / kind, progress=say)
    generic, ice40 = result["generic"], result["ice40"]
    return {
        "psum_bits": psum_bits,
        "nand2_equivalents": generic["nand2_equivalents"],
        "logic_nand2_equivalents": round(generic["nand2_equivalents"] - GE_WEIGHTS["DFF"] * generic["flipflops"], 2),
        "flipflops": generic["flipflops"],
        "ice40_luts": ice40["luts"],
        "ice40_carries": ice40["carries"],
        "ice40_dsps": ice40["dsps"],
        "ice40_flipflops": ice40["flipflops"],
        "generic_cells": generic["cells"],
        "ice40_cells": ice40["cells"],
        "synth_seconds": round(generic["seconds"] + ice40["seconds"], 1),
    }


def _point_record(point: Point) -> dict:
    w, a = get_format(point.weights), get_format(point.acts)
    product = product_of(a, w)
    return {
        "name": point.name,
        "weight_format": w.name,
        "act_format": a.name,
        "product_bits": product.fixed_bits,
        "product_significand_bits": product.significand_bits,
    }


def _run(points: list[Point], kinds: list[str], start: float) -> dict[tuple[str, str], dict]:
    """Every (point, kind) on its own worker; arrays first, since they take longest."""
    jobs = [(p, k) for k in sorted(kinds) for p in points]  # "array" sorts before "pe"
    results, failures = {}, []
    pool = ProcessPoolExecutor(max_workers=WORKERS, initializer=_worker_signals)
    try:
        futures: dict[tuple[str, str], Future] = {
            (p.name, k): pool.submit(_measure, p, k, start) for p, k in jobs
        }
        for key, future in futures.items():
            try:
                results[key] = future.result()
            except Exception as e:  # noqa: BLE001 -- report every failed point, then stop
                failures.append(f"{key[0]} {key[1]}: {e}")
    except BaseException:
        # An interrupt: no public API stops running tasks, so end the workers (each stops its yosys on SIGTERM).
        for process in list(pool._processes.values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if failures:
        raise RuntimeError("synthesis failed for " + "; ".join(failures))
    return results


def _worker_signals() -> None:
    """Workers leave Ctrl-C to the main process, and unwind on SIGTERM (stopping their yosys child)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def _table(records: list[dict], kinds: list[str]) -> str:
    """A Markdown table: one row per point, PE columns then array columns."""
    head = ["point (W x A)", "product bits", "PE psum bits"]
    cols = {"pe": ["PE GE", "PE logic GE", "PE FF", "PE LUT4", "PE CARRY", "PE DSP"],
            "array": ["8x8 GE", "8x8 FF", "8x8 LUT4", "8x8 CARRY", "8x8 DSP"]}
    for kind in ("pe", "array"):
        if kind in kinds:
            head += cols[kind]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in records:
        pair = r["weight_format"] if r["weight_format"] == r["act_format"] else \
            f"{r['weight_format']} x {r['act_format']}"
        row = [pair, str(r["product_bits"]), str(r["pe"]["psum_bits"] if "pe" in r else "")]
        if "pe" in r:
            pe = r["pe"]
            row += [f"{pe['nand2_equivalents']:.0f}", f"{pe['logic_nand2_equivalents']:.0f}", str(pe["flipflops"]),
                    str(pe["ice40_luts"]), str(pe["ice40_carries"]), str(pe["ice40_dsps"])]
        if "array" in r:
            ar = r["array"]
            row += [f"{ar['nand2_equivalents']:.0f}", str(ar["flipflops"]), str(ar["ice40_luts"]),
                    str(ar["ice40_carries"]), str(ar["ice40_dsps"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _select(only: str | None) -> list[Point]:
    if only is None:
        return POINTS
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    known = {p.name: p for p in POINTS}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise UsageError(f"unknown point {unknown[0]!r}; known points are {', '.join(known)}")
    return [known[n] for n in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python bench/pe_cost.py", description=__doc__.split("\n")[0])
    parser.add_argument("--only", metavar="NAME[,NAME]", help="measure only these points (e.g. int8,int4xint8)")
    parser.add_argument("--no-array", action="store_true", help="skip the 8x8 arrays (PEs only)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help=f"JSON results (default: {DEFAULT_OUT.relative_to(ROOT)} for a full run, "
                             f"{PARTIAL_OUT.relative_to(ROOT)} otherwise)")
    args = parser.parse_args(argv)
    points = _select(args.only)
    kinds = ["pe"] if args.no_array else ["pe", "array"]
    out = args.out or (DEFAULT_OUT if args.only is None and not args.no_array else PARTIAL_OUT)

    start = time.time()
    version = yosys_version()  # also compiles YoWASP's yosys once, before two workers would race to
    print(f"{version}; {len(points)} points x {'/'.join(kinds)} on {WORKERS} workers", flush=True)
    results = _run(points, kinds, start)
    wall = round(time.time() - start, 1)

    records = []
    for p in points:
        record = _point_record(p)
        for kind in kinds:
            record[kind] = results[(p.name, kind)]
        records.append(record)
    print()
    print(_table(records, kinds))
    print(f"\nGE = NAND2 equivalents (weights: {', '.join(f'{k} {v}' for k, v in GE_WEIGHTS.items())}); "
          f"PE psum sized for a {PE_COLUMN_ROWS}-row column; wall time {wall} s")

    write_json(out, {
        "yosys_version": version,
        "ge_weights": GE_WEIGHTS,
        "pe_column_rows": PE_COLUMN_ROWS,
        "array_shape": [ARRAY_ROWS, ARRAY_COLS],
        "wall_seconds": wall,
        "points": records,
    })
    print(f"wrote {out.relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
