"""The ``stack`` loop order: a 1x1 job's channel blocks as the taps of one COMPUTE.

In ``chunk`` order a 1x1 convolution reading ``n`` channel blocks makes ``n`` COMPUTEs per output tile, one weight
tile each, and every COMPUTE pays the array's restart (its first weight tile shifts in after the engine starts).
When the job's output rows are contiguous in the activation buffer (the COMPUTE's row pitch equals the output
width, true of any 1x1 convolution once a strided one skips rows), a chunk's rows are one long row, and its ``n``
patches, laid ``patch`` lines apart, are the ``n`` rows of a ``n x 1`` kernel whose row pitch is ``patch``: one
COMPUTE (at most 15 taps; more take several) streams every tile of the output block back to back. A folded stem
(147 channels: 10 blocks, 64 outputs: 4 blocks) makes one COMPUTE per output block of a chunk instead of 10.
A fused pool pools each output tile before its STORE, as in ``chunk`` order.

Patches alternate between two layouts from one chunk to the next. Where two chunks' patches do not fit the
activation buffer side by side, the last ``shared`` patches of every chunk use the same slots: a chunk's first
output block then runs in two steps, the private patches first, while the shared ones load behind the last
COMPUTE of the chunk before (the odd layout starts at the shared slots, and its weight tiles load in that order).
The next chunk's private patches load during the output blocks after the first (they go to slots the chunk
before last read), so no step waits for a whole chunk of patches; the job's first output tile runs a tap per
step, so the array starts after one patch.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw.spec.isa import Buffer, Opcode
from hw.spec.layout import line_bytes
from hw.spec.microarchitecture import bank_drain

from sw.emulator.timing import fetch_interval

from .lines import field_max, output_stores
from .pooling import pool_alus, pool_cycles
from .program import Step

__all__ = ["StackLayout", "stack_layout", "stack_spans", "stack_estimate", "emit_stack_steps", "is_vector",
           "kernel_shapes", "vector_tap_cycles"]


@dataclass(frozen=True)
class StackLayout:
    """Where the ``n`` patches of a chunk sit: ``patch`` lines each, the last ``shared`` in the same slots in both
    layouts."""

    n: int
    patch: int
    shared: int
    #: Taps whose weight tiles one slot of the weight buffer holds: ``n``, or fewer for a vector whose ``n`` tiles
    #: do not fit the buffer twice or one LOAD (a long Gemm), whose output blocks then take a step per group.
    group: int
    #: The first output tile runs a tap per step, so the array starts after one patch; a vector's patches (a line
    #: each) load as one LOAD instead, as the fetch, not the patches, bounds it.
    ramp: bool = True

    def groups(self, taps: list[int]) -> list[list[int]]:
        return [taps[k:k + self.group] for k in range(0, len(taps), self.group)]

    @property
    def private(self) -> int:
        return self.n - self.shared

    def order(self, parity: int) -> list[int]:
        """Patch indices in address order from the layout's first slot."""
        if parity == 0:
            return list(range(self.n))
        return list(range(self.private, self.n)) + list(range(self.private))

    def line(self, parity: int, index: int) -> int:
        """First activation line of patch ``index`` in the layout of ``parity``."""
        if parity == 0 or index >= self.private:
            return index * self.patch
        return (self.n + index) * self.patch


def stack_layout(config, job, tiles, conv_rows: int, in_rows: int, chunks: int) -> StackLayout | None:
    """The layout of ``job`` in ``stack`` order with ``conv_rows`` output rows per chunk, or None where the order
    does not apply (not a plain 1x1 job of one source whose every output block reads every channel block; output
    rows not contiguous; fields or buffers too small) or does not pay: a tap of fewer vectors than ``2 rows +
    cols`` does not hide the next tile's shift-in, which stacking does not save (a Gemm's single vector); fewer
    than 4 channel blocks save too few restarts, and fewer than 3 output blocks leave no step of the first chunk to
    carry the next chunk's patches, so its loads wait on whole chunks (measured: such layers of resnet8 and
    mobilenet_v1_025 ran slower than in ``chunk`` or ``block`` order). A vector (a Gemm's single vector) is the
    exception to the first rule where the fetch is slower than the array: in ``chunk`` order each of its channel
    blocks takes a weight LOAD and a COMPUTE, stacked a tap takes :func:`vector_tap_cycles`."""
    (t_pad, l_pad, b_pad, r_pad) = job.padding
    pitch = job.width + l_pad + r_pad
    n = tiles.cb_counts[0] if len(tiles.cb_counts) == 1 else 0
    if (job.kernel != (1, 1) or job.scatter is not None or job.samples != 1 or n < 2
            or len(job.sources) != 1 or job.sources[0].weights.shape[0] != 1
            or any(block != [(0, cb, 0, 0) for cb in range(n)] for block in tiles.per_block)):
        return None
    wo = job.conv_out[1]
    if pitch * job.row_stride != wo * job.stride:          # output rows not one run of activation lines
        return None
    vector = is_vector(job) and vector_tap_cycles(config) < 2 * fetch_interval(config)
    if (conv_rows * wo < 2 * config.reduction_rows + config.cols and not vector) or n < 4 \
            or -(-job.cout // config.cols) < 3:
        return None
    patch = in_rows * pitch
    if patch > field_max(Opcode.COMPUTE, "act_pitch") or conv_rows * wo > field_max(Opcode.COMPUTE, "out_w"):
        return None
    slots = config.act_buffer_depth // patch
    group = min(n, config.weight_buffer_depth // (2 * config.reduction_rows), field_max(Opcode.LOAD, "y_size"))
    if chunks == 1 and vector:                  # (groups measured on vectors only: a map's taps keep one slot)
        return StackLayout(n, patch, 0, group, ramp=False) if slots >= n and group >= 1 else None
    if chunks == 1:
        return StackLayout(n, patch, 0, n) if slots >= n and group == n else None
    shared = max(0, 2 * n - slots)
    return StackLayout(n, patch, shared, n) if shared < n and group == n else None


def is_vector(job) -> bool:
    """A job of a single vector: a 1x1 map without padding (a Gemm's, or a 1x1 convolution's after a global pool)."""
    return job.height == job.width == 1 and not any(job.padding)


def vector_tap_cycles(config) -> float:
    """Cycles a tap of a single vector takes in a stacked COMPUTE: the array's two weight banks alternate, and a bank
    takes the tile after next once the last PE has used its vector (``ArrayModel`` of sw/emulator/timing.py), so
    a tap takes half a tile's shift-in and drain, and at least its shift-in."""
    lines = config.reduction_rows
    return max(lines, (lines + bank_drain(config.rows, config.cols) + 2) / 2)


def emit_stack_steps(c, job, layout: StackLayout, nb_n: int, geometry, chunks: int, patch_load, stores_of,
                     pool_of, w_base: int, w_offset: dict, acc_tile: int) -> list[Step]:
    """The steps of ``job`` in ``stack`` order with :func:`sw.compiler.emission.emit_job`'s LOADs, pooling ALUs and
    STOREs: ``geometry(chunk)`` the chunk's rows (tiling's ``_chunk``), ``patch_load``, ``pool_of`` and
    ``stores_of`` emit_job's, the weights at ``w_base`` (tile ``(nb, 0, cb, 0, 0)`` at line ``w_offset`` of it)."""
    wlb = line_bytes(Buffer.WEIGHT, c)
    wo = job.conv_out[1]

    def patch_loads(chunk, cb, line):
        _, _, _, conv_rows, iy0, in_rows, top, bottom = geometry(chunk)
        return patch_load(0, cb, (0, conv_rows, iy0, in_rows, top, bottom), line, 0)

    def weight_loads(nb, cbs, w_addr):
        loads, start = [], 0
        for k in range(1, len(cbs) + 1):              # one LOAD per run of tiles consecutive in memory
            if k == len(cbs) or cbs[k] != cbs[k - 1] + 1:
                loads.append(("LOAD", dict(buffer=Buffer.WEIGHT, sram_addr=w_addr + start * c.reduction_rows,
                                           dram_addr=w_base + w_offset[(nb, 0, cbs[start], 0, 0)] * wlb,
                                           y_size=k - start, x_size=c.reduction_rows,
                                           dram_stride=c.reduction_rows * wlb)))
                start = k
        return loads

    def compute(nb, chunk, line, shape, w_addr, accumulate, acc):
        kh, kw = shape                  # (kw > 1: a vector's lines, back to back, as kh rows of kw)
        return ("COMPUTE", dict(acc_addr=acc * acc_tile, act_addr=line, weight_addr=w_addr, out_h=1,
                                out_w=geometry(chunk)[3] * wo, act_pitch=layout.patch * kw, stride=job.stride,
                                dilation=1, kh=kh, kw=kw, accumulate=accumulate, **job.formats))

    def finish_tile(step, nb, chunk, acc):
        step.ends = True
        step.computes.extend(pool_of(chunk, acc * acc_tile))
        step.stores = output_stores(c, stores_of(chunk, nb, acc * acc_tile, 0))

    return _steps(nb_n, c.reduction_rows, layout, chunks, patch_loads, weight_loads, compute, finish_tile)


def _steps(nb_n: int, rows: int, layout: StackLayout, chunks: int, patch_loads, weight_loads, compute,
           finish_tile) -> list[Step]:
    """The steps of a job of ``nb_n`` output blocks in ``stack`` order (``rows``: the array's). Callbacks from the
    emitter: ``patch_loads(chunk, cb, line)`` the LOADs of one patch; ``weight_loads(nb, cbs, w_addr)`` those of tiles
    ``cbs`` (in that order) from ``w_addr``; ``compute(nb, chunk, line, (kh, kw), w_addr, accumulate, acc)`` one COMPUTE
    of ``kh * kw`` taps (see :func:`kernel_shapes`) into accumulator region ``acc`` (0 or 1); ``finish_tile(step, nb,
    chunk, acc)`` ends an output tile on ``step``. Returns the steps."""
    n = layout.n
    steps, tile_count = [], 0
    loaded = [0]               # steps that loaded weights: they alternate between the two slots

    def w_slot():
        loaded[0] += 1
        return (loaded[0] % 2) * layout.group * rows

    def first_carrier(chunk):
        return _first_carrier(chunk, layout)

    def prefetch(chunk, nb):
        """The private patches of chunk ``chunk + 1`` that output block ``nb``'s step of ``chunk`` loads."""
        carriers = nb_n - first_carrier(chunk)
        if carriers < 1 or chunk + 1 >= chunks or nb < first_carrier(chunk):
            return []
        per = -(-layout.private // carriers)
        j = nb - first_carrier(chunk)
        return list(range(j * per, min((j + 1) * per, layout.private)))

    def step(loads, nb, chunk, line, taps, w_addr, first, acc_base):
        computes, t0 = [], 0
        for kh, kw in kernel_shapes(len(taps), layout.patch == 1):
            computes.append(compute(nb, chunk, line + t0 * layout.patch, (kh, kw), w_addr + t0 * rows,
                                    int(not (first and t0 == 0)), acc_base))
            t0 += kh * kw
        steps.append(Step(loads, computes, begins=first))

    for chunk in range(chunks):
        parity = chunk % 2
        order = layout.order(parity)
        base = layout.line(parity, order[0])
        early = set() if chunk == 0 or nb_n <= first_carrier(chunk - 1) else set(range(layout.private))
        for nb in range(nb_n):
            acc_base = tile_count % 2
            if nb == 0 and chunk == 0 and layout.ramp:      # a tap per step: the array starts after one patch
                for cb in range(n):             # (the first step of a group loads its taps' weights)
                    first = cb % layout.group == 0
                    w = w_slot() if first else w
                    weights = weight_loads(nb, order[cb:cb + layout.group], w) if first else []
                    step([*patch_loads(chunk, cb, layout.line(parity, cb)), *weights], nb, chunk,
                         layout.line(parity, cb), [cb], w + cb % layout.group * rows, cb == 0, acc_base)
            elif nb == 0 and chunk > 0:
                parts = [order[:layout.private], order[layout.private:]] if layout.shared and parity == 0 else \
                    [order[layout.shared:], order[:layout.shared]] if layout.shared else [order]
                for k, cbs in enumerate(p for p in parts if p):
                    w = w_slot()
                    own = [ld for cb in cbs if cb not in early
                           for ld in patch_loads(chunk, cb, layout.line(parity, cb))]
                    step([*own, *weight_loads(nb, cbs, w)], nb, chunk, layout.line(parity, cbs[0]), cbs, w, k == 0,
                         acc_base)
            else:
                if nb == 0:                                 # a vector's patches, with its first weights
                    ahead = _one_load([ld for cb in order for ld in patch_loads(chunk, cb, layout.line(parity, cb))])
                else:
                    ahead = [ld for cb in prefetch(chunk, nb)
                             for ld in patch_loads(chunk + 1, cb, layout.line(1 - parity, cb))]
                for k, cbs in enumerate(layout.groups(order)):   # (several groups: one chunk, parity 0)
                    w = w_slot()
                    step([*weight_loads(nb, cbs, w), *(ahead if k == 0 else [])], nb, chunk,
                         layout.line(parity, cbs[0]), cbs, w, k == 0, acc_base)
            finish_tile(steps[-1], nb, chunk, acc_base)
            tile_count += 1
    return steps


def kernel_shapes(taps: int, flat: bool) -> list[tuple[int, int]]:
    """The (kh, kw) kernels of the COMPUTEs that take ``taps`` stacked taps in order: ``n x 1`` kernels of at most
    15 rows; where the patches are single lines back to back (``flat``: a vector's), ``kh x kw`` kernels whose row
    pitch is ``kw``, up to 15 x 15 taps each (the fetch, not the array, bounds such a job: fewer COMPUTEs pay)."""
    most, wide = field_max(Opcode.COMPUTE, "kh"), field_max(Opcode.COMPUTE, "kw") if flat else 1
    shapes = []
    while taps:
        exact = [(taps // kw, kw) for kw in range(min(wide, taps), 0, -1) if taps % kw == 0 and taps // kw <= most]
        kw = min(wide, taps)
        shape = exact[0] if exact else (min(most, taps // kw), kw)
        shapes.append(shape)
        taps -= shape[0] * shape[1]
    return shapes


def _conv_rows(job, rows: int) -> int:
    """Conv rows of a chunk of ``rows`` output rows (pooled rows, when the job pools)."""
    return job.pool.rows_in(rows) if job.pool else rows


def _one_load(loads: list) -> list:
    """``loads`` (one per patch, in buffer order) as one LOAD where each is a single row without padding, back to
    back in the buffer and evenly spaced in external memory (a vector's channel blocks); otherwise as they are."""
    fields = [f for _, f in loads]
    if len(fields) < 2 or any(op != "LOAD" for op, _ in loads):
        return loads
    first, pads = fields[0], ("pad_top", "pad_bottom", "pad_left", "pad_right")
    step = fields[1]["dram_addr"] - first["dram_addr"]
    if any(f["y_size"] != 1 or f["x_size"] != first["x_size"] or any(f.get(p, 0) for p in pads)
           or f["sram_addr"] != first["sram_addr"] + k * first["x_size"]
           or f["dram_addr"] != first["dram_addr"] + k * step for k, f in enumerate(fields)):
        return loads
    if step <= 0 or len(fields) > field_max(Opcode.LOAD, "y_size") or step > field_max(Opcode.LOAD, "dram_stride"):
        return loads
    return [("LOAD", {**first, "y_size": len(fields), "dram_stride": step})]


def _first_carrier(chunk: int, layout: StackLayout) -> int:
    """The first output block of ``chunk`` whose step loads patches of the next chunk: one that follows a whole
    output block's COMPUTE (a step's loads overlap the COMPUTE before it)."""
    return 2 if chunk == 0 or layout.shared else 1


def stack_spans(config, job, layout: StackLayout, rows: int) -> list[tuple[int, int]]:
    """(first output row, output rows) of each chunk: ``rows`` each, except that the first chunks ramp up from as
    few rows as can start it, each chunk no taller than its private patches load during the steps of the chunk
    before that carry them (with those steps' weights): the array starts after a few rows' patches, and the
    prefetch keeps up."""
    from hw.spec.isa import Buffer
    from hw.spec.layout import line_bytes
    out_h, n, wo = job.out_shape[0], layout.n, job.conv_out[1]
    nb_n, bus = -(-job.cout // config.cols), config.dma_bits // 8
    pitch = job.width + job.padding[1] + job.padding[3]
    weights = n * config.reduction_rows * line_bytes(Buffer.WEIGHT, config) // bus + 8

    def loads(chunk, size):
        """Cycles of the loads of the busiest step of ``chunk`` that carries patches of ``size`` rows."""
        carriers = nb_n - _first_carrier(chunk, layout)
        lines = ((_conv_rows(job, size) - 1) * job.row_stride + 1) * pitch
        return weights + -(-layout.private // carriers) * (lines * line_bytes(Buffer.ACT, config) // bus + 8)

    def ramp(first):
        spans, r0, size = [], 0, first
        while r0 < out_h:
            size = min(size, out_h - r0)
            spans.append((r0, size))
            r0 += size
            if size < rows and r0 < out_h:
                fits = [r for r in range(size + 1, rows + 1)
                        if loads(len(spans) - 1, r) <= n * _conv_rows(job, size) * wo]
                if not fits:
                    return None                   # the ramp would stall (or never reach ``rows``)
                size = max(fits)
        return spans
    if out_h > rows and nb_n > _first_carrier(0, layout):
        for first in range(1, rows):
            spans = ramp(first)
            if spans is not None:
                return spans
    return ramp(rows)


def stack_estimate(config, job, layout: StackLayout, rows: int, conv_rows: int, in_rows: int,
                   spans: list) -> tuple[int, int]:
    """(cycles, DRAM bytes) of ``job`` in ``stack`` order, on the terms of :func:`sw.compiler.tiling.plan_job`'s
    model: per chunk the longer of its COMPUTEs and its loads, plus the wait of the shared patches behind the
    chunk before; the first chunk's first patch and tile before, the last STOREs after."""
    from hw.spec.isa import Buffer
    from hw.spec.layout import line_bytes, output_line_bytes
    c = config
    alb, wlb, olb = line_bytes(Buffer.ACT, c), line_bytes(Buffer.WEIGHT, c), output_line_bytes(c)
    # A COMPUTE's taps follow each other in the array; the next COMPUTE's first tile shifts in behind the last one's
    # vectors, but a few cycles are lost at the restart; the array fills once.
    bus, burst, restart, fill = c.dma_bits // 8, 8, 4, c.reduction_rows + c.cols + 8
    nb_n, n, wo = -(-job.cout // c.cols), layout.n, job.conv_out[1]
    out_h, out_w = job.out_shape
    tile = c.reduction_rows * wlb // bus
    split = int(layout.shared > 0)
    cycles = traffic = 0
    for _, size in spans:
        conv = _conv_rows(job, size)
        lines = ((conv - 1) * job.row_stride + 1) * job.width
        per_tap = vector_tap_cycles(c) if not layout.ramp else max(conv * wo, 2 * c.reduction_rows + c.cols)
        patch = lines * alb // bus + burst
        compute = nb_n * (n * per_tap + restart + pool_cycles(job, size, conv)) + split * restart
        loads = n * patch + nb_n * (n * tile + burst) + split * burst
        wait = max(0, layout.shared * patch - layout.private * per_tap) if split else 0
        cycles += max(compute, loads) + wait
        traffic += n * (lines * alb + nb_n * c.reduction_rows * wlb)
    first = ((_conv_rows(job, spans[0][1]) - 1) * job.row_stride + 1) * job.width * alb // bus + burst
    store = -(-spans[-1][1] * out_w * olb // bus) + burst
    cycles += first + tile + burst + (n - 1) * restart + fill + store
    traffic += nb_n * out_h * out_w * olb
    # The fetch's floor (as in plan_job's model): per chunk its patches' LOADs, per output block a weight LOAD and
    # the COMPUTEs of each group (kernel_shapes), its pooling ALUs and a STORE; the first block's taps one COMPUTE
    # each.
    groups = layout.groups(list(range(n)))
    alus = 0 if job.pool is None else len(pool_alus(job, 0, rows, conv_rows, wo, (0, 0, 0)))
    per_block = sum(1 + len(kernel_shapes(len(g), layout.patch == 1)) for g in groups) + 1 + alus
    instructions = len(spans) * (n + nb_n * per_block) + n - len(kernel_shapes(n, False)) if layout.ramp else \
        1 + nb_n * per_block
    return int(max(cycles, instructions * fetch_interval(c))), int(traffic)
