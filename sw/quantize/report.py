"""A readable table of the quantizer's per-layer error report (what the compiler prints)."""

from __future__ import annotations

import math

from sw.ir import QuantizedNetwork

__all__ = ["format_report"]


def _db(v) -> str:
    if v is None:
        return "-"
    return "exact" if math.isinf(v) and v > 0 else f"{v:.1f}"


def _num(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def format_report(net: QuantizedNetwork) -> str:
    """One line per accumulating layer: formats, weight tensors, weight and output SQNR (dB) and MSE.

    Output errors compare the golden model with the float model on calibration samples, so they include the
    error of every layer before; "-" where there was nothing to measure (no weights, or no samples).
    """
    head = ("layer", "op", "weights", "acts", "tensors", "w SQNR dB", "w MSE", "out SQNR dB", "out MSE")
    rows = [head]
    for r in net.report:
        rows.append((r["name"], r["op"], r.get("weight_format") or "-", r.get("act_format") or "-",
                     str(r.get("tensors") or "-"), _db(r.get("weight_sqnr_db")), _num(r.get("weight_mse")),
                     _db(r.get("out_sqnr_db")), _num(r.get("out_mse"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"Quantized for {net.act_format} activations, {net.weight_format} weights, "
             f"{net.acc_bits}-bit accumulators"]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 5 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
