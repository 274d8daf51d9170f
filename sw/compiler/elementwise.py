"""The product of two feature maps on the engine (``mul``, see ``sw/ops/mul.py``): identity tiles, zero points and
ALU MUL on the accumulators.

Output tiles are ``rows`` whole rows of the map in one output block of ``cols`` channels, for one sample after
the other (a batched program's maps hold their samples one after the other). On a square array channel block
``b`` of an input is output block ``b``; on a rectangular one a tensor line holds ``m`` channels
(:func:`~hw.spec.layout.tensor_lanes`), ``ki`` activation lines and ``ko`` output lines of it
(:func:`~hw.spec.layout.tensor_sublines`, one of them 1), and output block ``nb`` is output line ``nb % ko`` of
tensor line-block ``nb // ko``: its identity tiles map lane ``ja*rows + i`` of activation line ``ja`` to column
``i`` of output line ``jo`` where ``ja*rows + i == jo*cols + col`` (a wide array's ``ki`` tiles accumulate into
one output block, a tall array's ``ko`` tiles each make one). One step per tile:

1. LOADs: the gate's lines (its one line, for a per-channel gate) and the map's rows, each row led by a padding
   line that holds the input's zero-point code (LOAD ``pad_left = 1``; where activation lines are shorter than
   tensor lines, a line at a time: :func:`sw.compiler.lines.act_loads`);
2. COMPUTEs: identity tiles bring the gate into region G and the map into region X of the tile's
   accumulators (a gate of one channel, spatial or scalar, by a tile whose first row is ones: lane 0 into every
   lane); where a zero point is not 0, a tile of -1 over that input's padding line, broadcast over the region
   (``out_w = 1``, ``act_pitch = 0``), subtracts it (on a rectangular array a tile whose first row is -1: every
   lane of the padding line holds the zero point);
3. ALU MUL ``X *= G``: element by element (a gate of the map's size), or G's one line times every line of X
   (``x_size = 1``, ``src_stride = 0``: a per-channel or scalar gate);
4. STOREs: X post-processed (the layer's multiplier carries the product's extra ``2**e``; on a tall array a line at
   a time, :func:`sw.compiler.lines.output_stores`).

The identity and -1 tiles are loaded once, with the PARAM lines; more channel blocks than half the PARAM buffer
holds run as groups, each a schedule of its own (:func:`split_mul`). The accumulators hold every product exactly:
the compiler checks ``|x - z_x| * |g - z_g|`` against the accumulator width from the format's range, and the
differences against ALU MUL's operand width (``alu_mul_bits``, which holds them by definition).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import AluOp, Buffer, Opcode
from hw.spec.layout import (line_bytes, output_line_bytes, pack_lines, pack_params, tensor_lanes,
                             tensor_line_bytes, tensor_sublines)

from .lines import act_loads, field_max, needs_strided_loads, output_stores

from .program import ProgramBuilder, Region, Step
from .requant import Requant
from .tiling import LayoutError, ceil_div

__all__ = ["MulJob", "MulPlan", "lower_mul", "split_mul", "plan_mul", "emit_mul"]


@dataclass
class MulJob:
    """``out = requant((x - x_zero) * (g - g_zero))`` over a ``channels x height x width`` map; the gate ``g`` is
    of the map's shape (``gate`` "same"), one value per channel ("channel": one line per channel block), one
    channel of the map's size ("spatial") or one value ("scalar"). Zero points are codes (the LOAD's padding)."""

    name: str
    x: Region
    gate: Region
    channels: int
    height: int
    width: int
    gate_kind: str
    x_zero: int
    g_zero: int
    requant: Requant
    out: Region
    #: Zero points as values in accumulator units (0: no subtraction).
    x_zero_units: int = 0
    g_zero_units: int = 0
    #: The weight code of 1.
    identity: int = 1
    #: Samples of a batched program, one after the other; bytes of one sample of the map, the gate and the output.
    samples: int = 1
    sample_bytes: tuple[int, int, int] = (0, 0, 0)

    @property
    def one_line(self) -> bool:
        """The gate is one line per tile, which ALU MUL broadcasts over the map's lines."""
        return self.gate_kind in ("channel", "scalar")

    @property
    def across(self) -> bool:
        """The gate is one channel, which a tile of ones in its first row broadcasts over every lane."""
        return self.gate_kind in ("spatial", "scalar")

    #: No multiply-accumulates of the array are useful work (the ALU multiplies).
    useful_macs = 0


@dataclass
class MulPlan:
    rows: int
    order: str = "chunk"
    band: int = 0
    cycles: int = 0
    dram_bytes: int = 0


def lower_mul(layer, ctx) -> None:
    """The ``mul`` layer as a :class:`MulJob` of the program being compiled (a max pool fused into it by the
    partition is lowered after it, as a layer of its own), or a host layer where the engine cannot hold its
    products exactly (the reason in ``ctx.host_reasons``)."""
    from .lowering import CompileError, LoweredJob
    x, g = ctx.feature_maps(layer)
    one_line = (g.height, g.width) == (1, 1) and (x.height, x.width) != (1, 1)
    across = g.channels == 1 and x.channels != 1
    if (g.channels != x.channels and not across) or (not one_line and (g.height, g.width) != (x.height, x.width)):
        raise CompileError(f"layer {layer.name!r}: mul inputs {x.channels}x{x.height}x{x.width} and "
                           f"{g.channels}x{g.height}x{g.width} are neither one shape nor a map and its gate")
    kind = {(False, False): "same", (True, False): "channel", (False, True): "spatial", (True, True): "scalar"}[
        (one_line, across)]
    net, c = ctx.net, ctx.config
    tx, tg = net.tensors[layer.inputs[0]], net.tensors[layer.inputs[1]]
    e = net.acc_exponent
    b = ctx.b
    from .lowering import spread_requant
    regions = b.regions[x.region], b.regions[g.region]
    job = MulJob(layer.name, *regions, x.channels, x.height, x.width, kind,
                 tx.zero_code(), tg.zero_code(), spread_requant(c, ctx.requant(layer, x.channels)), Region(0, 0),
                 tx.zero_point << -e if e <= 0 else 0, tg.zero_point << -e if e <= 0 else 0, ctx.one(),
                 ctx.batch, (regions[0].size // ctx.batch, regions[1].size // ctx.batch, 0))
    reason = _setting_refusal(ctx) or _refusal(c, job, e > 0 and bool(tx.zero_point or tg.zero_point))
    if reason:
        ctx.add_host(layer, reason)             # the runtime runs its golden meaning between engine programs
    else:
        out = ctx.place(layer.output, x.channels, x.height, x.width)
        job.out = b.regions[out.region]
        job.sample_bytes = (*job.sample_bytes[:2], job.out.size // ctx.batch)
        ctx.jobs.append(LoweredJob(job, [layer.name], layer.op, layer.output,
                                   [(x.height, x.width), (g.height, g.width)], list(job.sample_bytes[:2]),
                                   job.sample_bytes[2]))
    pool = ctx.fused.pop(layer.name, None)
    if pool is not None:
        from sw.ops import OPERATORS
        OPERATORS[pool.op].lower(pool, ctx)


def split_mul(config: AcceleratorConfig, job: MulJob) -> list[MulJob]:
    """``job`` as groups of channel blocks, each with at most half the PARAM buffer's lines (the two halves
    alternate between consecutive jobs; a tensor line's ``ko`` output blocks stay in one group), each its own
    schedule."""
    c = config
    m, (_, ko) = tensor_lanes(c), tensor_sublines(c)
    lines = max(1, c.param_buffer_depth // 2) // ko       # tensor line-blocks a group holds
    per = lines * m
    if job.channels <= per:
        return [job]
    tlb = tensor_line_bytes(c)
    pixels = job.height * job.width
    q = job.requant
    parts = []
    for c0 in range(0, job.channels, per):
        n, blocks = min(per, job.channels - c0), c0 // m
        v0, v1 = blocks * ko * c.cols, (blocks + lines) * ko * c.cols        # the group's virtual channels

        def at(region: Region, lines: int) -> Region:
            return Region(region.addr + blocks * lines * tlb, region.size - blocks * lines * tlb)
        requant = Requant(q.bias[v0:v1], q.multiplier[v0:v1], q.shift[v0:v1], q.zero_point, q.clamp_lo,
                          q.clamp_hi, q.table, q.out_format)
        parts.append(replace(job, name=f"{job.name}.ch{c0}", x=at(job.x, pixels),
                             gate=at(job.gate, {"same": pixels, "channel": 1}.get(job.gate_kind, 0)),
                             channels=n, requant=requant, out=at(job.out, pixels)))
    return parts


def _setting_refusal(ctx) -> str:
    """Why this program's setting keeps the product of two maps off the engine ('' if it does not): its operand
    width is the build's one activation format."""
    if ctx.net.formats:
        return "a mixed-format network (ALU MUL's operand width follows one activation format)"
    return ""


def _refusal(c: AcceleratorConfig, job: MulJob, coarse_zero: bool) -> str:
    """Why the engine cannot run ``job`` exactly ('' if it can): the host runs it then."""
    span = _span(c)
    if coarse_zero:
        return "a zero point needs an accumulator unit of at most 1"
    if span * span >= 1 << (c.acc_bits - 1):
        return (f"products of two {c.acts.name} maps reach {span * span}, beyond what {c.acc_bits}-bit accumulators "
                f"hold (a larger --max-reduction widens them)")
    if c.alu_mul_bits < span.bit_length() + 1:
        return f"differences of codes reach {span}, beyond ALU MUL's {c.alu_mul_bits}-bit operands"
    try:
        plan_mul(c, job)
    except LayoutError as err:
        return str(err)
    return ""


def _span(c: AcceleratorConfig) -> int:
    """Largest ``|value(a) - value(b)|`` of two activation codes, in accumulator units."""
    a = c.acts
    return (a.fixed_range[1] - a.fixed_range[0]) << (a.lsb_exponent - c.acc_exponent)


def _lines(job: MulJob, rows: int) -> tuple[int, int, int, int]:
    """(activation lines of the gate, of the map, accumulator lines of G, of X) of a tile of ``rows`` rows."""
    w = job.width
    gate_acc = 1 if job.one_line else rows * w
    return 1 + gate_acc, rows * (w + 1), gate_acc, rows * w


def _patches(config: AcceleratorConfig, job: MulJob) -> tuple[int, int]:
    """(activation patches of the gate, of the map) a tile loads: one per activation line of a tensor line (a
    gate of one channel: the first only, which holds its channel)."""
    ki = tensor_sublines(config)[0]
    return 1 if job.across else ki, ki


def plan_mul(config: AcceleratorConfig, job: MulJob) -> MulPlan:
    """The most map rows per tile that fit two tiles in the buffers and the instruction fields; a rough estimate
    of cycles (loads, the identity products, the ALU, the stores) and DRAM bytes."""
    c = config
    tiles_lines = _tile_count(c) * c.reduction_rows
    if tiles_lines > c.weight_buffer_depth:
        raise LayoutError(f"layer {job.name!r} cannot be mapped onto this engine: its {_tile_count(c)} weight tiles "
                          f"need {tiles_lines} weight lines, the buffer has {c.weight_buffer_depth}")
    limit = min(field_max(Opcode.COMPUTE, "out_h"), field_max(Opcode.ALU, "x_size"),
                field_max(Opcode.ALU, "y_size"), field_max(Opcode.STORE, "x_size"))
    gp, xp = _patches(c, job)
    best = 0
    for rows in range(1, job.height + 1):
        ga, xa, gacc, xacc = _lines(job, rows)
        if (2 * (gp * ga + xp * xa) <= c.act_buffer_depth and 2 * (gacc + xacc) <= c.acc_buffer_depth
                and xacc <= limit and job.width <= field_max(Opcode.COMPUTE, "out_w")):
            best = rows
    if not best:
        raise LayoutError(f"layer {job.name!r} cannot be mapped onto this engine: one row of its map ({job.width} "
                          f"lines, twice, with its gate) does not fit the buffers (activations "
                          f"{c.act_buffer_depth}, accumulators {c.acc_buffer_depth} lines)")
    tiles = ceil_div(job.height, best) * _blocks(c, job) * job.samples
    ga, xa, gacc, xacc = _lines(job, best)
    per_tile = (gp + xp) * (gacc + xacc) + 2 * c.reduction_rows + c.cols + xacc + 2 * 8
    bus = c.dma_bits // 8
    traffic = tiles * ((gp * ga + xp * xa) * line_bytes(Buffer.ACT, c) + xacc * output_line_bytes(c))
    return MulPlan(best, cycles=tiles * max(per_tile, traffic // tiles // bus), dram_bytes=traffic)


def _blocks(c: AcceleratorConfig, job: MulJob) -> int:
    """Output blocks of ``cols`` columns: ``ko`` per tensor line-block (one on a square array), the last line's up to
    its last channel's (:func:`sw.compiler.lowering.spread_channels`)."""
    from .lowering import spread_channels
    return ceil_div(spread_channels(c, job.channels), c.cols)


def _tile_count(c: AcceleratorConfig) -> int:
    """Weight tiles of a mul: one identity per activation or output line of a tensor line, then -1 on the first's
    diagonal and a first row of ones and one of -1."""
    return max(tensor_sublines(c)) + 3


def _identity_tile(c: AcceleratorConfig, ja: int, jo: int) -> int:
    """Index of the identity tile from activation line ``ja`` to output line ``jo`` of a tensor line."""
    return jo if tensor_sublines(c)[1] > 1 else ja


def _weights(c: AcceleratorConfig, one: int) -> np.ndarray:
    """Weight tiles (codes), ``rows`` lines each: the identities (lane ``ja*rows + i`` of activation line ``ja`` to
    column ``col`` of output line ``jo`` where ``ja*rows + i == jo*cols + col``), -1 on the first's diagonal, and
    (for a gate of one channel) ones and -1s in the first row, which copy lane 0 into every lane."""
    wf = c.weights
    minus = int(wf.quantize(-1.0))
    if float(wf.decode(minus)) != -1.0:
        raise LayoutError(f"the weight format {wf.name} cannot represent -1, which a mul's zero points need")
    ki, ko = tensor_sublines(c)
    n = max(ki, ko)
    tiles = np.zeros((n + 3, c.reduction_rows, c.cols), dtype=np.int64)
    for ja in range(ki):
        for jo in range(ko):
            lane = np.arange(c.reduction_rows)
            col = ja * c.reduction_rows + lane - jo * c.cols
            ok = (col >= 0) & (col < c.cols)
            tiles[_identity_tile(c, ja, jo)][lane[ok], col[ok]] = one
    tiles[n][tiles[0] != 0] = minus
    tiles[n + 1][0, :], tiles[n + 2][0, :] = one, minus
    return tiles.reshape(-1, c.cols)


def _load(c: AcceleratorConfig, **fields) -> list[tuple[str, dict]]:
    """A LOAD of activation lines a tensor line apart, each row led by ``pad_left`` padding lines: itself, or a line
    at a time where activation lines are shorter than tensor lines (:func:`sw.compiler.lines.act_loads`)."""
    if not needs_strided_loads(c):
        return [("LOAD", fields)]
    full = {**dict(dram_stride=0, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0), **fields}
    return act_loads(c, full, None)


def _prologue(b: ProgramBuilder, job: MulJob, blocks: int, param_base: int) -> list:
    """PARAM lines, the weight tiles and the activation table (if any), loaded once per job."""
    c = b.config
    rw = b.region(f"{job.name}.weights", pack_lines(_weights(c, job.identity), c.weight_slot_bits,
                                                    line_bytes(Buffer.WEIGHT, c)))
    bias, mult, shift = job.requant.lines(blocks, c.cols)
    rp = b.region(f"{job.name}.params", pack_params(bias, mult, shift, line_bytes(Buffer.PARAM, c)))
    prologue = [("LOAD", dict(buffer=Buffer.PARAM, sram_addr=param_base, dram_addr=rp.addr, y_size=1,
                              x_size=blocks)),
                ("LOAD", dict(buffer=Buffer.WEIGHT, sram_addr=0, dram_addr=rw.addr, y_size=1,
                              x_size=_tile_count(c) * c.reduction_rows))]
    if job.requant.table is not None:
        if not c.lut_buffer_depth:
            raise LayoutError(f"layer {job.name!r} ends with a nonlinear activation, but the engine's activation "
                              f"format {c.acts.name} has no lookup table")
        rl = b.region(f"{job.name}.table", job.requant.lut(c))
        prologue.append(("LOAD", dict(buffer=Buffer.LUT, sram_addr=0, dram_addr=rl.addr, y_size=1,
                                      x_size=c.lut_buffer_depth)))
    return prologue


def emit_mul(b: ProgramBuilder, job: MulJob, plan: MulPlan, *, param_base: int = 0) -> dict:
    """Emit ``job`` into ``b`` as one schedule (after a barrier if an earlier layer wrote its inputs)."""
    c = b.config
    alb, olb, tlb = line_bytes(Buffer.ACT, c), output_line_bytes(c), tensor_line_bytes(c)
    ko = tensor_sublines(c)[1]
    blocks = _blocks(c, job)
    prologue = _prologue(b, job, blocks, param_base)
    w, h = job.width, job.height
    gp, xp = _patches(c, job)
    n = max(tensor_sublines(c))
    square = c.reduction_rows == c.cols
    ga_max, xa_max, gacc_max, xacc_max = _lines(job, plan.rows)
    steps = []
    for sample in range(job.samples):
        xs, gs, os_ = (size * sample for size in job.sample_bytes)
        for nb in range(blocks):
            tb, jo = divmod(nb, ko)
            for r0 in range(0, h, plan.rows):
                rows = min(plan.rows, h - r0)
                ga, xa, gacc, xacc = _lines(job, rows)
                t = len(steps)
                act = (t % 2) * (gp * ga_max + xp * xa_max)
                acc = (t % 2) * (gacc_max + xacc_max)
                g_act, x_act, g_acc, x_acc = act, act + gp * ga_max, acc, acc + gacc_max
                loads, computes = [], []
                # The gate: its zero-point line, then its lines (one row); each activation line of a tensor line.
                g_line = {"same": tb * h * w + r0 * w, "channel": tb, "spatial": r0 * w, "scalar": 0}[job.gate_kind]
                for ja in range(gp):
                    loads += _load(c, buffer=Buffer.ACT, sram_addr=g_act + ja * ga_max,
                                   dram_addr=job.gate.addr + gs + g_line * tlb + ja * alb, y_size=1,
                                   x_size=gacc, pad_left=1, pad_value=job.g_zero)
                # The map: each row led by its zero-point line.
                for ja in range(xp):
                    loads += _load(c, buffer=Buffer.ACT, sram_addr=x_act + ja * xa_max,
                                   dram_addr=job.x.addr + xs + (tb * h * w + r0 * w) * tlb + ja * alb, y_size=rows,
                                   x_size=w, dram_stride=w * tlb, pad_left=1, pad_value=job.x_zero)
                g_tiles = [(n + 1) * c.reduction_rows] if job.across else [_identity_tile(c, ja, jo) * c.reduction_rows
                                                                 for ja in range(gp)]
                x_tiles = [_identity_tile(c, ja, jo) * c.reduction_rows for ja in range(xp)]
                for acc_addr, act_addr, patch, out_h, out_w, pitch, zero, tiles in (
                        (g_acc, g_act + 1, ga_max, 1, gacc, 0, job.g_zero_units, g_tiles),
                        (x_acc, x_act + 1, xa_max, rows, w, w + 1, job.x_zero_units, x_tiles)):
                    for k, tile in enumerate(tiles):        # accumulate = 0 stays implicit (square programs)
                        computes.append(("COMPUTE", dict(acc_addr=acc_addr, act_addr=act_addr + k * patch,
                                                         weight_addr=tile, out_h=out_h, out_w=out_w,
                                                         act_pitch=pitch, stride=1, dilation=1, kh=1, kw=1,
                                                         **({"accumulate": 1} if k else {}))))
                    if zero:       # every line of the region minus the zero point: its padding line times -1
                        minus = tiles[0] + c.reduction_rows if square else (n + 2) * c.reduction_rows
                        computes.append(("COMPUTE", dict(acc_addr=acc_addr, act_addr=act_addr - 1,
                                                         weight_addr=minus, out_h=out_h * out_w, out_w=1,
                                                         act_pitch=0, stride=1, dilation=1, kh=1, kw=1,
                                                         accumulate=1)))
                if job.one_line:
                    mul = dict(dst_addr=x_acc, src_addr=g_acc, y_size=xacc, x_size=1, dst_stride=1, src_stride=0)
                else:
                    mul = dict(dst_addr=x_acc, src_addr=g_acc, y_size=1, x_size=xacc, dst_stride=0, src_stride=0)
                computes.append(("ALU", dict(op=int(AluOp.MUL), src_step=1, **mul)))
                store = dict(acc_addr=x_acc, dram_addr=job.out.addr + os_ + (tb * h * w + r0 * w) * tlb + jo * olb,
                             y_size=1, x_size=xacc, param_addr=param_base + nb)
                steps.append(Step(loads, computes, begins=True, ends=True,
                                  stores=output_stores(c, [("STORE", store)])))
    first = len(b.words)
    b.schedule(steps, prologue=prologue, setpp=job.requant.setpp())
    return {"steps": len(steps), "tiles": len(steps), "instructions": len(b.words) - first}
