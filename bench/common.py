"""What every benchmark does: find the repository, print a Markdown table, write JSON with its provenance
(swapped into place whole), and run under the command-line contract (one-line errors, clean interrupts)."""

from __future__ import annotations

import json
import pathlib
import platform
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"

from hw.spec.cli import main_guard  # noqa: E402 - needs ROOT on sys.path
from hw.spec.outputs import atomic_file  # noqa: E402


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """Markdown table of ``rows`` with (key, heading) ``columns``; floats get 4 significant digits."""
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def write(name: str, records, **meta) -> pathlib.Path:
    """``bench/results/NAME.json``: the records, plus when and where they were measured."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"measured": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": platform.machine(),
               "python": platform.python_version(), **meta, "records": records}
    if name == "utilization":
        payload = records     # the contract: a list of records
    write_json(path, payload)
    return path


def write_json(path: pathlib.Path, payload) -> None:
    """Write JSON into a scratch file beside ``path`` and swap it in: never a half-written result."""
    with atomic_file(path) as scratch:
        scratch.write_text(json.dumps(payload, indent=2) + "\n")


def update_readme(markers: tuple[str, str], text: str) -> None:
    """Replace what README.md holds between the two marker lines with ``text`` (a benchmark's table)."""
    readme = ROOT / "README.md"
    old = readme.read_text()
    start, end = (old.find(m) for m in markers)
    if start < 0 or end < 0:
        raise RuntimeError(f"README.md has no {markers[0]} ... {markers[1]} block")
    new = old[:start + len(markers[0])] + "\n" + text + "\n" + old[end:]
    with atomic_file(readme) as scratch:
        scratch.write_text(new)


def run(main, name: str | None = None) -> int:
    """Exit status of a benchmark's ``main`` under the command-line contract (see hw/spec/cli.py)."""
    return main_guard(name or f"python {pathlib.Path(sys.argv[0]).name}", main)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fits_cell(record: dict) -> str:
    """A place-and-route record's fit for a table: yes, or each overflowing resource's used/available."""
    return "yes" if record["fits"] else "no: " + ", ".join(
        f"{bel} {u['used']}/{u['available']}" for bel, u in (record.get("overflow") or {}).items())


def path_cell(path: dict | None) -> str:
    """A critical path for a table, named from the engine down (a wrapper or board calls the engine ``core``)."""
    if not path:
        return ""
    name = lambda s: s.removeprefix("core.")  # noqa: E731
    return f"`{name(path['from'])}` -> `{name(path['to'])}`"
