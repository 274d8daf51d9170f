"""The events a program makes the engine perform, counted from its decoded instructions: what energy is made of.

Every event follows from instruction fields alone (the engine takes no data-dependent path), so the functional and
the timed run count the same events from the same rows; :func:`count_events` is the one place they are counted.
A row per instruction (program order, FINISH last) lets a report sum them over a layer's instructions.

What is counted, per instruction kind (``A``, ``W``, ``P``, ``L`` the line widths in bits of the ACT, WEIGHT, PARAM
and LUT buffers of ``hw/spec/layout.py``; ``ACC`` an accumulator line: ``cols`` sums of ``acc_bits`` plus their
non-finite flag where a format has NaN or Inf; ``taps = kh * kw``, ``outs = out_h * out_w``):

- LOAD: ``y_size * x_size * line_bytes`` bytes read from external memory; every line of the padded block written
  into its buffer (a LUT line into every post-processing lane's copy of the table: ``cols`` copies).
- COMPUTE: ``outs * taps * rows * cols`` multiply-accumulates (every PE fires on every activation line, zero or
  not: the array skips nothing); per tap ``rows`` weight lines and ``outs`` activation lines read; per tap and
  output line one accumulator line read and written (the retire side reads on every arrival, the first tap of an
  overwriting COMPUTE included) and ``cols`` accumulator additions, except on that first tap.
- ALU: per element two accumulator lines read (destination and source) and one written, and ``cols`` operations:
  additions or comparisons (``acc_ops``: MAX, ADD) or ``alu_mul_bits`` x ``alu_mul_bits`` multiplications
  (``alu_muls``: MUL); COPY moves without one.
- STORE: ``y_size * x_size`` accumulator lines read and post-processed (``cols`` codes each), one PARAM line read
  (two with ``negative_param``), with the lookup stage on (the last SETPP's ``lut``) one LUT line read per code,
  and the output lines written to external memory.
- every instruction, FINISH included: one instruction fetched from external memory (``INSTRUCTION_BYTES``).

These are logical accesses: a port idling with its enable high is not an event. Multiply-accumulates are kept per
pair of (weight, activation) formats, so that a program whose layers run in different formats is costed per format:
on a multi-format build each COMPUTE's pair is the one its ``weight_format`` and ``act_format`` fields select.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import FORMAT_FIELD_BITS, AluOp, Buffer, Kind, Opcode
from hw.spec.layout import line_bits, line_bytes, output_line_bytes

__all__ = ["EVENTS", "Events", "acc_line_bits", "count_events"]

#: The events counted, in the order of :attr:`Events.counts`' columns.
EVENTS = (
    "macs",
    "act_read_bits", "act_write_bits",
    "weight_read_bits", "weight_write_bits",
    "acc_read_bits", "acc_write_bits",
    "param_read_bits", "param_write_bits",
    "lut_read_bits", "lut_write_bits",
    "acc_ops",
    "alu_muls",
    "ppu_outputs",
    "dram_read_bytes", "dram_write_bytes",
    "instructions",
)
_COLUMN = {name: i for i, name in enumerate(EVENTS)}


def acc_line_bits(config: AcceleratorConfig) -> int:
    """Bits of one accumulator line: a sum of ``acc_bits`` per column, and its non-finite flag where a format has
    NaN or Inf (the RTL's flag is a constant otherwise, which synthesis removes)."""
    flag = any(f.has_nan or f.has_inf for f in (config.weights, config.acts))
    return config.cols * (config.acc_bits + flag)


@dataclass(frozen=True)
class Events:
    """Counted events of a program run: one row per instruction, one column per :data:`EVENTS` entry."""

    #: (instructions, len(EVENTS)) int64.
    counts: np.ndarray
    #: The (weight format, activation format) pairs of the MACs; ``pair[i]`` indexes it for instruction ``i``.
    pairs: tuple[tuple[str, str], ...]
    pair: np.ndarray

    def __len__(self) -> int:
        return len(self.counts)

    def total(self, start: int = 0, stop: int | None = None) -> dict[str, int]:
        """Each event's count over instructions ``start..stop - 1`` (all by default)."""
        sums = self.counts[start:stop].sum(axis=0)
        return {name: int(v) for name, v in zip(EVENTS, sums)}

    def macs_by_formats(self, start: int = 0, stop: int | None = None) -> dict[tuple[str, str], int]:
        """MACs over instructions ``start..stop - 1`` per (weight, activation) format pair (pairs with none left
        out)."""
        column, pair = self.counts[start:stop, _COLUMN["macs"]], self.pair[start:stop]
        sums = [int(column[pair == i].sum()) for i in range(len(self.pairs))]
        return {pair: n for pair, n in zip(self.pairs, sums) if n}

    @staticmethod
    def concatenate(parts: list["Events"]) -> "Events":
        """The events of programs run one after the other, their rows in order."""
        pairs = tuple(dict.fromkeys(q for p in parts for q in p.pairs))
        counts, pair = [np.zeros((0, len(EVENTS)), np.int64)], [np.zeros(0, np.int64)]
        for p in parts:
            counts.append(p.counts)
            pair.append(np.array([pairs.index(q) for q in p.pairs], dtype=np.int64)[p.pair])
        return Events(np.concatenate(counts), pairs, np.concatenate(pair))


def _fields(instructions: list, rows: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Fields ``names`` of the instructions at ``rows`` as int64 arrays."""
    return {n: np.fromiter((instructions[i][1][n] for i in rows), dtype=np.int64, count=len(rows)) for n in names}


def count_events(config: AcceleratorConfig, instructions: list[tuple[Kind, dict]], *, finish: bool = True,
                 lut: int = 0) -> Events:
    """Events of ``instructions`` (decoded, program order) on ``config``: a row each, plus one for the FINISH that
    ends them if ``finish`` (a FINISH among them counts its fetch only). ``lut`` is the lookup flag of the
    post-processing before the first SETPP (the engine keeps it from the program run before)."""
    c = config
    n = len(instructions)
    counts = np.zeros((n + finish, len(EVENTS)), dtype=np.int64)
    counts[:, _COLUMN["instructions"]] = 1
    opcodes = np.fromiter((k.opcode for k, _ in instructions), dtype=np.int64, count=n)
    rows = {op: np.flatnonzero(opcodes == op) for op in Opcode}
    _loads(c, instructions, rows[Opcode.LOAD], counts)
    _computes(c, instructions, rows[Opcode.COMPUTE], counts)
    _alus(c, instructions, rows[Opcode.ALU], counts)
    _stores(c, instructions, rows[Opcode.SETPP], rows[Opcode.STORE], counts, lut)
    pairs, pair = _pairs(c, instructions, rows[Opcode.COMPUTE], n + finish)
    return Events(counts, pairs, pair)


def _pairs(c: AcceleratorConfig, instructions: list, computes: np.ndarray, n: int) -> tuple[tuple, np.ndarray]:
    """The (weight, activation) format pairs of the MACs and each instruction's index into them: the pair a
    COMPUTE selects by its format fields on a multi-format build, else the build's one pair."""
    pair = np.zeros(n, dtype=np.int64)
    if not c.multi_format or not len(computes):
        return ((c.weights.name, c.acts.name),), pair
    f = _fields(instructions, computes, ("weight_format", "act_format"))
    selected = list(zip(f["weight_format"].tolist(), f["act_format"].tolist()))
    used = list(dict.fromkeys(selected))
    index = {key: i for i, key in enumerate(used)}
    pair[computes] = [index[key] for key in selected]
    return tuple((c.weight_formats[w].name, c.act_formats[a].name) for w, a in used), pair


def _loads(c: AcceleratorConfig, instructions: list, rows: np.ndarray, counts: np.ndarray) -> None:
    if not len(rows):
        return
    f = _fields(instructions, rows, ("buffer", "y_size", "x_size", "pad_top", "pad_bottom", "pad_left", "pad_right"))
    lines = (f["pad_top"] + f["y_size"] + f["pad_bottom"]) * (f["pad_left"] + f["x_size"] + f["pad_right"])
    for buffer, column in ((Buffer.ACT, "act"), (Buffer.WEIGHT, "weight"), (Buffer.PARAM, "param"),
                           (Buffer.LUT, "lut")):
        mine = f["buffer"] == buffer
        if not mine.any():
            continue
        at = rows[mine]
        copies = c.cols if buffer is Buffer.LUT else 1
        counts[at, _COLUMN[f"{column}_write_bits"]] = lines[mine] * line_bits(buffer, c) * copies
        counts[at, _COLUMN["dram_read_bytes"]] = f["y_size"][mine] * f["x_size"][mine] * line_bytes(buffer, c)


def _computes(c: AcceleratorConfig, instructions: list, rows: np.ndarray, counts: np.ndarray) -> None:
    if not len(rows):
        return
    f = _fields(instructions, rows, ("out_h", "out_w", "kh", "kw", "accumulate", "weight_format", "act_format",
                                     "packed"))
    taps, outs = f["kh"] * f["kw"], f["out_h"] * f["out_w"]
    arrivals = outs * taps                                   # activation lines in, partial-sum lines out
    # Each COMPUTE's reduction depth (twice rows where it sets packed).
    depth = np.array([[[c.compute_reduction_rows(w, a, k) for k in range(2)] for a in range(1 << FORMAT_FIELD_BITS)]
                      for w in range(1 << FORMAT_FIELD_BITS)])[f["weight_format"], f["act_format"], f["packed"]]
    counts[rows, _COLUMN["macs"]] = arrivals * depth * c.cols
    counts[rows, _COLUMN["act_read_bits"]] = arrivals * line_bits(Buffer.ACT, c)
    counts[rows, _COLUMN["weight_read_bits"]] = taps * depth * line_bits(Buffer.WEIGHT, c)
    counts[rows, _COLUMN["acc_read_bits"]] = arrivals * acc_line_bits(c)
    counts[rows, _COLUMN["acc_write_bits"]] = arrivals * acc_line_bits(c)
    counts[rows, _COLUMN["acc_ops"]] = (arrivals - outs * (f["accumulate"] == 0)) * c.cols


def _alus(c: AcceleratorConfig, instructions: list, rows: np.ndarray, counts: np.ndarray) -> None:
    if not len(rows):
        return
    f = _fields(instructions, rows, ("op", "y_size", "x_size"))
    elements = f["y_size"] * f["x_size"]
    counts[rows, _COLUMN["acc_read_bits"]] = 2 * elements * acc_line_bits(c)
    counts[rows, _COLUMN["acc_write_bits"]] = elements * acc_line_bits(c)
    counts[rows, _COLUMN["acc_ops"]] = elements * c.cols * ((f["op"] == AluOp.MAX) | (f["op"] == AluOp.ADD))
    counts[rows, _COLUMN["alu_muls"]] = elements * c.cols * (f["op"] == AluOp.MUL)


def _stores(c: AcceleratorConfig, instructions: list, setpps: np.ndarray, rows: np.ndarray, counts: np.ndarray,
            lut: int) -> None:
    if not len(rows):
        return
    f = _fields(instructions, rows, ("y_size", "x_size", "negative_param"))
    lines = f["y_size"] * f["x_size"]
    # The lookup flag each STORE sees: that of the last SETPP before it (SETPP and STORE share the store queue).
    flags = np.concatenate([[lut], _fields(instructions, setpps, ("lut",))["lut"]])
    use_lut = flags[np.searchsorted(setpps, rows)]
    counts[rows, _COLUMN["acc_read_bits"]] = lines * acc_line_bits(c)
    counts[rows, _COLUMN["param_read_bits"]] = line_bits(Buffer.PARAM, c) * (1 + f["negative_param"])
    counts[rows, _COLUMN["ppu_outputs"]] = lines * c.cols
    counts[rows, _COLUMN["lut_read_bits"]] = lines * c.cols * line_bits(Buffer.LUT, c) * use_lut
    counts[rows, _COLUMN["dram_write_bytes"]] = lines * output_line_bytes(c)

