"""What an operator's ``lower`` works with: the network being compiled, where its tensors live, and the engine
jobs so far. Each operator (``sw/ops``) turns its layers into :class:`~sw.compiler.tiling.ConvJob` s through
:meth:`Lowering.add_job`, which also applies a max pool fused into the layer and places the output.

Tensors live in external memory in the engine's blocked layout (``C/m`` blocks of ``H*W`` lines, one code per
lane, ``m`` channels a line: :func:`hw.spec.layout.tensor_lanes`, the array's side on a square one). On a
rectangular array a job sees its channels *spread* over whole blocks of the array's sides: the ``m`` lanes of a
tensor line are ``ceil(m / rows)`` activation blocks (input channel ``ch`` is virtual channel
``(ch // m) * ceil(m / rows) * rows + ch % m``) and ``ceil(m / cols)`` output blocks (likewise with ``cols``), the
last line's only up to the block of its last channel; the virtual channels no lane holds get zero weights (see
:func:`spread`), so the output lines a layer stores are the activation lines the next one loads.

A vector (a linear layer's input or output) is a 1x1 map whose "channels" are memory positions
(``Placement.index``): flatten costs nothing, because the linear layer's weights are permuted at compile time
to the order in which the feature map already sits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import PACKED_INT_BITS, get_format
from hw.spec.layout import tensor_lanes, tensor_line_bytes
from sw.ir import QuantizedNetwork, QuantLayer
from sw.ops import OPERATORS

from .fold import Fold
from .program import ProgramBuilder, Region
from .formats import select_formats
from .requant import Requant
from .tiling import ConvJob, Pool, Scatter, Source, ceil_div

__all__ = ["CompileError", "Placement", "Lowering", "dense_weights"]


class CompileError(ValueError):
    """A network this engine cannot run; the message names the layer and the reason."""


@dataclass
class Placement:
    """Where a tensor lives: a blocked ``channels x height x width`` map at ``region``; for a vector, ``index``
    gives the map channel (memory position) of each element."""

    region: str
    channels: int
    height: int
    width: int
    index: list[int] | None = None
    #: The network's input written im2col'd by the host (see :mod:`sw.compiler.fold`): the map above is the folded one.
    fold: Fold | None = None
    #: Written by the host two codes a slot (a packing multi-format build's int4 input of a packed layer: see
    #: "Packing per layer" in docs/architecture.md): ``2 * tensor_lanes`` channels a line, channel ``k`` of a
    #: line at bits ``4k`` (:func:`tensor_lanes_of`).
    packed: bool = False

    def to_dict(self) -> dict:
        d = {"region": self.region, "channels": self.channels, "height": self.height, "width": self.width,
             "index": self.index}
        d = d if self.fold is None else {**d, "fold": self.fold.to_dict()}
        return {**d, "packed": True} if self.packed else d


@dataclass
class LoweredHost:
    """A host layer between engine programs: its inputs are read from external memory, its output written."""

    layer: QuantLayer


@dataclass
class LoweredJob:
    job: ConvJob
    #: IR layers the job runs: the layer, then any fused into it.
    names: list[str]
    op: str
    output: str
    #: (height, width) of each source's map, and bytes of one sample of each source and of the output (a batched
    #: program's tensors hold their samples one after the other; see sw/compiler/batching.py).
    maps: list[tuple[int, int]]
    source_bytes: list[int]
    out_bytes: int


class Lowering:
    def __init__(self, net: QuantizedNetwork, config: AcceleratorConfig, builder: ProgramBuilder,
                 fused: dict[str, QuantLayer], batch: int = 1):
        self.net, self.config, self.b = net, config, builder
        #: Samples one program run computes: every tensor's region holds that many maps, one after the other.
        self.batch = batch
        #: Max pools fused into the accumulating layer before them: that layer's name -> the pool layer.
        self.fused = fused
        self.placements: dict[str, Placement] = {}
        self.jobs: list[LoweredJob | LoweredHost] = []
        #: Filled when the jobs are emitted: engine programs and host layers in the order they run.
        self.steps: list[dict] = []
        #: Layers of engine operators that run on the host all the same, and why (a mul this engine cannot hold).
        self.host_reasons: dict[str, str] = {}
        #: The formats each layer selects on a multi-format engine (sw/compiler/formats.py).
        self.formats = select_formats(net, config, fused)
        #: Whether int4 layers may run packed (compile_network's ``pack``; a build that packs per layer only).
        self.pack = True

    # --- tensors --------------------------------------------------------------------------------------------
    def place(self, name: str, channels: int, height: int, width: int, fold: Fold | None = None,
              packed: bool = False) -> Placement:
        """Give tensor ``name`` a region of its own: a map of ``channels`` x ``height`` x ``width`` (``fold``: of
        the windows of such a map; ``packed``: two codes a slot)."""
        c = self.config
        if fold is not None:
            channels, height, width = fold.shape(height, width)
        size = ceil_div(channels, tensor_lanes_of(c, packed)) * height * width * tensor_line_bytes(c)
        self.b.region(f"tensor:{name}", size=size * self.batch)
        p = Placement(f"tensor:{name}", channels, height, width, fold=fold, packed=packed)
        self.placements[name] = p
        return p

    def reads_packed(self, tensor: str) -> bool:
        """Whether the host writes ``tensor`` (the network's input) two codes a slot: on a build that packs per
        layer, when its one reader is an ungrouped convolution of a pair the build packs (int4 x int4)."""
        return self._packed_readers(tensor, most=1)

    def writes_packed(self, tensor: str) -> bool:
        """Whether a job's STOREs write ``tensor`` two codes a slot (STORE.packed): every reader is an ungrouped
        convolution of a pair the build packs, and an output line's ``cols`` codes packed are exactly a packed
        tensor line's (``cols = 2 * tensor_lanes``: 2x4, 4x8 at a 128-bit bus, 8x16; not 4x8 at 32 bits, whose
        tensor line is two activation lines). The network's output stays one code a slot."""
        return (tensor != self.net.output and 2 * tensor_lanes(self.config) == self.config.cols
                and self._packed_readers(tensor))

    def _packed_readers(self, tensor: str, most: int | None = None) -> bool:
        c, f = self.config, self.formats
        readers = [layer for layer in self.net.layers if tensor in layer.inputs]
        if not (self.pack and c.packs_per_layer and readers) or (most is not None and len(readers) > most):
            return False
        return all(r.op == "conv" and int(r.attrs.get("groups", 1)) == 1 and len(r.inputs) == 1
                   and (f.weights.get(r.name, 0), f.tensors.get(tensor, 0)) in c.packed_pairs for r in readers)

    def source(self, name: str, layer: QuantLayer) -> Placement:
        p = self.placements.get(name)
        if p is None:
            raise CompileError(f"layer {layer.name!r} reads {name!r}, which no earlier layer writes")
        return p

    def feature_maps(self, layer: QuantLayer) -> list[Placement]:
        """The placements of the layer's inputs, which must be feature maps."""
        ins = [self.source(n, layer) for n in layer.inputs]
        if any(p.index is not None for p in ins):
            raise CompileError(f"layer {layer.name!r} ({layer.op}) needs a feature map, not a vector")
        return ins

    def zero_code(self, tensor: str) -> int:
        return self.net.tensors[tensor].zero_code()

    # --- weights --------------------------------------------------------------------------------------------
    def one(self) -> int:
        """The weight code of 1: identity tiles (pooling, add, concat) are made of it."""
        fmt = get_format(self.net.weight_format)
        code = int(fmt.quantize(1.0))
        if float(fmt.decode(code)) != 1.0:
            raise CompileError(f"the weight format {fmt.name} cannot represent 1, which pooling, add and concat "
                               f"layers need for their identity weights")
        return code

    def identity(self, channels: int, cout: int | None = None, offset: int = 0) -> np.ndarray:
        """1x1 weights (1, 1, 1, channels, cout) that copy input channel c to output channel ``offset + c``."""
        w = np.zeros((1, 1, 1, channels, channels if cout is None else cout), dtype=np.int64)
        w[0, 0, 0, np.arange(channels), offset + np.arange(channels)] = self.one()
        return w

    # --- post-processing --------------------------------------------------------------------------------------
    def requant(self, layer: QuantLayer, channels: int) -> Requant:
        """The layer's post-processing integers, one per output channel, checked against their PARAM fields."""
        def per_channel(name, value, default, lo, hi):
            if value is None:
                if default is None:
                    raise CompileError(f"layer {layer.name!r} has no {name}")
                value = default
            a = np.asarray(value, dtype=object).ravel()
            if a.size == 1:
                a = np.repeat(a, channels)
            if a.size != channels:
                raise CompileError(f"layer {layer.name!r}: {a.size} {name} values for {channels} output channels")
            if not all(lo <= int(v) <= hi for v in a):
                raise CompileError(f"layer {layer.name!r}: {name} must lie in {lo}..{hi} (its PARAM field)")
            return np.array([int(v) for v in a], dtype=np.int64)
        negative = None
        if layer.multiplier_neg is not None or layer.shift_neg is not None:       # a PRelu per channel
            negative = (per_channel("multiplier_neg", layer.multiplier_neg, None, -(1 << 31), (1 << 31) - 1),
                        per_channel("shift_neg", layer.shift_neg, None, 0, 255))
        return Requant(per_channel("bias", layer.bias, 0, -(1 << 63), (1 << 63) - 1),
                       per_channel("multiplier", layer.multiplier, None, -(1 << 31), (1 << 31) - 1),
                       per_channel("shift", layer.shift, None, 0, 255),
                       layer.zero_point, layer.clamp_lo, layer.clamp_hi, layer.table, negative=negative)

    def copy_requant(self, tensor: str, channels: int) -> Requant:
        """Post-processing that gives back the input's codes: ``v = value - zero point``, exactly."""
        e, t = self.net.acc_exponent, self.net.tensors[tensor]
        if e > 0 and t.zero_point:
            raise CompileError(f"tensor {tensor!r}: a zero point needs an accumulator unit of at most 1")
        fmt = self.net.act_format_of(tensor)
        return Requant(np.full(channels, -(t.zero_point << max(0, -e))), np.full(channels, 1 << 30),
                       np.full(channels, 30), t.zero_point, int(fmt.quantize(fmt.min)), int(fmt.quantize(fmt.max)))

    # --- jobs -------------------------------------------------------------------------------------------------
    def add_host(self, layer: QuantLayer, reason: str = "") -> None:
        """A layer the host runs between two engine programs: its output gets a region of its own. ``reason``: why
        a layer of an engine operator runs there (kept in :attr:`host_reasons`)."""
        if reason:
            self.host_reasons[layer.name] = reason
        for name in layer.inputs:
            self.source(name, layer)
        shape = self.net.shapes[layer.output]
        if len(shape) == 3:
            self.place(layer.output, *shape)
        else:
            self.place(layer.output, int(np.prod(shape)), 1, 1).index = list(range(int(np.prod(shape))))
        self.jobs.append(LoweredHost(layer))

    def add_job(self, layer: QuantLayer, sources: list[tuple[Placement, np.ndarray]], cout: int, *,
                kernel: tuple[int, int] = (1, 1), stride: int = 1, dilation: int = 1,
                padding: tuple[int, int, int, int] = (0, 0, 0, 0), pad_value: int | None = None,
                requant: Requant | None = None, pool: Pool | None = None, macs: int = 0,
                view: tuple[int, int, int, int] | None = None, scatter: Scatter | None = None,
                into: Placement | None = None) -> ConvJob:
        """One job for ``layer``: sources are (placement, dense weights (T, kh, kw, C, cout)); the output (after a
        max pool fused into the layer, if any) gets a region of its own. ``view``: (first row, first column,
        height, width) of the sources' maps that the job reads (default: all of them). ``scatter``: where the
        output lines go in the layer's output map (:class:`~sw.compiler.tiling.Scatter`); ``into``: that map's
        placement when an earlier job of the layer made it."""
        p0 = sources[0][0]
        pool_layer = self.fused.get(layer.name)
        out_name = layer.output
        if pool_layer is not None:
            pool, out_name = fused_window(pool_layer), pool_layer.output
        row0, col0, height, width = view or (0, 0, p0.height, p0.width)
        offset = (row0 * p0.width + col0) * tensor_line_bytes(self.config)
        regions = [self.b.regions[p.region] for p, _ in sources]
        requant = requant if requant is not None else self.requant(layer, cout)
        packed = any(p.packed for p, _ in sources)
        if packed and not all(p.packed for p, _ in sources):
            raise CompileError(f"layer {layer.name!r} reads packed and unpacked tensors together")
        # STOREs two codes a slot: output channel k at column k, a packed tensor line an output line.
        packs_out = scatter is None and into is None and self.writes_packed(out_name)
        spread_sources = [(Region(r.addr + offset, r.size - offset),
                           *spread(self.config, p.channels, w, packed, packs_out))
                          for r, (p, w) in zip(regions, sources)]
        job = ConvJob(layer.name, [Source(r, ch, w) for r, ch, w in spread_sources],
                      height, width, spread_channels(self.config, int(cout), packs_out), tuple(int(k) for k in kernel),
                      int(stride), int(dilation), tuple(int(v) for v in padding),
                      self.zero_code(layer.inputs[0]) if pad_value is None else int(pad_value),
                      spread_requant(self.config, requant, packs_out), Region(0, 0), pool)
        job.packs_out = packs_out
        if view is not None:
            job.in_pitch, job.block_pitch = p0.width, p0.height * p0.width
        self._select_formats(layer, job, out_name)
        if packed:                     # two codes a slot: the COMPUTE's depth 2 * rows, the pad code in both nibbles
            job.packed, job.formats = True, {**job.formats, "packed": 1}
            job.pad_value = job.pad_value | job.pad_value << PACKED_INT_BITS
        job.macs = int(macs)
        ho, wo = job.out_shape
        if ho < 1 or wo < 1:
            raise CompileError(f"layer {layer.name!r} has no output on a {p0.height}x{p0.width} input")
        job.scatter = scatter
        if scatter is not None:
            out = into or self.place(out_name, *self.net.shapes[out_name])
        else:
            out = self.place(out_name, int(cout), ho, wo, packed=packs_out)
        if len(self.net.shapes[out_name]) == 1:
            out.index = list(range(int(cout)))
        job.out = self.b.regions[out.region]
        sample = [self.b.regions[p.region].size // self.batch for p in (*(p for p, _ in sources), out)]
        self.jobs.append(LoweredJob(job, [layer.name] + ([pool_layer.name] if pool_layer is not None else []),
                                    layer.op, out_name, [(p.height, p.width) for p, _ in sources], sample[:-1],
                                    sample[-1]))
        return job

    def out_blocks(self, channels: int) -> int:
        """Output blocks of ``cols`` columns that a job computing ``channels`` channels has: a scatter's blocks (on
        a rectangular array, the spread channels' virtual blocks, :func:`spread_channels`)."""
        return ceil_div(spread_channels(self.config, channels), self.config.cols)

    def out_lane(self, channels: int) -> np.ndarray:
        """The job's (virtual) output channel of each of ``channels`` real channels: themselves on a square array."""
        return _lanes(self.config, channels, self.config.cols)

    def rearrange(self, layer: QuantLayer, scatter: Scatter, order: list[int] | None = None) -> None:
        """A layer that only moves its input's lines (nearest upsampling, DepthToSpace): the input's channels in
        ``order`` (the job's output channels, virtual ones on a rectangular array (:meth:`out_lane`); -1: a lane
        nothing fills; None: as they are) are blocks that ``scatter`` places in the
        layer's output. Fused into the STOREs of the jobs that write the input when nothing else reads it (and
        their own scatter, if any, moves whole blocks alike); else a job of its own copies the input through an
        identity tile (the network's input, a host layer's output, a tensor read twice)."""
        x = layer.inputs[0]
        (p,) = self.feature_maps(layer)
        jobs = [j for j in self.jobs if isinstance(j, LoweredJob) and j.output == x]
        readers = sum(name == x for other in self.net.layers for name in other.inputs)
        inner = [_reordered_scatter(j.job, order, spread_channels(self.config, p.channels), self.config.cols)
                 for j in jobs]
        if jobs and readers == 1 and x != self.net.output and all(s is not None for s in inner):
            self.b.release(self.placements.pop(x).region)
            out = self.place(layer.output, *self.net.shapes[layer.output])
            for lowered, mine in zip(jobs, inner):
                if order is not None:
                    permute_outputs(lowered.job, order)
                lowered.job.scatter, lowered.job.out = mine.then(scatter), self.b.regions[out.region]
                lowered.output, lowered.out_bytes = layer.output, lowered.job.out.size // self.batch
                lowered.names.append(layer.name)
            return
        job = self.add_job(layer, [(p, self.identity(p.channels))], p.channels,
                           requant=self.copy_requant(x, p.channels), scatter=scatter)
        if order is not None:
            permute_outputs(job, order)

    def _select_formats(self, layer: QuantLayer, job: ConvJob, out_name: str) -> None:
        """A multi-format engine: the job's COMPUTE formats, and its output format with the clamps in its codes."""
        if self.formats.declared:          # a mixed-format network: its codes and clamps are in these formats
            job.formats = self.formats.compute_fields(layer)
            job.requant.out_format = self.formats.output(out_name)
            job.code_formats = (self.config.weight_formats[self.formats.weights[layer.name]],
                                self.config.act_formats[self.formats.output(layer.inputs[0])])
            return
        if not OPERATORS[layer.op].weighted:
            return
        job.formats = self.formats.compute_fields(layer)
        out = self.formats.output(out_name)
        if out:
            mask = (1 << self.config.act_formats[out].bits) - 1      # the low bits: the same value, narrower
            q = job.requant
            q.out_format, q.clamp_lo, q.clamp_hi = out, q.clamp_lo & mask, q.clamp_hi & mask


def tensor_lanes_of(config: AcceleratorConfig, packed: bool = False) -> int:
    """Channels a tensor line holds: :func:`~hw.spec.layout.tensor_lanes`, twice that for a tensor stored two codes
    a slot (:attr:`Placement.packed`: the same bytes, each slot's codes ``2r`` and ``2r + 1``)."""
    return tensor_lanes(config) * (2 if packed else 1)


def _lanes(config: AcceleratorConfig, channels: int, side: int, packed: bool = False) -> np.ndarray:
    """Virtual channel of each of ``channels`` channels on an array side of ``side`` lanes (see the module's
    docstring): a tensor line's ``m`` lanes are ``ceil(m / side)`` whole blocks of the side."""
    m = tensor_lanes_of(config, packed)
    ch = np.arange(channels)
    return (ch // m) * ceil_div(m, side) * side + ch % m


def _virtual(config: AcceleratorConfig, channels: int, side: int, packed: bool = False) -> int:
    """Virtual channels of ``channels`` on an array side of ``side`` lanes: every tensor line's whole blocks of the
    side but the last line's, which ends with the block of its last channel. A dense layout's last line may
    hold fewer channels than its ``k`` blocks (16 channels on a 32x16 array): the blocks past them would hold no
    channel, so no job computes, stores or reads them (the next job's weights for their lanes are zero)."""
    m = tensor_lanes_of(config, packed)
    full, rest = divmod(channels, m)
    return full * ceil_div(m, side) * side + ceil_div(rest, side) * side


def spread_channels(config: AcceleratorConfig, cout: int, packs_out: bool = False) -> int:
    """A job's output channels, virtual: whole output blocks of ``cols`` columns on a rectangular array
    (``packs_out``: stored two codes a slot, ``2 * tensor_lanes`` channels a block)."""
    if config.reduction_rows == config.cols:
        return cout
    return _virtual(config, cout, config.cols, packs_out)


def spread(config: AcceleratorConfig, channels: int, weights: np.ndarray,
           packed: bool = False, packs_out: bool = False) -> tuple[int, np.ndarray]:
    """(virtual input channels, weights (T, kh, kw, Cin, Cout) with input channels spread over activation blocks
    of ``rows`` lanes and output channels over output blocks of ``cols`` columns), zero at lanes past
    :func:`~hw.spec.layout.tensor_lanes`. A square array's are its own. ``packed``: the input is stored two codes
    a slot and read by packed COMPUTEs, activation blocks of ``packed_reduction_rows`` lanes; ``packs_out``: the
    output is stored two codes a slot (:func:`spread_channels`)."""
    c = config
    if c.reduction_rows == c.cols and not packed:
        return channels, weights
    side = c.packed_reduction_rows if packed else c.reduction_rows
    t, kh, kw, cin, cout = weights.shape
    vin = _virtual(c, channels, side, packed)
    out = np.zeros((t, kh, kw, vin, spread_channels(c, cout, packs_out)), dtype=weights.dtype)
    out[:, :, :, _lanes(c, cin, side, packed)[:, None], _lanes(c, cout, c.cols, packs_out)[None, :]] = weights
    return vin, out


def spread_requant(config: AcceleratorConfig, q: Requant, packs_out: bool = False) -> Requant:
    """Post-processing of the virtual output channels: the real ones' at their columns, zeros at the others."""
    c = config
    if c.reduction_rows == c.cols:
        return q
    cout = q.bias.size
    where = _lanes(c, cout, c.cols, packs_out)

    def put(a):
        out = np.zeros(spread_channels(c, cout, packs_out), dtype=np.int64)
        out[where] = a
        return out
    return Requant(put(q.bias), put(q.multiplier), put(q.shift), q.zero_point, q.clamp_lo, q.clamp_hi, q.table,
                   q.out_format, negative=None if q.negative is None else tuple(put(a) for a in q.negative))


def fused_window(pool_layer: QuantLayer) -> Pool:
    """The window of a max pool fused into the layer before it (unpadded: the conv outputs are the map)."""
    a = pool_layer.attrs
    return Pool("max", tuple(int(k) for k in a["kernel"]), tuple(int(v) for v in a.get("stride", (1, 1))),
                tuple(int(v) for v in a.get("dilation", (1, 1))))


def _reordered_scatter(job: ConvJob, order: list[int] | None, channels: int, cols: int) -> Scatter | None:
    """Where a job's output blocks go once its channels are in ``order`` (see :func:`permute_outputs`): as they
    went, if there is no order; else each new block to the block of its index, at the (row, column) offsets
    the job's scatter gave every block alike. None if its blocks went different ways or its channels are no
    longer the tensor's ``channels`` (virtual ones: :func:`spread_channels`; a DepthToSpace already)."""
    h, w = job.out_shape
    if job.scatter is None:
        return Scatter.identity(ceil_div(job.cout if order is None else len(order), cols), h, w)
    if order is None:
        return job.scatter
    if job.cout != channels:
        return None
    targets = job.scatter.targets
    offsets = [(ry, rx) for _, ry, rx in targets[0]]
    if any([(b, ry, rx) for b, ry, rx in t] != [(nb, ry, rx) for ry, rx in offsets] for nb, t in enumerate(targets)):
        return None
    blocks = ceil_div(len(order), cols)
    return replace(job.scatter, targets=tuple(tuple((nb, ry, rx) for ry, rx in offsets) for nb in range(blocks)))


def permute_outputs(job: ConvJob, order: list[int]) -> None:
    """Reorder (and pad) a job's output channels: new channel k computes old channel ``order[k]`` (-1: nothing;
    its weights and post-processing integers are zero, as a block's unused lanes are)."""
    if order == list(range(job.cout)):
        return
    keep, used = np.array([max(c, 0) for c in order]), np.array([c >= 0 for c in order])
    for src in job.sources:
        src.weights = np.where(used, src.weights[..., keep], 0)
    q = job.requant
    q.bias, q.multiplier, q.shift = (np.where(used, a[keep], 0) for a in (q.bias, q.multiplier, q.shift))
    job.cout = len(order)


def dense_weights(layer: QuantLayer, cin: int) -> np.ndarray:
    """IR conv weights (Cout, Cin/g, kh, kw) per tensor as dense (T, kh, kw, Cin, Cout), zero across groups."""
    groups = int(layer.attrs.get("groups", 1))
    w0 = layer.weights[0]
    cout, cg, kh, kw = w0.shape
    out = np.zeros((len(layer.weights), kh, kw, cin, cout), dtype=np.int64)
    per_group = cout // groups
    for t, w in enumerate(layer.weights):
        for g in range(groups):
            block = np.asarray(w[g * per_group:(g + 1) * per_group], dtype=np.int64)    # (per_group, cg, kh, kw)
            out[t, :, :, g * cg:(g + 1) * cg, g * per_group:(g + 1) * per_group] = block.transpose(2, 3, 1, 0)
    return out


def equal_pair(value, what: str, layer: QuantLayer) -> int:
    """One value for both axes (the engine's stride and dilation fields), or a clear error."""
    v = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if v[0] != v[1]:
        raise CompileError(f"layer {layer.name!r}: {what} {v} differs between height and width; the engine "
                           f"supports equal {what}s only")
    return int(v[0])
