"""The instruction set tables (hw/spec/isa.py): layout, encode/decode round trips, errors, golden words.

Bit positions are recomputed here from the field widths alone, and the golden words are written from the
bit ranges published in docs/isa.md, not from ``Kind.offsets``.
"""

import random

import pytest

from hw.spec.isa import (HEADER, HEADER_BITS, INSTRUCTION_BITS, INSTRUCTION_BYTES, KINDS, Buffer, IsaError,
                         Opcode, decode, encode, kind_of)

FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")
#: The token flags each kind may set (docs/isa.md, "Token flags allowed").
ALLOWED_FLAGS = {
    Opcode.LOAD: {"pop_next", "push_next"},
    Opcode.COMPUTE: set(FLAGS),
    Opcode.ALU: set(FLAGS),
    Opcode.SETPP: {"pop_prev", "push_prev"},
    Opcode.STORE: {"pop_prev", "push_prev"},
    Opcode.FINISH: set(),
}
LEGAL_OPCODES = "1 LOAD, 2 COMPUTE, 3 ALU, 4 SETPP, 5 STORE, 6 FINISH"


def random_values(kind, rng: random.Random) -> dict:
    """Legal values for every field of ``kind``, extremes often, and a random subset of its allowed flags."""
    values = {}
    for f in kind.fields:
        lo, hi = (-(1 << (f.bits - 1)), (1 << (f.bits - 1)) - 1) if f.signed else (0, (1 << f.bits) - 1)
        values[f.name] = rng.choice([lo, hi, 0, -1 if f.signed else 1, rng.randint(lo, hi), rng.randint(lo, hi)])
    for flag in ALLOWED_FLAGS[kind.opcode]:
        values[flag] = rng.randint(0, 1)
    return values


# --- layout ----------------------------------------------------------------------------------------------

def test_sizes():
    assert INSTRUCTION_BITS == 128
    assert INSTRUCTION_BYTES == 16
    assert HEADER_BITS == 8
    assert [(f.name, f.bits) for f in HEADER] == [("opcode", 4)] + [(flag, 1) for flag in FLAGS]


def test_every_opcode_has_a_kind():
    assert set(KINDS) == set(Opcode)
    assert [int(o) for o in Opcode] == [1, 2, 3, 4, 5, 6]
    for opcode, kind in KINDS.items():
        assert kind.opcode is opcode and kind.name == opcode.name


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_kind_fits(opcode):
    kind = KINDS[opcode]
    used = 8 + sum(f.bits for f in kind.fields)
    assert used <= INSTRUCTION_BITS
    assert kind.used_bits == used


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_offsets_contiguous_and_disjoint(opcode):
    kind = KINDS[opcode]
    at, union = 0, 0
    for f in HEADER + kind.fields:
        assert f.bits >= 1
        assert kind.offsets[f.name] == at, f.name
        mask = ((1 << f.bits) - 1) << at
        assert union & mask == 0, f"{f.name} overlaps an earlier field"
        union |= mask
        at += f.bits
    assert kind.offsets["pop_prev"] == 4 and (kind.fields == () or kind.offsets[kind.fields[0].name] == 8)
    assert union == (1 << kind.used_bits) - 1
    assert len({f.name for f in HEADER + kind.fields}) == len(HEADER) + len(kind.fields), "duplicate field name"


def test_allowed_flags_follow_the_engines():
    for opcode, kind in KINDS.items():
        assert {flag for flag in FLAGS if getattr(kind, f"may_{flag}")} == ALLOWED_FLAGS[opcode]


def test_field_ranges():
    zero_point = {f.name: f for f in KINDS[Opcode.SETPP].fields}["zero_point"]
    assert (zero_point.min, zero_point.max) == (-32768, 32767)
    y_size = {f.name: f for f in KINDS[Opcode.LOAD].fields}["y_size"]
    assert (y_size.min, y_size.max, y_size.nonzero) == (0, 1023, True)


# --- round trips -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_round_trip(opcode):
    kind = KINDS[opcode]
    rng = random.Random(int(opcode))
    for _ in range(300):
        values = random_values(kind, rng)
        word = encode(opcode, **values)
        assert 0 < word < 1 << kind.used_bits
        assert word & 0xF == int(opcode)
        decoded_kind, decoded = decode(word)
        assert decoded_kind is kind
        expected = {flag: 0 for flag in FLAGS} | {f.name: 0 for f in kind.fields} | values
        assert decoded == expected


@pytest.mark.parametrize("zero_point", [-32768, -32767, -1, 0, 1, 32766, 32767])
def test_signed_extremes(zero_point):
    word = encode(Opcode.SETPP, zero_point=zero_point, clamp_lo=65535, clamp_hi=0)
    assert (word >> 8) & 0xFFFF == zero_point & 0xFFFF
    assert decode(word)[1]["zero_point"] == zero_point
    assert decode(word)[1]["clamp_lo"] == 65535


def test_encode_accepts_names_and_bools():
    assert encode("load", y_size=1) == encode("LOAD", y_size=1) == encode(Opcode.LOAD, y_size=1) == encode(1, y_size=1)
    assert encode(Opcode.COMPUTE, accumulate=True, pop_prev=True) == encode(Opcode.COMPUTE, accumulate=1, pop_prev=1)
    assert encode(Opcode.LOAD, pop_prev=False, buffer=Buffer.PARAM) == encode(Opcode.LOAD, buffer=2)
    assert encode(Opcode.FINISH) == 6


# --- errors ----------------------------------------------------------------------------------------------

def test_encode_unknown_field():
    with pytest.raises(IsaError, match=r"^LOAD has no field bogus, zz; its fields are pop_prev, pop_next, push_prev, "
                                       r"push_next, buffer, sram_addr, dram_addr, y_size, x_size, dram_stride, "
                                       r"pad_top, pad_bottom, pad_left, pad_right, pad_value$"):
        encode(Opcode.LOAD, zz=1, bogus=2)
    with pytest.raises(IsaError, match=r"^FINISH has no field y_size; its fields are pop_prev, pop_next, push_prev, "
                                       r"push_next$"):
        encode(Opcode.FINISH, y_size=1)


@pytest.mark.parametrize("opcode, field, value, message", [
    (Opcode.LOAD, "y_size", 1024, "LOAD.y_size must be an integer in 0..1023, not 1024"),
    (Opcode.LOAD, "sram_addr", -1, "LOAD.sram_addr must be an integer in 0..65535, not -1"),
    (Opcode.LOAD, "dram_addr", 1 << 32, "LOAD.dram_addr must be an integer in 0..4294967295, not 4294967296"),
    (Opcode.SETPP, "zero_point", 32768, "SETPP.zero_point must be an integer in -32768..32767, not 32768"),
    (Opcode.SETPP, "zero_point", -32769, "SETPP.zero_point must be an integer in -32768..32767, not -32769"),
    (Opcode.COMPUTE, "accumulate", 2, "COMPUTE.accumulate must be an integer in 0..1, not 2"),
    (Opcode.COMPUTE, "pop_prev", 2, "COMPUTE.pop_prev must be an integer in 0..1, not 2"),
    (Opcode.ALU, "op", 1.0, "ALU.op must be an integer in 0..3, not 1.0"),
    (Opcode.STORE, "param_addr", "3", "STORE.param_addr must be an integer in 0..1023, not '3'"),
])
def test_encode_out_of_range(opcode, field, value, message):
    with pytest.raises(IsaError, match=f"^{message}$".replace(".", r"\.")):
        encode(opcode, **{field: value})


@pytest.mark.parametrize("opcode, flag, message", [
    (Opcode.LOAD, "pop_prev", "LOAD cannot pop prev: the load engine has no such neighbour"),
    (Opcode.LOAD, "push_prev", "LOAD cannot push prev: the load engine has no such neighbour"),
    (Opcode.SETPP, "pop_next", "SETPP cannot pop next: the store engine has no such neighbour"),
    (Opcode.STORE, "push_next", "STORE cannot push next: the store engine has no such neighbour"),
    # The wording for FINISH is pinned by its start only (see the report: "no engine has no such neighbour").
    (Opcode.FINISH, "push_next", "FINISH cannot push next: "),
    (Opcode.FINISH, "pop_prev", "FINISH cannot pop prev: "),
])
def test_encode_illegal_flags(opcode, flag, message):
    with pytest.raises(IsaError, match=f"^{message}"):
        encode(opcode, **{flag: 1})
    with pytest.raises(IsaError, match=f"^{message}"):
        encode(opcode, **{flag: True})
    encode(opcode, **{flag: 0})


def test_encode_unknown_mnemonic_is_an_isa_error():
    # Fails today: encode("BOGUS") raises KeyError('BOGUS') from Opcode[...] instead of an IsaError.
    with pytest.raises(IsaError, match=LEGAL_OPCODES):
        encode("BOGUS")


@pytest.mark.parametrize("opcode", [0, *range(7, 16)])
def test_decode_illegal_opcode(opcode):
    for word in (opcode, opcode | 0xF0, opcode | (1 << 127)):
        with pytest.raises(IsaError, match=f"^Illegal opcode {opcode}; legal opcodes are {LEGAL_OPCODES}$"):
            decode(word)
    with pytest.raises(IsaError, match=f"^Illegal opcode {opcode}; "):
        kind_of(opcode)


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_decode_bits_above_fields(opcode):
    kind = KINDS[opcode]
    for bit in sorted({kind.used_bits, (kind.used_bits + INSTRUCTION_BITS) // 2, INSTRUCTION_BITS - 1}):
        with pytest.raises(IsaError, match=f"^{kind.name} has bits set above bit {kind.used_bits - 1}, "
                                           "where it has no fields$"):
            decode(int(opcode) | (1 << bit))
    decode(int(opcode) | (((1 << kind.used_bits) - 1) & ~0xFF))


def test_decode_illegal_flags():
    with pytest.raises(IsaError, match="^LOAD cannot pop prev: the load engine has no such neighbour$"):
        decode(1 | 1 << 4)
    with pytest.raises(IsaError, match="^STORE cannot push next: the store engine has no such neighbour$"):
        decode(5 | 1 << 7)
    with pytest.raises(IsaError, match="^FINISH cannot pop next: "):
        decode(6 | 1 << 5)
    assert decode(2 | 0xF0)[1] == {flag: 1 for flag in FLAGS} | {f.name: 0 for f in KINDS[Opcode.COMPUTE].fields}


@pytest.mark.parametrize("word", [-1, 1 << 128])
def test_decode_out_of_range(word):
    with pytest.raises(IsaError, match=r"^An instruction word must be in 0\.\.2\*\*128-1$"):
        decode(word)


# --- golden words, from the bit ranges of docs/isa.md -------------------------------------------------------

def test_golden_load():
    # Header: opcode 3:0, pop_prev 4, pop_next 5, push_prev 6, push_next 7. LOAD: buffer 9:8,
    # sram_addr 25:10, dram_addr 57:26, y_size 67:58, x_size 77:68, dram_stride 97:78, pad_top 100:98,
    # pad_bottom 103:101, pad_left 106:104, pad_right 109:107, pad_value 125:110.
    expected = (1 | (1 << 5) | (1 << 7) | (1 << 8) | (0x123 << 10) | (0xDEADBEEF << 26) | (5 << 58) | (1023 << 68)
                | (0xFFFC0 << 78) | (1 << 98) | (2 << 101) | (3 << 104) | (7 << 107) | (0xABCD << 110))
    word = encode(Opcode.LOAD, buffer=Buffer.WEIGHT, sram_addr=0x123, dram_addr=0xDEADBEEF, y_size=5, x_size=1023,
                  dram_stride=0xFFFC0, pad_top=1, pad_bottom=2, pad_left=3, pad_right=7, pad_value=0xABCD,
                  pop_next=1, push_next=1)
    assert word == expected
    assert word.to_bytes(INSTRUCTION_BYTES, "little")[:2] == bytes([0xA1, 0x8D])
    assert decode(expected)[1]["dram_addr"] == 0xDEADBEEF


def test_golden_compute():
    # COMPUTE: acc_addr 23:8, act_addr 39:24, weight_addr 55:40, out_h 65:56, out_w 75:66, act_pitch 85:76,
    # stride 88:86, dilation 91:89, kh 95:92, kw 99:96, accumulate 100.
    expected = (2 | (1 << 4) | (1 << 6) | (0x0102 << 8) | (0xFFFF << 24) | (0x8001 << 40) | (3 << 56) | (700 << 66)
                | (1023 << 76) | (2 << 86) | (5 << 89) | (15 << 92) | (9 << 96) | (1 << 100))
    word = encode(Opcode.COMPUTE, acc_addr=0x0102, act_addr=0xFFFF, weight_addr=0x8001, out_h=3, out_w=700,
                  act_pitch=1023, stride=2, dilation=5, kh=15, kw=9, accumulate=1, pop_prev=1, push_prev=1)
    assert word == expected
    assert expected >> 100 == 1


def test_golden_setpp_negative_zero_point():
    # SETPP: zero_point 23:8 (two's complement), clamp_lo 39:24, clamp_hi 55:40.
    assert encode(Opcode.SETPP, zero_point=-2, clamp_lo=0x80, clamp_hi=0x7F) == \
        4 | (0xFFFE << 8) | (0x80 << 24) | (0x7F << 40)


def test_golden_store_negative_param():
    # STORE: acc_addr 23:8, dram_addr 55:24, y_size 65:56, x_size 75:66, acc_stride 87:76, dram_stride 107:88,
    # param_addr 117:108, negative_param 118, packed 119.
    expected = 5 | (3 << 8) | (64 << 24) | (1 << 56) | (2 << 66) | (1023 << 108) | (1 << 118)
    word = encode(Opcode.STORE, acc_addr=3, dram_addr=64, y_size=1, x_size=2, param_addr=1023, negative_param=1)
    assert word == expected
    kind, fields = decode(word)
    assert kind.opcode is Opcode.STORE and fields["negative_param"] == 1 and fields["param_addr"] == 1023
    assert decode(expected & ~(1 << 118))[1]["negative_param"] == 0
    with pytest.raises(IsaError, match=r"^STORE\.negative_param must be an integer in 0\.\.1, not 2$"):
        encode(Opcode.STORE, negative_param=2)
    assert decode(expected | (1 << 119))[1]["packed"] == 1 and fields["packed"] == 0
    # Bit 120 is above the last field: a word with it set is refused.
    with pytest.raises(IsaError, match="above bit 119"):
        decode(expected | (1 << 120))


def test_golden_alu_mul():
    # ALU: op 9:8, dst_addr 25:10, src_addr 41:26, y_size 51:42, x_size 61:52, dst_stride 73:62, src_stride 85:74,
    # src_step 89:86. MUL is op 3: a per-channel gate, one source line for every destination line.
    from hw.spec.isa import AluOp
    expected = 3 | (1 << 6) | (3 << 8) | (40 << 10) | (7 << 26) | (49 << 42) | (1 << 52) | (1 << 62) | (1 << 86)
    word = encode(Opcode.ALU, op=AluOp.MUL, dst_addr=40, src_addr=7, y_size=49, x_size=1, dst_stride=1,
                  src_stride=0, src_step=1, push_prev=1)
    assert word == expected
    kind, fields = decode(word)
    assert kind.opcode is Opcode.ALU and AluOp(fields["op"]) is AluOp.MUL and fields["src_stride"] == 0


@pytest.mark.parametrize("fmt, bits", [("int8", 9), ("int4", 5), ("uint8", 9), ("minifloat6", 15),
                                       ("minifloat4", 7), ("fp8_e4m3", 29)])
def test_alu_mul_source_width(fmt, bits):
    """``k`` holds the difference of any two activation codes in accumulator units, as a signed number: from the
    decoded values of every code (int8: 127 - (-128) = 255 needs 9 bits; minifloat6 (E3M2): 28 - (-28) = 56 in
    units of 2**-8 (acc_exponent of two E3M2 operands, 2**-4 each) = 14336 needs 15)."""
    import numpy as np

    from hw.spec.config import AcceleratorConfig
    from hw.spec.formats import get_format
    weights = "int8" if fmt == "uint8" else fmt
    c = AcceleratorConfig(rows=4, cols=4, weight_format=weights, act_format=fmt)
    values = get_format(fmt).decode(np.arange(1 << get_format(fmt).bits)).astype(np.float64)
    values = values[np.isfinite(values)]
    span = int((values.max() - values.min()) * 2.0 ** -c.acc_exponent)
    assert c.alu_mul_bits == bits == (span.bit_length() + 1)
