"""The per-event energy table: a JSON file the user may replace (``--energy-table FILE``), read and checked here.

The file (``sw/energy/horowitz_45nm.json`` is the default, and documents the form) holds reference points, each
with its ``value``, ``unit`` and ``source``:

- ``int_add``: integer adders by ``bits``; ``int_mult``: integer multipliers by operand ``bits`` (both operands);
- ``sram_read_64b``: a 64-bit read of an SRAM by ``capacity_bytes``;
- ``sram_write_over_read`` (ratio), ``dram_64b`` (a 64-bit DRAM access), ``static_power`` (0: dynamic only);
- anything else (``fp_add``, ``fp_mult``, ``name``, ``technology``, ``source``) is kept for the reader, unused.

Energies are in ``fJ``, ``pJ`` or ``nJ`` (stored in pJ), power in ``uW``, ``mW`` or ``W`` (stored in mW). How the
model scales these points to other widths and sizes is :mod:`sw.energy.model`'s business.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_TABLE", "EnergyTable", "EnergyTableError", "load_table"]

DEFAULT_TABLE = Path(__file__).with_name("horowitz_45nm.json")

_ENERGY = {"fJ": 1e-3, "pJ": 1.0, "nJ": 1e3}
_POWER = {"uW": 1e-3, "mW": 1.0, "W": 1e3}
#: Lists of reference points: the key each point is placed by, and the smallest it may be.
_POINTS = {"int_add": ("bits", 1), "int_mult": ("bits", 1), "sram_read_64b": ("capacity_bytes", 1)}


class EnergyTableError(ValueError):
    """An energy table that cannot be used; the message names the file, the entry and what is expected."""


@dataclass(frozen=True)
class EnergyTable:
    """Reference points in pJ (and mW), each list sorted by its key."""

    name: str
    path: str
    int_add: tuple[tuple[int, float], ...]
    int_mult: tuple[tuple[int, float], ...]
    sram_read_64b: tuple[tuple[int, float], ...]
    sram_write_over_read: float
    dram_64b: float
    static_power_mw: float
    #: Entry -> its source, as the file states it (for the report and the docs).
    sources: dict = field(default_factory=dict, compare=False)


def _number(where: str, value, what: str, zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero):
        raise EnergyTableError(f"{where} must be a {'non-negative' if zero else 'positive'} number ({what}), "
                               f"not {value!r}")
    return float(value)


def _entry(where: str, entry, units: dict, zero: bool = False) -> tuple[float, str]:
    """(value in the table's base unit, source) of an entry ``{"value", "unit", "source"}``."""
    if not isinstance(entry, dict):
        raise EnergyTableError(f"{where} must be an object with value, unit and source, not {entry!r}")
    missing = [k for k in ("value", "unit", "source") if k not in entry]
    if missing:
        raise EnergyTableError(f"{where} lacks {', '.join(missing)}: every entry states its value, unit and source")
    if entry["unit"] not in units:
        raise EnergyTableError(f"{where}.unit must be one of {', '.join(units)}, not {entry['unit']!r}")
    if not isinstance(entry["source"], str) or not entry["source"].strip():
        raise EnergyTableError(f"{where}.source must say where the value comes from")
    return _number(f"{where}.value", entry["value"], entry["unit"], zero) * units[entry["unit"]], entry["source"]


def _points(data: dict, key: str, sources: dict) -> tuple[tuple[int, float], ...]:
    by, lowest = _POINTS[key]
    points = data.get(key)
    if not isinstance(points, list) or not points:
        raise EnergyTableError(f"{key} must be a non-empty list of reference points ({by}, value, unit, source)")
    out = {}
    for i, point in enumerate(points):
        where = f"{key}[{i}]"
        value, source = _entry(where, point, _ENERGY)
        x = point.get(by)
        if isinstance(x, bool) or not isinstance(x, int) or x < lowest:
            raise EnergyTableError(f"{where}.{by} must be an integer of at least {lowest}, not {x!r}")
        if x in out:
            raise EnergyTableError(f"{where}: a second point at {by} {x}")
        out[x] = value
        sources[f"{key}[{by}={x}]"] = source
    return tuple(sorted(out.items()))


def parse_table(data, path: str = "<table>") -> EnergyTable:
    """An :class:`EnergyTable` from the file's parsed JSON."""
    if not isinstance(data, dict):
        raise EnergyTableError(f"an energy table is a JSON object, not {type(data).__name__}")
    sources: dict = {}
    points = {key: _points(data, key, sources) for key in _POINTS}
    singles = {}
    for key, units, zero in (("sram_write_over_read", {"ratio": 1.0}, False), ("dram_64b", _ENERGY, False),
                             ("static_power", _POWER, True)):
        if key not in data:
            raise EnergyTableError(f"{key} is missing (an object with value, unit and source)")
        singles[key], sources[key] = _entry(key, data[key], units, zero)
    name = data.get("name", Path(path).stem)
    return EnergyTable(name=str(name), path=path, **points, sram_write_over_read=singles["sram_write_over_read"],
                       dram_64b=singles["dram_64b"], static_power_mw=singles["static_power"], sources=sources)


def load_table(path: str | Path | None = None) -> EnergyTable:
    """The energy table in ``path`` (the default table if None), checked; :class:`EnergyTableError` says what is
    wrong in one line, prefixed with the file's name."""
    path = DEFAULT_TABLE if path is None else Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise EnergyTableError(f"{path}: cannot read the energy table ({getattr(e, 'strerror', None) or e})") \
            from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise EnergyTableError(f"{path}: not valid JSON ({str(e)[:100]})") from None
    try:
        return parse_table(data, str(path))
    except EnergyTableError as e:
        raise EnergyTableError(f"{path}: {e}") from None
