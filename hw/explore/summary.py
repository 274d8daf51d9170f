"""``summary.md``: the sweep in a page a researcher can read (what ran, the table, the fronts, the plots)."""

from __future__ import annotations

__all__ = ["markdown"]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _k(value) -> str:
    return "-" if value is None else f"{value / 1e3:.0f}"


def _uj(nj) -> str:
    return "-" if nj is None else f"{nj / 1e3:.4g}"


def _table(records: list[dict]) -> list[str]:
    lines = ["| point | status | accuracy % | cycles / inference | MAC utilization % | area estimate (k NAND2) | "
             "PEs / buffers / control / post-proc. (k) | yosys generic (k NAND2) | iCE40 LUT4 | fmax MHz | "
             "energy uJ (est.) | Pareto (cycles, area) |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in records:
        parts = " / ".join(_k(r[f"area_{p}"]) for p in ("pe_array", "buffers", "control", "postprocess")) \
            if r["area_estimate_nand2"] is not None else "-"
        front = "-" if r["pareto_cycles"] is None else \
            f"{'yes' if r['pareto_cycles'] else 'no'}, {'yes' if r['pareto_area'] else 'no'}"
        status = "ok" if r["status"] == "ok" else "failed"
        lines.append(f"| {r['point']} | {status} | {_pct(r['accuracy'])} | {r['cycles_per_inference'] or '-'} | "
                     f"{_pct(r['utilization'])} | {_k(r['area_estimate_nand2'])} | {parts} | "
                     f"{_k(r['synth_generic_nand2'])} | {r['synth_ice40_luts'] or '-'} | {r['fmax_mhz'] or '-'} | "
                     f"{_uj(r['energy_nj_per_inference'])} | {front} |")
    return lines


def markdown(records: list[dict], meta: dict, plots: dict) -> str:
    """The summary of ``records`` (see :data:`hw.explore.results.KEYS`)."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    lines = [f"# Design-space sweep: {meta['model']}", "",
             f"`{meta['command']}`", "",
             f"{len(records)} points ({len(ok)} measured, {len(failed)} failed); this run: {meta['run']} run "
             f"({meta['cached']} of them wholly from the build and compile caches), {meta['skipped']} finished "
             f"earlier, {meta['seconds']:.0f} s on {meta['engine']}. Accuracy on "
             f"{meta['eval']}; quantization {meta['quantization']}.", "",
             *_table(records), ""]
    if failed:
        lines += ["## Failed points", ""]
        lines += [f"- `{r['point']}` ({r['stage']}): {r['error']}" for r in failed]
        lines.append("")
    for title, key in (("Pareto front: accuracy against cycles", "pareto_cycles"),
                       ("Pareto front: accuracy against area (estimate)", "pareto_area")):
        front = [r["point"] for r in records if r[key]]
        if front:
            lines += [f"## {title}", "", ", ".join(f"`{p}`" for p in front), ""]
    lines += ["## Plots", ""]
    if "missing" in plots:
        lines += [f"No plots: {plots['missing']}.", ""]
    for kind, caption in (("accuracy_vs_cycles", "accuracy against cycles per inference"),
                          ("accuracy_vs_area", "accuracy against area (analytic estimate)"),
                          ("area_breakdown", "area breakdown per format and shape (analytic estimate)"),
                          ("utilization", f"MAC utilization per layer of {plots.get('utilization_point')}")):
        if plots.get(kind):
            lines += [f"![{caption}](plots/{plots[kind]})", ""]
    lines += ["## Notes", "",
              "- Area: an analytic estimate from the configuration (hw/area_model.py), not synthesis; yosys "
              "columns appear with --synth.",
              "- Energy: dynamic energy per inference estimated from the events the emulator counted and the default "
              "energy table (sw/energy: Horowitz 45 nm, scaled by width); no static power.",
              "- fmax: from place and route, with a device among --synth (e.g. ecp5-85f).", ""]
    return "\n".join(lines)
