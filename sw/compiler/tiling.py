"""One accumulating layer as tiles: the general convolution job, how it is cut, and its cost model.

Every layer the engine runs is a :class:`ConvJob`: one or more source feature maps (blocked NHWC in external
memory: ``C/rows`` blocks of ``H*W`` lines, channels spread as lowering.py says), each with a dense weight
tensor ``(T, kh, kw, Cin, Cout)`` (T tensors of a multi-tensor sum; zero where a group, a depthwise channel or a
concat part has no connection), all summed into one accumulator per output, then optionally max-pooled (ALU MAX
on the accumulators, exact because the rescale is monotone) and post-processed on the way out (bias, rescale,
clamp in the STOREs).
Convolutions, fully connected layers (a 1x1 map), average pooling (identity tiles at every tap), residual adds
(two sources) and concats (shifted identities) are all jobs.

Weight tiles that are entirely zero are skipped, so a depthwise convolution costs one tile per channel block.
What does not fit is split rather than refused: a kernel whose tiles do not fit the weight buffer twice (or is
wider than a COMPUTE's 15 taps) runs as kernel *groups*, each a COMPUTE over part of the window accumulating
into the same lines; a map whose single output row does not fit the buffers runs as column *strips*
(:func:`sw.compiler.splitting.split_job`), each a job over a window of the map with its halo; more
output-channel blocks than half the PARAM buffer run as channel *groups*, one job each. The accumulators are checked against the largest sum
the actual weights can make (not against the number of products), so long reductions of real weights fit.
Four loop orders, chosen with the tile height by :func:`plan_job`'s cost model (cycles, then DRAM bytes):

- ``chunk``: output-row chunks outermost; each input patch is read once, weights once per chunk;
- ``block``: output-channel blocks outermost with their weights resident; inputs once per block;
- ``stack``: ``chunk`` with a 1x1 job's channel blocks as the taps of one COMPUTE per output tile
  (:mod:`sw.compiler.stacking`);
- ``tall``: ``chunk`` with a chunk's channel-block patches as the rows of one tall kernel, one COMPUTE per output
  tile, where the instruction fetch bounds the job (:mod:`sw.compiler.tall`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import Buffer, Opcode
from hw.spec.layout import line_bytes, output_line_bytes, tensor_line_bytes

from sw.emulator.timing import fetch_interval

from .lines import field_max
from .pooling import alus_fit, pool_cycles
from .program import Region
from .requant import Requant
from .scatter import Scatter
from .stacking import StackLayout, stack_estimate, stack_layout, stack_spans
from .tall import TALL_GAIN, tall_tiles

__all__ = ["LayoutError", "ceil_div", "Source", "Pool", "Scatter", "ConvJob", "Plan", "plan_job",
           "kernel_groups", "largest_sum"]


class LayoutError(ValueError):
    """A layer that no tiling of this configuration can run; the message names the layer and the limit."""


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass
class Source:
    """An input feature map in external memory and the weights that connect it to the outputs."""

    region: Region
    channels: int
    weights: np.ndarray           # (T, kh, kw, channels, cout) codes


@dataclass(frozen=True)
class Pool:
    """Pooling of a job's outputs on the accumulators, before post-processing, by ALU instructions: ``max``
    (exact because the clamped rescale is monotone) or ``sum`` (average pooling; the multiplier divides).

    Windows that do not overlap (max, no dilation) gather in place, each in its own top-left line; any other
    window is separable: a first pass combines the taps of each row into a region of its own (the first tap a
    COPY), a second pass the rows into a third region, which the STOREs read."""

    kind: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)

    @property
    def in_place(self) -> bool:
        (kh, kw), (sh, sw) = self.kernel, self.stride
        return self.kind == "max" and self.dilation == (1, 1) and kh <= sh and kw <= sw

    def rows_in(self, rows: int) -> int:
        """Rows of the map that ``rows`` rows of windows read."""
        return (rows - 1) * self.stride[0] + self.dilation[0] * (self.kernel[0] - 1) + 1

    def shape(self, h: int, w: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.stride, self.dilation
        return (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1


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
    #: Pooling of the outputs before post-processing.
    pool: Pool | None = None
    #: Multiply-accumulates of the layer as defined (None: count the non-zero weight positions).
    macs: int | None = None
    #: Lines between input rows (and H times that between channel blocks) in external memory: the map's full
    #: width when the job is a column strip of it (None: ``width``).
    in_pitch: int | None = None
    #: Lines between output rows in external memory (None: the job's own output width).
    out_pitch: int | None = None
    #: A multi-format engine's COMPUTE.weight_format / act_format of the job (empty: the first format's).
    formats: dict = field(default_factory=dict)
    #: Its sources are stored two codes a slot and its COMPUTEs set ``packed`` (a build that packs per layer):
    #: weight tiles and activation blocks of ``config.packed_reduction_rows`` (:func:`job_depth`).
    packed: bool = False
    #: Its STOREs write two codes a slot (STORE.packed): its output is a packed tensor (``Lowering.writes_packed``).
    packs_out: bool = False
    #: The (weight, act) formats of the codes the job carries, where they are not the engine's first format's (a
    #: mixed-format network's layers: sw/compiler/formats.py); None: ``config.weights``, ``config.acts``.
    code_formats: tuple | None = None
    #: Lines between the input's channel blocks in external memory, when the job reads a window of a taller map
    #: (None: ``height`` times the row pitch).
    block_pitch: int | None = None
    #: Vertical stride over the job's own input rows (None: ``stride``). 1 for a strided 1x1 convolution that
    #: loads only the rows it reads (:func:`skip_rows`).
    stride_h: int | None = None
    #: Where the output lines go when not to a map of the job's own shape (None: there).
    scatter: Scatter | None = None
    #: Lines between the output's channel blocks in external memory (None: output rows times ``dst_pitch``). 1 for
    #: a batch of vectors stored sample after sample (:mod:`sw.compiler.batching`).
    out_block_pitch: int | None = None
    #: Samples the job runs on, one after the other in one schedule (a batched program's convolution; see
    #: sw/compiler/batching.py): sample n reads each source ``sample_bytes[i] * n`` bytes on, and writes
    #: ``out_sample_bytes * n`` bytes on.
    samples: int = 1
    sample_bytes: tuple[int, ...] = ()
    out_sample_bytes: int = 0

    @property
    def out_block_lines(self) -> int:
        return self.out_shape[0] * self.dst_pitch if self.out_block_pitch is None else self.out_block_pitch

    @property
    def row_stride(self) -> int:
        return self.stride if self.stride_h is None else self.stride_h

    @property
    def src_pitch(self) -> int:
        return self.width if self.in_pitch is None else self.in_pitch

    @property
    def dst_pitch(self) -> int:
        return self.out_shape[1] if self.out_pitch is None else self.out_pitch

    @property
    def conv_out(self) -> tuple[int, int]:
        (kh, kw), (t, l, b, r), s, d = self.kernel, self.padding, self.stride, self.dilation
        return ((self.height + t + b - d * (kh - 1) - 1) // self.row_stride + 1,
                (self.width + l + r - d * (kw - 1) - 1) // s + 1)

    @property
    def out_shape(self) -> tuple[int, int]:
        ho, wo = self.conv_out
        return (ho, wo) if self.pool is None else self.pool.shape(ho, wo)

    @property
    def useful_macs(self) -> int:
        if self.macs is not None:
            return self.macs
        ho, wo = self.conv_out
        return sum(int(np.count_nonzero(s.weights.any(axis=0))) for s in self.sources) * ho * wo * self.samples


@dataclass
class Plan:
    """How a job is tiled: output rows per chunk (pooled rows when pooling), loop order, and estimates."""

    rows: int
    order: str
    cycles: int = 0
    dram_bytes: int = 0
    candidates: list = field(default_factory=list)
    #: The job's weight tiles, as planned (:func:`sw.compiler.emission.emit_job` reuses them).
    tiles: _Tiles | None = field(default=None, repr=False)
    #: Conv rows per band when one pooled row's window does not fit at once (0: no bands; see :func:`_bands`).
    band: int = 0


@dataclass
class _Tiles:
    """The job's weight tiles (non-zero ones unless dense), per output block, as (source, channel block, tensor,
    kernel group)."""

    per_block: list[list[tuple[int, int, int, int]]]
    data: dict                     # (nb, source, cb, t, g) -> (taps * rows, cols) codes
    cb_counts: list[int]
    #: Kernel groups: (ky0, ky1, kx0, kx1) windows of the kernel, each one COMPUTE.
    groups: list[tuple[int, int, int, int]]

    def taps(self, g: int) -> int:
        ky0, ky1, kx0, kx1 = self.groups[g]
        return (ky1 - ky0) * (kx1 - kx0)

    @property
    def slot_taps(self) -> int:
        """Taps of the largest group: a weight-buffer slot holds that many times ``rows`` lines."""
        return max(self.taps(g) for g in range(len(self.groups)))

    @property
    def count(self) -> int:
        return sum(len(t) for t in self.per_block)

    def needed(self, nb: int) -> list[tuple[int, int]]:
        """The input patches (source, channel block) output block ``nb`` reads, in order."""
        return list(dict.fromkeys((i, cb) for i, cb, _, _ in self.per_block[nb]))

    def slots(self, order: str) -> int:
        """Patches resident at once: every channel block in ``chunk`` order (shared by all output blocks), the
        most one output block reads in ``block`` order (a depthwise or identity job reads one)."""
        if order == "chunk":
            return sum(self.cb_counts)
        return max(len(self.needed(nb)) for nb in range(len(self.per_block)))


def job_depth(config: AcceleratorConfig, job: ConvJob) -> int:
    """The reduction depth of the job's COMPUTEs: lines of a weight tile, channels of an activation block."""
    return config.packed_reduction_rows if job.packed else config.reduction_rows


def kernel_groups(config: AcceleratorConfig, kernel: tuple[int, int],
                  depth: int | None = None) -> list[tuple[int, int, int, int]]:
    """The kernel cut into windows whose weight tiles (``depth`` lines a tap: the array's reduction depth unless
    given) fit the weight buffer twice (one computing, one loading) and a COMPUTE's kernel fields: the whole
    kernel when it fits."""
    kh, kw = kernel
    depth = config.reduction_rows if depth is None else depth
    most = config.weight_buffer_depth // (2 * depth)          # taps of one tile
    if most < 1:
        raise LayoutError(f"the weight buffer ({config.weight_buffer_depth} lines) cannot hold two tiles of "
                          f"{depth} lines")
    gw = min(kw, field_max(Opcode.COMPUTE, "kw"), most)
    gh = min(kh, field_max(Opcode.COMPUTE, "kh"), max(1, most // gw))
    return [(y, min(y + gh, kh), x, min(x + gw, kw)) for y in range(0, kh, gh) for x in range(0, kw, gw)]


def _tiles(config: AcceleratorConfig, job: ConvJob, dense: bool = False) -> _Tiles:
    """The job's weight tiles, all-zero ones left out unless ``dense`` (``stack`` order needs every output block to
    read every channel block) or the activations have NaN or Inf codes (a zero weight times Inf is NaN: leaving the
    tile out would make an output finite that the golden model makes NaN)."""
    c, depth = config, job_depth(config, job)
    acts = (job.code_formats or (config.weights, config.acts))[1]
    dense = dense or acts.has_nan or acts.has_inf
    groups = kernel_groups(c, job.kernel, depth)
    per_block, data = [], {}
    cb_counts = [ceil_div(s.channels, depth) for s in job.sources]
    for nb in range(ceil_div(job.cout, c.cols)):
        tiles = []
        keys = [(i, cb, t, g) for i, s in enumerate(job.sources) for cb in range(cb_counts[i])
                for t in range(s.weights.shape[0]) for g in range(len(groups))]
        for n, (i, cb, t, g) in enumerate(keys):
            ky0, ky1, kx0, kx1 = groups[g]
            part = job.sources[i].weights[t, ky0:ky1, kx0:kx1, cb * depth:(cb + 1) * depth,
                                          nb * c.cols:(nb + 1) * c.cols]
            if not dense and not part.any() and (tiles or n + 1 < len(keys)):
                continue              # an all-zero tile adds nothing (one is kept to start the sum)
            tile = np.zeros((ky1 - ky0, kx1 - kx0, depth, c.cols), dtype=np.int64)
            tile[:, :, :part.shape[2], :part.shape[3]] = part
            data[(nb, i, cb, t, g)] = tile.reshape(-1, c.cols)
            tiles.append((i, cb, t, g))
        per_block.append(tiles)
    return _Tiles(per_block, data, cb_counts, groups)


def largest_sum(config: AcceleratorConfig, job: ConvJob) -> int:
    """The largest magnitude an output's sum can reach, in accumulator units: over every output, the sum of its
    weights' magnitudes times the largest activation magnitude. Below ``2**(acc_bits-1)`` the accumulators hold
    every sum exactly, whatever the activations."""
    wf, af = job.code_formats or (config.weights, config.acts)
    sig, shift, finite = wf.exact(np.arange(1 << wf.bits))
    magnitude = np.where(finite, np.abs(sig.astype(np.int64)) << shift.astype(np.int64), 0)
    per_output = sum(magnitude[np.asarray(s.weights, dtype=np.int64)].sum(axis=(0, 1, 2, 3)) for s in job.sources)
    return (int(np.max(per_output)) * max(abs(v) for v in af.fixed_range)) << config.pair_shift(wf, af)


def _geometry(job: ConvJob, rows: int, band: int = 0):
    """Conv output rows per chunk (per band, when banded) and the input rows they read, for ``rows`` (pooled)
    output rows per chunk."""
    kh, _ = job.kernel
    conv_rows = band or (job.pool.rows_in(rows) if job.pool else rows)
    in_rows = (conv_rows - 1) * job.row_stride + job.dilation * (kh - 1) + 1
    return conv_rows, in_rows


def _acc_regions(job: ConvJob, rows: int, band: int = 0) -> tuple[int, int, int]:
    """Accumulator lines of one output tile: the conv outputs (of one band), then (separable pooling) the row
    pass and the pooled outputs."""
    conv_rows, _ = _geometry(job, rows, band)
    wo = job.conv_out[1]
    if job.pool is None or (job.pool.in_place and not band):
        return conv_rows * wo, 0, 0
    wp = job.out_shape[1]
    return conv_rows * wo, conv_rows * wp, rows * wp


def _check(config: AcceleratorConfig, job: ConvJob) -> None:
    c = config
    ho, wo = job.conv_out
    problems = []
    if max(job.padding) > field_max(Opcode.LOAD, "pad_top"):
        problems.append(f"padding {job.padding} exceeds {field_max(Opcode.LOAD, 'pad_top')}")
    if job.stride > field_max(Opcode.COMPUTE, "stride") or job.dilation > field_max(Opcode.COMPUTE, "dilation"):
        problems.append(f"stride {job.stride} / dilation {job.dilation} exceed "
                        f"{field_max(Opcode.COMPUTE, 'stride')}")
    if ho < 1 or wo < 1:
        problems.append("the layer has no output")
    largest = largest_sum(c, job)
    if largest >= 1 << (c.acc_bits - 1):
        problems.append(f"its sums can reach {largest}, beyond what {c.acc_bits}-bit accumulators hold exactly "
                        f"(build with a larger --max-reduction)")
    if problems:
        raise LayoutError(f"layer {job.name!r} cannot be mapped onto this engine: {'; '.join(problems)}")


def _chunk(job: ConvJob, rows_per_chunk: int, chunk: int) -> tuple:
    """(first output row, output rows, first conv row, conv rows, first input row (may be < 0), input rows,
    padding rows above, padding rows below) of one chunk."""
    r0 = chunk * rows_per_chunk
    return _span(job, r0, min(rows_per_chunk, job.out_shape[0] - r0))


def _span(job: ConvJob, r0: int, rows: int) -> tuple:
    """:func:`_chunk` of the chunk of ``rows`` output rows from row ``r0``."""
    kh, _ = job.kernel
    ho, _ = job.conv_out
    conv0 = r0 * job.pool.stride[0] if job.pool else r0
    conv_rows = min(job.pool.rows_in(rows) if job.pool else rows, ho - conv0)
    iy0 = conv0 * job.row_stride - job.padding[0]
    in_rows = (conv_rows - 1) * job.row_stride + job.dilation * (kh - 1) + 1
    top = max(0, -iy0)
    bottom = max(0, iy0 + in_rows - job.height)
    return r0, rows, conv0, conv_rows, iy0, in_rows, top, bottom


def _bands(job: ConvJob, rows_per_chunk: int, chunk: int, band: int = 0) -> list[tuple]:
    """The bands of a chunk: (first conv row, relative to the chunk's, conv rows, first input row (may be < 0),
    input rows, padding rows above, padding rows below) each. Without ``band``, the chunk is one band.

    Bands serve a pooled row whose window does not fit the buffers at once (a global pool of a large map): its
    conv rows are computed a band at a time, and each band's rows are pooled into the output before the next
    band overwrites them."""
    kh, _ = job.kernel
    _, _, conv0, conv_rows, *_ = _chunk(job, rows_per_chunk, chunk)
    size = band or conv_rows
    out = []
    for b0 in range(0, conv_rows, size):
        n = min(size, conv_rows - b0)
        iy0 = (conv0 + b0) * job.row_stride - job.padding[0]
        in_rows = (n - 1) * job.row_stride + job.dilation * (kh - 1) + 1
        out.append((b0, n, iy0, in_rows, max(0, -iy0), max(0, iy0 + in_rows - job.height)))
    return out


def _reads_real_rows(job: ConvJob, rows: int, band: int = 0) -> bool:
    """Every chunk (every band) reads at least one row of the map (a LOAD of padding alone does not exist)."""
    chunks = ceil_div(job.out_shape[0], rows)
    return all(in_rows - top - bottom >= 1
               for k in range(chunks) for *_, in_rows, top, bottom in _bands(job, rows, k, band))


def _stack_layout(config: AcceleratorConfig, job: ConvJob, rows: int, tiles: _Tiles) -> StackLayout | None:
    return stack_layout(config, job, tiles, *_geometry(job, rows), ceil_div(job.out_shape[0], rows))


def _fits(config: AcceleratorConfig, job: ConvJob, rows: int, order: str, tiles: _Tiles, band: int = 0) -> bool:
    c = config
    _, wo = job.conv_out
    out_w = job.out_shape[1]
    conv_rows, in_rows = _geometry(job, rows, band)
    pitch = job.width + job.padding[1] + job.padding[3]
    layout = None
    if order == "stack":
        if job.packed:                    # sw/compiler/stacking.py tiles at the array's own depth
            return False
        layout = None if band else _stack_layout(c, job, rows, tiles)
        if layout is None:                # (its slots fit the weight buffer twice by construction)
            return False
        order = "chunk"                   # the rest as chunk order (the layout checked the activation buffer)
    elif order == "tall":
        order = "chunk"                   # chunk order with tall tiles (sw/compiler/tall.py checked the fields)
    patches = tiles.slots(order) * in_rows * pitch
    # Patches alternate between two halves of the buffer from one chunk (chunk order) or output tile (block
    # order) or band to the next; a job of one chunk in chunk order has no next chunk to prefetch.
    halves = 1 if order == "chunk" and rows >= job.out_shape[0] and not band and job.samples == 1 else 2
    if layout is None and halves * patches > c.act_buffer_depth:
        return False
    if 2 * sum(_acc_regions(job, rows, band)) > c.acc_buffer_depth:
        return False
    if job.pool is not None and (band or not job.pool.in_place) and not alus_fit(job, conv_rows, rows):
        return False
    if band and job.pool.dilation[0] * out_w > field_max(Opcode.ALU, "src_stride"):
        return False
    if pitch > field_max(Opcode.COMPUTE, "act_pitch"):
        return False
    if conv_rows > field_max(Opcode.COMPUTE, "out_h") or wo > field_max(Opcode.COMPUTE, "out_w"):
        return False
    if out_w > field_max(Opcode.STORE, "x_size") or rows > field_max(Opcode.STORE, "y_size"):
        return False
    if job.scatter is not None and (out_w > field_max(Opcode.STORE, "y_size") or job.scatter.step[1]
                                    * tensor_line_bytes(c) > field_max(Opcode.STORE, "dram_stride")):
        return False
    if order == "block":
        most = max(len(t) for t in tiles.per_block)
        return 2 * most * tiles.slot_taps * job_depth(c, job) <= c.weight_buffer_depth
    return True


def _estimate(config: AcceleratorConfig, job: ConvJob, rows: int, order: str, tiles: _Tiles,
              band: int = 0) -> tuple[int, int]:
    """(cycles, DRAM bytes): the first step's loads, then each step takes the longer of its compute and the
    loads of the step after it, then the last tile's stores. A band counts as a chunk of its own."""
    c = config
    if order == "stack":
        layout = _stack_layout(c, job, rows, tiles)
        return stack_estimate(c, job, layout, rows, *_geometry(job, rows), stack_spans(c, job, layout, rows))
    ho, wo = job.conv_out
    out_h, out_w = job.out_shape
    chunks = ceil_div(out_h, rows) * job.samples
    conv_rows, in_rows = _geometry(job, rows, band)
    if band:
        chunks *= ceil_div(_geometry(job, rows)[0], band)
    alb, wlb, olb = line_bytes(Buffer.ACT, c), line_bytes(Buffer.WEIGHT, c), output_line_bytes(c)
    bus, depth = c.dma_bits // 8, job_depth(c, job)
    burst = 8                                      # cycles of latency and turnaround per DMA request
    fill = depth + c.cols + 8
    per_chunk = tiles.count
    taps = sum(tiles.taps(key[3]) for block in tiles.per_block for key in block) / per_chunk
    patch = in_rows * job.width * alb // bus + burst
    tile = int(taps * depth * wlb) // bus + burst
    # Each tap is an array tile: a batch shorter than 2 rows + cols cannot hide the next tile's shift-in.
    compute = int(taps * max(min(conv_rows, ho) * wo, 2 * depth + c.cols)) + fill
    # The pooling ALUs of a tile, spread over its steps.
    compute += pool_cycles(job, rows, conv_rows, band) * len(tiles.per_block) // max(per_chunk, 1)
    steps = per_chunk * chunks
    patches = sum(tiles.cb_counts)
    weight_bytes = int(per_chunk * taps * depth * wlb)
    if order in ("chunk", "tall"):
        load_cycles = chunks * (patches * patch + per_chunk * tile)
        traffic = chunks * (patches * in_rows * job.width * alb + weight_bytes)
    else:
        reads = sum(len(tiles.needed(nb)) for nb in range(len(tiles.per_block)))
        load_cycles = chunks * reads * patch + per_chunk * tile
        traffic = chunks * reads * in_rows * job.width * alb + weight_bytes
    store = ceil_div(rows * out_w * olb, bus) + burst
    if job.scatter is not None:         # a STORE per row and target, a burst per line when columns spread
        copies = max(len(t) for t in job.scatter.targets)
        store = copies * rows * (ceil_div(out_w * olb, bus) + burst * (out_w if job.scatter.step[1] > 1 else 1))
        traffic += (copies - 1) * ceil_div(job.cout, c.cols) * out_h * out_w * olb * job.samples
    traffic += ceil_div(job.cout, c.cols) * out_h * out_w * olb * job.samples
    per_step_load = load_cycles / steps
    cycles = (patch + tile) + steps * max(compute, per_step_load) + store
    if job.scatter is not None:         # scattered STOREs may take longer than the steps they overlap
        cycles = max(cycles, chunks * len(tiles.per_block) * store)
    # The fetch dispatches an instruction at a time: a weight LOAD and a COMPUTE a step, the patches' LOADs, a STORE
    # (and a pooled tile's ALUs) an output tile.
    out_tiles = chunks * len(tiles.per_block)
    patch_loads = chunks * (patches if order in ("chunk", "tall") else reads)
    weight_loads = out_tiles if order == "tall" else steps        # (tall: one LOAD an output tile)
    instructions = steps + weight_loads + patch_loads + out_tiles * (1 + 2 * (job.pool is not None))
    return int(max(cycles, instructions * fetch_interval(c))), int(traffic)


def plan_job(config: AcceleratorConfig, job: ConvJob, *, order: str | None = None,
             max_rows: int | None = None) -> Plan:
    """The tiling of ``job`` with the fewest estimated cycles (then the least DRAM traffic).

    ``order`` (preferred where it fits) and ``max_rows`` narrow the choice (tests use them to reach every
    tiling)."""
    _check(config, job)
    tiles = _tiles(config, job)
    dense = _tiles(config, job, dense=True)   # stack and tall orders read every channel block in every block

    def tiles_of(kind: str, rows: int) -> _Tiles | None:
        if kind == "tall":
            return tall_tiles(config, job, dense, _geometry(job, rows)[1], job_depth(config, job))
        return dense if kind == "stack" else tiles
    out_rows = job.out_shape[0] if max_rows is None else min(max_rows, job.out_shape[0])
    candidates, padding_only = [], False
    for kind in ("chunk", "block", "stack", "tall"):
        for rows in range(1, out_rows + 1):
            t = tiles_of(kind, rows)
            if t is None or not _fits(config, job, rows, kind, t):
                continue                      # (a taller tile may still fit: a single chunk needs no prefetch)
            if not _reads_real_rows(job, rows):
                padding_only = True
                continue
            cycles, traffic = _estimate(config, job, rows, kind, t)
            candidates.append((cycles, traffic, rows, kind, 0))
    if not candidates:
        for band in _bands_that_fit(config, job, tiles):
            cycles, traffic = _estimate(config, job, 1, "block", tiles, band)
            candidates.append((cycles, traffic, 1, "block", band))
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
    others = [c for c in candidates if c[3] != "tall"]
    if others and order != "tall":          # (sw/compiler/tall.py: where its gain is above the model's error)
        candidates = others + [c for c in candidates if c[3] == "tall" and c[0] <= TALL_GAIN * min(others)[0]]
    cycles, traffic, rows, order, band = min(candidates)
    return Plan(rows, order, cycles, traffic,
                [dict(rows=r, order=o, cycles=cy, dram_bytes=tr, band=bd) for cy, tr, r, o, bd in candidates],
                tiles_of(order, rows), band)


def _bands_that_fit(config: AcceleratorConfig, job: ConvJob, tiles: _Tiles) -> list[int]:
    """Band heights (conv rows) that tile a pooling job of one pooled row per chunk, for when not even one pooled
    row's window fits at once (block order: the weights stay resident while the bands pass)."""
    if job.pool is None:
        return []
    return [band for band in range(1, _geometry(job, 1)[0])
            if _fits(config, job, 1, "block", tiles, band) and _reads_real_rows(job, 1, band)]
