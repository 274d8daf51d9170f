"""The sweep's results: one tidy table (``results.csv``, ``results.json``; one row per point, the keys of
:data:`KEYS`, documented in the README), a Markdown summary (``summary.md``) and PNG plots (``plots/``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hw.spec.outputs import atomic_file

__all__ = ["KEYS", "SCHEMA", "record", "mark_pareto", "write_results", "detail_point"]

SCHEMA = 1

#: The table's columns, in order. Lists (per layer) are lists in JSON and ``;``-joined in CSV; a value that does
#: not exist for a point (accuracy without labels, area of a failed build, yosys without --synth, fmax without a
#: device, energy of a point that did not run) is null in JSON and empty in CSV.
KEYS = ("point", "weights", "acts", "rows", "cols", "config_hash", "status", "stage", "error",
        "accuracy", "images", "golden_emulator_mismatches", "cycles_per_inference", "inferences_per_second_at_clock",
        "utilization", "macs_per_inference", "layer_names", "layer_cycles", "layer_utilization",
        "area_estimate_nand2", "area_pe_array", "area_buffers", "area_control", "area_postprocess", "buffer_kbit",
        "synth_generic_nand2", "synth_ice40_luts", "synth_ice40_dsps", "synth_ice40_brams", "fmax_mhz",
        "fmax_device", "energy_nj_per_inference", "pareto_cycles", "pareto_area", "build_cached", "compile_cached",
        "seconds")


def _area(report: dict) -> dict:
    b = report["area_breakdown"]
    area = report.get("area") or {}
    devices = [d for d in report.get("devices", []) if report[d].get("fmax_mhz")]
    return {"area_estimate_nand2": b["total"], **{f"area_{k}": v for k, v in b["parts"].items()},
            "buffer_kbit": round(b["buffer_bits"] / 1024, 1),
            "synth_generic_nand2": area.get("generic", {}).get("nand2_equivalents"),
            "synth_ice40_luts": area.get("ice40", {}).get("luts"), "synth_ice40_dsps": area.get("ice40", {}).get("dsps"),
            "synth_ice40_brams": area.get("ice40", {}).get("brams"),
            "fmax_mhz": report[devices[0]]["fmax_mhz"] if devices else None,
            "fmax_device": devices[0] if devices else None}


def _network(evaluation: dict) -> dict:
    keys = ("accuracy", "images", "golden_emulator_mismatches", "cycles_per_inference",
            "inferences_per_second_at_clock", "utilization", "macs_per_inference")
    layers = evaluation.get("layers", [])
    return {**{k: evaluation.get(k) for k in keys}, "layer_names": [la["name"] for la in layers],
            "layer_cycles": [la["cycles"] for la in layers], "layer_utilization": [la["utilization"] for la in layers]}


def record(row: dict) -> dict:
    """A point's row from the sweep as a record with exactly :data:`KEYS`."""
    flat = {k: row.get(k) for k in KEYS}
    if row.get("build"):
        flat.update(_area(row["build"]))
    if row.get("evaluation") and "error" not in row["evaluation"]:
        flat.update(_network(row["evaluation"]))
        energy = row["evaluation"].get("energy")
        if energy:                                   # dynamic energy of counted events (sw/energy): an estimate
            flat["energy_nj_per_inference"] = round(energy["energy_uj_per_inference"] * 1e3, 3)
    return {k: flat.get(k) for k in KEYS}


def _front(records: list[dict], x_key: str) -> set[str]:
    from hw.plots import pareto_front

    usable = [r for r in records if r["status"] == "ok" and r["accuracy"] is not None and r[x_key] is not None]
    return {usable[i]["point"] for i in pareto_front([(r[x_key], r["accuracy"]) for r in usable])}


def mark_pareto(records: list[dict]) -> None:
    """Set ``pareto_cycles`` and ``pareto_area``: on the front of fewest cycles (least estimated area) against
    the highest accuracy; null for points without accuracy."""
    for flag, x_key in (("pareto_cycles", "cycles_per_inference"), ("pareto_area", "area_estimate_nand2")):
        front = _front(records, x_key)
        for r in records:
            r[flag] = None if r["status"] != "ok" or r["accuracy"] is None else r["point"] in front


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return value


def detail_point(records: list[dict], chosen: str | None) -> dict | None:
    """The point whose utilization per layer is plotted: ``chosen``, else the most accurate with the fewest
    cycles (the first point that ran when there is no accuracy)."""
    ok = [r for r in records if r["status"] == "ok"]
    if chosen is not None:
        return next((r for r in records if r["point"] == chosen), None)
    if not ok:
        return None
    return min(ok, key=lambda r: (-(r["accuracy"] or 0.0), r["cycles_per_inference"]))


def write_results(records: list[dict], out: Path, meta: dict, detail: str | None) -> list[str]:
    """``results.csv``, ``results.json``, ``plots/*.png`` and ``summary.md`` in ``out``; the files written."""
    with atomic_file(out / "results.csv") as scratch:
        with open(scratch, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=KEYS, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: _csv_value(v) for k, v in r.items()} for r in records)
    with atomic_file(out / "results.json") as scratch:
        scratch.write_text(json.dumps({"schema": SCHEMA, "keys": list(KEYS), "sweep": meta, "rows": records},
                                      indent=1) + "\n")
    plots = _plots(records, out / "plots", detail)
    from .summary import markdown

    with atomic_file(out / "summary.md") as scratch:
        scratch.write_text(markdown(records, meta, plots))
    return ["results.csv", "results.json", "summary.md", *(f"plots/{p}" for p in plots.values() if p and p.endswith(".png"))]


def _plots(records: list[dict], folder: Path, detail: str | None) -> dict:
    """The PNGs (``{kind: file name or None}``; ``missing`` says why there are none)."""
    from hw import plots

    if not plots.available():
        return {"missing": plots.MISSING}
    folder.mkdir(parents=True, exist_ok=True)
    made: dict[str, str | None] = {}
    labelled = [{**r, "format": r["weights"] if r["weights"] == r["acts"] else f"{r['weights']}:{r['acts']}",
                 "shape": f"{r['rows']}x{r['cols']}"} for r in records
                if r["status"] == "ok" and r["accuracy"] is not None]
    for kind, x_key, label in (("accuracy_vs_cycles", "cycles_per_inference", "cycles per inference"),
                               ("accuracy_vs_area", "area_estimate_nand2", "area, NAND2 equivalents (analytic "
                                                                          "estimate, buffers included)")):
        made[kind] = None
        if labelled:
            with atomic_file(folder / f"{kind}.png") as scratch:
                plots.tradeoff(labelled, x_key, label, scratch, f"Accuracy against {label.split(',')[0]}")
            made[kind] = f"{kind}.png"
    made["area_breakdown"] = _area_plot(records, folder, plots)
    made["utilization"] = None
    chosen = detail_point(records, detail)
    if chosen is not None and chosen["status"] == "ok":
        layers = [{"name": n, "cycles": c, "utilization": u} for n, c, u in
                  zip(chosen["layer_names"], chosen["layer_cycles"], chosen["layer_utilization"])]
        with atomic_file(folder / "utilization.png") as scratch:
            plots.utilization(layers, scratch, f"MAC utilization per layer, {chosen['point']}")
        made["utilization"] = "utilization.png"
        made["utilization_point"] = chosen["point"]
    return made


def _area_plot(records: list[dict], folder: Path, plots) -> str | None:
    """Stacked area estimate per format, one bar per format and shape (builds that exist)."""
    bars = [(r["point"], {k: r[f"area_{k}"] for k in ("pe_array", "buffers", "control", "postprocess")})
            for r in records if r["area_estimate_nand2"] is not None]
    if not bars:
        return None
    with atomic_file(folder / "area_breakdown.png") as scratch:
        plots.area_breakdown(bars, scratch, "Area breakdown per format and shape (analytic estimate)")
    return "area_breakdown.png"
