"""The printed and written report of a mixed-precision choice: formats per unit, predicted and measured figures."""

from __future__ import annotations

import math
import textwrap

__all__ = ["format_mixed"]


def _num(v, metric: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "exact"
    if metric == "output_sqnr_db" or metric == "energy-uj":
        return f"{v:.2f}"
    return f"{int(round(v))}" if isinstance(v, (int, float)) else str(v)


def format_mixed(result: dict, menu: str, budget: str) -> str:
    """A readable table of :func:`sw.mixed.measure`'s result for ``--mixed menu --budget budget``."""
    metrics = [m for m in result["predicted"] if m != "output_sqnr_db"]
    head = ["unit (layers)", "format", "SQNR alone dB", "loss", *metrics]
    rows = [head] + [[u["layers"][0] + (f" (+{len(u['layers']) - 1})" if len(u["layers"]) > 1 else ""),
                      u["format"], _num(u["sqnr_alone_db"], "output_sqnr_db"), f"{u['loss']:.3g}",
                      *(_num(u[m], m) for m in metrics)] for u in result["units"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"Mixed precision --mixed {menu} --budget {budget}, on today's {result['engine']} engine"]
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    p, m = result["predicted"], result["measured"]
    lines += ["", "figure" + " " * 40 + "predicted     measured"]
    where = "on this engine" if result.get("costs_on") == "engine" else "each layer on its format's engine"
    labels = {"cycles": f"cycles ({where})", "energy-uj": f"energy-uj ({where})"}
    for metric in metrics:
        lines.append(f"{labels.get(metric, metric):44s}  {_num(p[metric], metric):>9s}    "
                     f"{_num(m.get(metric), metric):>9s}")
    lines.append(f"{'output SQNR dB (calibration samples)':44s}  {_num(p['output_sqnr_db'], 'output_sqnr_db'):>9s}"
                 f"    {_num(m['output_sqnr_db'], 'output_sqnr_db'):>9s}")
    lines.append(f"{'cycles on this engine (emulator)':44s}  {'-':>9s}    {_num(m['cycles_on_this_engine']):>9s}")
    if "energy_uj_on_this_engine" in m:
        lines.append(f"{'energy-uj on this engine':44s}  {'-':>9s}    "
                     f"{_num(m['energy_uj_on_this_engine'], 'energy-uj'):>9s}")
    if "accuracy" in m:
        lines.append(f"{'accuracy':44s}  {'-':>9s}    {100 * m['accuracy']:8.2f}%  ({m['images']} images, "
                     f"{m['golden_emulator_mismatches']} golden/emulator mismatches)")
    costs = ("Costs were counted on this engine (--costs-on engine), so predicted and measured agree."
             if result.get("costs_on") == "engine" else
             "Predicted cycles: each layer's emulator-counted cycles on an engine of its own format, summed (what a "
             "multi-format engine that packs narrow formats would take; energy likewise); today's "
             f"{result['engine']} engine runs the mix at the cycles (and energy) measured on it (--costs-on engine "
             "budgets those instead).")
    note = ("SQNR alone: the network output's SQNR with only that unit in that format; loss: the output error power "
            "it adds over all layers in the engine's format (the ILP minimises their sum). " + costs)
    return "\n".join(lines + [""] + textwrap.wrap(note, 116))
