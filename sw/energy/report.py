"""Energy per inference and per layer, inferences/s and inferences/s per watt: JSON with stable keys, Markdown.

What the figures are: dynamic energy of the events the emulator counted for one inference, times the table's
energy per event, plus the table's static power times the inference's time (zero in the default table, which
then gives dynamic energy only). Host layers (operators the engine does not run) are not included.
"""

from __future__ import annotations

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import accumulator_bits, get_format
from hw.spec.isa import decode
from sw.emulator.events import Events, count_events

from .model import energy_by_class, event_energies, mac_pj
from .table import EnergyTable

__all__ = ["energy_report", "energy_markdown", "network_layers", "program_events"]

_SRAM = ("act_sram", "weight_sram", "acc_sram", "param_sram", "lut_sram")


def network_layers(compiled) -> list[tuple[str, int, int]]:
    """(name, first instruction, end) of each engine layer of a compiled network: its instructions run from its
    ``first_instruction`` to the next layer's (a segment's FINISH counts with the layer before it)."""
    starts = [e["first_instruction"] for e in compiled.layers] + [len(compiled.program.words)]
    return [(e["name"], a, b) for e, a, b in zip(compiled.layers, starts, starts[1:])]


def program_events(compiled) -> Events:
    """The events of one inference of a compiled network, counted from its instruction words without running it:
    what the emulator counts when it runs them (the events depend on the fields alone; the lookup flag carries
    from one engine program to the next, as in the engine), a row per word."""
    return count_events(compiled.config, [decode(word) for word in compiled.program.words], finish=False)


def _uj(pj: float) -> float:
    return round(pj * 1e-6, 6)


def energy_report(config: AcceleratorConfig, events: Events, table: EnergyTable, *, cycles: int | None = None,
                  layers: list[tuple[str, int, int]] = (), fmax_mhz: float | None = None,
                  cycles_source: str = "the emulator's cycle model", samples: int = 1) -> dict:
    """The report of one inference's ``events`` (rows = instructions) on ``config``; ``layers``: (name, start,
    stop) instruction spans; ``cycles``: the inference's cycles (for inferences/s and static energy); ``samples``:
    inferences the events and cycles are of (a program compiled with ``--batch``), the figures being per inference;
    ``fmax_mhz``: an achieved clock to use instead of the configuration's clock target; ``cycles_source``: where
    ``cycles`` come from."""
    clock, clock_source = ((fmax_mhz, "achieved fmax (given)") if fmax_mhz is not None
                           else (config.clock_mhz, "clock target of the configuration"))
    if samples != 1 and cycles is not None:
        cycles = cycles / samples                   # per inference, as every figure below
    seconds = None if cycles is None else cycles / (clock * 1e6)
    static_pj = 0.0 if seconds is None else table.static_power_mw * 1e-3 * seconds * 1e12

    def split(start: int = 0, stop: int | None = None) -> dict[str, float]:
        parts = energy_by_class(config, table, events.total(start, stop), events.macs_by_formats(start, stop))
        return {name: pj / samples for name, pj in parts.items()}

    by_class = split()
    dynamic = sum(by_class.values())
    total = dynamic + static_pj
    per_event = {name: round(pj, 6) for name, pj in event_energies(config, table).items()}
    for w, a in events.pairs:
        fw, fa = get_format(w), get_format(a)
        per_event[f"mac[{w} x {a}]"] = round(mac_pj(table, fw, fa, accumulator_bits(fw, fa, config.reduction_rows)), 6)
    per_second = None if seconds is None else 1 / seconds
    report = {
        "energy_table": {"name": table.name, "path": table.path, "sources": dict(table.sources)},
        "scope": ("dynamic energy of the counted events (MACs, buffer accesses, DRAM bytes, instructions), times the "
                  "table's energy per event"
                  + (f", plus static power {table.static_power_mw:g} mW x time" if table.static_power_mw else
                     "; no static power (the table gives none)") + "; engine layers only, host layers excluded"),
        "energy_uj_per_inference": _uj(total),
        "dynamic_uj": _uj(dynamic),
        "static_uj": _uj(static_pj),
        "by_class_uj": {name: _uj(pj) for name, pj in by_class.items()},
        "events": events.total(),
        **({"samples_per_run": samples, "events_scope": "one program run"} if samples != 1 else {}),
        "macs_by_formats": {f"{w} x {a}": n for (w, a), n in events.macs_by_formats().items()},
        "energy_per_event_pj": per_event,
        "clock_mhz": clock,
        "clock_source": clock_source,
        "cycles_per_inference": cycles,
        "cycles_source": None if cycles is None else cycles_source,
        "inferences_per_second": None if per_second is None else round(per_second, 3),
        "average_power_mw": None if per_second is None else round(total * 1e-9 * per_second, 3),
        "inferences_per_second_per_watt": round(1e12 / total, 3) if total else None,
        "layers": [],
    }
    for name, start, stop in layers:
        parts = split(start, stop)
        report["layers"].append({"name": name, "instructions": [start, stop], "energy_uj": _uj(sum(parts.values())),
                                 "by_class_uj": {k: _uj(v) for k, v in parts.items()}})
    return report


def _cell(uj: float) -> str:
    return f"{uj:.4g}"


def energy_markdown(report: dict) -> str:
    """The report as Markdown: totals, the split by class, and the layers."""
    r = report
    total = r["energy_uj_per_inference"]
    lines = [f"Energy per inference: **{_cell(total)} uJ** ({r['scope']}; table: {r['energy_table']['name']}).", ""]
    if r["inferences_per_second"] is not None:
        lines += [f"{r['inferences_per_second']:,.1f} inferences/s at {r['clock_mhz']:g} MHz ({r['clock_source']}; "
                  f"{r['cycles_per_inference']} cycles from {r['cycles_source']}); "
                  f"{r['average_power_mw']:.4g} mW on average; "
                  f"**{r['inferences_per_second_per_watt']:,.1f} inferences/s per watt**.", ""]
    lines += ["| where | uJ | share |", "|---|---|---|"]
    lines += [f"| {name} | {_cell(uj)} | {uj / total:.1%} |" for name, uj in r["by_class_uj"].items() if uj] \
        if total else []
    if r["static_uj"]:
        lines.append(f"| static | {_cell(r['static_uj'])} | {r['static_uj'] / total:.1%} |")
    if r["layers"]:
        lines += ["", "| layer | uJ | share | MAC | SRAM | DRAM + fetch | other |", "|---|---|---|---|---|---|---|"]
        for layer in r["layers"]:
            c = layer["by_class_uj"]
            sram = sum(c[k] for k in _SRAM)
            dram = c["dram"] + c["instruction_fetch"]
            other = layer["energy_uj"] - c["mac"] - sram - dram
            share = layer["energy_uj"] / total if total else 0.0
            lines.append(f"| {layer['name']} | {_cell(layer['energy_uj'])} | {share:.1%} | {_cell(c['mac'])} | "
                         f"{_cell(sram)} | {_cell(dram)} | {_cell(max(other, 0.0))} |")
    return "\n".join(lines) + "\n"


