"""Layer kernels: a GEMM and a 2-D convolution lowered to tiled, double-buffered engine programs.

External-memory layouts (lines as in ``hw/spec/layout.py``):

- GEMM ``A (M, K)``: ``K/rows`` blocks of ``M`` lines, block-major; ``W (K, N)``: ``N/cols`` blocks of ``K`` lines;
  output: ``N/cols`` blocks of ``M`` lines.
- Convolution input ``(H, W, Cin)``: ``Cin/rows`` channel blocks of ``H*W`` lines (NHWC, blocked);
  weights ``(kh, kw, Cin, Cout)``: per output block ``nb`` and channel block ``cb``, ``kh*kw`` tiles of ``rows``
  lines; output ``(Ho, Wo, Cout)``: ``Cout/cols`` blocks of ``Ho*Wo`` lines.

K, Cin are padded up to the array rows and N, Cout up to its columns with zero codes (zero in every format).
"""

from __future__ import annotations

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import Buffer
from hw.spec.layout import line_bytes, output_line_bytes, pack_lines, pack_params

from .program import Program, ProgramBuilder, Region, Step
from .splitting import skip_rows
from .requant import Requant
from .emission import emit_job
from .tiling import ConvJob, LayoutError, Source, ceil_div, plan_job

__all__ = ["Requant", "gemm_program", "conv2d_program", "read_gemm_output", "read_conv2d_output"]



def _check_reduction(config: AcceleratorConfig, terms: int, what: str) -> None:
    """Accumulators are exact only up to ``max_reduction`` products; more would wrap silently."""
    if terms > config.max_reduction:
        raise ValueError(f"{what} sums {terms} products per output, more than the {config.max_reduction} the "
                         f"accumulators hold exactly: build with a larger max_reduction (--max-reduction)")


def _param_load(config: AcceleratorConfig, b: ProgramBuilder, q: Requant, blocks: int):
    lines = blocks * q.lines_per_block
    if lines > config.param_buffer_depth:
        raise ValueError(f"{blocks} output blocks need {lines} PARAM lines; the buffer has "
                         f"{config.param_buffer_depth}")
    bias, mult, shift = q.lines(blocks, config.cols)
    r = b.region("params", pack_params(bias, mult, shift, line_bytes(Buffer.PARAM, config)))
    return ("LOAD", dict(buffer=Buffer.PARAM, sram_addr=0, dram_addr=r.addr, y_size=1, x_size=lines))


def gemm_program(config: AcceleratorConfig, a, w, q: Requant) -> Program:
    """``rescale(A @ W)`` for codes ``A (M, K)`` (activations) and ``W (K, N)`` (weights)."""
    c = config
    a, w = np.asarray(a), np.asarray(w)
    (m_total, k), n = a.shape, w.shape[1]
    _check_reduction(c, k, f"GEMM with K={k}")
    kt, nt = ceil_div(k, c.reduction_rows), ceil_div(n, c.cols)
    a_pad = np.zeros((m_total, kt * c.reduction_rows), dtype=np.int64)
    a_pad[:, :k] = a
    w_pad = np.zeros((kt * c.reduction_rows, nt * c.cols), dtype=np.int64)
    w_pad[:k, :n] = w
    alb, wlb, olb = line_bytes(Buffer.ACT, c), line_bytes(Buffer.WEIGHT, c), output_line_bytes(c)
    # Rows of A per chunk: two chunks of A (all K) and two accumulator tiles must fit.
    m = min(m_total, c.act_buffer_depth // (2 * kt), c.acc_buffer_depth // 2, 1023)
    if m < 1 or 2 * c.reduction_rows > c.weight_buffer_depth:
        raise ValueError(f"GEMM with K={k} does not fit the buffers of this configuration")
    chunks = ceil_div(m_total, m)

    b = ProgramBuilder(c)
    blocks_a = np.concatenate([a_pad[:, j * c.reduction_rows:(j + 1) * c.reduction_rows] for j in range(kt)])
    ra = b.region("a", pack_lines(blocks_a, c.acts.bits, alb))
    blocks_w = np.concatenate([w_pad[:, j * c.cols:(j + 1) * c.cols] for j in range(nt)])
    rw = b.region("w", pack_lines(blocks_w, c.weights.bits, wlb))
    out = b.region("out", size=nt * m_total * olb)

    def a_load(chunk, j):
        rows = min(m, m_total - chunk * m)
        return ("LOAD", dict(buffer=Buffer.ACT, sram_addr=(chunk % 2) * kt * m + j * m,
                             dram_addr=ra.addr + (j * m_total + chunk * m) * alb, y_size=1, x_size=rows))

    # A block of chunk c+1 is prefetched during chunk c from its second step on (the region it fills was last
    # read by chunk c-1, whose last compute is then at least two steps back); blocks not prefetched in time are
    # loaded in the step that first needs them.
    steps, s = [], 0
    loaded = set()
    for chunk in range(chunks):
        rows = min(m, m_total - chunk * m)
        prefetch = [(chunk + 1, j) for j in range(kt)] if chunk + 1 < chunks else []
        # Spread the next chunk's blocks over this chunk's steps, so that no step waits for the DMA.
        spacing = max(1, (nt * kt - 1) // max(1, kt))
        local = 0
        for nb in range(nt):
            tile = chunk * nt + nb
            for j in range(kt):
                loads = []
                if (chunk, j) not in loaded:
                    loads.append(a_load(chunk, j))
                    loaded.add((chunk, j))
                elif prefetch and local >= 1 and (local - 1) % spacing == 0:
                    loads.append(a_load(*prefetch[0]))
                    loaded.add(prefetch.pop(0))
                loads.append(("LOAD", dict(buffer=Buffer.WEIGHT, sram_addr=(s % 2) * c.reduction_rows,
                                           dram_addr=rw.addr + (nb * kt * c.reduction_rows + j * c.reduction_rows) * wlb,
                                           y_size=1, x_size=c.reduction_rows)))
                compute = ("COMPUTE", dict(acc_addr=(tile % 2) * m, act_addr=(chunk % 2) * kt * m + j * m,
                                           weight_addr=(s % 2) * c.reduction_rows, out_h=1, out_w=rows, act_pitch=0,
                                           stride=1, dilation=1, kh=1, kw=1, accumulate=int(j > 0)))
                stores = [("STORE", dict(acc_addr=(tile % 2) * m,
                                         dram_addr=out.addr + (nb * m_total + chunk * m) * olb,
                                         y_size=1, x_size=rows, param_addr=nb * q.lines_per_block,
                                         **q.store()))] if j == kt - 1 else []
                steps.append(Step(loads, [compute], begins=j == 0, ends=j == kt - 1, stores=stores))
                s += 1
                local += 1
    b.schedule(steps, prologue=[_param_load(c, b, q, nt)], setpp=q.setpp())
    return b.build(f"gemm {m_total}x{k}x{n}", useful_macs=m_total * k * n)


def read_gemm_output(program: Program, dram, m_total: int, n: int) -> np.ndarray:
    from hw.spec.layout import unpack_lines
    c = program.config
    olb = output_line_bytes(c)
    nt = ceil_div(n, c.cols)
    raw = program.read(dram, "out")
    lines = unpack_lines(raw[:nt * m_total * olb], nt * m_total, c.cols, c.acts.bits, olb)
    return np.concatenate([lines[j * m_total:(j + 1) * m_total] for j in range(nt)], axis=1)[:, :n]


def conv2d_program(config: AcceleratorConfig, x, w, q: Requant, *, stride: int = 1, padding: int = 0,
                   dilation: int = 1, pad_value: int = 0) -> Program:
    """``rescale(conv2d(x, w))`` for codes ``x (H, W, Cin)`` and ``w (kh, kw, Cin, Cout)``: one :class:`ConvJob`."""
    c = config
    x, w = np.asarray(x), np.asarray(w)
    h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    b = ProgramBuilder(c)
    xp = np.zeros((ceil_div(cin, c.reduction_rows), h * wd, c.reduction_rows), dtype=np.int64)
    for cb in range(xp.shape[0]):
        part = x[:, :, cb * c.reduction_rows:(cb + 1) * c.reduction_rows].reshape(h * wd, -1)
        xp[cb, :, :part.shape[1]] = part
    rx = b.region("x", pack_lines(xp.reshape(-1, c.reduction_rows), c.acts.bits, line_bytes(Buffer.ACT, c)))
    job = ConvJob(f"convolution {h}x{wd}x{cin} -> {cout} ({kh}x{kw})", [Source(rx, cin, w[None])], h, wd, cout,
                  (kh, kw), stride, dilation, (padding,) * 4, pad_value, q, Region(0, 0))
    ho, wo = job.conv_out
    if ho < 1 or wo < 1:
        raise LayoutError(f"convolution {h}x{wd} with a {kh}x{kw} kernel (dilation {dilation}) has no output")
    job.out = b.region("out", size=ceil_div(cout, c.cols) * ho * wo * output_line_bytes(c))
    job = skip_rows(c, job)
    emit_job(b, job, plan_job(c, job))
    return b.build(f"conv {h}x{wd}x{cin}->{cout} k{kh}x{kw} s{stride} p{padding} d{dilation}",
                   useful_macs=ho * wo * cout * cin * kh * kw)


def read_conv2d_output(program: Program, dram, ho: int, wo: int, cout: int) -> np.ndarray:
    from hw.spec.layout import unpack_lines
    c = program.config
    olb = output_line_bytes(c)
    nb_n = ceil_div(cout, c.cols)
    raw = program.read(dram, "out")
    lines = unpack_lines(raw[:nb_n * ho * wo * olb], nb_n * ho * wo, c.cols, c.acts.bits, olb)
    blocks = [lines[j * ho * wo:(j + 1) * ho * wo] for j in range(nb_n)]
    return np.concatenate(blocks, axis=1)[:, :cout].reshape(ho, wo, cout)
