"""One accumulating layer as tiles: the general convolution job, its cost model, and its instructions.

Every layer the engine runs is a :class:`ConvJob`: one or more source feature maps (blocked NHWC in external
memory: ``C/rows`` blocks of ``H*W`` lines), each with a dense weight tensor ``(T, kh, kw, Cin, Cout)`` (T
tensors of a multi-tensor sum; zero where a group, a depthwise channel or a concat part has no connection), all
summed into one accumulator per output, then optionally max-pooled (ALU MAX on the accumulators, exact because
the rescale is monotone) and post-processed on the way out (bias, rescale, clamp in the STOREs).
Convolutions, fully connected layers (a 1x1 map), average pooling (identity tiles at every tap), residual adds
(two sources) and concats (shifted identities) are all jobs.

Weight tiles that are entirely zero are skipped, so a depthwise convolution costs one tile per channel block.
Two loop orders, chosen with the tile height by :func:`plan_job`'s cost model (cycles, then DRAM bytes):

- ``chunk``: output-row chunks outermost; each input patch is read once, weights once per chunk;
- ``block``: output-channel blocks outermost with their weights resident; inputs once per block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import AluOp, Buffer, KINDS, Opcode
from hw.spec.layout import line_bytes, output_line_bytes, pack_lines, pack_params

from .program import ProgramBuilder, Region, Step

__all__ = ["LayoutError", "Requant", "ceil_div", "Source", "ConvJob", "Plan", "plan_job", "emit_job"]


class LayoutError(ValueError):
    """A layer that no tiling of this configuration can run; the message names the layer and the limit."""


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _field_max(opcode: Opcode, name: str) -> int:
    return next(f.max for f in KINDS[opcode].fields if f.name == name)


class Requant:
    """Per-output-channel bias, multiplier and shift, plus zero point and clamp codes (see SETPP)."""

    def __init__(self, bias, multiplier, shift, zero_point: int = 0, clamp_lo: int = 0, clamp_hi: int = 0):
        self.bias = np.asarray(bias, dtype=np.int64)
        self.multiplier = np.asarray(multiplier, dtype=np.int64)
        self.shift = np.asarray(shift, dtype=np.int64)
        self.zero_point, self.clamp_lo, self.clamp_hi = int(zero_point), int(clamp_lo), int(clamp_hi)

    def lines(self, blocks: int, cols: int):
        def pad(a):
            out = np.zeros(blocks * cols, dtype=np.int64)
            out[:a.size] = a
            return out.reshape(blocks, cols)
        return pad(self.bias), pad(self.multiplier), pad(self.shift)

    def setpp(self) -> dict:
        return {"zero_point": self.zero_point, "clamp_lo": self.clamp_lo, "clamp_hi": self.clamp_hi}


@dataclass
class Source:
    """An input feature map in external memory and the weights that connect it to the outputs."""

    region: Region
    channels: int
    weights: np.ndarray           # (T, kh, kw, channels, cout) codes


@dataclass
class ConvJob:
    name: str
    sources: list[Source]
    height: int
    width: int
    cout: int
    kernel: tuple[int, int]
    stride: int
    dilation: int
    padding: tuple[int, int, int, int]      # top, left, bottom, right
    pad_value: int
    requant: Requant
    out: Region
    #: Max pooling of the outputs before post-processing: (kh, kw, sh, sw), windows that do not overlap.
    pool: tuple[int, int, int, int] | None = None
    #: Multiply-accumulates of the layer as defined (None: count the non-zero weight positions).
    macs: int | None = None

    @property
    def conv_out(self) -> tuple[int, int]:
        (kh, kw), (t, l, b, r), s, d = self.kernel, self.padding, self.stride, self.dilation
        return (self.height + t + b - d * (kh - 1) - 1) // s + 1, (self.width + l + r - d * (kw - 1) - 1) // s + 1

    @property
    def out_shape(self) -> tuple[int, int]:
        ho, wo = self.conv_out
        if self.pool is None:
            return ho, wo
        pkh, pkw, psh, psw = self.pool
        return (ho - pkh) // psh + 1, (wo - pkw) // psw + 1

    @property
    def useful_macs(self) -> int:
        if self.macs is not None:
            return self.macs
        ho, wo = self.conv_out
        return sum(int(np.count_nonzero(s.weights.any(axis=0))) for s in self.sources) * ho * wo


@dataclass
class Plan:
    """How a job is tiled: output rows per chunk (pooled rows when pooling), loop order, and estimates."""

    rows: int
    order: str
    cycles: int = 0
    dram_bytes: int = 0
    candidates: list = field(default_factory=list)
    #: The job's weight tiles, as planned (emit_job reuses them).
    tiles: _Tiles | None = field(default=None, repr=False)


@dataclass
class _Tiles:
    """The job's non-zero weight tiles, per output block, as (source, channel block, tensor)."""

    per_block: list[list[tuple[int, int, int]]]
    data: dict                     # (nb, source, cb, t) -> (kh*kw*rows, cols) codes
    cb_counts: list[int]


def _tiles(config: AcceleratorConfig, job: ConvJob) -> _Tiles:
    c = config
    kh, kw = job.kernel
    per_block, data = [], {}
    cb_counts = [ceil_div(s.channels, c.rows) for s in job.sources]
    for nb in range(ceil_div(job.cout, c.cols)):
        tiles = []
        for i, s in enumerate(job.sources):
            for cb in range(cb_counts[i]):
                for t in range(s.weights.shape[0]):
                    part = s.weights[t, :, :, cb * c.rows:(cb + 1) * c.rows, nb * c.cols:(nb + 1) * c.cols]
                    if not part.any() and (tiles or i + 1 < len(job.sources) or cb + 1 < cb_counts[i]
                                           or t + 1 < s.weights.shape[0]):
                        continue          # an all-zero tile adds nothing (one is kept to start the sum)
                    tile = np.zeros((kh, kw, c.rows, c.cols), dtype=np.int64)
                    tile[:, :, :part.shape[2], :part.shape[3]] = part
                    data[(nb, i, cb, t)] = tile.reshape(kh * kw * c.rows, c.cols)
                    tiles.append((i, cb, t))
        per_block.append(tiles)
    return _Tiles(per_block, data, cb_counts)


def _geometry(job: ConvJob, rows: int):
    """Conv output rows per chunk and input rows a chunk of ``rows`` (pooled) output rows reads."""
    kh, _ = job.kernel
    conv_rows = rows * job.pool[2] if job.pool else rows
    in_rows = (conv_rows - 1) * job.stride + job.dilation * (kh - 1) + 1
    return conv_rows, in_rows


def _check(config: AcceleratorConfig, job: ConvJob) -> None:
    c = config
    kh, kw = job.kernel
    t, l, b, r = job.padding
    ho, wo = job.conv_out
    problems = []
    if max(job.padding) > _field_max(Opcode.LOAD, "pad_top"):
        problems.append(f"padding {job.padding} exceeds {_field_max(Opcode.LOAD, 'pad_top')}")
    if job.stride > _field_max(Opcode.COMPUTE, "stride") or job.dilation > _field_max(Opcode.COMPUTE, "dilation"):
        problems.append(f"stride {job.stride} / dilation {job.dilation} exceed "
                        f"{_field_max(Opcode.COMPUTE, 'stride')}")
    if kh > _field_max(Opcode.COMPUTE, "kh") or kw > _field_max(Opcode.COMPUTE, "kw"):
        problems.append(f"kernel {kh}x{kw} exceeds {_field_max(Opcode.COMPUTE, 'kh')}x"
                        f"{_field_max(Opcode.COMPUTE, 'kw')}")
    if ho < 1 or wo < 1:
        problems.append("the layer has no output")
    if job.width + l + r > _field_max(Opcode.COMPUTE, "act_pitch"):
        problems.append(f"input rows of {job.width + l + r} lines exceed {_field_max(Opcode.COMPUTE, 'act_pitch')}")
    if 2 * kh * kw * c.rows > c.weight_buffer_depth:
        problems.append(f"two {kh}x{kw} weight tiles need {2 * kh * kw * c.rows} lines; the weight buffer has "
                        f"{c.weight_buffer_depth}")
    if ceil_div(job.cout, c.cols) > c.param_buffer_depth // 2:
        problems.append(f"{ceil_div(job.cout, c.cols)} output blocks need more than half the "
                        f"{c.param_buffer_depth} PARAM lines")
    # Products per output that can be non-zero (zero weights add exactly nothing): the accumulator bound.
    terms = int(sum(np.count_nonzero(s.weights, axis=(0, 1, 2, 3)) for s in job.sources).max())
    if terms > c.max_reduction:
        problems.append(f"it sums {terms} products per output, more than the {c.max_reduction} the accumulators "
                        f"hold exactly (build with a larger --max-reduction)")
    if problems:
        raise LayoutError(f"layer {job.name!r} cannot be mapped onto this engine: {'; '.join(problems)}")


def _chunk(job: ConvJob, rows_per_chunk: int, chunk: int) -> tuple:
    """(first output row, output rows, first conv row, conv rows, first input row (may be < 0), input rows,
    padding rows above, padding rows below) of one chunk."""
    kh, _ = job.kernel
    ho, _ = job.conv_out
    r0 = chunk * rows_per_chunk
    rows = min(rows_per_chunk, job.out_shape[0] - r0)
    conv0 = r0 * job.pool[2] if job.pool else r0
    conv_rows = min(rows * job.pool[2] if job.pool else rows, ho - conv0)
    iy0 = conv0 * job.stride - job.padding[0]
    in_rows = (conv_rows - 1) * job.stride + job.dilation * (kh - 1) + 1
    top = max(0, -iy0)
    bottom = max(0, iy0 + in_rows - job.height)
    return r0, rows, conv0, conv_rows, iy0, in_rows, top, bottom


def _reads_real_rows(job: ConvJob, rows: int) -> bool:
    """Every chunk reads at least one row of the map (a LOAD of padding alone does not exist)."""
    chunks = ceil_div(job.out_shape[0], rows)
    return all(in_rows - top - bottom >= 1
               for *_, in_rows, top, bottom in (_chunk(job, rows, k) for k in range(chunks)))


def _fits(config: AcceleratorConfig, job: ConvJob, rows: int, order: str, tiles: _Tiles) -> bool:
    c = config
    _, wo = job.conv_out
    conv_rows, in_rows = _geometry(job, rows)
    pitch = job.width + job.padding[1] + job.padding[3]
    patches = sum(tiles.cb_counts) * in_rows * pitch
    kh, kw = job.kernel
    if 2 * patches > c.act_buffer_depth or 2 * conv_rows * wo > c.acc_buffer_depth:
        return False
    if conv_rows > _field_max(Opcode.COMPUTE, "out_h") or wo > _field_max(Opcode.COMPUTE, "out_w"):
        return False
    if job.pool is None and rows * wo > _field_max(Opcode.STORE, "x_size"):
        return False
    if order == "block":
        most = max(len(t) for t in tiles.per_block)
        return 2 * most * kh * kw * c.rows <= c.weight_buffer_depth
    return True


def _estimate(config: AcceleratorConfig, job: ConvJob, rows: int, order: str, tiles: _Tiles) -> tuple[int, int]:
    """(cycles, DRAM bytes): the first step's loads, then each step takes the longer of its compute and the
    loads of the step after it, then the last tile's stores."""
    c = config
    kh, kw = job.kernel
    ho, wo = job.conv_out
    out_h, out_w = job.out_shape
    chunks = ceil_div(out_h, rows)
    conv_rows, in_rows = _geometry(job, rows)
    alb, wlb, olb = line_bytes(Buffer.ACT, c), line_bytes(Buffer.WEIGHT, c), output_line_bytes(c)
    bus = c.dma_bits // 8
    burst = 8                                      # cycles of latency and turnaround per DMA request
    fill = c.rows + c.cols + 8
    patch = in_rows * job.width * alb // bus + burst
    tile = kh * kw * c.rows * wlb // bus + burst
    compute = min(conv_rows, ho) * wo * kh * kw + fill
    per_chunk = sum(len(t) for t in tiles.per_block)
    steps = per_chunk * chunks
    patches = sum(tiles.cb_counts)
    if order == "chunk":
        load_cycles = chunks * (patches * patch + per_chunk * tile)
        traffic = chunks * (patches * in_rows * job.width * alb + per_chunk * kh * kw * c.rows * wlb)
    else:
        load_cycles = len(tiles.per_block) * chunks * patches * patch + per_chunk * tile
        traffic = (len(tiles.per_block) * chunks * patches * in_rows * job.width * alb
                   + per_chunk * kh * kw * c.rows * wlb)
    store = ceil_div(rows * out_w * olb, bus) + burst
    traffic += ceil_div(job.cout, c.cols) * out_h * out_w * olb
    per_step_load = load_cycles / steps
    cycles = (patch + tile) + steps * max(compute, per_step_load) + store
    return int(cycles), int(traffic)


def plan_job(config: AcceleratorConfig, job: ConvJob, *, order: str | None = None,
             max_rows: int | None = None) -> Plan:
    """The tiling of ``job`` with the fewest estimated cycles (then the least DRAM traffic).

    ``order`` (preferred where it fits) and ``max_rows`` narrow the choice (tests use them to reach every
    tiling)."""
    _check(config, job)
    tiles = _tiles(config, job)
    out_rows = job.out_shape[0] if max_rows is None else min(max_rows, job.out_shape[0])
    candidates, padding_only = [], False
    for kind in ("chunk", "block"):
        for rows in range(1, out_rows + 1):
            if not _fits(config, job, rows, kind, tiles):
                break
            if not _reads_real_rows(job, rows):
                padding_only = True
                continue
            cycles, traffic = _estimate(config, job, rows, kind, tiles)
            candidates.append((cycles, traffic, rows, kind))
    if order is not None and any(c[3] == order for c in candidates):
        candidates = [c for c in candidates if c[3] == order]
    if not candidates and padding_only:
        raise LayoutError(f"layer {job.name!r} cannot be mapped onto this engine: its padding "
                          f"{job.padding} is so deep that every tiling that fits the buffers has a chunk of output "
                          f"rows reading padding alone; give it larger buffers or less padding")
    if not candidates:
        _, wo = job.conv_out
        raise LayoutError(f"layer {job.name!r} cannot be mapped onto this engine: one output row "
                          f"({wo} accumulator lines, {sum(tiles.cb_counts)} input channel blocks) does not fit "
                          f"the buffers (activations {config.act_buffer_depth}, accumulators "
                          f"{config.acc_buffer_depth} lines)")
    cycles, traffic, rows, order = min(candidates)
    return Plan(rows, order, cycles, traffic,
                [dict(rows=r, order=o, cycles=cy, dram_bytes=tr) for cy, tr, r, o in candidates], tiles)


def _pool_alus(job: ConvJob, base: int, pooled: int, conv_rows: int, wo: int) -> list:
    """ALU MAX ops leaving each window's maximum in its top-left accumulator line (windows never overlap)."""
    pkh, pkw, psh, psw = job.pool
    alus = []
    for dy in range(1, pkh):
        alus.append(("ALU", dict(op=int(AluOp.MAX), dst_addr=base, src_addr=base + dy * wo, y_size=pooled,
                                 x_size=wo, dst_stride=psh * wo, src_stride=psh * wo, src_step=1)))
    wp = (wo - pkw) // psw + 1
    for dx in range(1, pkw):
        if wo % psw == 0 and conv_rows * wo // psw <= _field_max(Opcode.ALU, "y_size"):
            alus.append(("ALU", dict(op=int(AluOp.MAX), dst_addr=base, src_addr=base + dx,
                                     y_size=conv_rows * wo // psw, x_size=1, dst_stride=psw, src_stride=psw,
                                     src_step=1)))
        else:
            for r in range(pooled):
                row = base + r * psh * wo
                alus.append(("ALU", dict(op=int(AluOp.MAX), dst_addr=row, src_addr=row + dx, y_size=wp,
                                         x_size=1, dst_stride=psw, src_stride=psw, src_step=1)))
    return alus


def emit_job(b: ProgramBuilder, job: ConvJob, plan: Plan, *, param_base: int = 0) -> dict:
    """Emit ``job`` into ``b`` as one schedule (after :meth:`ProgramBuilder.barrier` if an earlier layer wrote
    its inputs); returns counts of steps, output tiles and instructions."""
    c = b.config
    tiles = plan.tiles or _tiles(c, job)
    kh, kw = job.kernel
    t_pad, l_pad, _, r_pad = job.padding
    ho, wo = job.conv_out
    out_h, out_w = job.out_shape
    nb_n = len(tiles.per_block)
    alb, wlb, olb = line_bytes(Buffer.ACT, c), line_bytes(Buffer.WEIGHT, c), output_line_bytes(c)
    pitch = job.width + l_pad + r_pad
    w_tile = kh * kw * c.rows
    conv_rows_t, in_rows_t = _geometry(job, plan.rows)
    patch = in_rows_t * pitch
    patch_index, k = {}, 0
    for i, n in enumerate(tiles.cb_counts):
        for cb in range(n):
            patch_index[(i, cb)] = k
            k += 1
    acc_tile = conv_rows_t * wo

    order = plan.order
    keys = [(nb, i, cb, t) for nb, block in enumerate(tiles.per_block) for i, cb, t in block]
    w_data = np.concatenate([tiles.data[key] for key in keys])
    w_offset = {key: n * w_tile for n, key in enumerate(keys)}
    rw = b.region(f"{job.name}.weights", pack_lines(w_data, c.weights.bits, wlb))
    bias, mult, shift = job.requant.lines(nb_n, c.cols)
    rp = b.region(f"{job.name}.params", pack_params(bias, mult, shift, line_bytes(Buffer.PARAM, c)))
    param_load = ("LOAD", dict(buffer=Buffer.PARAM, sram_addr=param_base, dram_addr=rp.addr, y_size=1,
                               x_size=nb_n))

    chunks = ceil_div(out_h, plan.rows)

    def chunk_geometry(chunk):
        return _chunk(job, plan.rows, chunk)

    def patch_load(i, cb, chunk, parity):
        r0, rows, conv0, conv_rows, iy0, in_rows, top, bottom = chunk_geometry(chunk)
        real = in_rows - top - bottom
        if real < 1:
            raise LayoutError(f"layer {job.name!r}: a chunk of output rows reads only padding")
        src = job.sources[i]
        base = parity * len(patch_index) * patch + patch_index[(i, cb)] * patch
        fields = dict(buffer=Buffer.ACT, sram_addr=base,
                      dram_addr=src.region.addr + (cb * job.height * job.width + max(iy0, 0) * job.width) * alb,
                      y_size=real, x_size=job.width, dram_stride=job.width * alb, pad_top=top, pad_bottom=bottom,
                      pad_left=l_pad, pad_right=r_pad, pad_value=job.pad_value)
        if top == bottom == l_pad == r_pad == 0 and real * job.width <= _field_max(Opcode.LOAD, "x_size"):
            fields.update(y_size=1, x_size=real * job.width, dram_stride=0)
        return ("LOAD", fields)

    def stores_of(chunk, nb, acc_base):
        r0, rows, conv0, conv_rows, *_ = chunk_geometry(chunk)
        out_base = job.out.addr + (nb * out_h * out_w + r0 * out_w) * olb
        if job.pool is None:
            return [("STORE", dict(acc_addr=acc_base, dram_addr=out_base, y_size=1, x_size=rows * out_w,
                                   param_addr=param_base + nb))]
        _, _, psh, psw = job.pool
        if psw == 1:
            return [("STORE", dict(acc_addr=acc_base, dram_addr=out_base, y_size=rows, x_size=out_w,
                                   acc_stride=psh * wo, dram_stride=out_w * olb, param_addr=param_base + nb))]
        return [("STORE", dict(acc_addr=acc_base + r * psh * wo, dram_addr=out_base + r * out_w * olb,
                               y_size=out_w, x_size=1, acc_stride=psw, dram_stride=olb,
                               param_addr=param_base + nb)) for r in range(rows)]

    steps: list[Step] = []
    tile_count = 0

    def add_tile(nb, chunk, patch_parity, weight_base, load_weights, loaded):
        """Steps of one output tile (chunk, nb); ``loaded``: patches already in this chunk's region."""
        nonlocal tile_count
        r0, rows, conv0, conv_rows, iy0, in_rows, top, bottom = chunk_geometry(chunk)
        acc_base = (tile_count % 2) * acc_tile
        block = tiles.per_block[nb]
        first = True
        for n, (i, cb, t) in enumerate(block):
            loads = []
            if (i, cb) not in loaded:
                loads.append(patch_load(i, cb, chunk, patch_parity))
                loaded.add((i, cb))
            if load_weights:
                w_addr = (len(steps) % 2) * w_tile if order == "chunk" else weight_base + n * w_tile
                # One row of lines per kernel position: a tile may be longer than one LOAD row can be.
                loads.append(("LOAD", dict(buffer=Buffer.WEIGHT, sram_addr=w_addr,
                                           dram_addr=rw.addr + w_offset[(nb, i, cb, t)] * wlb, y_size=kh * kw,
                                           x_size=c.rows, dram_stride=c.rows * wlb)))
            else:
                w_addr = weight_base + n * w_tile
            compute = ("COMPUTE", dict(acc_addr=acc_base,
                                       act_addr=patch_parity * len(patch_index) * patch + patch_index[(i, cb)] * patch,
                                       weight_addr=w_addr, out_h=conv_rows, out_w=wo, act_pitch=pitch,
                                       stride=job.stride, dilation=job.dilation, kh=kh, kw=kw,
                                       accumulate=int(not first)))
            first = False
            if loads or not steps or steps[-1].ends:
                steps.append(Step(loads, [compute], begins=n == 0))
            else:
                steps[-1].computes.append(compute)
        last = steps[-1]
        last.ends = True
        if job.pool is not None:
            last.computes.extend(_pool_alus(job, acc_base, rows, conv_rows, wo))
        last.stores = stores_of(chunk, nb, acc_base)
        tile_count += 1

    if order == "chunk":
        for chunk in range(chunks):
            loaded = set()
            for nb in range(nb_n):
                add_tile(nb, chunk, chunk % 2, 0, True, loaded)
    else:
        most = max(len(t) for t in tiles.per_block)
        gc = 0
        for nb in range(nb_n):
            for chunk in range(chunks):
                add_tile(nb, chunk, gc % 2, (nb % 2) * most * w_tile, chunk == 0, set())
                gc += 1
    first = len(b.words)
    b.schedule(steps, prologue=[param_load], setpp=job.requant.setpp())
    return {"steps": len(steps), "tiles": tile_count, "instructions": len(b.words) - first}
