"""The architectural state of the engine and what each instruction does to it, for a batch of samples at once.

These functions are the emulator's functional model. Every buffer is an array of lines, each line a batch of sample
rows: ``(depth, samples, width)``, where ``samples`` is 1 while every sample holds the same data (weights and
parameters loaded from shared memory, the state before the first per-sample LOAD) and the batch's length once they
differ; numpy broadcasting does the rest, and a run of lines is one contiguous block for all samples (which is what
every instruction reads or writes). Buffers hold what the engine computes with: activation and weight lines as the
exact fixed-point values of their codes (in units of the format's least significant bit, see
:func:`sw.golden.exact.fixed_values`; the narrowest integer type that holds them), with their finiteness where the
format has NaN/Inf; accumulators as int32 (``acc_bits`` up to 31: any two add without overflow), int64 (up to 62) or
Python ints.

Each function checks nothing: the checks live in :mod:`sw.emulator.checks`, done before an instruction runs,
exactly where the hardware raises its errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import PACKED_INT_BITS, Format, IntFormat
from hw.spec.isa import AluOp, Buffer
from hw.spec.layout import line_bytes, output_line_bytes, pack_codes, unpack_codes, unpack_lut, unpack_params
from sw.golden.exact import FLOAT32_EXACT, fixed_values, matmul_exact, value_table
from sw.golden.gemm import has_specials
from sw.golden.postprocess import lookup, rescale

from . import workspace
from .memory import BatchedMemory
from .plans import alu_plan, compute_plan, store_lines

__all__ = ["EngineState", "load", "compute_products", "compute_accumulate", "alu", "setpp", "store"]


def _value_dtype(fmt: Format):
    """float32 when it holds every fixed-point value of ``fmt`` exactly (the products then run on BLAS straight
    from the buffers, see :func:`_tap_products`), else the narrowest integer dtype that does (Python ints beyond
    int64)."""
    values = fixed_values(fmt)[0]
    if values.dtype != object and int(np.abs(values).max()) < FLOAT32_EXACT:
        return np.float32
    lo, hi = fmt.fixed_range
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return dtype
    return object


def _code_dtype(bits: int):
    return np.uint8 if bits <= 8 else np.uint16


def _values(fmt: Format, codes: np.ndarray, dtype) -> np.ndarray:
    """Fixed-point values of ``codes`` in ``dtype``: a reinterpretation for 8- and 16-bit integers, else a
    table lookup."""
    if isinstance(fmt, IntFormat) and fmt.bits in (8, 16) and codes.dtype.itemsize * 8 == fmt.bits:
        return codes.view(f"{'i' if fmt.signed else 'u'}{fmt.bits // 8}")
    return value_table(fmt, dtype)[codes]


@dataclass
class EngineState:
    """On-chip buffers, the post-processing registers and external memory, for a batch of samples."""

    config: AcceleratorConfig
    memory: BatchedMemory
    act: np.ndarray = field(init=False)             # (depth, 1|B, rows) values
    act_ok: np.ndarray | None = field(init=False)   # finiteness, None for formats without NaN/Inf
    weight: np.ndarray = field(init=False)          # (depth, 1|B, cols) values
    weight_ok: np.ndarray | None = field(init=False)
    bias: np.ndarray = field(init=False)            # (depth, 1|B, cols) int64
    multiplier: np.ndarray = field(init=False)
    shift: np.ndarray = field(init=False)
    acc: np.ndarray = field(init=False)             # (depth, 1|B, cols) int32/int64 by acc_bits, or Python ints
    acc_nonfinite: np.ndarray | None = field(init=False)
    zero_point: int = 0
    clamp_lo: int = 0
    clamp_hi: int = 0
    lut: np.ndarray = field(init=False)             # (lut depth, 1|B, cols) codes
    use_lut: int = 0
    #: The output format SETPP selected (an index into ``config.act_formats``).
    out_format: int = 0
    #: Per sample: set once a STORE wrote a line that met a NaN or Inf operand.
    saw_nonfinite: np.ndarray = field(init=False)
    #: Per-sample buffers taken from the workspace, and the line range this run wrote in each.
    _written: dict = field(init=False, default_factory=dict)

    def __post_init__(self):
        c = self.config
        acts, weights = has_specials(c.acts), has_specials(c.weights)
        if c.multi_format:
            # The format is the COMPUTE's to choose: the buffers hold codes (slots), decoded as they are read.
            acts = any(has_specials(f) for f in c.act_formats)
            weights = any(has_specials(f) for f in c.weight_formats)
            self.act = np.zeros((c.act_buffer_depth, 1, c.reduction_rows), dtype=_code_dtype(c.act_slot_bits))
            self.weight = np.zeros((c.weight_buffer_depth, 1, c.cols), dtype=_code_dtype(c.weight_slot_bits))
            self.act_ok = self.weight_ok = None
        else:
            self.act = np.zeros((c.act_buffer_depth, 1, c.reduction_rows), dtype=_value_dtype(c.acts))
            self.act_ok = np.ones(self.act.shape, dtype=bool) if acts else None
            self.weight = np.zeros((c.weight_buffer_depth, 1, c.cols), dtype=_value_dtype(c.weights))
            self.weight_ok = np.ones(self.weight.shape, dtype=bool) if weights else None
        self.bias, self.multiplier, self.shift = (np.zeros((c.param_buffer_depth, 1, c.cols), dtype=np.int64)
                                                  for _ in range(3))
        acc = object if self.wide else np.int32 if c.acc_bits <= 31 else np.int64
        self.acc = np.zeros((c.acc_buffer_depth, 1, c.cols), dtype=acc)
        self.acc_nonfinite = np.zeros(self.acc.shape, dtype=bool) if acts or weights else None
        self.lut = np.zeros((c.lut_buffer_depth, 1, c.cols), dtype=np.uint8)
        self.saw_nonfinite = np.zeros(self.memory.batch, dtype=bool)

    @property
    def wide(self) -> bool:
        return self.config.acc_bits > 62

    @property
    def batch(self) -> int:
        return self.memory.batch

    def writable(self, name: str, rows: int, lines: slice) -> np.ndarray:
        """The array ``name``, about to be written in ``lines``: made per-sample (a zeroed workspace array) if
        ``rows`` samples are about to differ in it."""
        array = getattr(self, name)
        if rows > array.shape[1]:
            wide = workspace.zeros((array.shape[0], rows, array.shape[2]), array.dtype)
            self._written[name] = [array.shape[0], 0]
            if array.dtype == object or array.any():
                wide[...] = array
                lines = slice(0, array.shape[0])
            setattr(self, name, wide)
            array = wide
        if name in self._written:
            span = self._written[name]
            span[0], span[1] = min(span[0], lines.start), max(span[1], lines.stop)
        return array

    def release(self) -> None:
        """Give the per-sample buffers back to the workspace; the state is unusable afterwards."""
        for name, (lo, hi) in self._written.items():
            workspace.give_back(getattr(self, name), [slice(lo, hi)] if lo < hi else [])
            setattr(self, name, None)
        self._written = {}

    def wrap(self, values: np.ndarray) -> np.ndarray:
        """Accumulators are two's-complement ``acc_bits`` wide: sums wrap (the compiler keeps them in range).
        ``values``: integers of any dtype; the result has the accumulators' dtype."""
        bits = self.config.acc_bits
        if self.wide or values.dtype == object:
            half, full = 1 << (bits - 1), 1 << bits
            wrapped = (np.asarray(values, dtype=object) + half) % full - half
            return wrapped if self.wide else wrapped.astype(self.acc.dtype)
        shift = 8 * values.dtype.itemsize - bits
        return ((values << shift) >> shift).astype(self.acc.dtype, copy=False)

    def add_into(self, target: np.ndarray, values: np.ndarray) -> None:
        """``target = wrap(target + values)`` for a view of the accumulators, in place where the sum provably
        stays in the accumulators' dtype (int32 accumulators and int32 values: both below 2**30)."""
        if target.dtype == np.int32 and values.dtype == np.int32:
            np.add(target, values, out=target)
            shift = 32 - self.config.acc_bits
            if shift:
                np.left_shift(target, shift, out=target)
                np.right_shift(target, shift, out=target)
        else:
            target[...] = self.wrap(target + values)

def _block(buffer: np.ndarray, start: int, rows: int, row_stride: int, count: int, step: int = 1) -> np.ndarray:
    """Lines ``start + y * row_stride + x * step`` (y < rows, x < count) of a buffer (depth, samples, width), as
    a writeable view shaped (rows, count, samples, width)."""
    depth, samples, width = buffer.shape
    if step == 1 and row_stride >= count and start + rows * row_stride <= depth:
        return buffer[start:start + rows * row_stride].reshape(rows, row_stride, samples, width)[:, :count]
    line = buffer.strides[0]
    return workspace.strided(buffer, start * line, (rows, count, samples, width),
                             (row_stride * line, step * line, *buffer.strides[1:]))


def load(s: EngineState, f: dict) -> None:
    buffer = Buffer(f["buffer"])
    c = s.config
    nbytes = line_bytes(buffer, c)
    ys, xs = f["y_size"], f["x_size"]
    raw = s.memory.rows(f["dram_addr"], ys, f["dram_stride"], xs * nbytes).reshape(-1, ys, xs, nbytes)
    samples = raw.shape[0]
    width = f["pad_left"] + xs + f["pad_right"]
    start = f["sram_addr"] + f["pad_top"] * width + f["pad_left"]
    lines = slice(f["sram_addr"], f["sram_addr"] + (f["pad_top"] + ys + f["pad_bottom"]) * width)
    if buffer is Buffer.PARAM:
        params = unpack_params(raw.tobytes(), samples * ys * xs, c.cols, nbytes)
        for name, values in zip(("bias", "multiplier", "shift"), params):
            _block(s.writable(name, samples, lines), start, ys, width, xs)[...] = \
                values.reshape(samples, ys, xs, c.cols).transpose(1, 2, 0, 3)
        return
    if buffer is Buffer.LUT:
        codes = unpack_codes(raw, c.cols, c.act_slot_bits).transpose(1, 2, 0, 3)
        _block(s.writable("lut", samples, lines), start, ys, width, xs)[...] = codes
        return
    if c.multi_format:
        name, bits = ("act", c.act_slot_bits) if buffer is Buffer.ACT else ("weight", c.weight_slot_bits)
        target = s.writable(name, samples, lines)
        _pad(target, f, width, f["pad_value"])
        _block(target, start, ys, width, xs)[...] = unpack_codes(raw, target.shape[2], bits).transpose(1, 2, 0, 3)
        return
    fmt, name = (c.acts, "act") if buffer is Buffer.ACT else (c.weights, "weight")
    codes = unpack_codes(raw, getattr(s, name).shape[2], fmt.bits).transpose(1, 2, 0, 3)
    for target_name in (name, name + "_ok"):
        if getattr(s, target_name) is None:
            continue
        target = s.writable(target_name, samples, lines)
        if target_name == name:
            values, pad = _values(fmt, codes, target.dtype), value_table(fmt, target.dtype)[f["pad_value"]]
        else:
            values, pad = fixed_values(fmt)[1][codes], fixed_values(fmt)[1][f["pad_value"]]
        _pad(target, f, width, pad)
        _block(target, start, ys, width, xs)[...] = values


def _pad(target: np.ndarray, f: dict, width: int, value) -> None:
    """Fill the padding lines a LOAD writes around its data."""
    top, bottom, left, right = f["pad_top"], f["pad_bottom"], f["pad_left"], f["pad_right"]
    if not (top or bottom or left or right):
        return
    at, ys = f["sram_addr"], f["y_size"]
    target[at:at + top * width] = value
    target[at + (top + ys) * width:at + (top + ys + bottom) * width] = value
    if left:
        _block(target, at + top * width, ys, width, left)[...] = value
    if right:
        _block(target, at + top * width + left + f["x_size"], ys, width, right)[...] = value


def compute_products(s: EngineState, f: dict) -> tuple:
    """What a COMPUTE reads from the buffers: the exact sum over its kernel positions of each output line's
    products, (out_h * out_w, samples, columns), the columns they are (a slice or mask: the others are 0), and
    which sums met a NaN or Inf operand (None: none can).

    The hardware reads the buffers before it releases them (push_prev) and writes the accumulators later, so
    the two halves are separate here too. The positions' partial sums add before the accumulator wraps, which
    is the same modulo ``2 ** acc_bits``. Weight rows (array rows) that are zero in every tap and column multiply
    nothing and are left out of the product, as are all-zero columns (their sums are 0); the non-finite flags
    still see every operand.
    """
    c = s.config
    if c.multi_format:
        return _products_of_codes(s, f)
    plan = compute_plan(c, f)
    w = s.weight[plan.weights]                                  # (kh*kw*rows, 1|B, cols)
    taps = f["kh"] * f["kw"]
    columns = _selection(w.any(axis=(0, 1)))
    if _by_taps(s, f, w):
        value = _tap_products(s, f, w[..., columns])
    else:
        rows = _selection(w.reshape(taps, c.reduction_rows, -1).any(axis=(0, 2)))
        windows = _windows(s.act, f)[..., rows]                  # (oh, ow, samples, kh, kw, rows used)
        w = w.reshape(taps, c.reduction_rows, w.shape[1], c.cols)[:, rows][..., columns]
        samples = max(windows.shape[2], w.shape[2])
        if w.size == 0:
            value = np.zeros((plan.outputs, samples, w.shape[-1]), dtype=s.acc.dtype)
        else:
            value = _product(s, windows, w.reshape(-1, *w.shape[2:]).transpose(1, 0, 2))
    nonfinite = None
    if s.act_ok is not None:
        nonfinite = ~_windows(s.act_ok, f).all(axis=(3, 4, 5)).reshape(plan.outputs, -1, 1)
    if s.weight_ok is not None:
        cols = ~s.weight_ok[plan.weights].all(axis=0)[None]
        nonfinite = cols if nonfinite is None else nonfinite | cols
    return value, columns, nonfinite


def _products_of_codes(s: EngineState, f: dict) -> tuple:
    """:func:`compute_products` of a multi-format build: the buffers' codes decoded in the formats the COMPUTE
    selects (a code is the low bits of its slot), each product shifted into the accumulators' units."""
    c = s.config
    plan = compute_plan(c, f)
    wf, af = c.weight_formats[f["weight_format"]], c.act_formats[f["act_format"]]
    w_values, w_finite, w_max = fixed_values(wf)
    a_values, a_finite, a_max = fixed_values(af)
    w_codes = s.weight[plan.weights] & ((1 << wf.bits) - 1)               # (kh*kw*rows, 1|B, cols)
    a_codes = _windows(s.act, f)                                          # (oh, ow, samples, kh, kw, rows)
    values = plan.terms // (f["kh"] * f["kw"] * c.reduction_rows)
    if values > 1:
        # A packed pair: slot r holds reduction rows 2r + k at bits k * PACKED_INT_BITS (hw/spec/config.py).
        codes = [a_codes >> (k * PACKED_INT_BITS) for k in range(values)]
        a_codes = np.stack(codes, axis=-1).reshape(*a_codes.shape[:-1], -1)
    a_codes = a_codes & ((1 << af.bits) - 1)
    k = w_codes.shape[0]
    a = a_values[a_codes].reshape(plan.outputs, a_codes.shape[2], k)
    w = w_values[w_codes].transpose(1, 0, 2)                              # (1|B, k, cols)
    if w.shape[0] == 1:
        value = matmul_exact(a.reshape(-1, k), w[0], a_max, w_max).reshape(plan.outputs, a.shape[1], -1)
    else:
        value = matmul_exact(a.transpose(1, 0, 2), w, a_max, w_max).transpose(1, 0, 2)
    shift = c.pair_shift(wf, af)
    value = s.wrap(value << shift if value.dtype == object or k * a_max * w_max << shift < 1 << 62
                   else value.astype(object) << shift)
    nonfinite = None
    if s.acc_nonfinite is not None:
        nonfinite = ~a_finite[a_codes].all(axis=(3, 4, 5)).reshape(plan.outputs, -1, 1) \
            | ~w_finite[w_codes].all(axis=0)[None]
    return value, slice(None), nonfinite


def _selection(used: np.ndarray):
    """Which rows or columns a product needs: all, a first run (a slice: views, not copies), or a mask."""
    n = int(used.sum())
    if n == used.size:
        return slice(None)
    return slice(0, n) if used[:n].all() else used


def _product(s: EngineState, windows: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact products of activation windows (oh, ow, samples, kh, kw, k) and weights (1|B, kh*kw*k, N), summed:
    (oh * ow, samples, N) in the accumulators' dtype. On float32 (the windows copied and cast at once into a work
    array) when every sum is below 2**24, else through :func:`~sw.golden.exact.matmul_exact`."""
    c, dtype = s.config, s.acc.dtype
    outputs, samples, k = windows.shape[0] * windows.shape[1], windows.shape[2], w.shape[1]
    a_max, w_max = fixed_values(c.acts)[2], fixed_values(c.weights)[2]
    if k * a_max * w_max < FLOAT32_EXACT:
        a = workspace.work("windows", windows.shape, np.float32)
        np.copyto(a, windows, casting="unsafe")
        a, w = a.reshape(outputs, samples, k), w.astype(np.float32)
        if w.shape[0] == 1:
            out = workspace.work("product", (outputs * samples, w.shape[2]), np.float32)
            sums = np.matmul(a.reshape(-1, k), w[0], out=out)
            return _accumulator_values(sums, dtype).reshape(outputs, samples, -1)
        return _accumulator_values(np.matmul(a.transpose(1, 0, 2), w), dtype).transpose(1, 0, 2)
    a = windows.reshape(outputs, samples, k)
    if a.dtype.kind == "f":                 # float32 buffers hold integers: exact as int64, never Python floats
        a, w = a.astype(np.int64), w.astype(np.int64)
    if w.shape[0] == 1:
        return matmul_exact(a.reshape(-1, k), w[0], a_max, w_max).reshape(outputs, samples, -1)
    return matmul_exact(a.transpose(1, 0, 2), w, a_max, w_max).transpose(1, 0, 2)


#: Shortest matrix (activation vectors per GEMM) for which one GEMM per kernel tap beats copying the windows.
_TAP_GEMM_ROWS = 64


def _by_taps(s: EngineState, f: dict, w: np.ndarray) -> bool:
    """Whether :func:`_tap_products` computes this COMPUTE exactly and faster than a copy of its windows: float32
    buffers, weights shared by the batch, every partial sum below 2**24, and GEMMs of enough vectors."""
    c, samples = s.config, s.act.shape[1]
    if s.act.dtype != np.float32 or s.weight.dtype != np.float32 or w.shape[1] != 1:
        return False
    bound = f["kh"] * f["kw"] * c.reduction_rows * fixed_values(c.acts)[2] * fixed_values(c.weights)[2]
    vectors = f["out_w"] * samples if f["stride"] == 1 else samples
    return bound < FLOAT32_EXACT and vectors >= _TAP_GEMM_ROWS


def _tap_products(s: EngineState, f: dict, w: np.ndarray) -> np.ndarray:
    """The exact sums of a COMPUTE's products as one GEMM per kernel tap, read in place from the float32
    activation buffer: (out_h * out_w, samples, N) in the accumulators' dtype. ``w``: (kh*kw*rows, 1, N).

    A tap's activation vectors for one output row are ``out_w`` lines ``stride`` apart; at stride 1 they and the
    samples of each line are one contiguous matrix (the buffer is C-contiguous), so BLAS reads them where they are.
    Every partial sum is an integer below 2**24 (:func:`_by_taps`), so float32 adds them exactly in any order."""
    buffer = s.act
    _, samples, rows = buffer.shape
    line, sample, element = buffer.strides
    oh, ow, kh, kw, pitch = f["out_h"], f["out_w"], f["kh"], f["kw"], f["act_pitch"]
    step, dilation, n = f["stride"], f["dilation"], w.shape[-1]
    if step == 1:
        shape, strides = (oh, ow * samples, rows), (pitch * line, sample, element)
    else:
        shape, strides = (oh, ow, samples, rows), (step * pitch * line, step * line, sample, element)
    out = workspace.work("taps", (*shape[:-1], n), np.float32)
    part = workspace.work("tap", out.shape, np.float32)
    w = w.reshape(kh * kw, rows, n)
    for tap in range(kh * kw):
        dy, dx = divmod(tap, kw)
        offset = (f["act_addr"] + dilation * (dy * pitch + dx)) * line
        vectors = workspace.strided(buffer, offset, shape, strides, writeable=False)
        np.matmul(vectors, w[tap], out=out if tap == 0 else part)
        if tap:
            out += part
    return _accumulator_values(out.reshape(oh * ow, samples, n), s.acc.dtype)


def _accumulator_values(sums: np.ndarray, dtype) -> np.ndarray:
    """Exact float sums (integers) in the accumulators' dtype; through int64 for Python-int accumulators, whose
    arithmetic must not see floats."""
    return sums.astype(np.int64).astype(object) if dtype == object else sums.astype(dtype)


def _windows(buffer: np.ndarray, f: dict) -> np.ndarray:
    """The activation lines a COMPUTE reads, as a view shaped (out_h, out_w, samples, kh, kw, rows)."""
    _, samples, rows = buffer.shape
    line, s1, s2 = buffer.strides
    step, dilation, pitch = f["stride"] * line, f["dilation"] * line, f["act_pitch"]
    return workspace.strided(buffer, f["act_addr"] * line, (f["out_h"], f["out_w"], samples, f["kh"], f["kw"], rows),
                             (step * pitch, step, s1, dilation * pitch, dilation, s2), writeable=False)


def compute_accumulate(s: EngineState, f: dict, products: tuple) -> None:
    """The second half of a COMPUTE: add (or write) its partial sums into the accumulators."""
    value, columns, nonfinite = products
    lines = slice(f["acc_addr"], f["acc_addr"] + f["out_h"] * f["out_w"])
    acc = s.writable("acc", value.shape[1], lines)
    if f["accumulate"]:
        if isinstance(columns, slice):
            s.add_into(acc[lines, :, columns], value)
        else:
            acc[lines, :, columns] = s.wrap(acc[lines, :, columns] + value)
    else:
        if not (isinstance(columns, slice) and columns == slice(None)):
            acc[lines] = 0
        # a sum below 2**(acc_bits - 1) is its own wrap
        bound = f["kh"] * f["kw"] * s.config.reduction_rows * fixed_values(s.config.acts)[2] * fixed_values(s.config.weights)[2]
        acc[lines, :, columns] = value if bound < 1 << (s.config.acc_bits - 1) else s.wrap(value)
    if s.acc_nonfinite is not None:
        flags = s.writable("acc_nonfinite", value.shape[1] if nonfinite is None else nonfinite.shape[1], lines)
        flags[lines] = (flags[lines] if f["accumulate"] else False) | (False if nonfinite is None else nonfinite)


def alu(s: EngineState, f: dict) -> None:
    """Element by element in the ISA's order, computed as runs of elements that do not depend on each other.

    Cost: one numpy step per run. Only a dependency chain (each element reading the one before, as a running
    max would) makes every run one element long: about 15 us per element, 15 s for the largest ALU (1023 x
    1023 elements), which the engine itself needs a million cycles for.
    """
    plan = alu_plan(f)
    op = AluOp(f["op"])
    ys, xs = f["y_size"], f["x_size"]
    written = slice(int(plan.dst.min()), int(plan.dst.max()) + 1)
    for name in ("acc", "acc_nonfinite"):
        if getattr(s, name) is not None:
            s.writable(name, 1, written)
    if plan.independent:                                      # independent elements: all at once
        dst = _block(s.acc, f["dst_addr"], ys, f["dst_stride"], xs)
        src = _block(s.acc, f["src_addr"], ys, f["src_stride"], xs, f["src_step"])
        if op is AluOp.MAX:
            np.maximum(dst, src, out=dst)
        elif op is AluOp.ADD:
            s.add_into(dst, src)
        elif op is AluOp.MUL:
            dst[...] = _multiply(s, dst, src)
        else:
            dst[...] = src
        if s.acc_nonfinite is not None:
            flags = _block(s.acc_nonfinite, f["dst_addr"], ys, f["dst_stride"], xs)
            source = _block(s.acc_nonfinite, f["src_addr"], ys, f["src_stride"], xs, f["src_step"])
            if op is AluOp.COPY:
                flags[...] = source
            else:
                flags |= source
        return
    for a, b in plan.runs:                                    # the ISA's order, a run of independent ones at once
        d, r = plan.dst[a:b], plan.src[a:b]
        s.acc[d] = _alu_op(s, op, s.acc[d], s.acc[r])
        if s.acc_nonfinite is not None:
            s.acc_nonfinite[d] = s.acc_nonfinite[r] if op is AluOp.COPY else s.acc_nonfinite[d] | s.acc_nonfinite[r]


def _alu_op(s: EngineState, op: AluOp, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if op is AluOp.MUL:
        return _multiply(s, a, b)
    return np.maximum(a, b) if op is AluOp.MAX else s.wrap(a + b) if op is AluOp.ADD else b


def _multiply(s: EngineState, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ALU MUL: ``wrap(sext(a[k-1:0]) * sext(b[k-1:0]))`` with ``k = alu_mul_bits``, in Python ints where int64
    could overflow (``2k > 63``)."""
    k = s.config.alu_mul_bits
    if s.wide or 2 * k > 63:
        half = 1 << (k - 1)
        low = [(np.asarray(v, dtype=object) + half) % (1 << k) - half for v in (a, b)]
        return s.wrap(low[0] * low[1])
    low = [(np.asarray(v, dtype=np.int64) << (64 - k)) >> (64 - k) for v in (a, b)]
    return s.wrap(low[0] * low[1])


def setpp(s: EngineState, f: dict) -> None:
    s.zero_point, s.clamp_lo, s.clamp_hi, s.use_lut = f["zero_point"], f["clamp_lo"], f["clamp_hi"], f["lut"]
    s.out_format = f["format"]


def _lookup(s: EngineState, codes: np.ndarray) -> np.ndarray:
    """The lookup stage: each sample's codes (lines, 1|B, cols) through that sample's table."""
    tables = unpack_lut(s.lut.transpose(1, 0, 2), s.config)          # (1|B, entries)
    if tables.shape[0] == 1:
        return lookup(codes, tables[0])
    codes = np.broadcast_to(codes, (codes.shape[0], tables.shape[0], codes.shape[2]))
    return np.stack([lookup(codes[:, i], tables[i]) for i in range(tables.shape[0])], axis=1)


def store(s: EngineState, f: dict) -> None:
    c = s.config
    lines = store_lines(f)
    p = f["param_addr"]
    acc = s.acc[lines]                                          # (lines, 1|B, cols)
    nonfinite = np.zeros((1, 1, 1), dtype=bool) if s.acc_nonfinite is None else s.acc_nonfinite[lines]
    negative = {"multiplier_neg": s.multiplier[p + 1], "shift_neg": s.shift[p + 1]} if f["negative_param"] else {}
    codes = rescale(acc, nonfinite, c.acc_exponent, s.bias[p], s.multiplier[p], s.shift[p],
                    c.act_formats[s.out_format], s.zero_point, s.clamp_lo, s.clamp_hi, acc_bits=c.acc_bits,
                    wrapped=True, **negative)
    if s.use_lut:
        codes = _lookup(s, codes)
    s.saw_nonfinite |= nonfinite.any(axis=(0, 2))
    if f.get("packed"):         # codes 2r and 2r+1 (their low four bits) in slot r, the other slots zero
        codes = np.asarray(codes).astype(np.int64)
        codes = (codes[..., 0::2] & 15) | ((codes[..., 1::2] & 15) << 4)
    data = pack_codes(codes.transpose(1, 0, 2), c.act_slot_bits, output_line_bytes(c))
    s.memory.write_rows(f["dram_addr"], f["dram_stride"], data.reshape(data.shape[0], f["y_size"], -1))
