"""Where an engine's iCE40 cells go: ``python -m hw.breakdown --config FILE [--depth N]``.

Elaborates the engine of a configuration (a JSON file: an ``AcceleratorConfig``'s JSON, or a report of
``hw.build`` or ``boards.build``, whose ``config`` it takes) and synthesizes it and each of its submodules on its own
for the iCE40 (``synth_ice40 -dsp``, cached like every synthesis: ``$SYNTH_CACHE_DIR``), then prints a table: LUT4,
carries, flip-flops, SB_MAC16 and block RAMs per module. A module alone loses the optimisations across its
boundary, so the parts add up to about the whole, not exactly.
"""

from __future__ import annotations

from hw.spec.cli import exit_on_signals_while_starting

if __name__ == "__main__":     # before the imports below, which take a moment: Ctrl-C then still ends cleanly
    exit_on_signals_while_starting("python -m hw.breakdown")

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .spec.cli import Parser, UsageError, integer, main_guard
from .spec.config import AcceleratorConfig, ConfigError

__all__ = ["main", "config_from_file", "table"]

PROG = "python -m hw.breakdown"
COLUMNS = ("luts", "carries", "flipflops", "dsps", "brams")


def config_from_file(path: Path) -> AcceleratorConfig:
    """The configuration in ``path``: a configuration's JSON or a build report holding one under ``config``."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path}: not JSON ({str(e)[:80]}); give a configuration or a build's report.json")
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    try:
        return AcceleratorConfig.from_dict(data)
    except (ConfigError, TypeError) as e:
        raise UsageError(f"--config {path}: {e}") from None


def table(results: dict[str, dict]) -> str:
    """A Markdown table of :func:`hw.synth.breakdown`'s results, one row per module."""
    lines = ["| module | LUT4 | carries | flip-flops | SB_MAC16 | block RAMs |", "|---|---:|---:|---:|---:|---:|"]
    for name, summary in results.items():
        cells = ["yosys failed"] + [""] * (len(COLUMNS) - 1) if "error" in summary else \
            [f"{summary[c]:,}" for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _main(argv: list[str] | None) -> int:
    p = Parser(prog=PROG, description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", type=Path, required=True,
                   help="a configuration's JSON, or a report.json of hw.build or boards.build")
    p.add_argument("--depth", type=integer(0, 8), default=1, help="levels of submodules below the engine (default 1)")
    args = p.parse_args(argv)
    config = config_from_file(args.config)
    from amaranth.back import verilog

    from .engine import InferenceEngine
    from .synth import breakdown

    text = verilog.convert(InferenceEngine(config), name="top", emit_src=False)
    with tempfile.TemporaryDirectory(prefix="breakdown-") as work:
        results = breakdown(text, Path(work), depth=args.depth, progress=lambda m: print(m, file=sys.stderr))
    print(f"The {config.rows}x{config.cols} {config.weights.name} x {config.acts.name} engine (config hash "
          f"{config.hash}), each module synthesized on its own (synth_ice40 -dsp):\n")
    print(table(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    # A configuration that cannot be built (ConfigError) is a usage error: one line, status 2.
    return main_guard(PROG, lambda: _main(argv), usage_errors=(ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
