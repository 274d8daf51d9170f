"""Illegal programs (:func:`illegal_program`): a legal prefix, then one faulty instruction, a deadlock or a
token overflow."""

from __future__ import annotations

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import (INSTRUCTION_BITS, INSTRUCTION_BYTES, KINDS, TOKEN_QUEUE_DEPTH, AluOp, Buffer, ErrorCode, Opcode,
                         encode)
from hw.spec.layout import line_bytes, output_line_bytes

from .common import _COMPUTE, _ENGINE_NAME, _FLAG_BIT, _FLAGS, _LOAD, _STORE, Program
from .footprint import _QUEUES, footprint
from .legal import _config_summary, _draw, _finish_word, _image
from .tiles import _finite_codes
from .tokens import _barrier, _Instr, _place_tokens, _Retry

#: The kinds of faulty program :func:`illegal_program` builds, and the error each one must raise.
ILLEGAL_KINDS: dict[str, ErrorCode] = {
    "opcode": ErrorCode.ILLEGAL_OPCODE,
    "dependency": ErrorCode.ILLEGAL_DEPENDENCY,
    "bad_field": ErrorCode.BAD_FIELD,
    "sram_range": ErrorCode.SRAM_RANGE,
    "dram_range": ErrorCode.DRAM_RANGE,
    "deadlock": ErrorCode.DEADLOCK,
    "token_overflow": ErrorCode.TOKEN_OVERFLOW,
}


# --- illegal programs ---------------------------------------------------------------------------------------

def _set_flags(word: int, *flags: str) -> int:
    for name in flags:
        word |= 1 << _FLAG_BIT[name]
    return word


class _Faults:
    """Faulty words for one configuration; each method returns (word, what it is)."""

    def __init__(self, config: AcceleratorConfig, rng: np.random.Generator, dram_size: int, data_addr: int):
        self.c, self.rng, self.dram_size = config, rng, dram_size
        self.bus = config.dma_bits // 8
        self.data = data_addr        # a byte address of legal data (for otherwise legal instructions)

    # legal instructions to corrupt ---------------------------------------------------------------------
    def legal(self, opcode: Opcode) -> dict:
        c, rng = self.c, self.rng
        if opcode is Opcode.LOAD:
            return dict(buffer=int(Buffer.ACT), sram_addr=int(rng.integers(0, 8)), dram_addr=self.data, y_size=2,
                        x_size=2, dram_stride=self.bus * 4, pad_top=0, pad_bottom=0, pad_left=0, pad_right=0,
                        pad_value=0)
        if opcode is Opcode.COMPUTE:
            return dict(acc_addr=0, act_addr=0, weight_addr=0, out_h=1, out_w=2, act_pitch=3, stride=1,
                        dilation=1, kh=1, kw=1, accumulate=0)
        if opcode is Opcode.ALU:
            return dict(op=0, dst_addr=0, src_addr=4, y_size=1, x_size=2, dst_stride=0, src_stride=0, src_step=1)
        if opcode is Opcode.SETPP:
            zero = int(c.acts.quantize(0.0))
            return dict(zero_point=0, clamp_lo=zero, clamp_hi=zero)
        if opcode is Opcode.STORE:
            return dict(acc_addr=0, dram_addr=self.data, y_size=1, x_size=1, acc_stride=0, dram_stride=0,
                        param_addr=0)
        return {}

    def opcode(self) -> tuple[int, str]:
        op = int(self.rng.choice([0, *range(7, 16)]))
        word = int.from_bytes(self.rng.bytes(INSTRUCTION_BYTES), "little") if self.rng.random() < 0.7 else 0
        return (word & ~0xF) | op, f"opcode {op}"

    def dependency(self) -> tuple[int, str]:
        rng = self.rng
        opcode = Opcode(int(rng.choice([Opcode.LOAD, Opcode.SETPP, Opcode.STORE, Opcode.FINISH])))
        kind = KINDS[opcode]
        bad = [f for f in _FLAGS if not getattr(kind, f"may_{f}")]
        flags = [str(f) for f in rng.choice(bad, size=int(rng.integers(1, len(bad) + 1)), replace=False)]
        fields = self.legal(opcode)
        what = f"{opcode.name} {'+'.join(flags)}"
        if fields and rng.random() < 0.3:         # precedence: the dependency wins over a bad field
            nonzero = [f.name for f in kind.fields if f.nonzero]
            if nonzero:
                name = str(rng.choice(nonzero))
                fields[name] = 0
                what += f" and {name}=0"
        return _set_flags(encode(opcode, **fields), *flags), what

    def bad_field(self) -> tuple[int, str]:
        c, rng = self.c, self.rng
        fmt = c.acts
        choices = ["zero", "misaligned_addr", "misaligned_stride", "weight_padding", "param_padding", "lut_padding",
                   "alu_op", "clamp_order", "clamp_width", "pad_value_width", "reserved_bits", "format_index",
                   "packed"]
        if not c.lut_buffer_depth:
            choices.append("lut_without_table")
        if fmt.has_nan:
            choices.append("clamp_nan")
        what = str(rng.choice(choices))
        if what == "zero":
            opcode = Opcode(int(rng.choice([1, 2, 3, 5])))
            fields = self.legal(opcode)
            name = str(rng.choice([f.name for f in KINDS[opcode].fields if f.nonzero]))
            fields[name] = 0
            return encode(opcode, **fields), f"{opcode.name} {name}=0"
        if what in ("misaligned_addr", "misaligned_stride"):
            opcode = Opcode.LOAD if rng.random() < 0.5 else Opcode.STORE
            fields = self.legal(opcode)
            name = "dram_addr" if what == "misaligned_addr" else "dram_stride"
            fields[name] += int(rng.integers(1, self.bus)) if self.bus > 1 else 0
            if self.bus == 1:
                return self.bad_field()
            if opcode is Opcode.STORE and name == "dram_stride":
                fields["y_size"] = 2
            if rng.random() < 0.3:                # precedence: BAD_FIELD before SRAM_RANGE and DRAM_RANGE
                fields["dram_addr"] = (fields["dram_addr"] + self.dram_size) | 1
            return encode(opcode, **fields), f"{opcode.name} {name} not a multiple of {self.bus}"
        if what == "lut_without_table":
            fields = self.legal(Opcode.SETPP)
            return encode(Opcode.SETPP, **fields, lut=1), f"SETPP lut=1 on a {fmt.name} engine (no table)"
        if what in ("weight_padding", "param_padding", "lut_padding"):
            fields = self.legal(Opcode.LOAD)
            fields["buffer"] = int({"weight_padding": Buffer.WEIGHT, "param_padding": Buffer.PARAM,
                                    "lut_padding": Buffer.LUT}[what])
            fields["sram_addr"] = 0
            fields["y_size"] = fields["x_size"] = 1
            side = str(rng.choice(["pad_top", "pad_bottom", "pad_left", "pad_right"]))
            fields[side] = int(rng.integers(1, 8))
            return encode(Opcode.LOAD, **fields), f"{Buffer(fields['buffer']).name} LOAD with {side}"
        if what == "alu_op":
            if len(AluOp) >= 1 << KINDS[Opcode.ALU].field("op").bits:
                return self.bad_field()                 # every value of the op field is an operation
            fields = self.legal(Opcode.ALU)
            fields["op"] = int(rng.integers(len(AluOp), 4))       # beyond the last ALU operation
            if rng.random() < 0.3:
                fields["dst_addr"] = c.acc_buffer_depth     # precedence: BAD_FIELD before SRAM_RANGE
            return encode(Opcode.ALU, **fields), f"ALU op={fields['op']}"
        if what == "clamp_order":
            finite = _finite_codes(fmt)
            values = fmt.decode(finite)
            for _ in range(100):
                a, b = (int(v) for v in rng.choice(len(finite), size=2))
                if values[a] > values[b]:
                    return (encode(Opcode.SETPP, zero_point=0, clamp_lo=int(finite[a]), clamp_hi=int(finite[b])),
                            f"SETPP clamp_lo {values[a]} > clamp_hi {values[b]}")
            return self.bad_field()
        if what == "clamp_nan":
            nan = [int(v) for v in np.arange(1 << fmt.bits) if np.isnan(fmt.decode(np.array([v]))[0])]
            fields = self.legal(Opcode.SETPP)
            side = str(rng.choice(["clamp_lo", "clamp_hi"]))
            fields[side] = int(rng.choice(nan))
            return encode(Opcode.SETPP, **fields), f"SETPP {side} is NaN"
        if what == "clamp_width":
            if fmt.bits >= 16:
                return self.bad_field()
            fields = self.legal(Opcode.SETPP)
            fields["clamp_hi"] = int(rng.integers(1 << fmt.bits, 1 << 16))
            return encode(Opcode.SETPP, **fields), f"SETPP clamp_hi wider than {fmt.bits} bits"
        if what == "pad_value_width":
            bits = c.act_slot_bits
            if bits >= 16:
                return self.bad_field()
            fields = self.legal(Opcode.LOAD)
            fields["pad_left"] = 1
            fields["pad_value"] = int(rng.integers(1 << bits, 1 << 16))
            return encode(Opcode.LOAD, **fields), f"ACT LOAD pad_value wider than {bits} bits"
        if what == "format_index":
            # An index past the build's format set (a single-format build has only index 0).
            limit = 1 << KINDS[Opcode.SETPP].field("format").bits
            opcode, name = [(Opcode.COMPUTE, "weight_format"), (Opcode.COMPUTE, "act_format"),
                            (Opcode.SETPP, "format")][int(rng.integers(3))]
            count = len(c.act_formats if name != "weight_format" else c.weight_formats)
            fields = self.legal(opcode)
            fields[name] = int(rng.integers(count, limit))
            if opcode is Opcode.COMPUTE and rng.random() < 0.3:
                fields["acc_addr"] = c.acc_buffer_depth - 1      # precedence: BAD_FIELD before SRAM_RANGE
            return encode(opcode, **fields), f"{opcode.name} {name}={fields[name]} of a set of {count}"
        if what == "packed" and not c.packs_per_layer and rng.random() < 0.5:
            # STORE.packed on a build that does not pack per layer.
            return encode(Opcode.STORE, **self.legal(Opcode.STORE), packed=1), "STORE packed=1 on a build " \
                                                                               "that does not pack"
        if what == "packed":
            # COMPUTE.packed on a pair the build does not pack (every pair but in a build that packs per layer).
            unpacked = [(w, a) for w in range(len(c.weight_formats)) for a in range(len(c.act_formats))
                        if (w, a) not in c.packed_pairs]
            w, a = unpacked[int(rng.integers(len(unpacked)))]
            fields = {**self.legal(Opcode.COMPUTE), "weight_format": w, "act_format": a, "packed": 1}
            return encode(Opcode.COMPUTE, **fields), f"COMPUTE packed=1 on {c.weight_formats[w].name} x " \
                                                     f"{c.act_formats[a].name}"
        # reserved bits: any bit above the fields of an otherwise legal instruction
        opcode = Opcode(int(rng.choice([o.value for o in Opcode])))
        kind = KINDS[opcode]
        bit = int(rng.integers(kind.used_bits, INSTRUCTION_BITS))
        return encode(opcode, **self.legal(opcode)) | (1 << bit), f"{opcode.name} with reserved bit {bit} set"

    def sram_range(self) -> tuple[int, str]:
        c, rng = self.c, self.rng
        what = str(rng.choice(["load", "compute_act", "compute_weight", "compute_acc", "alu_dst", "alu_src",
                               "store_acc", "store_param", "store_negative_param"]))
        if what == "load":
            buffer = Buffer(int(rng.integers(4)))
            depth = {Buffer.ACT: c.act_buffer_depth, Buffer.WEIGHT: c.weight_buffer_depth,
                     Buffer.PARAM: c.param_buffer_depth, Buffer.LUT: c.lut_buffer_depth}[buffer]
            fields = self.legal(Opcode.LOAD)
            fields["buffer"] = int(buffer)
            fields["y_size"], fields["x_size"] = 1, int(rng.integers(1, 4))
            if buffer is Buffer.ACT and rng.random() < 0.5:     # the padding is what overflows
                fields["pad_bottom"] = int(rng.integers(1, 8))
            lines = fields["x_size"] * (1 + fields["pad_bottom"])
            fields["sram_addr"] = max(depth - lines + int(rng.integers(1, 4)), 0)
            if rng.random() < 0.3:                               # precedence over DRAM_RANGE
                fields["dram_addr"] = self.dram_size // self.bus * self.bus
            return encode(Opcode.LOAD, **fields), f"{buffer.name} LOAD past line {depth - 1}"
        if what.startswith("compute"):
            f = self.legal(Opcode.COMPUTE)
            if what == "compute_act":
                f.update(out_h=2, out_w=2, kh=2, kw=2, act_pitch=int(rng.integers(1, c.act_buffer_depth // 8 + 1)),
                         stride=int(rng.integers(1, 3)), dilation=int(rng.integers(1, 3)))
                last = (f["out_h"] - 1) * f["stride"] * f["act_pitch"] + (f["kh"] - 1) * f["dilation"] * f["act_pitch"]
                last += (f["out_w"] - 1) * f["stride"] + (f["kw"] - 1) * f["dilation"]
                f["act_addr"] = c.act_buffer_depth - last + int(rng.integers(0, 3))
            elif what == "compute_weight":
                f.update(kh=int(rng.integers(1, 4)), kw=int(rng.integers(1, 4)))
                if c.packed_pairs and rng.random() < 0.5:      # packed: past the end only counted 2 * rows a tile
                    w, a = c.packed_pairs[int(rng.integers(len(c.packed_pairs)))]
                    f.update(weight_format=w, act_format=a, packed=1)
                # The COMPUTE's own depth: a packed pair's tiles are 2 * rows lines (past the end only so counted).
                rows = c.compute_reduction_rows(f.get("weight_format", 0), f.get("act_format", 0), f.get("packed", 0))
                f["weight_addr"] = max(c.weight_buffer_depth - f["kh"] * f["kw"] * rows + int(rng.integers(1, 4)), 0)
            else:
                f["acc_addr"] = c.acc_buffer_depth - f["out_h"] * f["out_w"] + int(rng.integers(1, 4))
            return encode(Opcode.COMPUTE, **f), f"COMPUTE past the {what.split('_')[1]} buffer"
        if what.startswith("alu"):
            f = self.legal(Opcode.ALU)
            f.update(y_size=2, x_size=2, dst_stride=3, src_stride=5, src_step=2)
            if what == "alu_dst":
                f["dst_addr"] = c.acc_buffer_depth - (3 + 1) + int(rng.integers(1, 3))
            else:
                f["src_addr"] = c.acc_buffer_depth - (5 + 2) + int(rng.integers(0, 3))
            return encode(Opcode.ALU, **f), f"ALU {what.split('_')[1]} past the accumulators"
        f = self.legal(Opcode.STORE)
        if what == "store_negative_param":
            # The last PARAM line, legal alone: its negative side, param_addr + 1, lies past the buffer.
            f.update(param_addr=c.param_buffer_depth - 1, negative_param=1)
            if rng.random() < 0.3:
                f["dram_addr"] = self.dram_size // self.bus * self.bus
            return encode(Opcode.STORE, **f), "STORE negative_param on the last PARAM line"
        if what == "store_param" and c.param_buffer_depth < 1024:
            f["param_addr"] = int(rng.integers(c.param_buffer_depth, min(1 << 10, 2 * c.param_buffer_depth + 1)))
        else:
            what = "store_acc"
            f.update(y_size=2, x_size=2, acc_stride=int(rng.integers(0, 8)), dram_stride=self.bus * 4)
            f["acc_addr"] = c.acc_buffer_depth - f["acc_stride"] - 1 + int(rng.integers(0, 2))
        if rng.random() < 0.3:
            f["dram_addr"] = self.dram_size // self.bus * self.bus
        return encode(Opcode.STORE, **f), f"STORE past the {'accumulators' if what == 'store_acc' else 'parameters'}"

    def dram_range(self) -> tuple[int, str]:
        c, rng = self.c, self.rng
        opcode = Opcode.LOAD if rng.random() < 0.5 else Opcode.STORE
        f = self.legal(opcode)
        nbytes = line_bytes(Buffer.ACT, c) if opcode is Opcode.LOAD else output_line_bytes(c)
        how = str(rng.choice(["end", "stride", "far", "wrap"]))
        top = -(-self.dram_size // self.bus) * self.bus
        stride_max = ((1 << 20) - 1) // self.bus * self.bus
        if how == "end":           # the last line ends just past the window
            f.update(y_size=1, x_size=int(rng.integers(1, 5)))
            f["dram_addr"] = max(top - f["x_size"] * nbytes + self.bus * int(rng.integers(1, 3)), 0)
        elif how == "stride" and self.data + 2 * stride_max > self.dram_size:   # a later row is past the end
            f.update(x_size=1, dram_addr=self.data)
            f["dram_stride"] = min(-(-(self.dram_size // 2) // self.bus) * self.bus, stride_max)
            f["y_size"] = min((self.dram_size - self.data) // f["dram_stride"] + 2, 1023)
        elif how in ("far", "stride"):
            how = "far"
            f["dram_addr"] = int(rng.integers(top // self.bus, (1 << 32) // self.bus)) * self.bus
        else:                      # would wrap around 2**32 in a 32-bit adder
            f.update(y_size=2, x_size=2, dram_stride=self.bus * 16)
            f["dram_addr"] = (1 << 32) - self.bus * int(rng.integers(1, 4))
        return encode(opcode, **f), f"{opcode.name} past the end of memory ({how})"


def illegal_program(config: AcceleratorConfig, rng: np.random.Generator, kind: str, *,
                    dram_size: int = 1 << 16) -> Program:
    """A legal prefix, then a fault of ``kind`` (one of :data:`ILLEGAL_KINDS`), then FINISH."""
    if kind not in ILLEGAL_KINDS:
        raise ValueError(f"Illegal-program kind must be one of {', '.join(ILLEGAL_KINDS)}, not {kind!r}")
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"Configuration must be an AcceleratorConfig, not {config!r}")
    at_end = kind == "dram_range" and rng.random() < 0.25    # run off the end of memory: no FINISH
    for _ in range(50):
        try:
            b, prefix, summaries, program_addr = _draw(config, rng, dram_size, 40, program_at_end=at_end,
                                                       budget=int(rng.integers(0, 25)) if rng.random() < 0.8 else 0)
        except _Retry:
            continue
        if rng.random() < 0.15 and not at_end:
            prefix, summaries = [], []
        try:
            data = b.alloc(64 * b.bus + 4 * max(b.lb[Buffer.ACT], b.olb))   # read by the faulty instructions only
        except _Retry:
            continue
        faults = _Faults(config, rng, dram_size, data)
        if kind in ("deadlock", "token_overflow"):
            try:
                prefix, tail, what, error_at = _runtime_fault(config, rng, kind, prefix, faults)
            except _Retry:
                continue
            words = [i.word() for i in prefix] + [i.word() for i in tail] + [_finish_word()]
            error_pc = len(prefix) + error_at
        elif at_end:
            words = [i.word() for i in prefix]
            if (len(words) + 1) * INSTRUCTION_BYTES > dram_size - program_addr:
                continue
            # Move the program so that its last instruction ends exactly at the end of memory.
            program_addr = dram_size - len(words) * INSTRUCTION_BYTES
            if any(addr + len(blob) > program_addr for addr, blob in b.blobs) or not words:
                continue
            what, error_pc = "no FINISH: the fetch after the last instruction is past the end of memory", len(words)
        else:
            word, what = getattr(faults, kind)()
            words = [i.word() for i in prefix] + [word]
            error_pc = len(words) - 1
            if rng.random() < 0.3:    # never reached
                words.append(encode(Opcode.SETPP, **faults.legal(Opcode.SETPP)))
            words.append(_finish_word())
        dram = _image(b, dram_size, program_addr, words)
        description = (f"{_config_summary(config)}: {kind}: {what}; error_pc {error_pc}; after "
                       f"{len(prefix)} legal instructions [{'; '.join(summaries)}]")
        return Program(config, words, dram, program_addr, dram_size, ILLEGAL_KINDS[kind], description,
                       error_pc=error_pc)
    raise ValueError(f"Could not draw an illegal program for {config!r} in {dram_size} bytes")


def _runtime_fault(config: AcceleratorConfig, rng: np.random.Generator, kind: str, prefix: list[_Instr],
                   faults: _Faults):
    """The tail of a deadlock or token-overflow program: (prefix, tail, what, index of the faulty tail word)."""

    def harmless(engine: int) -> _Instr:
        if engine == _LOAD:      # one activation line into the top of the buffer nobody reads after this
            f = faults.legal(Opcode.LOAD)
            f.update(sram_addr=config.act_buffer_depth - 1, y_size=1, x_size=1)
            return _Instr(Opcode.LOAD, f, touches=footprint(Opcode.LOAD, f, config))
        if engine == _COMPUTE:
            return _barrier(config, None)
        return _Instr(Opcode.SETPP, faults.legal(Opcode.SETPP))

    if kind == "deadlock":
        engine, pop = [(_LOAD, "pop_next"), (_COMPUTE, "pop_prev"), (_COMPUTE, "pop_next"), (_STORE, "pop_prev"),
                       (None, "cycle")][int(rng.integers(5))]
        if engine is None:       # compute waits for store, store waits for compute
            a, b = harmless(_COMPUTE), harmless(_STORE)
            a.after = b.after = []
            a.flags.update(pop_next=1, push_next=1)
            b.flags.update(pop_prev=1, push_prev=1)
            return (prefix, [a, b], f"a compute instruction ({len(prefix)}) and a store instruction "
                    f"({len(prefix) + 1}) each wait for the other", 2)
        ins = harmless(engine)
        ins.after = []
        ins.flags[pop] = 1
        return (prefix, [ins], f"{_ENGINE_NAME[engine]} engine instruction {len(prefix)} pops ({pop}) a token "
                f"nobody pushes", 1)
    # token overflow: TOKEN_QUEUE_DEPTH + 1 pushes nobody pops, the first one after the consumer is idle
    producer, consumer = _QUEUES[int(rng.integers(4))]
    tail = [harmless(producer) for _ in range(TOKEN_QUEUE_DEPTH + 1)]
    for t in tail:
        t.after = []
    last = [x for x in prefix if x.engine == consumer]
    if last:
        tail[0].after = [last[-1]]
    out = _place_tokens(prefix + tail, config)
    first = next(i for i, x in enumerate(out) if x is tail[0])
    if out[first:] != tail:
        raise _Retry("a barrier went between the pushes")
    flag = "push_next" if consumer > producer else "push_prev"
    for t in tail:
        if t.flags[flag]:
            raise _Retry("the scheduler already gave the tail a push")
        t.flags[flag] = 1
    what = (f"{TOKEN_QUEUE_DEPTH + 1} {_ENGINE_NAME[producer]} instructions push onto the "
            f"{_ENGINE_NAME[producer]}->{_ENGINE_NAME[consumer]} queue; nothing pops")
    return out[:first], tail, what, TOKEN_QUEUE_DEPTH
