"""What run-time format selection costs: a multi-format PE against the single-format PEs of its set.

Usage (from the repository root)::

    python bench/multiformat_pe.py                          # the default sets (a few minutes)
    python bench/multiformat_pe.py --sets int4,int8,minifloat6
    python bench/multiformat_pe.py --sets int4,int8,minifloat6 --packing    # and the PE that packs per layer

For each set, yosys (``hw/synth.py``) synthesizes the multi-format PE (``ProcessingElement`` over the set: one
decoder per format behind a multiplexer, one shared significand multiplier, codes in slots of the widest format,
partial sums in the units of the finest pair) and the single-format PE of every member (its own format for
weights and activations), each sized for a column of ``PE_COLUMN_ROWS`` rows as ``bench/pe_cost.py`` does. The
table compares the multi-format PE with the largest single-format PE and with the sum of them (what separate
arrays per format would cost). Writes ``bench/results/multiformat_pe.json`` (``multiformat_pe_packing.json`` with
``--packing``); scratch goes to ``bench/work/``.
"""

from __future__ import annotations

import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from amaranth.back import verilog  # noqa: E402

from bench.common import RESULTS, run, table, write_json  # noqa: E402
from hw.pe import ProcessingElement  # noqa: E402
from hw.spec.cli import Parser, UsageError  # noqa: E402
from hw.spec.config import AcceleratorConfig, ConfigError  # noqa: E402
from hw.synth import GE_WEIGHTS, synthesize, yosys_version  # noqa: E402

WORK = ROOT / "bench" / "work" / "multiformat_pe"
OUT = RESULTS / "multiformat_pe.json"
#: A PE is measured as it sits in a column of this many rows (as in bench/pe_cost.py).
PE_COLUMN_ROWS = 16
DEFAULT_SETS = ("int4,int8,minifloat6", "int8,minifloat6", "int4,int8", "int8,fp8_e4m3")


def _config(formats: tuple[str, ...]) -> AcceleratorConfig:
    if len(formats) == 1:
        return AcceleratorConfig(rows=PE_COLUMN_ROWS, weight_format=formats[0], act_format=formats[0])
    return AcceleratorConfig(rows=PE_COLUMN_ROWS, formats=formats)


def _pe(config: AcceleratorConfig) -> ProcessingElement:
    if config.multi_format:
        return ProcessingElement(config.weight_formats, config.act_formats, config.psum_bits, 1, config.packed_pairs)
    return ProcessingElement(config.weights, config.acts, config.psum_bits)


def _measure(name: str, config: AcceleratorConfig, cache: dict) -> dict:
    """Synthesize one PE (once per name: sets share their members)."""
    if name not in cache:
        t = time.monotonic()
        text = verilog.convert(_pe(config), name="top", emit_src=False)
        result = synthesize(text, WORK / name.replace(",", "-"), progress=lambda m: print(f"  {name}: {m}",
                                                                                          flush=True))
        generic, ice40 = result["generic"], result["ice40"]
        cache[name] = {
            "psum_bits": config.psum_bits,
            "nand2_equivalents": generic["nand2_equivalents"],
            "flipflops": generic["flipflops"],
            "ice40_luts": ice40["luts"],
            "ice40_carries": ice40["carries"],
            "ice40_dsps": ice40["dsps"],
            "ice40_flipflops": ice40["flipflops"],
            "seconds": round(time.monotonic() - t, 1),
        }
    return cache[name]


def _sets(text: str | None) -> list[tuple[str, ...]]:
    sets = []
    for spec in ([text] if text else DEFAULT_SETS):
        names = tuple(n.strip() for n in spec.split(","))
        try:
            sets.append(_config(names).formats)
        except ConfigError as e:
            raise UsageError(f"--sets: {e}") from None
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python bench/multiformat_pe.py", description=__doc__.split("\n")[0])
    parser.add_argument("--sets", metavar="FMT,FMT[,...]", help="one set of formats (default: "
                                                                 f"{'; '.join(DEFAULT_SETS)})")
    parser.add_argument("--packing", action="store_true",
                        help="also the multi-format PE of a build that packs per layer (cols = 2 * rows), where the "
                             "set packs: two int4 products a cycle")
    args = parser.parse_args(argv)
    sets = _sets(args.sets)
    start = time.time()
    version = yosys_version()
    print(f"{version}; {len(sets)} sets, PEs sized for a {PE_COLUMN_ROWS}-row column", flush=True)
    cache, records = {}, []
    for formats in sets:
        multi = _measure(",".join(formats), _config(formats), cache)
        singles = {f: _measure(f, _config((f,)), cache) for f in formats}
        largest = max(s["nand2_equivalents"] for s in singles.values())
        total = sum(s["nand2_equivalents"] for s in singles.values())
        packing = AcceleratorConfig(rows=PE_COLUMN_ROWS, cols=2 * PE_COLUMN_ROWS, formats=formats)
        if args.packing and packing.packs_per_layer:
            multi = {**multi, "packing_per_layer": _measure(",".join(formats) + "+packing", packing, cache)}
        records.append({
            "formats": list(formats),
            "multi": multi,
            "single": singles,
            "multi_over_largest_single": round(multi["nand2_equivalents"] / largest, 3),
            "multi_over_sum_of_singles": round(multi["nand2_equivalents"] / total, 3),
        })
    rows = []
    for r in records:
        rows.append({"set": ",".join(r["formats"]), "kind": "multi-format", **_row(r["multi"])})
        if "packing_per_layer" in r["multi"]:
            rows.append({"set": "", "kind": "multi-format, packing per layer",
                         **_row(r["multi"]["packing_per_layer"])})
        for name, s in r["single"].items():
            rows.append({"set": "", "kind": name, **_row(s)})
        rows.append({"set": "", "kind": "multi / largest single",
                     "ge": f"{r['multi_over_largest_single']:.2f}x"})
        rows.append({"set": "", "kind": "multi / sum of singles", "ge": f"{r['multi_over_sum_of_singles']:.2f}x"})
    print()
    print(table(rows, [("set", "set"), ("kind", "PE"), ("psum", "psum bits"), ("ge", "NAND2 eq."),
                       ("ff", "FF"), ("luts", "iCE40 LUT4"), ("carries", "CARRY"), ("dsps", "DSP")]))
    wall = round(time.time() - start, 1)
    print(f"\nGE = NAND2 equivalents (weights: {', '.join(f'{k} {v}' for k, v in GE_WEIGHTS.items())}); "
          f"wall time {wall} s")
    out = OUT.with_name("multiformat_pe_packing.json") if args.packing else OUT
    write_json(out, {"measured": time.strftime("%Y-%m-%d %H:%M:%S"), "yosys_version": version,
                     "ge_weights": GE_WEIGHTS, "pe_column_rows": PE_COLUMN_ROWS, "wall_seconds": wall,
                     "records": records})
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


def _row(m: dict) -> dict:
    return {"psum": m["psum_bits"], "ge": f"{m['nand2_equivalents']:.0f}", "ff": m["flipflops"],
            "luts": m["ice40_luts"], "carries": m["ice40_carries"], "dsps": m["ice40_dsps"]}


if __name__ == "__main__":
    sys.exit(run(main))
