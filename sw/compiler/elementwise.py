"""The product of two feature maps on the engine (``mul``, see ``sw/ops/mul.py``): identity tiles, zero points and
ALU MUL on the accumulators.

Output tiles are ``rows`` whole rows of the map in one channel block (networks run on square arrays, so channel
block ``b`` of an input is output block ``b``). One step per tile:

1. LOADs: the gate's lines (its one line, for a per-channel gate) and the map's rows, each row led by a padding
   line that holds the input's zero-point code (LOAD ``pad_left = 1``);
2. COMPUTEs: an identity tile brings the gate into region G and the map into region X of the tile's
   accumulators (a gate of one channel, spatial or scalar, by a tile whose first row is ones: lane 0 into every
   lane); where a zero point is not 0, a tile of -1 over that input's padding line, broadcast over the region
   (``out_w = 1``, ``act_pitch = 0``), subtracts it;
3. ALU MUL ``X *= G``: element by element (a gate of the map's size), or G's one line times every line of X
   (``x_size = 1``, ``src_stride = 0``: a per-channel or scalar gate);
4. STOREs: X post-processed (the layer's multiplier carries the product's extra ``2**e``).

The identity and -1 tiles are loaded once, with the PARAM lines; more channel blocks than half the PARAM buffer
holds run as groups, each a schedule of its own (:func:`split_mul`). The accumulators hold every product exactly:
the compiler checks ``|x - z_x| * |g - z_g|`` against the accumulator width from the format's range, and the
differences against ALU MUL's operand width (``alu_mul_bits``, which holds them by definition).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import AluOp, Buffer, KINDS, Opcode
from hw.spec.layout import line_bytes, output_line_bytes, pack_lines, pack_lut, pack_params

from .program import ProgramBuilder, Region, Step
from .requant import Requant
from .tiling import LayoutError, ceil_div

__all__ = ["MulJob", "MulPlan", "lower_mul", "split_mul", "plan_mul", "emit_mul"]


def _field_max(opcode: Opcode, name: str) -> int:
    return KINDS[opcode].field(name).max


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
    job = MulJob(layer.name, b.regions[x.region], b.regions[g.region], x.channels, x.height, x.width, kind,
                 tx.zero_code(), tg.zero_code(), ctx.requant(layer, x.channels), Region(0, 0),
                 tx.zero_point << -e if e <= 0 else 0, tg.zero_point << -e if e <= 0 else 0, ctx.one())
    reason = _setting_refusal(ctx) or _refusal(c, job, e > 0 and bool(tx.zero_point or tg.zero_point))
    if reason:
        ctx.add_host(layer, reason)             # the runtime runs its golden meaning between engine programs
    else:
        out = ctx.place(layer.output, x.channels, x.height, x.width)
        job.out = b.regions[out.region]
        ctx.jobs.append(LoweredJob(job, [layer.name], layer.op, layer.output,
                                   [(x.height, x.width), (g.height, g.width)],
                                   [job.x.size, job.gate.size], job.out.size))
    pool = ctx.fused.pop(layer.name, None)
    if pool is not None:
        from sw.ops import OPERATORS
        OPERATORS[pool.op].lower(pool, ctx)


def split_mul(config: AcceleratorConfig, job: MulJob) -> list[MulJob]:
    """``job`` as groups of channel blocks, each with at most half the PARAM buffer's lines (the two halves
    alternate between consecutive jobs), each its own schedule."""
    c = config
    per = max(1, c.param_buffer_depth // 2) * c.cols
    if job.channels <= per:
        return [job]
    alb, olb = line_bytes(Buffer.ACT, c), output_line_bytes(c)
    pixels = job.height * job.width
    q = job.requant
    parts = []
    for c0 in range(0, job.channels, per):
        n, blocks = min(per, job.channels - c0), c0 // c.cols

        def at(region: Region, lines: int, nbytes: int) -> Region:
            return Region(region.addr + blocks * lines * nbytes, region.size - blocks * lines * nbytes)
        requant = Requant(q.bias[c0:c0 + n], q.multiplier[c0:c0 + n], q.shift[c0:c0 + n], q.zero_point, q.clamp_lo,
                          q.clamp_hi, q.table, q.out_format)
        parts.append(replace(job, name=f"{job.name}.ch{c0}", x=at(job.x, pixels, alb),
                             gate=at(job.gate, {"same": pixels, "channel": 1}.get(job.gate_kind, 0), alb),
                             channels=n, requant=requant,
                             out=at(job.out, pixels, olb)))
    return parts


def _setting_refusal(ctx) -> str:
    """Why this program's setting keeps the product of two maps off the engine ('' if it does not): its identity
    tiles are square, its job reads one sample's maps, and its operand width is the build's one activation format."""
    c = ctx.config
    if c.reduction_rows != c.cols:
        return f"ALU MUL's identity tiles need a square array, not {c.reduction_rows}x{c.cols}"
    if ctx.batch > 1:
        return "a batched program (--batch) would need its job to read every sample's maps"
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


def plan_mul(config: AcceleratorConfig, job: MulJob) -> MulPlan:
    """The most map rows per tile that fit two tiles in the buffers and the instruction fields; a rough estimate
    of cycles (loads, the identity products, the ALU, the stores) and DRAM bytes."""
    c = config
    if 4 * c.reduction_rows > c.weight_buffer_depth:
        raise LayoutError(f"layer {job.name!r} cannot be mapped onto this engine: its four weight tiles need "
                          f"{4 * c.reduction_rows} weight lines, the buffer has {c.weight_buffer_depth}")
    limit = min(_field_max(Opcode.COMPUTE, "out_h"), _field_max(Opcode.ALU, "x_size"),
                _field_max(Opcode.ALU, "y_size"), _field_max(Opcode.STORE, "x_size"))
    best = 0
    for rows in range(1, job.height + 1):
        ga, xa, gacc, xacc = _lines(job, rows)
        if (2 * (ga + xa) <= c.act_buffer_depth and 2 * (gacc + xacc) <= c.acc_buffer_depth and xacc <= limit
                and job.width <= _field_max(Opcode.COMPUTE, "out_w")):
            best = rows
    if not best:
        raise LayoutError(f"layer {job.name!r} cannot be mapped onto this engine: one row of its map ({job.width} "
                          f"lines, twice, with its gate) does not fit the buffers (activations "
                          f"{c.act_buffer_depth}, accumulators {c.acc_buffer_depth} lines)")
    tiles = ceil_div(job.height, best) * ceil_div(job.channels, c.cols)
    ga, xa, gacc, xacc = _lines(job, best)
    per_tile = 2 * (gacc + xacc) + 2 * c.reduction_rows + c.cols + xacc + 2 * 8
    bus = c.dma_bits // 8
    traffic = tiles * ((ga + xa) * line_bytes(Buffer.ACT, c) + xacc * output_line_bytes(c))
    return MulPlan(best, cycles=tiles * max(per_tile, traffic // tiles // bus), dram_bytes=traffic)


def _weights(c: AcceleratorConfig, one: int) -> np.ndarray:
    """Weight tiles (codes), ``rows`` lines each: the identity, -1 on the diagonal, and (for a gate of one channel)
    ones and -1s in the first row, which copy lane 0 into every lane."""
    wf = c.weights
    minus = int(wf.quantize(-1.0))
    if float(wf.decode(minus)) != -1.0:
        raise LayoutError(f"the weight format {wf.name} cannot represent -1, which a mul's zero points need")
    tiles = np.zeros((4, c.reduction_rows, c.cols), dtype=np.int64)
    tiles[0][np.arange(c.reduction_rows), np.arange(c.cols)] = one
    tiles[1][np.arange(c.reduction_rows), np.arange(c.cols)] = minus
    tiles[2][0, :], tiles[3][0, :] = one, minus
    return tiles.reshape(-1, c.cols)


def emit_mul(b: ProgramBuilder, job: MulJob, plan: MulPlan, *, param_base: int = 0) -> dict:
    """Emit ``job`` into ``b`` as one schedule (after a barrier if an earlier layer wrote its inputs)."""
    c = b.config
    alb, olb = line_bytes(Buffer.ACT, c), output_line_bytes(c)
    blocks = ceil_div(job.channels, c.cols)
    w, h = job.width, job.height
    rw = b.region(f"{job.name}.weights", pack_lines(_weights(c, job.identity), c.weight_slot_bits,
                                                    line_bytes(Buffer.WEIGHT, c)))
    bias, mult, shift = job.requant.lines(blocks, c.cols)
    rp = b.region(f"{job.name}.params", pack_params(bias, mult, shift, line_bytes(Buffer.PARAM, c)))
    prologue = [("LOAD", dict(buffer=Buffer.PARAM, sram_addr=param_base, dram_addr=rp.addr, y_size=1,
                              x_size=blocks)),
                ("LOAD", dict(buffer=Buffer.WEIGHT, sram_addr=0, dram_addr=rw.addr, y_size=1, x_size=4 * c.reduction_rows))]
    if job.requant.table is not None:
        if not c.lut_buffer_depth:
            raise LayoutError(f"layer {job.name!r} ends with a nonlinear activation, but the engine's activation "
                              f"format {c.acts.name} has no lookup table")
        rl = b.region(f"{job.name}.table", pack_lut(job.requant.table, c))
        prologue.append(("LOAD", dict(buffer=Buffer.LUT, sram_addr=0, dram_addr=rl.addr, y_size=1,
                                      x_size=c.lut_buffer_depth)))
    ga_max, xa_max, gacc_max, xacc_max = _lines(job, plan.rows)
    steps = []
    for nb in range(blocks):
        for r0 in range(0, h, plan.rows):
            rows = min(plan.rows, h - r0)
            ga, xa, gacc, xacc = _lines(job, rows)
            t = len(steps)
            act = (t % 2) * (ga_max + xa_max)
            acc = (t % 2) * (gacc_max + xacc_max)
            g_act, x_act, g_acc, x_acc = act, act + ga_max, acc, acc + gacc_max
            loads, computes = [], []
            # The gate: its zero-point line, then its lines (one row).
            g_line = {"same": nb * h * w + r0 * w, "channel": nb, "spatial": r0 * w, "scalar": 0}[job.gate_kind]
            g_addr = job.gate.addr + g_line * alb
            loads.append(("LOAD", dict(buffer=Buffer.ACT, sram_addr=g_act, dram_addr=g_addr, y_size=1,
                                       x_size=gacc, pad_left=1, pad_value=job.g_zero)))
            # The map: each row led by its zero-point line.
            loads.append(("LOAD", dict(buffer=Buffer.ACT, sram_addr=x_act,
                                       dram_addr=job.x.addr + (nb * h * w + r0 * w) * alb, y_size=rows, x_size=w,
                                       dram_stride=w * alb, pad_left=1, pad_value=job.x_zero)))
            g_tiles = 2 * c.reduction_rows if job.across else 0          # a gate of one channel: into every lane
            for acc_addr, act_addr, out_h, out_w, pitch, zero, tile in (
                    (g_acc, g_act + 1, 1, gacc, 0, job.g_zero_units, g_tiles),
                    (x_acc, x_act + 1, rows, w, w + 1, job.x_zero_units, 0)):
                computes.append(("COMPUTE", dict(acc_addr=acc_addr, act_addr=act_addr, weight_addr=tile, out_h=out_h,
                                                 out_w=out_w, act_pitch=pitch, stride=1, dilation=1, kh=1, kw=1)))
                if zero:           # every line of the region minus the zero point: its padding line times -1
                    computes.append(("COMPUTE", dict(acc_addr=acc_addr, act_addr=act_addr - 1,
                                                     weight_addr=tile + c.reduction_rows,
                                                     out_h=out_h * out_w, out_w=1, act_pitch=0, stride=1,
                                                     dilation=1, kh=1, kw=1, accumulate=1)))
            if job.one_line:
                mul = dict(dst_addr=x_acc, src_addr=g_acc, y_size=xacc, x_size=1, dst_stride=1, src_stride=0)
            else:
                mul = dict(dst_addr=x_acc, src_addr=g_acc, y_size=1, x_size=xacc, dst_stride=0, src_stride=0)
            computes.append(("ALU", dict(op=int(AluOp.MUL), src_step=1, **mul)))
            store = dict(acc_addr=x_acc, dram_addr=job.out.addr + (nb * h * w + r0 * w) * olb, y_size=1,
                         x_size=xacc, param_addr=param_base + nb)
            steps.append(Step(loads, computes, begins=True, ends=True, stores=[("STORE", store)]))
    first = len(b.words)
    b.schedule(steps, prologue=prologue, setpp=job.requant.setpp())
    return {"steps": len(steps), "tiles": len(steps), "instructions": len(b.words) - first}
