"""Line packing in external memory (hw/spec/layout.py) against byte patterns and formulas worked out by hand."""

import itertools

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import Buffer, Opcode, decode, encode
from hw.spec.layout import (PARAM_ENTRY_BYTES, line_bits, line_bytes, line_codes, output_line_bytes, pack_lines,
                            pack_params, unpack_lines, unpack_params)

#: Bits per code of the formats below, from their definitions.
FORMAT_BITS = {"int4": 4, "int8": 8, "minifloat6": 6, "fp8_e4m3": 8}


# --- codes -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [4, 6, 8, 16])
@pytest.mark.parametrize("per_line", [1, 2, 3, 7, 16, 33])
def test_pack_round_trip(bits, per_line):
    rng = np.random.default_rng(bits * 100 + per_line)
    lines = 5
    codes = rng.integers(0, 1 << bits, size=(lines, per_line))
    codes[0] = (1 << bits) - 1
    codes[1] = 0
    minimum = -(-per_line * bits // 8)
    for nbytes in (minimum, minimum + 1, minimum + 8):
        data = pack_lines(codes, bits, nbytes)
        assert isinstance(data, bytes) and len(data) == lines * nbytes
        back = unpack_lines(data, lines, per_line, bits, nbytes)
        assert back.shape == (lines, per_line)
        np.testing.assert_array_equal(back, codes)
        # Padding bits are zero.
        for i in range(lines):
            line = int.from_bytes(data[i * nbytes:(i + 1) * nbytes], "little")
            assert line >> (per_line * bits) == 0


@pytest.mark.parametrize("bits", range(2, 17))
def test_every_width_against_integer_arithmetic(bits):
    """Each line as one little-endian integer with code i at bits i*bits..: every width (whole bytes, runs of
    codes in 64-bit words, single bits), lines with leading axes, garbage in the padding ignored on the way in."""
    from hw.spec.layout import pack_codes, unpack_codes
    rng = np.random.default_rng(bits)
    for per_line in (1, 3, 8, 17):
        nbytes = -(-per_line * bits // 8) + int(rng.integers(0, 3))
        codes = rng.integers(0, 1 << bits, size=(2, 3, per_line))
        packed = pack_codes(codes, bits, nbytes)
        assert packed.shape == (2, 3, nbytes) and packed.dtype == np.uint8
        for index in np.ndindex(2, 3):
            line = sum(int(c) << (i * bits) for i, c in enumerate(codes[index]))
            assert packed[index].tobytes() == line.to_bytes(nbytes, "little")
        garbage = rng.integers(0, 256, size=(4, nbytes), dtype=np.uint8)
        got = unpack_codes(garbage, per_line, bits)
        for row, data in zip(got, garbage):
            value = int.from_bytes(data.tobytes(), "little")
            assert row.tolist() == [(value >> (i * bits)) & ((1 << bits) - 1) for i in range(per_line)]


def test_pack_int4_by_hand():
    # Code i sits at bits 4i..4i+3: 0x3 in the low nibble, 0xA in the high nibble.
    assert pack_lines([[0x3, 0xA]], 4, 1) == b"\xA3"
    assert pack_lines([[0x3, 0xA, 0xF]], 4, 4) == b"\xA3\x0F\x00\x00"
    assert pack_lines([[0x1, 0x2], [0x3, 0x4]], 4, 2) == b"\x21\x00\x43\x00"


def test_pack_int6_by_hand():
    # 0x3F at bits 0..5, 0x01 at 6..11, 0x2A at 12..17, 0x15 at 18..23:
    # 0x3F | 0x01 << 6 | 0x2A << 12 | 0x15 << 18 = 0x00003F + 0x000040 + 0x02A000 + 0x540000 = 0x56A07F.
    assert pack_lines([[0x3F, 0x01, 0x2A, 0x15]], 6, 4) == b"\x7F\xA0\x56\x00"
    # One code across a byte boundary: 0b110011 at bits 6..11 is 0b11 << 6 in byte 0, 0b1100 in byte 1.
    assert pack_lines([[0, 0b110011]], 6, 2) == bytes([0b11000000, 0b00001100])


def test_pack_int16_by_hand():
    assert pack_lines([[0x1234, 0xABCD]], 16, 8) == b"\x34\x12\xCD\xAB\x00\x00\x00\x00"


def test_unpack_by_hand():
    np.testing.assert_array_equal(unpack_lines(b"\x7F\xA0\x56\x00", 1, 4, 6, 4), [[0x3F, 0x01, 0x2A, 0x15]])
    # Bits beyond the codes are ignored.
    np.testing.assert_array_equal(unpack_lines(b"\xA3\xFF", 1, 2, 4, 2), [[0x3, 0xA]])


def test_pack_zero_lines():
    # Fails today: pack_lines of a (0, n) array raises "cannot reshape array of size 0 into shape (0,newaxis)",
    # while unpack_lines(b"", 0, ...) returns the (0, n) array.
    assert pack_lines(np.zeros((0, 3), dtype=np.uint8), 4, 2) == b""
    assert unpack_lines(b"", 0, 3, 4, 2).shape == (0, 3)


@pytest.mark.parametrize("codes, bits, nbytes, message", [
    (np.zeros(3, dtype=int), 4, 2, r"pack_lines needs a 2-D array of codes, not shape (3,)"),
    (np.zeros((1, 1, 1), dtype=int), 4, 2, r"pack_lines needs a 2-D array of codes, not shape (1, 1, 1)"),
    (np.zeros((1, 3), dtype=int), 8, 2, r"3 codes of 8 bits do not fit in 2 bytes"),
    (np.zeros((2, 5), dtype=int), 6, 3, r"5 codes of 6 bits do not fit in 3 bytes"),
    (np.array([[0, 16]]), 4, 1, r"Codes must be integers in 0\.\.15"),
    (np.array([[1 << 16]]), 16, 2, r"Codes must be integers in 0\.\.65535"),
])
def test_pack_errors(codes, bits, nbytes, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        pack_lines(codes, bits, nbytes)


def test_pack_negative_code_is_a_value_error():
    # Fails today for Python ints: np.asarray([[-1]], dtype=np.uint64) raises OverflowError, not ValueError.
    # (A negative numpy int64 is out of range too: same message.)
    with pytest.raises(ValueError):
        pack_lines(np.array([[-1]]), 4, 1)
    with pytest.raises(ValueError):
        pack_lines([[-1]], 4, 1)


def test_unpack_errors():
    with pytest.raises(ValueError, match=r"^Expected 8 bytes for 2 lines, got 7$"):
        unpack_lines(bytes(7), 2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"^Expected 4 bytes for 1 lines, got 5$"):
        unpack_lines(bytes(5), 1, 3, 4, 4)


# --- line sizes ------------------------------------------------------------------------------------------

CONFIGS = [
    (dma_bits, rows, cols, weights, acts)
    for dma_bits, rows in itertools.product((32, 64, 128), (1, 4, 16))
    for cols, weights, acts in ((rows, "int8", "int8"), (rows + 3, "int4", "minifloat6"),
                                (2 * rows, "fp8_e4m3", "int4"), (rows, "minifloat6", "fp8_e4m3"))
]


@pytest.mark.parametrize("dma_bits, rows, cols, weights, acts", CONFIGS)
def test_line_bytes(dma_bits, rows, cols, weights, acts):
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format=weights, act_format=acts, dma_bits=dma_bits,
                               max_reduction=max(rows, 16))
    beat = dma_bits // 8

    def hand(codes, bits):
        beats = (codes * bits + dma_bits - 1) // dma_bits
        return beats * beat

    expected = {Buffer.ACT: (rows, FORMAT_BITS[acts]), Buffer.WEIGHT: (cols, FORMAT_BITS[weights]),
                Buffer.PARAM: (cols, 128), Buffer.LUT: (cols, FORMAT_BITS[acts])}
    for buffer, (codes, bits) in expected.items():
        assert line_codes(buffer, config) == (codes, bits)
        assert line_bits(buffer, config) == codes * bits
        n = line_bytes(buffer, config)
        assert n == hand(codes, bits)
        assert n % beat == 0 and n * 8 >= codes * bits and n * 8 - codes * bits < dma_bits
    assert output_line_bytes(config) == hand(cols, FORMAT_BITS[acts])
    assert output_line_bytes(config) % beat == 0


def test_line_bytes_takes_decoded_buffer_numbers():
    # Fails today: isa.decode() gives the LOAD buffer field as a plain int, and line_codes() tests
    # `buffer is Buffer.ACT`, so line_bytes(1, config) raises "Unknown buffer 1" instead of returning 16.
    config = AcceleratorConfig(rows=16, cols=16, dma_bits=64)
    _, fields = decode(encode(Opcode.LOAD, buffer=Buffer.WEIGHT))
    assert line_bytes(fields["buffer"], config) == line_bytes(Buffer.WEIGHT, config) == 16
    for buffer in Buffer:
        assert line_codes(int(buffer), config) == line_codes(buffer, config)


def test_line_bytes_unknown_buffer():
    with pytest.raises(ValueError):
        line_bytes(4, AcceleratorConfig())


def test_line_bytes_by_hand():
    # 16 int8 codes on a 64-bit bus: 128 bits = 2 beats = 16 bytes. 5 minifloat6 codes: 30 bits = 1 beat.
    assert line_bytes(Buffer.ACT, AcceleratorConfig(rows=16, cols=16, dma_bits=64)) == 16
    config = AcceleratorConfig(rows=5, cols=3, weight_format="int4", act_format="minifloat6", dma_bits=64)
    assert line_bytes(Buffer.ACT, config) == 8
    assert line_bytes(Buffer.WEIGHT, config) == 8
    assert line_bytes(Buffer.PARAM, config) == 48
    assert output_line_bytes(config) == 8


# --- PARAM lines -----------------------------------------------------------------------------------------

INT64 = (-(1 << 63), (1 << 63) - 1)
INT32 = (-(1 << 31), (1 << 31) - 1)


def test_params_round_trip_extremes():
    bias = np.array([[INT64[0], INT64[1], 0, -1], [1, -(1 << 40), 1 << 50, 12345]], dtype=np.int64)
    multiplier = np.array([[INT32[0], INT32[1], 0, -1], [1, 7, -7, 1 << 30]], dtype=np.int64)
    shift = np.array([[0, 255, 1, 63], [128, 2, 254, 0]], dtype=np.int64)
    for nbytes in (64, 72, 128):
        data = pack_params(bias, multiplier, shift, nbytes)
        assert len(data) == 2 * nbytes
        b, m, s = unpack_params(data, 2, 4, nbytes)
        for got, want in ((b, bias), (m, multiplier), (s, shift)):
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, want)


def test_params_random_round_trip():
    rng = np.random.default_rng(7)
    shape = (3, 16)
    bias = rng.integers(*INT64, size=shape, endpoint=True)
    multiplier = rng.integers(*INT32, size=shape, endpoint=True)
    shift = rng.integers(0, 255, size=shape, endpoint=True)
    b, m, s = unpack_params(pack_params(bias, multiplier, shift, 256), 3, 16, 256)
    np.testing.assert_array_equal(b, bias)
    np.testing.assert_array_equal(m, multiplier)
    np.testing.assert_array_equal(s, shift)


def test_params_bytes_by_hand():
    # Entry: bias int64 LE at bytes 0..7, multiplier int32 LE at 8..11, shift at 12, zero bytes 13..15.
    data = pack_params([[0x0102030405060708, -1]], [[-2, 0x11223344]], [[0x2A, 255]], 40)
    assert data == bytes([0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0xFE, 0xFF, 0xFF, 0xFF, 0x2A, 0, 0, 0,
                          0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x44, 0x33, 0x22, 0x11, 0xFF, 0, 0, 0,
                          0, 0, 0, 0, 0, 0, 0, 0])
    assert PARAM_ENTRY_BYTES == 16


def test_params_bias_out_of_int64_is_a_value_error():
    # Fails today: np.asarray([[2**63]], dtype=np.int64) raises OverflowError ("Python int too large to convert
    # to C long") before pack_params checks anything; multiplier and shift get a ValueError with a message.
    with pytest.raises(ValueError):
        pack_params([[1 << 63]], [[0]], [[0]], 16)


@pytest.mark.parametrize("bias, multiplier, shift, nbytes, message", [
    ([[0, 0]], [[0]], [[0, 0]], 32, "bias, multiplier and shift must be 2-D arrays of one shape (lines, cols)"),
    ([0], [0], [0], 16, "bias, multiplier and shift must be 2-D arrays of one shape (lines, cols)"),
    ([[0]], [[1 << 31]], [[0]], 16, "multiplier must fit in int32"),
    ([[0]], [[-(1 << 31) - 1]], [[0]], 16, "multiplier must fit in int32"),
    ([[0]], [[0]], [[256]], 16, "shift must be in 0..255"),
    ([[0]], [[0]], [[-1]], 16, "shift must be in 0..255"),
    ([[0, 0]], [[0, 0]], [[0, 0]], 24, "2 entries do not fit in 24 bytes"),
])
def test_params_errors(bias, multiplier, shift, nbytes, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        pack_params(bias, multiplier, shift, nbytes)
