"""``python -m sw.energy [FILE]``: print an energy table's entries with their sources (the default table without
FILE), or say in one line what is wrong with it (exit status 2)."""

from __future__ import annotations

import sys
from pathlib import Path

from hw.spec.cli import Parser, UsageError, main_guard

from .model import adder_pj, multiplier_pj, sram_pj_per_bit
from .table import EnergyTableError, load_table

PROG = "python -m sw.energy"


def _main(argv: list[str] | None) -> int:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("table", metavar="FILE", type=Path, nargs="?", help="energy table (JSON); default: Horowitz 45 nm")
    args = p.parse_args(argv)
    try:
        t = load_table(args.table)
    except EnergyTableError as e:
        raise UsageError(str(e)) from None
    print(f"{t.name} ({t.path})")
    for entry, source in t.sources.items():
        print(f"  {entry}: {source}")
    print(f"  e.g. 16-bit add {adder_pj(t, 16):.3g} pJ, 4x4-bit multiply {multiplier_pj(t, 4, 4):.3g} pJ, "
          f"64 bits of a 64 KB SRAM {64 * sram_pj_per_bit(t, 65536):.3g} pJ, static power {t.static_power_mw:g} mW")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard(PROG, lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
