"""Drawing the tiles of a legal program: buffer and memory regions, data, parameters and instructions.

:data:`sim.programs.REPEATED_ALU_DESTINATIONS` is read from the package each time an ALU instruction is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import PACKED_INT_BITS, IntFormat
from hw.spec.isa import AluOp, Buffer, Opcode
from hw.spec.layout import line_bytes, output_line_bytes

from .. import programs as _package
from .footprint import footprint
from .reference import _pack
from .tokens import _Instr, _Retry


# --- drawing legal programs --------------------------------------------------------------------------------

def _finite_codes(fmt) -> np.ndarray:
    codes = np.arange(1 << fmt.bits)
    return codes[np.isfinite(fmt.decode(codes))]


def _mean_fixed(fmt) -> float:
    """Mean magnitude of a finite code in units of its least significant bit."""
    sig, shift, finite = fmt.exact(_finite_codes(fmt))
    return float(np.mean(np.abs(sig.astype(np.float64)) * np.exp2(shift)))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _in_order(pairs: list, interleaved: bool) -> list:
    """(load block, compute) pairs as a program: each load block before its compute, or all loads first."""
    if interleaved:
        return [i for block, compute in pairs for i in (*block, compute)]
    return [i for block, _ in pairs for i in block] + [compute for _, compute in pairs]


@dataclass
class _Tile:
    kind: str
    instrs: list
    summary: str


class _Builder:
    """Draws the tiles of one program: buffer regions, memory regions, data and instructions."""

    def __init__(self, config: AcceleratorConfig, rng: np.random.Generator, dram_size: int,
                 program_addr: int, program_bytes: int, data_range: tuple[int, int]):
        c = self.config = config
        self.rng = rng
        self.rows, self.cols = c.reduction_rows, c.cols
        self.bus = c.dma_bits // 8
        self.lb = {b: line_bytes(b, c) for b in Buffer}
        self.olb = output_line_bytes(c)
        self.dram_size = dram_size
        self.program_addr, self.program_bytes = program_addr, program_bytes
        self.cursor, self.data_end = data_range
        self.blobs: list[tuple[int, bytes]] = []
        self.inputs: list[dict] = []     # fresh input regions: addr, size, order of their last reader, reused
        self.outputs: list[dict] = []    # store regions: addr, y, x, stride, order
        self.seq = 0
        self.acc_written: set[int] = set()
        self.setpp_done = False
        # Value distributions of this program.
        self.wild = rng.random() < 0.3             # any code, NaN and Inf included
        self.garbage = rng.random() < 0.5          # random bits in the padding of each packed line
        # Buffer halves (two sets for double buffering); the last accumulator line is the barriers' scratch.
        self.act_half = c.act_buffer_depth // 2
        self.weight_half = c.weight_buffer_depth // 2
        self.acc_half = (c.acc_buffer_depth - 1) // 2
        if self.weight_half < c.packed_reduction_rows or self.acc_half < 1:
            raise ValueError(f"Buffers too small for programs: weight_buffer_depth must be at least "
                             f"{2 * c.packed_reduction_rows} and acc_buffer_depth at least 3")
        self.param_next = 0
        self.lead = int(rng.random() < 0.4)        # next tile's loads issued before this tile's computes
        self.lag = int(rng.random() < 0.3)         # this tile's stores issued after the next tile's computes
        if c.param_buffer_depth < 4:
            self.lead = self.lag = 0
        self.alternate = bool(self.lead or self.lag or rng.random() < 0.7)
        # Activation tables: loaded (and perhaps reloaded) in some programs, used by some SETPPs after that. The
        # choice reads the generator's state without drawing from it, so a program without tables is the one the
        # same seed gave before tables existed (the pinned cycle fixture's programs stay what they were).
        self.tables = c.lut_buffer_depth > 0 and int(rng.bit_generator.state["state"]["state"]) % 5 < 3
        self.table_loaded = False
        # The formats of the tile being drawn (weights, activations in, outputs) and their indices: always the
        # build's own in a single-format build (no draw, so its programs are those of before format sets).
        self.w_fmt, self.a_fmt, self.o_fmt = c.weights, c.acts, c.acts
        self.fmt_fields: dict = {}
        self.out_field: dict = {}
        self.store_field: dict = {}                # STORE.packed (a build that packs per layer)
        self.tile_rows = c.reduction_rows          # the tile's reduction depth (twice rows for a packed pair)

    def tile_formats(self) -> str:
        """Draw the formats of the next tile in a multi-format build; a note for the tile's summary."""
        c = self.config
        if not c.multi_format:
            return ""
        w, a, o = (int(i) for i in self.rng.integers(0, len(c.formats), size=3))
        self.w_fmt, self.a_fmt, self.o_fmt = c.weight_formats[w], c.act_formats[a], c.act_formats[o]
        self.fmt_fields = dict(weight_format=w, act_format=a)
        self.out_field = dict(format=o)
        # A pair the build packs runs packed in most tiles, one code a slot in the others.
        if (w, a) in c.packed_pairs and self.rng.random() < 0.75:
            self.fmt_fields["packed"] = 1
        self.tile_rows = c.compute_reduction_rows(w, a, self.fmt_fields.get("packed", 0))
        packed = " packed" if self.tile_rows > c.reduction_rows else ""
        # STOREs write two codes a slot in most tiles of a 4-bit integer output, now and then of any other.
        self.store_field = {}
        if c.packs_per_layer and self.rng.random() < (0.6 if self.o_fmt.values_per_lane > 1 else 0.1):
            self.store_field = dict(packed=1)
        stored = " packed" if self.store_field else ""
        return f" [{self.w_fmt.name} x {self.a_fmt.name}{packed} -> {self.o_fmt.name}{stored}]"

    # memory -------------------------------------------------------------------------------------------
    def align(self, n: int) -> int:
        return -(-n // self.bus) * self.bus

    def alloc(self, nbytes: int) -> int:
        start = self.align(self.cursor) + int(self.rng.integers(0, 3)) * self.bus
        end = start + self.align(max(nbytes, 1))
        if end > self.data_end:
            raise _Retry("out of external memory")
        self.cursor = end
        return start

    def codes(self, fmt, shape) -> np.ndarray:
        if self.wild:
            return self.rng.integers(0, 1 << fmt.bits, size=shape)
        return self.rng.choice(_finite_codes(fmt), size=shape)

    def line(self, codes, bits: int, nbytes: int) -> bytes:
        garbage = int.from_bytes(self.rng.bytes(nbytes), "little") if self.garbage else 0
        return _pack(codes, bits, nbytes, garbage)

    def write_lines(self, addr: int, stride: int, lines: np.ndarray, bits: int, nbytes: int) -> None:
        """``lines`` (y, x, per_line) codes at ``addr``, rows ``stride`` bytes apart."""
        for y in range(lines.shape[0]):
            for x in range(lines.shape[1]):
                self.blobs.append((addr + y * stride + x * nbytes, self.line(lines[y, x], bits, nbytes)))

    def row_stride(self, row_bytes: int, rows: int) -> int:
        if rows == 1:
            return int(self.rng.integers(0, 64)) * self.bus
        return self.align(row_bytes) + int(self.rng.integers(0, 3)) * self.bus

    # instructions -------------------------------------------------------------------------------------
    def order(self, phase: str, tile: int) -> tuple:
        """Where the next instruction of ``phase`` of ``tile`` goes in program order (instructions sort by it).

        Prefetch loads of a tile go ``lead`` tiles early and its stores ``lag`` tiles late.
        """
        major = {"prefetch": tile - self.lead, "body": tile, "store": tile + self.lag}[phase]
        return (major, {"prefetch": 0, "body": 1, "store": 2}[phase], tile, self.seq + 1)

    def instr(self, opcode: Opcode, phase: str, tile: int, **fields) -> _Instr:
        order = self.order(phase, tile)
        self.seq += 1
        ins = _Instr(opcode, fields, order=order)
        ins.touches = footprint(opcode, fields, self.config)
        return ins

    def load(self, buffer: Buffer, phase: str, tile: int, sram_addr: int, dram_addr: int, y: int, x: int,
             stride: int, pads=(0, 0, 0, 0), pad_value: int = 0) -> _Instr:
        pt, pb, pl, pr = pads
        return self.instr(Opcode.LOAD, phase, tile, buffer=int(buffer), sram_addr=sram_addr, dram_addr=dram_addr,
                          y_size=y, x_size=x, dram_stride=stride, pad_top=pt, pad_bottom=pb, pad_left=pl,
                          pad_right=pr, pad_value=pad_value)

    def act_image(self, h: int, w: int, order: tuple) -> dict:
        """A source of at least ``h`` x ``w`` activation lines: the output of an earlier STORE (read back as
        activations) or fresh random codes."""
        lb = self.lb[Buffer.ACT]
        chained = [o for o in self.outputs if o["order"] < order and o["y"] >= h
                   and o["row_bytes"] // lb >= w]
        if chained and self.rng.random() < 0.35:
            o = chained[int(self.rng.integers(len(chained)))]
            return dict(addr=o["addr"], stride=o["stride"], H=o["y"], W=o["row_bytes"] // lb, chained=True)
        H, W = h + int(self.rng.integers(0, 2)), w + int(self.rng.integers(0, 3))
        stride = self.row_stride(W * lb, H)
        addr = self.alloc((H - 1) * stride + W * lb)
        # A packed pair's line: tile_rows codes, PACKED_INT_BITS each, two to a slot (hw/spec/config.py).
        bits = PACKED_INT_BITS if self.tile_rows > self.rows else self.config.act_slot_bits
        self.write_lines(addr, stride, self.codes(self.a_fmt, (H, W, self.tile_rows)), bits, lb)
        size = (H - 1) * stride + W * lb
        self.inputs.append(dict(addr=addr, size=size, order=order, reused=False))
        return dict(addr=addr, stride=stride, H=H, W=W, chained=False)

    def act_load(self, phase: str, tile: int, sram_addr: int, y: int, x: int, pads, pad_value: int,
                 split: bool) -> list[_Instr]:
        """LOADs of a padded y x x block of activations into lines from ``sram_addr`` (one or two LOADs)."""
        img = self.act_image(y, x, self.order(phase, tile))
        iy = int(self.rng.integers(0, img["H"] - y + 1))
        ix = int(self.rng.integers(0, img["W"] - x + 1))
        lb = self.lb[Buffer.ACT]
        src = img["addr"] + iy * img["stride"] + ix * lb
        stride = img["stride"] if y > 1 else self.row_stride(x * lb, 1)
        if y > 1 and self.rng.random() < 0.08:      # rows that overlap in memory (0: one row, repeated)
            stride = int(self.rng.integers(0, -(-stride // self.bus))) * self.bus
        pt, pb, pl, pr = pads
        width = pl + x + pr
        if split and y >= 2:
            y1 = int(self.rng.integers(1, y))
            return [self.load(Buffer.ACT, phase, tile, sram_addr, src, y1, x, stride, (pt, 0, pl, pr), pad_value),
                    self.load(Buffer.ACT, phase, tile, sram_addr + (pt + y1) * width, src + y1 * stride, y - y1, x,
                              stride, (0, pb, pl, pr), pad_value)]
        return [self.load(Buffer.ACT, phase, tile, sram_addr, src, y, x, stride, pads, pad_value)]

    def weight_load(self, phase: str, tile: int, sram_addr: int, lines: int) -> _Instr:
        """A LOAD of ``lines`` fresh weight lines, shaped as a random y x x block."""
        x = int(self.rng.choice(_divisors(lines)))
        y = lines // x
        lb = self.lb[Buffer.WEIGHT]
        stride = self.row_stride(x * lb, y)
        addr = self.alloc((y - 1) * stride + x * lb)
        self.write_lines(addr, stride, self.codes(self.w_fmt, (y, x, self.cols)), self.config.weight_slot_bits, lb)
        self.inputs.append(dict(addr=addr, size=(y - 1) * stride + x * lb, order=(tile,), reused=False))
        if y > 1 and self.rng.random() < 0.08:      # rows that overlap in memory (0: one row, repeated)
            stride = int(self.rng.integers(0, -(-stride // self.bus))) * self.bus
        return self.load(Buffer.WEIGHT, phase, tile, sram_addr, addr, y, x, stride)

    def pad_value(self) -> int:
        fmt = self.a_fmt
        if self.rng.random() < 0.6:
            return int(fmt.quantize(0.0))
        return int(self.codes(fmt, ()))

    def pads(self, limit: int = 2) -> tuple[int, int, int, int]:
        if self.rng.random() < 0.3:
            return (0, 0, 0, 0)
        return tuple(int(v) for v in self.rng.integers(0, limit + 1, size=4))

    def region(self, half: int, which: int, lines: int) -> int:
        """First line of a block of ``lines`` at a random place in half ``which`` of a buffer."""
        return which * half + int(self.rng.integers(0, half - lines + 1))

    # parameters and post-processing -------------------------------------------------------------------
    def param_lines(self, tile: int, count: int) -> tuple[int, int, _Instr, tuple]:
        """(first line, lines, the LOAD, its source block) of ``count`` parameter lines for ``tile``."""
        c = self.config
        count = min(count, c.param_buffer_depth)
        if self.param_next + count > c.param_buffer_depth:
            self.param_next = 0
        first = self.param_next
        self.param_next += count
        lb = self.lb[Buffer.PARAM]
        x = count if self.rng.random() < 0.6 else 1
        y = count // x
        stride = self.row_stride(x * lb, y)
        addr = self.alloc((y - 1) * stride + x * lb)
        self.inputs.append(dict(addr=addr, size=(y - 1) * stride + x * lb, order=(tile,), reused=False))
        ins = self.load(Buffer.PARAM, "prefetch", tile, first, addr, y, x, stride)
        return first, count, ins, (addr, stride, y, x)

    def write_params(self, source, terms: int) -> None:
        """Bias, multiplier and shift of each column, scaled so that most outputs land inside the format."""
        addr, stride, y, x = source
        c, rng = self.config, self.rng
        # In the accumulators' units (those of the tile's pair, shifted in a multi-format build).
        typical = max(_mean_fixed(self.a_fmt) * _mean_fixed(self.w_fmt) * math.sqrt(terms), 1.0) \
            * 2.0 ** c.pair_shift(self.w_fmt, self.a_fmt)
        exponent = c.acc_exponent
        fmt = self.o_fmt
        for row in range(y):
            for col in range(x):
                bias, mult, shift = [], [], []
                for _ in range(self.cols):
                    if rng.random() < 0.1:      # anything the fields hold
                        bias.append(int(rng.integers(-(1 << 40), 1 << 40)))
                        mult.append(int(rng.integers(-(1 << 31), 1 << 31)))
                        shift.append(int(rng.integers(0, 64)))
                        continue
                    if isinstance(fmt, IntFormat):
                        target = 2.0 ** (fmt.bits - 1 + rng.uniform(-3, 1))
                    else:
                        target = fmt.max * 2.0 ** rng.uniform(-8, 1)
                    m = int(2 ** rng.uniform(0, 30)) * (-1 if rng.random() < 0.2 else 1)
                    s = round(math.log2(typical * abs(m)) + exponent - math.log2(target))
                    bias.append(0 if rng.random() < 0.3 else int(typical * rng.uniform(-2, 2)))
                    mult.append(m)
                    shift.append(min(max(s, 0), 63))
                data = bytearray()
                for b, m, s in zip(bias, mult, shift):
                    data += b.to_bytes(8, "little", signed=True) + m.to_bytes(4, "little", signed=True)
                    data += bytes([s, 0, 0, 0])
                data += bytes(self.lb[Buffer.PARAM] - len(data))
                self.blobs.append((addr + row * stride + col * self.lb[Buffer.PARAM], bytes(data)))

    def setpp(self, tile: int) -> _Instr:
        fmt, rng = self.o_fmt, self.rng
        finite = _finite_codes(fmt)
        top, bottom = int(fmt.quantize(fmt.max)), int(fmt.quantize(fmt.min))
        zero = int(fmt.quantize(0.0))
        positive = finite[fmt.decode(finite) > 0]
        choice = rng.integers(4)
        if choice == 0:
            lo, hi = bottom, top
        elif choice == 1:
            lo, hi = zero, top
        elif choice == 2:
            lo, hi = zero, int(rng.choice(positive)) if positive.size else top
        else:
            pool = np.arange(1 << fmt.bits) if self.wild else finite
            pool = pool[~np.isnan(fmt.decode(pool))]
            a, b = (int(v) for v in rng.choice(pool, size=2))
            lo, hi = (a, b) if fmt.decode(np.array([a]))[0] <= fmt.decode(np.array([b]))[0] else (b, a)
        zp = int(rng.integers(-8, 9)) if rng.random() < 0.8 else int(rng.integers(-(1 << 15), 1 << 15))
        self.setpp_done = True
        lut = int(self.table_loaded and rng.random() < 0.6)
        return self.instr(Opcode.SETPP, "store", tile, zero_point=zp, clamp_lo=lo, clamp_hi=hi, lut=lut,
                          **self.out_field)

    def table_load(self, tile: int) -> _Instr:
        """A LOAD of the whole LUT buffer (random codes, garbage in the lines' unused codes and padding), in one
        row or one row per line."""
        c, lb = self.config, self.lb[Buffer.LUT]
        lines = c.lut_buffer_depth
        x = lines if self.rng.random() < 0.6 else 1
        y = lines // x
        stride = self.row_stride(x * lb, y)
        size = (y - 1) * stride + x * lb
        addr = self.alloc(size)
        self.inputs.append(dict(addr=addr, size=size, order=(tile,), reused=False))
        for row in range(y):
            self.blobs.append((addr + row * stride, self.rng.bytes(x * lb)))
        self.table_loaded = True
        return self.load(Buffer.LUT, "prefetch", tile, 0, addr, y, x, stride)

    # accumulator blocks -------------------------------------------------------------------------------
    def alu(self, tile: int, written: set[int], residual=None) -> _Instr | None:
        rng = self.rng
        lo, hi = min(written), max(written) + 1
        if residual is not None and rng.random() < 0.6:
            dst, src, y, x = residual
            return self.instr(Opcode.ALU, "body", tile, op=int(rng.integers(len(AluOp))), dst_addr=dst, src_addr=src,
                              y_size=y, x_size=x, dst_stride=x, src_stride=x, src_step=1)
        overlap = rng.random() < 0.4                # source and destination share lines
        repeat = _package.REPEATED_ALU_DESTINATIONS and rng.random() < 0.3   # rows of the destination overlap
        for _ in range(60):
            y, x, step = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
            if y == 1:
                dst_stride = int(rng.integers(0, 4096))
            else:
                dst_stride = int(rng.integers(0, x)) if repeat else int(rng.integers(x, x + 4))
            src_stride = int(rng.integers(0, 8)) if y > 1 else int(rng.integers(0, 4096))
            dst, src = int(rng.integers(lo, hi)), int(rng.integers(lo, hi))
            dst_lines = {dst + j * dst_stride + i for j in range(y) for i in range(x)}
            src_lines = {src + j * src_stride + i * step for j in range(y) for i in range(x)}
            if dst_lines <= written and src_lines <= written and overlap == bool(dst_lines & src_lines):
                return self.instr(Opcode.ALU, "body", tile, op=int(rng.integers(len(AluOp))), dst_addr=dst, src_addr=src,
                                  y_size=y, x_size=x, dst_stride=dst_stride, src_stride=src_stride, src_step=step)
        return None

    def store(self, tile: int, written: set[int], whole: tuple[int, int, int], params: tuple[int, int]) -> _Instr:
        rng = self.rng
        if rng.random() < 0.4:
            acc, y, x = whole
            acc_stride = x if y > 1 else int(rng.integers(0, 4096))
        else:
            lo, hi = min(written), max(written) + 1
            for _ in range(60):
                y, x = int(rng.integers(1, 4)), int(rng.integers(1, 6))
                acc_stride = int(rng.integers(0, 2 * x + 2)) if y > 1 else int(rng.integers(0, 4096))
                acc = int(rng.integers(lo, hi))
                if all(acc + j * acc_stride + i in written for j in range(y) for i in range(x)):
                    break
            else:
                acc, y, x = whole
                acc_stride = x
        row = x * self.olb
        stride = self.row_stride(row, y)
        size = (y - 1) * stride + row
        order = self.order("store", tile)
        dead = [r for r in self.inputs if not r["reused"] and r["order"] < order and r["size"] >= size]
        if dead and rng.random() < 0.2:
            region = dead[int(rng.integers(len(dead)))]
            region["reused"] = True
            addr = region["addr"]
        else:
            addr = self.alloc(size)
        # With two parameter lines, the STORE sometimes reads both (negative_param: a PRelu's negative side).
        negative = int(params[1] >= 2 and rng.random() < 0.5)
        param = params[0] + int(rng.integers(params[1] - negative))
        ins = self.instr(Opcode.STORE, "store", tile, acc_addr=acc, dram_addr=addr, y_size=y, x_size=x,
                         acc_stride=acc_stride, dram_stride=stride, param_addr=param, negative_param=negative,
                         **self.store_field)
        self.outputs.append(dict(addr=addr, y=y, row_bytes=row, stride=stride, order=ins.order))
        return ins

    # tiles --------------------------------------------------------------------------------------------
    def which(self, tile: int) -> int:
        return tile % 2 if self.alternate else int(self.rng.integers(2))

    def gemm_tile(self, tile: int, budget: int) -> _Tile:
        c, rng = self.config, self.rng
        formats = self.tile_formats()
        which = self.which(tile)
        burst = rng.random() < 0.1 and budget >= 14
        for _ in range(50):
            chunks = int(rng.integers(4, 9)) if burst else int(rng.choice([1, 1, 2, 2, 3]))
            chunks = min(chunks, self.weight_half // self.tile_rows, max((budget - 4) // 3, 1))
            top = min(16, self.acc_half, self.act_half // chunks)
            if top >= 1:
                break
        else:
            raise _Retry("no GEMM fits")
        m = int(rng.integers(1, top + 1))
        residual = chunks >= 2 and 2 * m <= self.acc_half and rng.random() < 0.3
        interleaved = rng.random() < 0.5
        params, nparams, param_load, param_source = self.param_lines(tile, int(rng.integers(1, 3)))
        instrs = [param_load]
        act_base = self.region(self.act_half, which, chunks * m)
        weight_base = self.region(self.weight_half, which, chunks * self.tile_rows)
        acc_base = self.region(self.acc_half, which, 2 * m if residual else m)
        onto = all(acc_base + i in self.acc_written for i in range(m)) and rng.random() < 0.3
        for k in range(chunks):
            instrs.append(self.weight_load("prefetch", tile, weight_base + k * self.tile_rows, self.tile_rows))
        phase = "body" if interleaved else "prefetch"
        pairs = []
        for k in range(chunks):
            width = int(rng.choice(_divisors(m)))
            height = m // width
            pads = self.pads(1) if rng.random() < 0.3 else (0, 0, 0, 0)
            pt, pb = min(pads[0], height - 1), min(pads[1], max(height - 1 - pads[0], 0))
            pl, pr = min(pads[2], width - 1), min(pads[3], max(width - 1 - pads[2], 0))
            block = self.act_load(phase, tile, act_base + k * m, height - pt - pb, width - pl - pr,
                                  (pt, pb, pl, pr), self.pad_value(), split=rng.random() < 0.2)
            second = residual and k == chunks - 1
            compute = self.instr(Opcode.COMPUTE, "body", tile, acc_addr=acc_base + (m if second else 0),
                                 act_addr=act_base + k * m, weight_addr=weight_base + k * self.tile_rows, out_h=1,
                                 out_w=m, act_pitch=int(rng.integers(0, 1024)), stride=1,
                                 dilation=int(rng.integers(1, 8)), kh=1, kw=1,
                                 accumulate=int(onto if k == 0 else not second and rng.random() < 0.9),
                                 **self.fmt_fields)
            pairs.append((block, compute))
        instrs += _in_order(pairs, interleaved)
        written = set(range(acc_base, acc_base + (2 * m if residual else m)))
        self.write_params(param_source, self.tile_rows * chunks * (2 if onto else 1))
        summary = (f"gemm M={m} K={chunks}x{self.tile_rows}{' +residual' if residual else ''}"
                   f"{' +acc' if onto else ''}{formats}")
        return self.finish_tile(tile, "gemm", instrs, written, (acc_base, 1, m),
                                (acc_base, acc_base + m, 1, m) if residual else None, (params, nparams), summary,
                                budget)

    def conv_tile(self, tile: int, budget: int) -> _Tile:
        c, rng = self.config, self.rng
        formats = self.tile_formats()
        which = self.which(tile)
        for _ in range(80):
            kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            stride, dilation = int(rng.integers(1, 3)), int(rng.integers(1, 3))
            chunks = int(rng.choice([1, 1, 2]))
            if chunks * kh * kw * self.tile_rows > self.weight_half:
                continue
            pads = self.pads()
            h, w = int(rng.integers(1, 7)), int(rng.integers(1, 7))
            hp, wp = pads[0] + h + pads[1], pads[2] + w + pads[3]
            ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
            if ekh > hp or ekw > wp or chunks * hp * wp > self.act_half:
                continue
            out_h = int(rng.integers(1, min((hp - ekh) // stride + 1, 4) + 1))
            out_w = int(rng.integers(1, min((wp - ekw) // stride + 1, 6) + 1))
            if out_h * out_w <= self.acc_half:
                break
        else:
            return self.gemm_tile(tile, budget)
        y0 = int(rng.integers(0, hp - ((out_h - 1) * stride + ekh) + 1))
        x0 = int(rng.integers(0, wp - ((out_w - 1) * stride + ekw) + 1))
        params, nparams, param_load, param_source = self.param_lines(tile, int(rng.integers(1, 3)))
        instrs = [param_load]
        act_base = self.region(self.act_half, which, chunks * hp * wp)
        taps = kh * kw * self.tile_rows
        weight_base = self.region(self.weight_half, which, chunks * taps)
        acc_base = self.region(self.acc_half, which, out_h * out_w)
        onto = all(acc_base + i in self.acc_written for i in range(out_h * out_w)) and rng.random() < 0.3
        interleaved = rng.random() < 0.5
        phase = "body" if interleaved else "prefetch"
        pairs = []
        for k in range(chunks):
            instrs.append(self.weight_load("prefetch", tile, weight_base + k * taps, taps))
        for k in range(chunks):
            block = self.act_load(phase, tile, act_base + k * hp * wp, h, w, pads, self.pad_value(),
                                  split=rng.random() < 0.3)
            compute = self.instr(Opcode.COMPUTE, "body", tile, acc_addr=acc_base,
                                 act_addr=act_base + k * hp * wp + y0 * wp + x0, weight_addr=weight_base + k * taps,
                                 out_h=out_h, out_w=out_w, act_pitch=wp, stride=stride, dilation=dilation, kh=kh,
                                 kw=kw, accumulate=int(onto if k == 0 else rng.random() < 0.9), **self.fmt_fields)
            pairs.append((block, compute))
        instrs += _in_order(pairs, interleaved)
        written = set(range(acc_base, acc_base + out_h * out_w))
        self.write_params(param_source, taps * chunks * (2 if onto else 1))
        summary = (f"conv {kh}x{kw} s{stride} d{dilation} pad{''.join(map(str, pads))} {h}x{w}->{out_h}x{out_w}"
                   f"{' x' + str(chunks) if chunks > 1 else ''}{' +acc' if onto else ''}{formats}")
        return self.finish_tile(tile, "conv", instrs, written, (acc_base, out_h, out_w), None, (params, nparams),
                                summary, budget)

    def finish_tile(self, tile, kind, instrs, written, whole, residual, params, summary, budget) -> _Tile:
        rng = self.rng
        for _ in range(int(rng.choice([0, 0, 1, 1, 2]))):
            if len(instrs) + 2 > budget:
                break
            alu = self.alu(tile, written, residual)
            if alu is not None:
                instrs.append(alu)
                summary += " +" + AluOp(alu.fields["op"]).name.lower()
        if self.tables and len(instrs) + 4 <= budget and (not self.table_loaded or rng.random() < 0.2):
            instrs.append(self.table_load(tile))
        stores = int(rng.integers(1, 4))
        for k in range(stores):
            if not self.setpp_done or (rng.random() < (0.9 if k == 0 else 0.3)):
                instrs.append(self.setpp(tile))
            instrs.append(self.store(tile, written, whole, params))
            if len(instrs) + 2 > budget:
                break
        self.acc_written |= written
        return _Tile(kind, instrs, summary)
