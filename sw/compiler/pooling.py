"""The ALU instructions that pool a job's output tile on the accumulators (see :class:`sw.compiler.tiling.Pool`):
in place where the windows do not overlap, else separable (a row pass, then a column pass), or a band of conv rows
at a time into one pooled row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hw.spec.isa import AluOp, Opcode

from .lines import field_max

if TYPE_CHECKING:
    from .tiling import ConvJob

__all__ = ["alus_fit", "pool_alus", "band_pool_alus", "pool_cycles"]


def alus_fit(job: ConvJob, conv_rows: int, rows: int) -> bool:
    """The separable pooling's ALU instructions can address a tile of ``rows`` pooled rows."""
    (_, sw), wp, wo = job.pool.stride, job.out_shape[1], job.conv_out[1]
    return (max(conv_rows, rows) <= field_max(Opcode.ALU, "y_size") and wp <= field_max(Opcode.ALU, "x_size")
            and max(wo, job.pool.stride[0] * wp) <= field_max(Opcode.ALU, "src_stride")
            and (wp == 1 or sw <= field_max(Opcode.ALU, "src_step")))


def pool_cycles(job: ConvJob, rows: int, conv_rows: int, band: int = 0) -> int:
    """Cycles of the ALUs that pool an output tile of ``rows`` pooled rows from ``conv_rows`` conv rows (``band``:
    per band of that many conv rows), an accumulator line a cycle: the compiler's cost models count them."""
    if job.pool is None:
        return 0
    (kh, kw), wo, wp = job.pool.kernel, job.conv_out[1], job.out_shape[1]
    if job.pool.in_place and not band:
        return (kh - 1) * rows * wo + (kw - 1) * conv_rows * wo
    return kw * conv_rows * wp + (conv_rows if band else kh * rows) * wp


def pool_alus(job: ConvJob, base: int, pooled: int, conv_rows: int, wo: int, regions: tuple) -> list:
    """The ALU instructions that pool one output tile (see :class:`sw.compiler.tiling.Pool`)."""
    if job.pool.in_place:
        return _in_place_alus(job, base, pooled, conv_rows, wo)
    (kh, kw), (sh, sw), (dh, dw) = job.pool.kernel, job.pool.stride, job.pool.dilation
    wp = job.out_shape[1]
    op = int(AluOp.MAX if job.pool.kind == "max" else AluOp.ADD)
    rows_base, out_base = base + regions[0], base + regions[0] + regions[1]
    alus = [("ALU", dict(op=int(AluOp.COPY) if kx == 0 else op, dst_addr=rows_base, src_addr=base + kx * dw,
                         y_size=conv_rows, x_size=wp, dst_stride=wp, src_stride=wo, src_step=sw if wp > 1 else 1))
            for kx in range(kw)]
    alus += [("ALU", dict(op=int(AluOp.COPY) if ky == 0 else op, dst_addr=out_base,
                          src_addr=rows_base + ky * dh * wp, y_size=pooled, x_size=wp, dst_stride=wp,
                          src_stride=sh * wp, src_step=1))
             for ky in range(kh)]
    return alus


def band_pool_alus(job: ConvJob, base: int, band: tuple, wo: int, regions: tuple) -> list:
    """The ALU instructions that pool one band of conv rows into a tile's one pooled row: the row pass over the
    band (as :func:`pool_alus`), then the band's rows the window takes combined into the pooled row, which the
    band at the window's first row starts with a COPY."""
    (kh, kw), (_, sw), (dh, dw) = job.pool.kernel, job.pool.stride, job.pool.dilation
    b0, n = band[:2]
    wp = job.out_shape[1]
    op = int(AluOp.MAX if job.pool.kind == "max" else AluOp.ADD)
    rows_base, out_base = base + regions[0], base + regions[0] + regions[1]
    alus = [("ALU", dict(op=int(AluOp.COPY) if kx == 0 else op, dst_addr=rows_base, src_addr=base + kx * dw,
                         y_size=n, x_size=wp, dst_stride=wp, src_stride=wo, src_step=sw if wp > 1 else 1))
            for kx in range(kw)]
    taps = [ky for ky in range(kh) if b0 <= ky * dh < b0 + n]
    if taps and taps[0] == 0:
        alus.append(("ALU", dict(op=int(AluOp.COPY), dst_addr=out_base, src_addr=rows_base - b0 * wp, y_size=1,
                                 x_size=wp, dst_stride=0, src_stride=0, src_step=1)))
        taps = taps[1:]
    if taps:            # the rows one after the other into the same pooled row (dst_stride 0)
        alus.append(("ALU", dict(op=op, dst_addr=out_base, src_addr=rows_base + (taps[0] * dh - b0) * wp,
                                 y_size=len(taps), x_size=wp, dst_stride=0, src_stride=dh * wp, src_step=1)))
    return alus


def _in_place_alus(job: ConvJob, base: int, pooled: int, conv_rows: int, wo: int) -> list:
    """ALU MAX ops leaving each window's maximum in its top-left accumulator line (windows never overlap)."""
    (pkh, pkw), (psh, psw) = job.pool.kernel, job.pool.stride
    alus = []
    for dy in range(1, pkh):
        alus.append(("ALU", dict(op=int(AluOp.MAX), dst_addr=base, src_addr=base + dy * wo, y_size=pooled,
                                 x_size=wo, dst_stride=psh * wo, src_stride=psh * wo, src_step=1)))
    wp = (wo - pkw) // psw + 1
    for dx in range(1, pkw):
        if wo % psw == 0 and conv_rows * wo // psw <= field_max(Opcode.ALU, "y_size"):
            alus.append(("ALU", dict(op=int(AluOp.MAX), dst_addr=base, src_addr=base + dx,
                                     y_size=conv_rows * wo // psw, x_size=1, dst_stride=psw, src_stride=psw,
                                     src_step=1)))
        else:
            for r in range(pooled):
                row = base + r * psh * wo
                alus.append(("ALU", dict(op=int(AluOp.MAX), dst_addr=row, src_addr=row + dx, y_size=wp,
                                         x_size=1, dst_stride=psw, src_stride=psw, src_step=1)))
    return alus
