"""The instruction set, defined once: kinds, fields, widths, encodings and meaning.

The RTL decoder, the emulator, the assembler/disassembler and this document are all derived from one
set of tables (``hw/spec/isa.py``, pure Python).

Every instruction is 128 bits wide, little-endian in memory. Bits 0..7 are the header (opcode
and the four dependency-token flags); the fields of each kind follow from bit 8 upward in the order listed.
Opcode 0 is illegal, so that zeroed memory stops the engine with an error instead of running.

Three engines run concurrently, each fed from its own queue: **load** (LOAD), **compute** (COMPUTE, ALU)
and **store** (SETPP, STORE). They synchronise through four token queues, as in VTA: load→compute
("data ready"), compute→load ("buffer free"), compute→store ("results ready"), store→compute
("accumulators free"). ``pop_*`` waits for a token from the neighbour before the instruction starts;
``push_*`` sends one after it completes. ``prev``/``next`` name the neighbour upstream/downstream in the
order load → compute → store. FINISH waits until every engine is idle, then stops the engine.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "INSTRUCTION_BITS", "INSTRUCTION_BYTES", "HEADER_BITS", "TOKEN_QUEUE_DEPTH", "FORMAT_FIELD_BITS",
    "Opcode", "Queue", "Buffer", "AluOp", "ErrorCode", "Field", "Kind", "KINDS", "HEADER",
    "IsaError", "encode", "decode", "kind_of",
]

INSTRUCTION_BITS = 128
INSTRUCTION_BYTES = INSTRUCTION_BITS // 8
#: Tokens each of the four token queues holds; pushing onto a full one is an error.
TOKEN_QUEUE_DEPTH = 8
#: Width of the format-selection fields (COMPUTE.weight_format, COMPUTE.act_format, SETPP.format): an index into
#: the build's set of formats (``AcceleratorConfig.formats``), so a set holds at most ``2**FORMAT_FIELD_BITS``.
FORMAT_FIELD_BITS = 3


class IsaError(ValueError):
    """An instruction that cannot be encoded or decoded."""


class Opcode(enum.IntEnum):
    LOAD = 1
    COMPUTE = 2
    ALU = 3
    SETPP = 4
    STORE = 5
    FINISH = 6


class Queue(enum.Enum):
    LOAD = "load"
    COMPUTE = "compute"
    STORE = "store"


class Buffer(enum.IntEnum):
    """On-chip buffers a LOAD fills. Every buffer is addressed in lines."""

    #: Activation scratchpad: a line is one code per reduction row (``config.reduction_rows``: an array row, or two
    #: in a packed int4 build).
    ACT = 0
    #: Weight buffer: a line is one code per array column; a tile is ``reduction_rows`` consecutive lines.
    WEIGHT = 1
    #: Post-processing parameters: a line is one 16-byte entry per array column (bias, multiplier, shift).
    PARAM = 2
    #: The activation lookup table of the post-processing unit: a line is an output line (one activation code per
    #: array column), of which the first ``lut_entries_per_line`` codes are table entries (``hw/spec/layout.py``).
    LUT = 3


class AluOp(enum.IntEnum):
    #: ``dst = max(dst, src)``, element-wise on accumulator lines (max pooling).
    MAX = 0
    #: ``dst = dst + src``, element-wise on accumulator lines (average pooling, residual add).
    ADD = 1
    #: ``dst = src`` (its non-finite flag too): the first window tap of a pooling into a region of its own.
    COPY = 2
    #: ``dst = sext(dst[k-1:0]) * sext(src[k-1:0])``, element-wise on accumulator lines (the product of two feature
    #: maps, a squeeze-excite or attention gate): each operand is the low ``k = AcceleratorConfig.alu_mul_bits`` bits
    #: of its sum, sign-extended; the product wraps at the accumulator width.
    MUL = 3


class ErrorCode(enum.IntEnum):
    """What the status register holds after the engine stopped."""

    NONE = 0
    ILLEGAL_OPCODE = 1
    #: A pop or push towards a neighbour the engine does not have (e.g. ``pop_prev`` on a LOAD).
    ILLEGAL_DEPENDENCY = 2
    #: A line address outside its buffer, or a field value outside its legal range.
    SRAM_RANGE = 3
    #: An external-memory access outside the memory window, a program address that is not a multiple of 16,
    #: or an error response from the bus.
    DRAM_RANGE = 4
    #: Every engine waits for a token that can never come.
    DEADLOCK = 5
    #: A push onto a token queue that already holds ``TOKEN_QUEUE_DEPTH`` tokens.
    TOKEN_OVERFLOW = 6
    #: A field combination that cannot be executed (a zero size, a bad buffer or ALU op, a format index outside
    #: the build's set, ...).
    BAD_FIELD = 7


@dataclass(frozen=True)
class Field:
    name: str
    bits: int
    doc: str
    signed: bool = False
    #: The field must not be zero.
    nonzero: bool = False

    @property
    def min(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


HEADER = (
    Field("opcode", 4, "Instruction kind (see the table of opcodes)."),
    Field("pop_prev", 1, "Wait for a token from the upstream engine before starting."),
    Field("pop_next", 1, "Wait for a token from the downstream engine before starting."),
    Field("push_prev", 1, "Send a token to the upstream engine after completing."),
    Field("push_next", 1, "Send a token to the downstream engine after completing."),
)
HEADER_BITS = sum(f.bits for f in HEADER)


@dataclass(frozen=True)
class Kind:
    opcode: Opcode
    queue: Queue | None
    doc: str
    fields: tuple[Field, ...]
    offsets: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        offsets, at = {}, 0
        for f in HEADER + self.fields:
            offsets[f.name] = at
            at += f.bits
        if at > INSTRUCTION_BITS:
            raise AssertionError(f"{self.opcode.name} needs {at} bits, more than {INSTRUCTION_BITS}")
        object.__setattr__(self, "offsets", offsets)

    @property
    def name(self) -> str:
        return self.opcode.name

    def field(self, name: str) -> Field:
        """The field called ``name`` (header fields included)."""
        for f in HEADER + self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    @property
    def used_bits(self) -> int:
        return HEADER_BITS + sum(f.bits for f in self.fields)

    @property
    def may_pop_prev(self) -> bool:
        return self.queue in (Queue.COMPUTE, Queue.STORE)

    @property
    def may_pop_next(self) -> bool:
        return self.queue in (Queue.LOAD, Queue.COMPUTE)

    may_push_prev = may_pop_prev
    may_push_next = may_pop_next


def _f(name, bits, doc, **kw):
    return Field(name, bits, doc, **kw)


KINDS: dict[Opcode, Kind] = {k.opcode: k for k in (
    Kind(Opcode.LOAD, Queue.LOAD,
         "Copy a 2-D block of lines from external memory into a buffer, surrounded by padding lines. "
         "The destination is a dense (pad_top + y_size + pad_bottom) x (pad_left + x_size + pad_right) block "
         "of lines starting at `sram_addr`, row-major; padding lines hold `pad_value` in every element "
         "(ACT only; WEIGHT, PARAM and LUT loads must have no padding). Source line (y, x) is at byte "
         "`dram_addr + y * dram_stride + x * line_bytes`, where `line_bytes` is the packed size of one line of "
         "the buffer (see docs/architecture.md, memory layout).",
         (
             _f("buffer", 2, "Destination buffer: 0 ACT, 1 WEIGHT, 2 PARAM, 3 LUT."),
             _f("sram_addr", 16, "First destination line."),
             _f("dram_addr", 32, "Byte address of source line (0, 0); a multiple of the bus width in bytes."),
             _f("y_size", 10, "Rows of source lines.", nonzero=True),
             _f("x_size", 10, "Source lines per row.", nonzero=True),
             _f("dram_stride", 20, "Bytes between the first lines of consecutive rows; a multiple of the bus "
                                   "width in bytes."),
             _f("pad_top", 3, "Padding rows above."),
             _f("pad_bottom", 3, "Padding rows below."),
             _f("pad_left", 3, "Padding lines left of each row."),
             _f("pad_right", 3, "Padding lines right of each row."),
             _f("pad_value", 16, "Code written into every element of a padding line (the zero point)."),
         )),
    Kind(Opcode.COMPUTE, Queue.COMPUTE,
         "Multiply-accumulate activation lines by weight tiles into accumulator lines: a convolution over a "
         "kernel window by address generation. For ky < kh, kx < kw (tile t = ky*kw + kx at weight lines "
         "`weight_addr + t*reduction_rows`: the PE rows, twice that in a packed int4 build, and twice the rows "
         "with `packed` set: the COMPUTE's reduction depth), for oy < out_h, "
         "ox < out_w: "
         "`acc[acc_addr + oy*out_w + ox] (+)= act[act_addr + (oy*stride + ky*dilation)*act_pitch + ox*stride + "
         "kx*dilation] @ W_t`. The first kernel position overwrites unless `accumulate` is set; later ones "
         "always accumulate. A GEMM is kh = kw = 1, out_h = 1, out_w = M. Weights are codes of format "
         "`weight_format`, activations of format `act_format` (indices into the build's format set; a "
         "single-format build has only index 0, its weight and activation formats); each product enters the "
         "accumulators exactly, in units of 2**acc_exponent (the finest product of the set: a coarser pair's "
         "product is shifted left by the difference). `packed` (a multi-format build that packs per layer, "
         "`config.packs_per_layer`, and a pair it packs, such as int4 x int4): each activation slot holds two "
         "codes, reduction rows 2r and 2r+1 at bits 0..3 and 4..7 of slot r, so an activation line holds "
         "2*rows codes and a tile is 2*rows weight lines; a PE multiplies both codes a cycle. Elsewhere "
         "`packed` is a bad field.",
         (
             _f("acc_addr", 16, "First accumulator line."),
             _f("act_addr", 16, "Activation line of output (0, 0) at kernel position (0, 0)."),
             _f("weight_addr", 16, "First weight line of tile 0."),
             _f("out_h", 10, "Output rows.", nonzero=True),
             _f("out_w", 10, "Output columns.", nonzero=True),
             _f("act_pitch", 10, "Activation lines per input row."),
             _f("stride", 3, "Convolution stride.", nonzero=True),
             _f("dilation", 3, "Kernel dilation.", nonzero=True),
             _f("kh", 4, "Kernel height.", nonzero=True),
             _f("kw", 4, "Kernel width.", nonzero=True),
             _f("accumulate", 1, "Add to the accumulators instead of overwriting them."),
             _f("weight_format", FORMAT_FIELD_BITS, "Index of the weights' format in the build's format set."),
             _f("act_format", FORMAT_FIELD_BITS, "Index of the activations' format in the build's format set."),
             _f("packed", 1, "Activation lines hold two codes a slot (code k at bits 4k) and tiles are "
                             "2*rows lines: only for a pair the build packs (config.packed_pairs)."),
         )),
    Kind(Opcode.ALU, Queue.COMPUTE,
         "Element-wise operation on accumulator lines (pooling, residual add, the product of two maps): for "
         "y < y_size, x < x_size, one element after the other in that order (so overlapping regions see earlier "
         "results): `acc[dst_addr + y*dst_stride + x] = op(acc[dst_addr + y*dst_stride + x], "
         "acc[src_addr + y*src_stride + x*src_step])`. ADD wraps at the accumulator width; MUL multiplies the "
         "low `k` bits of the destination sum by the low `k` bits of the source sum, each taken as a signed number "
         "(`k = alu_mul_bits` of the configuration: enough for the difference of any two activation codes brought "
         "into the accumulators by an identity tile, i.e. twice the largest magnitude of a code in accumulator units, "
         "plus a sign bit), and keeps the low `acc_bits` bits of the product; MAX, ADD and MUL combine non-finite flags with OR; COPY takes the "
         "source element and its flag. A source that stays on one line for a whole row (a per-channel gate "
         "multiplying every position) is `x_size = 1`, `src_stride = 0`.",
         (
             _f("op", 2, "0 MAX, 1 ADD, 2 COPY, 3 MUL."),
             _f("dst_addr", 16, "First destination (and first operand) accumulator line."),
             _f("src_addr", 16, "First source accumulator line."),
             _f("y_size", 10, "Rows.", nonzero=True),
             _f("x_size", 10, "Lines per row.", nonzero=True),
             _f("dst_stride", 12, "Destination lines between rows."),
             _f("src_stride", 12, "Source lines between rows."),
             _f("src_step", 4, "Source lines between consecutive elements of a row.", nonzero=True),
         )),
    Kind(Opcode.SETPP, Queue.STORE,
         "Set the post-processing of the following STOREs: for each output element, with bias B (saturated to "
         "the accumulator's range), multiplier M and shift S of its column from the PARAM line `param_addr` "
         "(of the STORE; with STORE.negative_param, M and S of an element whose `acc + B` is negative come from line "
         "`param_addr + 1`): "
         "`v = (acc + B) * M * 2**(acc_exponent - S)`, then integer outputs: `q = clamp(rne(v) + zero_point, "
         "format range)`, minifloat outputs: `q = quantize(v)` (round to nearest even, saturating; a zero is "
         "always +0); finally `q` is clamped to [clamp_lo, clamp_hi] (codes of the output format, compared by "
         "value; a value at or below clamp_lo gives the code clamp_lo, at or above clamp_hi the code clamp_hi): "
         "ReLU is clamp_lo = zero, ReLU6 adds clamp_hi = the code of 6. With `lut` set, `q` (a code in the "
         "pre-activation encoding) is then replaced by entry `q` of the LUT buffer, `table[q]`: code "
         "`q % lut_entries_per_line` of LUT line `q // lut_entries_per_line` (a nonlinear activation such as "
         "Sigmoid or HardSwish; the table holds codes of the output encoding). `lut` needs an activation format of "
         "at most 8 bits (the engine has no LUT buffer otherwise). The output format is `format`, an index into "
         "the build's format set (0, the activation format, in a single-format build); `clamp_lo`, `clamp_hi` and "
         "the table's entries are codes of it.",
         (
             _f("zero_point", 16, "Added after rounding (integer outputs).", signed=True),
             _f("clamp_lo", 16, "Smallest output code (by value)."),
             _f("clamp_hi", 16, "Largest output code (by value)."),
             _f("lut", 1, "Replace each output code q by entry q of the LUT buffer."),
             _f("format", FORMAT_FIELD_BITS, "Index of the output format in the build's format set."),
         )),
    Kind(Opcode.STORE, Queue.STORE,
         "Post-process a 2-D block of accumulator lines and write it to external memory: accumulator line "
         "`acc_addr + y*acc_stride + x` becomes the output line at byte `dram_addr + y*dram_stride + "
         "x*line_bytes` (one code per array column, in the activation format). With `negative_param` set, the "
         "STORE reads two PARAM lines, `param_addr` and `param_addr + 1`: an element whose biased sum `acc + B` "
         "is negative takes its column's multiplier M and shift S from line `param_addr + 1` instead (its bias "
         "is always that of line `param_addr`): a PRelu with one slope per channel, exactly, as two "
         "requantizations chosen by the sign. Both lines must lie in the PARAM buffer (else SRAM_RANGE). "
         "`packed` (a multi-format build that packs per layer, `config.packs_per_layer`): the low four bits of "
         "codes 2r and 2r+1 of the line fill bits 0..3 and 4..7 of slot r (r < cols/2), the other bits of the "
         "line are zero; the line's bytes and address are those of any output line. It is meant for a 4-bit "
         "integer output format (SETPP.format), whose codes are their low four bits: the line is then an "
         "activation line of a packed COMPUTE. Elsewhere `packed` is a bad field.",
         (
             _f("acc_addr", 16, "First accumulator line."),
             _f("dram_addr", 32, "Byte address of output line (0, 0); a multiple of the bus width in bytes."),
             _f("y_size", 10, "Rows.", nonzero=True),
             _f("x_size", 10, "Lines per row.", nonzero=True),
             _f("acc_stride", 12, "Accumulator lines between rows."),
             _f("dram_stride", 20, "Bytes between rows; a multiple of the bus width in bytes."),
             _f("param_addr", 10, "PARAM line holding bias, multiplier and shift of each column."),
             _f("negative_param", 1, "Elements with a negative `acc + B` take M and S from PARAM line "
                                     "`param_addr + 1` (per-channel PRelu)."),
             _f("packed", 1, "Write each line's cols codes two a slot (codes 2r and 2r+1 at bits 0..3 and 4..7 of "
                             "slot r, the layout a packed COMPUTE reads): only in a build that packs per layer."),
         )),
    Kind(Opcode.FINISH, None, "Wait until every engine is idle, then stop; the status register says done.", ()),
)}


def kind_of(opcode: int) -> Kind:
    try:
        return KINDS[Opcode(opcode)]
    except ValueError:
        raise IsaError(f"Illegal opcode {opcode}; legal opcodes are "
                       f"{', '.join(f'{o.value} {o.name}' for o in Opcode)}") from None


def _check_tokens(kind: Kind, values: dict) -> None:
    for flag, allowed in (("pop_prev", kind.may_pop_prev), ("pop_next", kind.may_pop_next),
                          ("push_prev", kind.may_push_prev), ("push_next", kind.may_push_next)):
        if values.get(flag) and not allowed:
            if kind.queue is None:
                raise IsaError(f"{kind.name} cannot {flag.replace('_', ' ')}: it runs on no engine and has no tokens")
            raise IsaError(f"{kind.name} cannot {flag.replace('_', ' ')}: the {kind.queue.value} engine has no "
                           f"such neighbour")


def encode(opcode: Opcode | str, **values: int) -> int:
    """The instruction word for ``opcode`` with ``values``; missing fields are zero.

    Raises :class:`IsaError` for an unknown field, a value out of its range, or an impossible token flag.
    """
    if isinstance(opcode, str):
        if opcode.upper() not in Opcode.__members__:
            raise IsaError(f"Unknown instruction {opcode!r}; legal opcodes are "
                           f"{', '.join(f'{o.value} {o.name}' for o in Opcode)}")
        opcode = Opcode[opcode.upper()]
    kind = kind_of(opcode)
    known = {f.name: f for f in HEADER[1:] + kind.fields}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise IsaError(f"{kind.name} has no field {', '.join(unknown)}; its fields are {', '.join(known)}")
    _check_tokens(kind, values)
    word = int(kind.opcode)
    for name, value in values.items():
        f = known[name]
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int) or not f.min <= value <= f.max:
            raise IsaError(f"{kind.name}.{name} must be an integer in {f.min}..{f.max}, not {value!r}")
        word |= (value & ((1 << f.bits) - 1)) << kind.offsets[name]
    return word


def decode(word: int) -> tuple[Kind, dict[str, int]]:
    """The kind and every field of an instruction word (header flags included).

    Raises :class:`IsaError` for an illegal opcode, an impossible token flag, or bits set above the fields.
    """
    if not 0 <= word < (1 << INSTRUCTION_BITS):
        raise IsaError(f"An instruction word must be in 0..2**{INSTRUCTION_BITS}-1")
    kind = kind_of(word & 0xF)
    values = {}
    for f in HEADER[1:] + kind.fields:
        raw = (word >> kind.offsets[f.name]) & ((1 << f.bits) - 1)
        values[f.name] = raw - (1 << f.bits) if f.signed and raw >> (f.bits - 1) else raw
    if word >> kind.used_bits:
        raise IsaError(f"{kind.name} has bits set above bit {kind.used_bits - 1}, where it has no fields")
    _check_tokens(kind, values)
    return kind, values
