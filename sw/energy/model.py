"""Energy per event for an engine configuration, from the reference points of an energy table.

Scaling rules (each reference point is met exactly; between two points linear, beyond the outermost ones
proportional to the size measure from the nearest point):

- an integer adder of ``w`` bits: by ``w`` (``adder ~ width``);
- an integer multiplier of ``a`` x ``b`` bits: by ``a * b`` (``multiplier ~ product of operand widths``; the
  table's points are square, ``bits x bits``);
- a multiply-accumulate of a PE: the multiplier of the two significands (``Format.significand_bits``: an integer
  format's own width, a minifloat's sign and significand with its hidden bit) plus, for formats with an exponent,
  an adder of the two shifts, plus the aligned adder: the product, shifted into the exact fixed-point partial sum,
  added at the partial sum's width (exact for a column of ``rows`` products: ``config.psum_bits``). Minifloat PEs
  here neither normalise nor round (the products are exact), so they cost what an integer datapath of the same
  widths costs, not an IEEE unit;
- an SRAM access: its bits times the 64-bit read energy per bit of an SRAM of the buffer's capacity, interpolated
  between the table's capacities on a log-log scale and beyond them as the square root of the capacity (Horowitz's
  8 KB -> 32 KB step doubles the energy for four times the bits); a write costs ``sram_write_over_read`` times a
  read;
- DRAM: per 64 bits moved; an instruction fetch is 128 bits of DRAM read;
- the accumulator's additions and ALU operations: an adder of ``acc_bits``; post-processing a code: the bias
  adder (``acc_bits``) and the rescale multiplier (``acc_bits`` x 32).
"""

from __future__ import annotations

import math

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import Format, accumulator_bits, get_format
from hw.spec.isa import INSTRUCTION_BITS, Buffer
from hw.spec.layout import line_bits
from sw.emulator.events import acc_line_bits

from .table import EnergyTable

__all__ = ["CLASSES", "adder_pj", "multiplier_pj", "mac_pj", "sram_pj_per_bit", "buffer_capacities",
           "event_energies", "energy_by_class"]

#: Where energy goes: the classes of a report, in order.
CLASSES = ("mac", "act_sram", "weight_sram", "acc_sram", "param_sram", "lut_sram", "accumulate", "postprocess",
           "dram", "instruction_fetch")
#: Bits of the post-processing's rescale multiplier (PARAM's int32 multiplier).
RESCALE_BITS = 32


def _interpolate(points: tuple[tuple[float, float], ...], x: float) -> float:
    """Piecewise linear through ``points`` (sorted by x), proportional to x beyond them."""
    (x0, y0), (xn, yn) = points[0], points[-1]
    if x <= x0:
        return y0 * x / x0
    if x >= xn:
        return yn * x / xn
    for (xa, ya), (xb, yb) in zip(points, points[1:]):
        if xa <= x <= xb:
            return ya + (yb - ya) * (x - xa) / (xb - xa)
    raise AssertionError("unreachable")


def adder_pj(table: EnergyTable, bits: int) -> float:
    return _interpolate(table.int_add, bits)


def multiplier_pj(table: EnergyTable, a_bits: int, b_bits: int) -> float:
    return _interpolate(tuple((bits * bits, pj) for bits, pj in table.int_mult), a_bits * b_bits)


def mac_pj(table: EnergyTable, weights: Format, acts: Format, psum_bits: int) -> float:
    """One PE's multiply-accumulate: significand multiplier, shift adder (minifloats), aligned adder."""
    energy = multiplier_pj(table, weights.significand_bits, acts.significand_bits)
    shift = max(weights.shift_bits, acts.shift_bits)
    if shift:
        energy += adder_pj(table, shift + 1)
    return energy + adder_pj(table, psum_bits)


def sram_pj_per_bit(table: EnergyTable, capacity_bytes: float) -> float:
    """Read energy per bit of an SRAM of ``capacity_bytes``."""
    points = table.sram_read_64b
    (c0, e0), (cn, en) = points[0], points[-1]
    if capacity_bytes <= c0:
        e = e0 * math.sqrt(capacity_bytes / c0)
    elif capacity_bytes >= cn:
        e = en * math.sqrt(capacity_bytes / cn)
    else:
        logs = tuple((math.log(c), math.log(v)) for c, v in points)
        e = math.exp(_interpolate(logs, math.log(capacity_bytes)))
    return e / 64


def buffer_capacities(config: AcceleratorConfig) -> dict[str, float]:
    """Bytes of each on-chip buffer (the LUT: one post-processing lane's copy of the table)."""
    c = config
    return {"act": c.act_buffer_depth * line_bits(Buffer.ACT, c) / 8,
            "weight": c.weight_buffer_depth * line_bits(Buffer.WEIGHT, c) / 8,
            "acc": c.acc_buffer_depth * acc_line_bits(c) / 8,
            "param": c.param_buffer_depth * line_bits(Buffer.PARAM, c) / 8,
            "lut": max(c.lut_buffer_depth, 1) * line_bits(Buffer.LUT, c) / 8}


def event_energies(config: AcceleratorConfig, table: EnergyTable) -> dict[str, float]:
    """pJ per unit of each event of :data:`sw.emulator.events.EVENTS` except ``macs`` (see :func:`mac_pj`)."""
    c, t = config, table
    out = {}
    for buffer, capacity in buffer_capacities(c).items():
        per_bit = sram_pj_per_bit(t, capacity)
        out[f"{buffer}_read_bits"] = per_bit
        out[f"{buffer}_write_bits"] = per_bit * t.sram_write_over_read
    out["acc_ops"] = adder_pj(t, c.acc_bits)
    out["alu_muls"] = multiplier_pj(t, c.alu_mul_bits, c.alu_mul_bits)
    out["ppu_outputs"] = adder_pj(t, c.acc_bits) + multiplier_pj(t, c.acc_bits, RESCALE_BITS)
    out["dram_read_bytes"] = out["dram_write_bytes"] = t.dram_64b * 8 / 64
    out["instructions"] = t.dram_64b * INSTRUCTION_BITS / 64
    return out


_CLASS_OF = {"act_read_bits": "act_sram", "act_write_bits": "act_sram", "weight_read_bits": "weight_sram",
             "weight_write_bits": "weight_sram", "acc_read_bits": "acc_sram", "acc_write_bits": "acc_sram",
             "param_read_bits": "param_sram", "param_write_bits": "param_sram", "lut_read_bits": "lut_sram",
             "lut_write_bits": "lut_sram", "acc_ops": "accumulate", "alu_muls": "accumulate", "ppu_outputs": "postprocess",
             "dram_read_bytes": "dram", "dram_write_bytes": "dram", "instructions": "instruction_fetch"}


def energy_by_class(config: AcceleratorConfig, table: EnergyTable, counts: dict[str, int],
                    macs: dict[tuple[str, str], int]) -> dict[str, float]:
    """pJ per class of :data:`CLASSES` for event ``counts`` and MACs per (weight, activation) format pair."""
    per = event_energies(config, table)
    out = dict.fromkeys(CLASSES, 0.0)
    for (w, a), n in macs.items():
        w, a = get_format(w), get_format(a)
        out["mac"] += n * mac_pj(table, w, a, accumulator_bits(w, a, config.reduction_rows))
    for name, n in counts.items():
        if name in _CLASS_OF:
            out[_CLASS_OF[name]] += n * per[name]
    return out
