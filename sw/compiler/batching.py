"""One program for a batch of samples (``sw.compile --batch N``): a layer's job as the jobs that run it on all N.

Every tensor holds the batch sample after sample: sample n's map (``C/cols`` blocks of ``H*W`` lines, as for one
sample) starts ``n`` map sizes into the tensor's region, so the host writes and reads a batch as N samples' bytes
one after the other.

A job on vectors (every input a 1x1 map: a linear layer, a 1x1 convolution on a 1x1 map, an add of vectors) runs
*once* for the whole batch: the N vectors are an ``N x 1`` map whose rows are one sample apart in external memory
(``in_pitch`` the lines of a sample, ``block_pitch`` one line), written back the same way (``out_pitch`` and
``out_block_pitch``). Each weight tile is then loaded once and streams N vectors through the array (a GEMM with
M = N) instead of one. Any other job (a convolution of a map) runs its chunks for one sample after the other in
one schedule (``ConvJob.samples``): no barrier between samples, and in ``block`` order an output block's weights
stay resident while every sample passes.
"""

from __future__ import annotations

from dataclasses import replace

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import Buffer, Opcode
from hw.spec.layout import line_bytes, output_line_bytes

from .lines import field_max
from .tiling import ConvJob

__all__ = ["batch_jobs", "stacked_job"]


def batch_jobs(config: AcceleratorConfig, job: ConvJob, maps: list[tuple[int, int]], source_bytes: list[int],
               out_bytes: int, batch: int) -> list[ConvJob]:
    """``job`` (one sample's) as the job that runs it on ``batch`` samples: over the batch's vectors at once
    (:func:`stacked_job`) where it can be, else over the samples one after the other. ``maps``: (height, width)
    of each source's tensor; ``source_bytes`` / ``out_bytes``: bytes of one sample of each source and of the
    output."""
    if batch == 1:
        return [job]
    stacked = stacked_job(config, job, maps, source_bytes, out_bytes, batch)
    if stacked is not None:
        return [stacked]
    return [replace(job, samples=batch, sample_bytes=tuple(source_bytes), out_sample_bytes=out_bytes,
                    macs=None if job.macs is None else job.macs * batch)]


def stacked_job(config: AcceleratorConfig, job: ConvJob, maps: list[tuple[int, int]], source_bytes: list[int],
                out_bytes: int, batch: int) -> ConvJob | None:
    """The job over all ``batch`` samples' vectors at once as an ``batch x 1`` map, or None where ``job`` is not on
    vectors (a source map larger than 1x1, a kernel, padding, pooling, a view of a map) or the layout cannot be
    walked that way (sources of different lengths, a sample farther apart than a LOAD's or STORE's stride)."""
    alb, olb = line_bytes(Buffer.ACT, config), output_line_bytes(config)
    if (any(m != (1, 1) for m in maps) or (job.height, job.width) != (1, 1) or job.kernel != (1, 1)
            or any(job.padding) or job.pool is not None or job.out_shape != (1, 1) or alb != olb
            or job.in_pitch is not None or job.block_pitch is not None or job.out_pitch is not None
            or job.out_block_pitch is not None or job.stride_h is not None or len(set(source_bytes)) != 1):
        return None
    in_lines, out_lines = source_bytes[0] // olb, out_bytes // olb
    if (in_lines * olb != source_bytes[0] or out_lines * olb != out_bytes
            or source_bytes[0] > field_max(Opcode.LOAD, "dram_stride")
            or out_bytes > field_max(Opcode.STORE, "dram_stride")):
        return None
    return replace(job, height=batch, width=1, stride=1, dilation=1, in_pitch=in_lines, block_pitch=1,
                   out_pitch=out_lines, out_block_pitch=1, macs=None if job.macs is None else job.macs * batch)
