"""Jobs the engine cannot tile as they are, split into jobs it can, and jobs made cheaper before tiling.

A map whose single output row does not fit the buffers runs as column *strips* (each a job over a window of the
map with its halo, padded only where the map itself is); more output-channel blocks than half the PARAM buffer
run as channel *groups*; a strided 1x1 convolution loads only the rows it reads (:func:`skip_rows`). The jobs
and their fit and cost come from :mod:`sw.compiler.tiling`.
"""

from __future__ import annotations

from dataclasses import replace

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import Opcode
from hw.spec.layout import tensor_line_bytes, tensor_sublines

from .lines import field_max
from .program import Region
from .tiling import (ConvJob, LayoutError, Pool, _bands_that_fit, _check, _fits, _geometry,
                     _tiles)

__all__ = ["split_job", "skip_rows"]


def split_job(config: AcceleratorConfig, job: ConvJob) -> list[ConvJob]:
    """``job`` as jobs the engine can tile: column strips if one output row of it does not fit the buffers, and
    groups of output channels if it has more output blocks than half the PARAM buffer holds."""
    _check(config, job)
    return [skip_rows(config, g) for strip in _strips(config, job) for g in _channel_groups(config, strip)]


def skip_rows(config: AcceleratorConfig, job: ConvJob) -> ConvJob:
    """A 1x1 convolution at stride s > 1 without padding reads every s-th row of its input: load only those
    (the LOAD's DRAM stride s rows) and walk them at vertical stride 1. The COMPUTE has one stride for both
    directions, so its row pitch becomes the buffer's pitch / s (the rows padded on the right to a multiple of s:
    lines no output reads). Fewer lines per output row let a chunk hold more rows, and each weight tile streams
    more vectors per fill of the array. ``job`` as it is where the padded rows would not fit the buffers (its
    column strips were sized without them) or the LOAD's DRAM stride field cannot hold s rows."""
    s = job.stride
    if job.kernel != (1, 1) or s == 1 or any(job.padding) or job.pool is not None or job.stride_h is not None:
        return job
    if s * job.src_pitch * tensor_line_bytes(config) > field_max(Opcode.LOAD, "dram_stride"):
        return job
    ho, _ = job.conv_out
    skipping = replace(job, height=ho, in_pitch=s * job.src_pitch, stride_h=1, padding=(0, 0, 0, -job.width % s),
                       block_pitch=job.height * job.src_pitch if job.block_pitch is None else job.block_pitch,
                       macs=job.useful_macs)
    tiles = _tiles(config, skipping)
    return skipping if any(_fits(config, skipping, 1, order, tiles) for order in ("chunk", "block")) else job


def _strips(config: AcceleratorConfig, job: ConvJob) -> list[ConvJob]:
    tiles = _tiles(config, job)
    out_w = job.out_shape[1]

    def fits(j, banded):
        if banded:
            return bool(_bands_that_fit(config, j, tiles))
        return any(_fits(config, j, 1, order, tiles) for order in ("chunk", "block"))
    width = None
    for banded in (False, True):          # bands only where no strip fits whole windows
        if fits(job, banded):
            return [job]
        width = next((w for w in range(out_w - 1, 0, -1) if fits(_strip(config, job, 0, w), banded)), None)
        if width is not None:
            break
    if width is None:
        raise LayoutError(f"layer {job.name!r} cannot be mapped onto this engine: one output pixel "
                          f"({tiles.slots('block')} input channel blocks of a {_geometry(job, 1)[1]}-row window) "
                          f"does not fit the buffers (activations {config.act_buffer_depth}, accumulators "
                          f"{config.acc_buffer_depth} lines)")
    return [_strip(config, job, x0, min(x0 + width, out_w)) for x0 in range(0, out_w, width)]


def _strip(config: AcceleratorConfig, job: ConvJob, x0: int, x1: int) -> ConvJob:
    """The part of ``job`` that makes output columns ``x0 .. x1-1``: a window of its input with the halo the
    kernel needs, padded only where the map itself is, writing into the full-width output."""
    pool = job.pool or Pool("max", (1, 1), (1, 1))
    cx0 = x0 * pool.stride[1]                                   # conv output columns the strip needs
    cx1 = (x1 - 1) * pool.stride[1] + pool.dilation[1] * (pool.kernel[1] - 1) + 1
    (_, kw), (top, left, bottom, _), s, d = job.kernel, job.padding, job.stride, job.dilation
    ix0, ix1 = cx0 * s - left, (cx1 - 1) * s + d * (kw - 1) + 1 - left
    lo, hi = max(ix0, 0), min(ix1, job.width)
    tlb = tensor_line_bytes(config)
    sources = [replace(src, region=Region(src.region.addr + lo * tlb, src.region.size - lo * tlb))
               for src in job.sources]
    strip = replace(job, name=f"{job.name}[x{x0}:{x1}]", sources=sources, width=hi - lo,
                    padding=(top, lo - ix0, bottom, ix1 - hi), in_pitch=job.src_pitch, out_pitch=job.dst_pitch,
                    out=Region(job.out.addr + x0 * tlb, job.out.size - x0 * tlb), macs=None)
    if job.scatter is not None:         # the scatter places the strip's columns
        return replace(strip, out=job.out, scatter=replace(job.scatter, col0=job.scatter.col0 + x0))
    return strip


def _channel_groups(config: AcceleratorConfig, job: ConvJob) -> list[ConvJob]:
    c = config
    # Each job has half the PARAM buffer (the next job's lines load beside it); a PRelu's two lines per block halve
    # the channels that fit; output blocks sharing a tensor line stay in one group.
    ko = tensor_sublines(c)[1]
    per_group = (c.param_buffer_depth // 2 // job.requant.lines_per_block) // ko * ko * c.cols
    if per_group == 0:
        raise LayoutError(f"layer {job.name!r}: a PRelu per channel needs two PARAM lines per block of output "
                          f"channels and half the PARAM buffer per layer; build with param_buffer_depth >= 4")
    if job.cout <= per_group:
        return [job]
    tlb = tensor_line_bytes(c)
    block_lines = job.out_block_lines
    q = job.requant
    groups = []
    for c0 in range(0, job.cout, per_group):
        c1 = min(c0 + per_group, job.cout)
        offset = (c0 // c.cols // ko) * block_lines * tlb
        scatter = job.scatter
        if scatter is not None:         # the scatter places the group's blocks
            scatter, offset = replace(scatter, targets=scatter.targets[c0 // c.cols:-(-c1 // c.cols)]), 0
        groups.append(replace(
            job, name=f"{job.name}[c{c0}:{c1}]", cout=c1 - c0, macs=None, out_pitch=job.dst_pitch,
            sources=[replace(src, weights=src.weights[..., c0:c1]) for src in job.sources],
            requant=q.channels(c0, c1),
            out=Region(job.out.addr + offset, job.out.size - offset), scatter=scatter))
    return groups
