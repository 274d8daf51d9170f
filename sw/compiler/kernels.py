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

from .program import Program, ProgramBuilder, Step

__all__ = ["Requant", "gemm_program", "conv2d_program", "read_gemm_output", "read_conv2d_output"]


class Requant:
    """Per-output-channel bias, multiplier and shift, plus zero point and clamp codes (see SETPP)."""

    def __init__(self, bias, multiplier, shift, zero_point: int = 0, clamp_lo: int = 0, clamp_hi: int = 0):
        self.bias = np.asarray(bias, dtype=np.int64)
        self.multiplier = np.asarray(multiplier, dtype=np.int64)
        self.shift = np.asarray(shift, dtype=np.int64)
        self.zero_point, self.clamp_lo, self.clamp_hi = zero_point, clamp_lo, clamp_hi

    def lines(self, blocks: int, cols: int):
        def pad(a):
            out = np.zeros(blocks * cols, dtype=np.int64)
            out[:a.size] = a
            return out.reshape(blocks, cols)
        return pad(self.bias), pad(self.multiplier), pad(self.shift)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _check_reduction(config: AcceleratorConfig, terms: int, what: str) -> None:
    """Accumulators are exact only up to ``max_reduction`` products; more would wrap silently."""
    if terms > config.max_reduction:
        raise ValueError(f"{what} sums {terms} products per output, more than the {config.max_reduction} the "
                         f"accumulators hold exactly: build with a larger max_reduction (--max-reduction)")


def _setpp(q: Requant) -> dict:
    return {"zero_point": q.zero_point, "clamp_lo": q.clamp_lo, "clamp_hi": q.clamp_hi}


def _param_load(config: AcceleratorConfig, b: ProgramBuilder, q: Requant, blocks: int):
    if blocks > config.param_buffer_depth:
        raise ValueError(f"{blocks} output blocks need {blocks} PARAM lines; the buffer has "
                         f"{config.param_buffer_depth}")
    bias, mult, shift = q.lines(blocks, config.cols)
    r = b.region("params", pack_params(bias, mult, shift, line_bytes(Buffer.PARAM, config)))
    return ("LOAD", dict(buffer=Buffer.PARAM, sram_addr=0, dram_addr=r.addr, y_size=1, x_size=blocks))


def gemm_program(config: AcceleratorConfig, a, w, q: Requant) -> Program:
    """``rescale(A @ W)`` for codes ``A (M, K)`` (activations) and ``W (K, N)`` (weights)."""
    c = config
    a, w = np.asarray(a), np.asarray(w)
    (m_total, k), n = a.shape, w.shape[1]
    _check_reduction(c, k, f"GEMM with K={k}")
    kt, nt = _ceil(k, c.rows), _ceil(n, c.cols)
    a_pad = np.zeros((m_total, kt * c.rows), dtype=np.int64)
    a_pad[:, :k] = a
    w_pad = np.zeros((kt * c.rows, nt * c.cols), dtype=np.int64)
    w_pad[:k, :n] = w
    alb, wlb, olb = line_bytes(Buffer.ACT, c), line_bytes(Buffer.WEIGHT, c), output_line_bytes(c)
    # Rows of A per chunk: two chunks of A (all K) and two accumulator tiles must fit.
    m = min(m_total, c.act_buffer_depth // (2 * kt), c.acc_buffer_depth // 2, 1023)
    if m < 1 or 2 * c.rows > c.weight_buffer_depth:
        raise ValueError(f"GEMM with K={k} does not fit the buffers of this configuration")
    chunks = _ceil(m_total, m)

    b = ProgramBuilder(c)
    blocks_a = np.concatenate([a_pad[:, j * c.rows:(j + 1) * c.rows] for j in range(kt)])
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
                loads.append(("LOAD", dict(buffer=Buffer.WEIGHT, sram_addr=(s % 2) * c.rows,
                                           dram_addr=rw.addr + (nb * kt * c.rows + j * c.rows) * wlb,
                                           y_size=1, x_size=c.rows)))
                compute = ("COMPUTE", dict(acc_addr=(tile % 2) * m, act_addr=(chunk % 2) * kt * m + j * m,
                                           weight_addr=(s % 2) * c.rows, out_h=1, out_w=rows, act_pitch=0,
                                           stride=1, dilation=1, kh=1, kw=1, accumulate=int(j > 0)))
                stores = [("STORE", dict(acc_addr=(tile % 2) * m,
                                         dram_addr=out.addr + (nb * m_total + chunk * m) * olb,
                                         y_size=1, x_size=rows, param_addr=nb))] if j == kt - 1 else []
                steps.append(Step(loads, [compute], begins=j == 0, ends=j == kt - 1, stores=stores))
                s += 1
                local += 1
    b.schedule(steps, prologue=[_param_load(c, b, q, nt)], setpp=_setpp(q))
    return b.build(f"gemm {m_total}x{k}x{n}", useful_macs=m_total * k * n)


def read_gemm_output(program: Program, dram, m_total: int, n: int) -> np.ndarray:
    from hw.spec.layout import unpack_lines
    c = program.config
    olb = output_line_bytes(c)
    nt = _ceil(n, c.cols)
    raw = program.read(dram, "out")
    lines = unpack_lines(raw[:nt * m_total * olb], nt * m_total, c.cols, c.acts.bits, olb)
    return np.concatenate([lines[j * m_total:(j + 1) * m_total] for j in range(nt)], axis=1)[:, :n]


def conv2d_program(config: AcceleratorConfig, x, w, q: Requant, *, stride: int = 1, padding: int = 0,
                   dilation: int = 1, pad_value: int = 0) -> Program:
    """``rescale(conv2d(x, w))`` for codes ``x (H, W, Cin)`` and ``w (kh, kw, Cin, Cout)``."""
    c = config
    x, w = np.asarray(x), np.asarray(w)
    h, wd, cin = x.shape
    kh, kw, _, cout = w.shape
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    if not 0 <= padding <= dilation * (kh - 1) or padding > 7:
        raise ValueError(f"padding {padding} must be in 0..min(7, dilation*(kernel-1) = {dilation * (kh - 1)}): "
                         f"more would make outputs that see only padding")
    if ho < 1 or wo < 1:
        raise ValueError(f"convolution {h}x{wd} with a {kh}x{kw} kernel (dilation {dilation}) has no output")
    cb_n, nb_n = _ceil(cin, c.rows), _ceil(cout, c.cols)
    _check_reduction(c, cb_n * c.rows * kh * kw, f"convolution {h}x{wd}x{cin} -> {cout} ({kh}x{kw})")
    alb, wlb, olb = line_bytes(Buffer.ACT, c), line_bytes(Buffer.WEIGHT, c), output_line_bytes(c)
    pitch = wd + 2 * padding
    # Output rows per chunk: two input patches (all channel blocks) and two accumulator tiles must fit.
    rows_in = lambda r: (r - 1) * stride + dilation * (kh - 1) + 1   # noqa: E731
    ho_t = 1
    while (ho_t < ho and 2 * cb_n * rows_in(ho_t + 1) * pitch <= c.act_buffer_depth
           and 2 * (ho_t + 1) * wo <= c.acc_buffer_depth and (ho_t + 1) * wo <= 1023):
        ho_t += 1
    patch = rows_in(ho_t) * pitch
    if 2 * cb_n * patch > c.act_buffer_depth or 2 * wo > c.acc_buffer_depth or 2 * kh * kw * c.rows > \
            c.weight_buffer_depth or pitch > 1023:
        raise ValueError(f"convolution {h}x{wd}x{cin} -> {cout} ({kh}x{kw}) does not fit the buffers")

    b = ProgramBuilder(c)
    xp = np.zeros((cb_n, h * wd, c.rows), dtype=np.int64)
    for cb in range(cb_n):
        part = x[:, :, cb * c.rows:(cb + 1) * c.rows].reshape(h * wd, -1)
        xp[cb, :, :part.shape[1]] = part
    rx = b.region("x", pack_lines(xp.reshape(-1, c.rows), c.acts.bits, alb))
    wp = np.zeros((nb_n, cb_n, kh * kw * c.rows, c.cols), dtype=np.int64)
    for nb in range(nb_n):
        for cb in range(cb_n):
            part = w[:, :, cb * c.rows:(cb + 1) * c.rows, nb * c.cols:(nb + 1) * c.cols]
            tile = np.zeros((kh, kw, c.rows, c.cols), dtype=np.int64)
            tile[:, :, :part.shape[2], :part.shape[3]] = part
            wp[nb, cb] = tile.reshape(kh * kw * c.rows, c.cols)
    rw = b.region("w", pack_lines(wp.reshape(-1, c.cols), c.weights.bits, wlb))
    out = b.region("out", size=nb_n * ho * wo * olb)
    w_tile = kh * kw * c.rows

    chunks = _ceil(ho, ho_t)
    steps, s = [], 0
    for chunk in range(chunks):
        oy0 = chunk * ho_t
        out_rows = min(ho_t, ho - oy0)
        iy0 = oy0 * stride - padding                      # first input row of the patch (may be < 0)
        in_rows = rows_in(out_rows)
        top = max(0, -iy0)
        bottom = max(0, iy0 + in_rows - h)
        real = in_rows - top - bottom
        region_base = (chunk % 2) * cb_n * patch

        def patch_load(cb):
            return ("LOAD", dict(buffer=Buffer.ACT, sram_addr=region_base + cb * patch,
                                 dram_addr=rx.addr + (cb * h * wd + max(iy0, 0) * wd) * alb,
                                 y_size=real, x_size=wd, dram_stride=wd * alb, pad_top=top, pad_bottom=bottom,
                                 pad_left=padding, pad_right=padding, pad_value=pad_value))
        for nb in range(nb_n):
            tile = chunk * nb_n + nb
            for cb in range(cb_n):
                # A chunk's patches arrive with its first output block, each just before its first use; the
                # region they fill was last read two chunks ago (see ProgramBuilder.schedule).
                loads = [patch_load(cb)] if nb == 0 else []
                loads.append(("LOAD", dict(buffer=Buffer.WEIGHT, sram_addr=(s % 2) * w_tile,
                                           dram_addr=rw.addr + ((nb * cb_n + cb) * w_tile) * wlb,
                                           y_size=1, x_size=w_tile)))
                compute = ("COMPUTE", dict(acc_addr=(tile % 2) * ho_t * wo,
                                           act_addr=region_base + cb * patch, weight_addr=(s % 2) * w_tile,
                                           out_h=out_rows, out_w=wo, act_pitch=pitch, stride=stride,
                                           dilation=dilation, kh=kh, kw=kw, accumulate=int(cb > 0)))
                stores = [("STORE", dict(acc_addr=(tile % 2) * ho_t * wo,
                                         dram_addr=out.addr + (nb * ho * wo + oy0 * wo) * olb,
                                         y_size=1, x_size=out_rows * wo, param_addr=nb))] \
                    if cb == cb_n - 1 else []
                steps.append(Step(loads, [compute], begins=cb == 0, ends=cb == cb_n - 1, stores=stores))
                s += 1
    b.schedule(steps, prologue=[_param_load(c, b, q, nb_n)], setpp=_setpp(q))
    return b.build(f"conv {h}x{wd}x{cin}->{cout} k{kh}x{kw} s{stride} p{padding} d{dilation}",
                   useful_macs=ho * wo * cout * cin * kh * kw)


def read_conv2d_output(program: Program, dram, ho: int, wo: int, cout: int) -> np.ndarray:
    from hw.spec.layout import unpack_lines
    c = program.config
    olb = output_line_bytes(c)
    nb_n = _ceil(cout, c.cols)
    raw = program.read(dram, "out")
    lines = unpack_lines(raw[:nb_n * ho * wo * olb], nb_n * ho * wo, c.cols, c.acts.bits, olb)
    blocks = [lines[j * ho * wo:(j + 1) * ho * wo] for j in range(nb_n)]
    return np.concatenate(blocks, axis=1)[:, :cout].reshape(ho, wo, cout)
