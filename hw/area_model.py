"""An analytic area estimate of the engine, split into PEs, buffers, control and post-processing.

This is an estimate from the configuration alone (no synthesis), in NAND2 equivalents with the same gate weights
as ``hw/synth.py``. It counts the main structures of each part and nothing else, so it is for comparing
configurations (which part grows with which choice), not a replacement for yosys (``--synth``/``hw.build``
without ``--no-synth``), whose totals are reported beside it where they exist. The rules:

- **PE** (rows x cols of them): flip-flops for the activation code passed on, two weight banks, the registered
  operand codes, the registered significand product and shift, and the partial sum; a significand multiplier of
  ``a x w`` AND gates and ``(a - 1) x w`` full adders; a barrel shifter of the product into fixed point
  (``fixed_bits x shift_bits`` multiplexers); a ``psum_bits`` adder; the bank multiplexer (``w`` multiplexers).
  A packed PE (``values_per_lane`` codes a lane) has that many codes, weights, multipliers and adders, and one
  register for the products' sum; a multi-format PE that packs per layer adds a weight register per bank, a small
  multiplier of the packing formats, its product register and an adder.
- **Post-processing** (one lane per column): a bias adder and rounding adder of ``acc_bits``, an
  ``acc_bits x 32`` multiplier for the rescale, a ``POSTPROCESS_LATENCY``-stage pipeline of ``acc_bits + 32``
  flip-flops, and an output conversion of ``4 x output bits`` multiplexers.
- **Buffers** (activation, weight, accumulator, parameter): their bits as SRAM at ``SRAM_BIT`` NAND2 equivalents
  per bit (a six-transistor cell against the NAND2's four; periphery left out).
- **Control** (fetch, decoder, queues, DMA, engine sequencers): the 128-bit instruction words held in flight
  (fetch, ``DECODE_LATENCY`` decoder stages, three command queues of ``command_queue_depth``) as flip-flops with as
  much logic again, plus the DMA's line assembly (two lines of ``dma_bits`` flip-flops per direction).

Full adder: 2 XOR + 2 AND + 1 OR. Against yosys on single 16-row PEs (``bench/results/pe_cost.json``) the PE
rule is low by about a fifth (int8: 1128 against 1355; int4: 435 against 548). The whole 4x4 engine without its
buffers comes out at about 60 % of yosys's generic count (int4: 74 k against 127 k; int8: 97 k against 155 k),
control being the part counted least completely. Treat every part as an estimate with the right trends, and the
yosys totals (``--synth generic``) as the numbers.
"""

from __future__ import annotations

from .spec.config import AcceleratorConfig
from .spec.formats import product_of
from .spec.microarchitecture import DECODE_LATENCY, POSTPROCESS_LATENCY
from .synth import GE_WEIGHTS

__all__ = ["PARTS", "SRAM_BIT", "KIND", "buffers", "estimate"]

#: The parts, in the order of reports and plots.
PARTS = ("pe_array", "buffers", "control", "postprocess")
#: NAND2 equivalents per SRAM bit.
SRAM_BIT = 1.5
#: How every estimate labels itself.
KIND = "estimate (analytic model, hw/area_model.py; not synthesis)"

_FA = 2 * GE_WEIGHTS["XOR"] + 2 * GE_WEIGHTS["AND"] + GE_WEIGHTS["OR"]
_FF, _AND, _MUX = GE_WEIGHTS["DFF"], GE_WEIGHTS["AND"], GE_WEIGHTS["MUX"]


def buffers(config: AcceleratorConfig) -> dict:
    """Depth, line width and total bits of each on-chip buffer."""
    from .compute_engine import acc_line_layout
    from .spec.isa import Buffer
    from .spec.layout import line_bits

    widths = {"activation": (config.act_buffer_depth, line_bits(Buffer.ACT, config)),
              "weight": (config.weight_buffer_depth, line_bits(Buffer.WEIGHT, config)),
              "accumulator": (config.acc_buffer_depth, acc_line_layout(config).size),
              "parameter": (config.param_buffer_depth, line_bits(Buffer.PARAM, config))}
    sizes = {name: {"depth": d, "line_bits": w, "bits": d * w} for name, (d, w) in widths.items()}
    # The activation table: one copy per post-processing lane (each reads it in one cycle).
    lut = (config.lut_buffer_depth, line_bits(Buffer.LUT, config))
    sizes["lut"] = {"depth": lut[0], "line_bits": lut[1], "copies": config.cols,
                    "bits": lut[0] * lut[1] * config.cols}
    return sizes


def _pe(config: AcceleratorConfig) -> float:
    """NAND2 equivalents of one PE (a packed PE: ``values_per_lane`` codes, weights and multipliers, their products'
    sum in one register, one more adder per extra product)."""
    if config.multi_format:
        return _multi_format_pe(config)
    a, w, n = config.acts, config.weights, config.values_per_lane
    product = product_of(a, w)
    sa, sw = a.significand_bits, w.significand_bits
    flops = n * (a.bits + 2 * w.bits + (a.bits + w.bits) + a.shift_bits + w.shift_bits) \
        + product.significand_bits + (n - 1).bit_length() + config.psum_bits
    multiplier = sa * sw * _AND + max(sa - 1, 0) * sw * _FA
    shift = (a.shift_bits + w.shift_bits)
    shifter = product.fixed_bits * shift * _MUX
    return flops * _FF + n * (multiplier + shifter + config.psum_bits * _FA + w.bits * _MUX)


def _multi_format_pe(config: AcceleratorConfig) -> float:
    """A multi-format PE: slots as wide as the widest code, the widest significands and aligned shifts of the set
    (one multiplier, its product shifted into the partial sum's width), and a multiplexer per output bit of each
    decoder after the first."""
    def widths(formats):
        finest = min(f.lsb_exponent for f in formats)
        return (max(f.significand_bits for f in formats),
                max((f.max_shift + f.lsb_exponent - finest).bit_length() for f in formats))
    (sa, a_shift), (sw, w_shift) = widths(config.act_formats), widths(config.weight_formats)
    a_bits, w_bits = config.act_slot_bits, config.weight_slot_bits
    product_sig = max(product_of(a, w).significand_bits for a in config.act_formats for w in config.weight_formats)
    flops = a_bits + 2 * w_bits + (a_bits + w_bits) + product_sig + a_shift + w_shift + config.psum_bits
    multiplier = sa * sw * _AND + max(sa - 1, 0) * sw * _FA
    shifter = config.psum_bits * (a_shift + w_shift) * _MUX
    choose = (len(config.act_formats) - 1) * (sa + a_shift) + (len(config.weight_formats) - 1) * (sw + w_shift)
    total = flops * _FF + multiplier + shifter + config.psum_bits * _FA + w_bits * _MUX + choose * _MUX
    return total + (_packing(config) if config.packs_per_layer else 0)


def _packing(config: AcceleratorConfig) -> float:
    """What packing per layer adds to a multi-format PE: a second weight register per bank and its operand
    register, the packing formats' small multiplier (``b x b`` for ``b``-bit integers, sign included), its registered
    product and one more ``psum_bits`` adder."""
    bits = max(f.bits for f in config.weight_formats if f.values_per_lane > 1)
    w_bits = config.weight_slot_bits
    flops = 3 * w_bits + 2 * bits + 1 + config.psum_bits
    multiplier = (bits + 1) * (bits + 1) * _AND + bits * (bits + 1) * _FA
    return flops * _FF + multiplier + config.psum_bits * _FA + w_bits * _MUX


def _postprocess_lane(config: AcceleratorConfig) -> float:
    """NAND2 equivalents of one post-processing lane."""
    acc = config.acc_bits
    multiplier = acc * 32 * (_AND + _FA)
    pipeline = POSTPROCESS_LATENCY * (acc + 32) * _FF
    return 2 * acc * _FA + multiplier + pipeline + 4 * config.act_slot_bits * _MUX


def _control(config: AcceleratorConfig) -> float:
    words = 1 + DECODE_LATENCY + 3 * config.command_queue_depth
    return 128 * words * 2 * _FF + 4 * config.dma_bits * _FF


def estimate(config: AcceleratorConfig) -> dict:
    """The estimate: ``{"kind", "unit", "parts": {part: NAND2 equivalents}, "total", "buffer_bits",
    "pe_nand2", "postprocess_lane_nand2"}``; parts in :data:`PARTS` order."""
    buffer_bits = sum(b["bits"] for b in buffers(config).values())
    pe, lane = _pe(config), _postprocess_lane(config)
    parts = {"pe_array": pe * config.rows * config.cols, "buffers": buffer_bits * SRAM_BIT,
             "control": _control(config), "postprocess": lane * config.cols}
    parts = {k: round(v) for k, v in parts.items()}
    return {"kind": KIND, "unit": "NAND2 equivalents", "parts": parts, "total": sum(parts.values()),
            "buffer_bits": buffer_bits, "pe_nand2": round(pe), "postprocess_lane_nand2": round(lane),
            "sram_bit_nand2": SRAM_BIT}
