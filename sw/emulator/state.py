"""The architectural state of the engine and what each instruction does to it (numpy, whole tiles at once).

These functions are the emulator's functional model. Each checks nothing: the checks live in
:mod:`sw.emulator.checks`, done before an instruction runs, exactly where the hardware raises its errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import product_of
from hw.spec.isa import AluOp, Buffer
from hw.spec.layout import line_bytes, output_line_bytes, pack_lines, unpack_lines, unpack_params
from sw.golden.gemm import gemm
from sw.golden.postprocess import rescale

__all__ = ["EngineState", "load", "compute_products", "compute_accumulate", "alu", "setpp", "store"]


@dataclass
class EngineState:
    """On-chip buffers, the post-processing registers and external memory."""

    config: AcceleratorConfig
    dram: np.ndarray                     # uint8
    act: np.ndarray = field(init=False)  # (depth, rows) codes
    weight: np.ndarray = field(init=False)
    bias: np.ndarray = field(init=False)
    multiplier: np.ndarray = field(init=False)
    shift: np.ndarray = field(init=False)
    acc: np.ndarray = field(init=False)  # (depth, cols) int64, or Python ints when acc_bits > 62
    acc_nonfinite: np.ndarray = field(init=False)
    zero_point: int = 0
    clamp_lo: int = 0
    clamp_hi: int = 0
    #: Set once a STORE wrote a line that met a NaN or Inf operand.
    saw_nonfinite: bool = False

    def __post_init__(self):
        c = self.config
        self.act = np.zeros((c.act_buffer_depth, c.rows), dtype=np.uint32)
        self.weight = np.zeros((c.weight_buffer_depth, c.cols), dtype=np.uint32)
        self.bias = np.zeros((c.param_buffer_depth, c.cols), dtype=np.int64)
        self.multiplier = np.zeros((c.param_buffer_depth, c.cols), dtype=np.int64)
        self.shift = np.zeros((c.param_buffer_depth, c.cols), dtype=np.int64)
        self.acc = np.zeros((c.acc_buffer_depth, c.cols), dtype=object if self.wide else np.int64)
        self.acc_nonfinite = np.zeros((c.acc_buffer_depth, c.cols), dtype=bool)

    @property
    def wide(self) -> bool:
        return self.config.acc_bits > 62

    def wrap(self, values: np.ndarray) -> np.ndarray:
        """Accumulators are two's-complement ``acc_bits`` wide: sums wrap (the compiler keeps them in range)."""
        bits = self.config.acc_bits
        if self.wide:
            half, full = 1 << (bits - 1), 1 << bits
            return np.array([((int(v) + half) % full) - half for v in values.ravel()],
                            dtype=object).reshape(values.shape)
        shift = 64 - bits
        return (values.astype(np.int64) << shift) >> shift


def _lines(base: int, y: int, x: int, y_stride: int, x_stride: int = 1) -> np.ndarray:
    return (base + np.arange(y)[:, None] * y_stride + np.arange(x)[None, :] * x_stride).ravel()


def load(s: EngineState, f: dict) -> None:
    buffer = Buffer(f["buffer"])
    c = s.config
    nbytes = line_bytes(buffer, c)
    ys, xs = f["y_size"], f["x_size"]
    starts = _lines(f["dram_addr"], ys, xs, f["dram_stride"], nbytes)
    raw = s.dram[(starts[:, None] + np.arange(nbytes)[None, :]).ravel()].tobytes()
    height = f["pad_top"] + ys + f["pad_bottom"]
    width = f["pad_left"] + xs + f["pad_right"]
    inner = _lines(f["sram_addr"] + f["pad_top"] * width + f["pad_left"], ys, xs, width)
    if buffer is Buffer.PARAM:
        bias, mult, shift = unpack_params(raw, ys * xs, c.cols, nbytes)
        s.bias[inner], s.multiplier[inner], s.shift[inner] = bias, mult, shift
        return
    target = s.act if buffer is Buffer.ACT else s.weight
    per_line = target.shape[1]
    bits = c.acts.bits if buffer is Buffer.ACT else c.weights.bits
    if height * width != ys * xs:
        block = _lines(f["sram_addr"], height, width, width)
        target[block] = f["pad_value"]
    target[inner] = unpack_lines(raw, ys * xs, per_line, bits, nbytes)


def compute_products(s: EngineState, f: dict) -> list:
    """What a COMPUTE reads from the buffers: the exact partial sums of each kernel position.

    The hardware reads the buffers before it releases them (push_prev) and writes the accumulators later, so
    the two halves are separate here too.
    """
    c = s.config
    oy, ox = np.meshgrid(np.arange(f["out_h"]), np.arange(f["out_w"]), indexing="ij")
    oy, ox = oy.ravel(), ox.ravel()
    products = []
    for ky in range(f["kh"]):
        for kx in range(f["kw"]):
            tile = f["weight_addr"] + (ky * f["kw"] + kx) * c.rows
            act_lines = (f["act_addr"] + (oy * f["stride"] + ky * f["dilation"]) * f["act_pitch"]
                         + ox * f["stride"] + kx * f["dilation"])
            r = gemm(s.act[act_lines], s.weight[tile:tile + c.rows], c.acts, c.weights)
            products.append((r.value.astype(object) if s.wide else r.value, r.nonfinite))
    return products


def compute_accumulate(s: EngineState, f: dict, products: list) -> None:
    """The second half of a COMPUTE: add (or write) its partial sums into the accumulators."""
    acc_lines = f["acc_addr"] + np.arange(f["out_h"] * f["out_w"])
    accumulate = bool(f["accumulate"])
    for value, nonfinite in products:
        if accumulate:
            s.acc[acc_lines] = s.wrap(s.acc[acc_lines] + value)
            s.acc_nonfinite[acc_lines] |= nonfinite
        else:
            s.acc[acc_lines] = s.wrap(value)
            s.acc_nonfinite[acc_lines] = nonfinite
        accumulate = True


def alu(s: EngineState, f: dict) -> None:
    """Element by element in the ISA's order, computed as runs of elements that do not depend on each other.

    Cost: one numpy step per run. Only a dependency chain (each element reading the one before, as a running
    max would) makes every run one element long: about 15 us per element, 15 s for the largest ALU (1023 x
    1023 elements), which the engine itself needs a million cycles for.
    """
    dst = _lines(f["dst_addr"], f["y_size"], f["x_size"], f["dst_stride"])
    src = _lines(f["src_addr"], f["y_size"], f["x_size"], f["src_stride"], f["src_step"])
    if np.unique(dst).size == dst.size and np.intersect1d(dst, src).size == 0:
        _alu_lines(s, f["op"], dst, src)      # independent elements: all at once
        return
    for a, b in _independent_runs(dst, src):
        _alu_lines(s, f["op"], dst[a:b], src[a:b])


def _independent_runs(dst: np.ndarray, src: np.ndarray):
    """(start, end) of maximal runs in which no element reads or writes a line an earlier one of the run wrote:
    applied at once, such a run gives what one element after the other gives."""
    start, written = 0, set()
    for i, (d, r) in enumerate(zip(dst.tolist(), src.tolist())):
        if d in written or r in written:
            yield start, i
            start, written = i, set()
        written.add(d)
    yield start, len(dst)


def _alu_lines(s: EngineState, op: int, dst: np.ndarray, src: np.ndarray) -> None:
    a, b = s.acc[dst], s.acc[src]
    op = AluOp(op)
    s.acc[dst] = np.where(b > a, b, a) if op is AluOp.MAX else s.wrap(a + b) if op is AluOp.ADD else b
    s.acc_nonfinite[dst] = s.acc_nonfinite[src] if op is AluOp.COPY else s.acc_nonfinite[dst] | s.acc_nonfinite[src]


def setpp(s: EngineState, f: dict) -> None:
    s.zero_point, s.clamp_lo, s.clamp_hi = f["zero_point"], f["clamp_lo"], f["clamp_hi"]


def store(s: EngineState, f: dict) -> None:
    c = s.config
    lines = _lines(f["acc_addr"], f["y_size"], f["x_size"], f["acc_stride"])
    p = f["param_addr"]
    nonfinite = s.acc_nonfinite[lines]
    codes = rescale(s.acc[lines], nonfinite, product_of(c.acts, c.weights).min_exponent,
                    s.bias[p], s.multiplier[p], s.shift[p], c.acts, s.zero_point, s.clamp_lo, s.clamp_hi,
                    acc_bits=c.acc_bits)
    s.saw_nonfinite |= bool(nonfinite.any())
    nbytes = output_line_bytes(c)
    data = np.frombuffer(pack_lines(codes, c.acts.bits, nbytes), dtype=np.uint8)
    starts = _lines(f["dram_addr"], f["y_size"], f["x_size"], f["dram_stride"], nbytes)
    s.dram[(starts[:, None] + np.arange(nbytes)[None, :]).ravel()] = data
