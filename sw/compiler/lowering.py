"""What an operator's ``lower`` works with: the network being compiled, where its tensors live, and the engine
jobs so far. Each operator (``sw/ops``) turns its layers into :class:`~sw.compiler.tiling.ConvJob` s through
:meth:`Lowering.add_job`, which also applies a max pool fused into the layer and places the output.

Tensors live in external memory in the engine's blocked layout (``C/cols`` blocks of ``H*W`` lines, one code per
lane). A vector (a linear layer's input or output) is a 1x1 map whose "channels" are memory positions
(``Placement.index``): flatten costs nothing, because the linear layer's weights are permuted at compile time
to the order in which the feature map already sits in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from hw.spec.isa import Buffer
from hw.spec.layout import line_bytes, output_line_bytes
from sw.ir import QuantizedNetwork, QuantLayer
from sw.ops import OPERATORS

from .fold import Fold
from .program import ProgramBuilder, Region
from .formats import select_formats
from .tiling import ConvJob, Pool, Requant, Source, ceil_div

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

    def to_dict(self) -> dict:
        d = {"region": self.region, "channels": self.channels, "height": self.height, "width": self.width,
             "index": self.index}
        return d if self.fold is None else {**d, "fold": self.fold.to_dict()}


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


class Lowering:
    def __init__(self, net: QuantizedNetwork, config: AcceleratorConfig, builder: ProgramBuilder,
                 fused: dict[str, QuantLayer]):
        self.net, self.config, self.b = net, config, builder
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

    # --- tensors --------------------------------------------------------------------------------------------
    def place(self, name: str, channels: int, height: int, width: int, fold: Fold | None = None) -> Placement:
        """Give tensor ``name`` a region of its own: a map of ``channels`` x ``height`` x ``width`` (``fold``: of
        the windows of such a map)."""
        c = self.config
        if fold is not None:
            channels, height, width = fold.shape(height, width)
        size = ceil_div(channels, c.cols) * height * width * output_line_bytes(c)
        self.b.region(f"tensor:{name}", size=size)
        p = Placement(f"tensor:{name}", channels, height, width, fold=fold)
        self.placements[name] = p
        return p

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
        return Requant(per_channel("bias", layer.bias, 0, -(1 << 63), (1 << 63) - 1),
                       per_channel("multiplier", layer.multiplier, None, -(1 << 31), (1 << 31) - 1),
                       per_channel("shift", layer.shift, None, 0, 255),
                       layer.zero_point, layer.clamp_lo, layer.clamp_hi, layer.table)

    def copy_requant(self, tensor: str, channels: int) -> Requant:
        """Post-processing that gives back the input's codes: ``v = value - zero point``, exactly."""
        e, t = self.net.acc_exponent, self.net.tensors[tensor]
        if e > 0 and t.zero_point:
            raise CompileError(f"tensor {tensor!r}: a zero point needs an accumulator unit of at most 1")
        fmt = get_format(self.net.act_format)
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
                view: tuple[int, int, int, int] | None = None) -> ConvJob:
        """One job for ``layer``: sources are (placement, dense weights (T, kh, kw, C, cout)); the output (after a
        max pool fused into the layer, if any) gets a region of its own. ``view``: (first row, first column,
        height, width) of the sources' maps that the job reads (default: all of them)."""
        p0 = sources[0][0]
        pool_layer = self.fused.get(layer.name)
        out_name = layer.output
        if pool_layer is not None:
            pool, out_name = fused_window(pool_layer), pool_layer.output
        row0, col0, height, width = view or (0, 0, p0.height, p0.width)
        offset = (row0 * p0.width + col0) * line_bytes(Buffer.ACT, self.config)
        regions = [self.b.regions[p.region] for p, _ in sources]
        job = ConvJob(layer.name, [Source(Region(r.addr + offset, r.size - offset), p.channels, w)
                                   for r, (p, w) in zip(regions, sources)],
                      height, width, int(cout), tuple(int(k) for k in kernel), int(stride), int(dilation),
                      tuple(int(v) for v in padding),
                      self.zero_code(layer.inputs[0]) if pad_value is None else int(pad_value),
                      requant if requant is not None else self.requant(layer, cout), Region(0, 0), pool)
        if view is not None:
            job.in_pitch, job.block_pitch = p0.width, p0.height * p0.width
        self._select_formats(layer, job, out_name)
        job.macs = int(macs)
        ho, wo = job.out_shape
        if ho < 1 or wo < 1:
            raise CompileError(f"layer {layer.name!r} has no output on a {p0.height}x{p0.width} input")
        out = self.place(out_name, int(cout), ho, wo)
        if len(self.net.shapes[out_name]) == 1:
            out.index = list(range(int(cout)))
        job.out = self.b.regions[out.region]
        self.jobs.append(LoweredJob(job, [layer.name] + ([pool_layer.name] if pool_layer is not None else []),
                                    layer.op, out_name))
        return job


    def _select_formats(self, layer: QuantLayer, job: ConvJob, out_name: str) -> None:
        """A multi-format engine: the job's COMPUTE formats, and its output format with the clamps in its codes."""
        if not OPERATORS[layer.op].weighted:
            return
        job.formats = self.formats.compute_fields(layer)
        out = self.formats.output(out_name)
        if out:
            mask = (1 << self.config.act_formats[out].bits) - 1      # the low bits: the same value, narrower
            q = job.requant
            q.out_format, q.clamp_lo, q.clamp_hi = out, q.clamp_lo & mask, q.clamp_hi & mask


def fused_window(pool_layer: QuantLayer) -> Pool:
    """The window of a max pool fused into the layer before it (unpadded: the conv outputs are the map)."""
    a = pool_layer.attrs
    return Pool("max", tuple(int(k) for k in a["kernel"]), tuple(int(v) for v in a.get("stride", (1, 1))),
                tuple(int(v) for v in a.get("dilation", (1, 1))))


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
