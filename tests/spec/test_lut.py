"""The activation table's buffer: its depth from the configuration and its lines in external memory."""

import numpy as np
import pytest

from hw.spec.config import LUT_MAX_BITS, AcceleratorConfig
from hw.spec.isa import Buffer, KINDS, Opcode
from hw.spec.layout import line_bytes, lut_lines, pack_lut, unpack_codes, unpack_lut


@pytest.mark.parametrize("acts, cols, per, depth", [
    ("int8", 8, 8, 32), ("int8", 6, 4, 64), ("int8", 16, 16, 16), ("minifloat6", 8, 8, 8), ("int4", 4, 4, 4),
    ("int2", 8, 4, 1), ("int8", 1, 1, 256), ("fp8_e4m3", 128, 128, 2), ("int16", 8, 1, 0), ("e5m10", 4, 1, 0)])
def test_depth_from_the_configuration(acts, cols, per, depth):
    c = AcceleratorConfig(rows=cols, cols=cols, act_format=acts, weight_format="int8" if "int" in acts else acts,
                          max_reduction=max(cols, 16))
    assert c.lut_entries_per_line == per
    assert c.lut_buffer_depth == depth
    assert c.lut_entries == (1 << c.acts.bits if c.acts.bits <= LUT_MAX_BITS else 0)
    assert depth * per == c.lut_entries


def test_isa_fields():
    assert KINDS[Opcode.LOAD].field("buffer").max >= Buffer.LUT
    assert KINDS[Opcode.SETPP].field("lut").bits == 1


@pytest.mark.parametrize("acts, cols", [("int8", 8), ("int8", 6), ("minifloat6", 16), ("int4", 4), ("int2", 8)])
def test_table_round_trip(acts, cols):
    c = AcceleratorConfig(rows=cols, cols=cols, act_format=acts, weight_format="int8", max_reduction=16)
    rng = np.random.default_rng(cols)
    table = rng.integers(0, 1 << c.acts.bits, c.lut_entries)
    lines = lut_lines(table, c)
    assert lines.shape == (c.lut_buffer_depth, cols)
    # Entry q is code q % per of line q // per (the ISA's words), the rest of a line zero.
    per = c.lut_entries_per_line
    for q in range(c.lut_entries):
        assert lines[q // per, q % per] == table[q]
    assert not lines[:, per:].any()
    raw = np.frombuffer(pack_lut(table, c), np.uint8).reshape(c.lut_buffer_depth, line_bytes(Buffer.LUT, c))
    codes = unpack_codes(raw, cols, c.acts.bits)
    np.testing.assert_array_equal(unpack_lut(codes, c), table)


def test_refusals():
    c = AcceleratorConfig(rows=4, cols=4, act_format="int8", weight_format="int8", max_reduction=16)
    with pytest.raises(ValueError):
        lut_lines(np.zeros(255, np.int64), c)
    with pytest.raises(ValueError):
        lut_lines(np.full(256, 256), c)
    wide = AcceleratorConfig(rows=4, cols=4, act_format="int16", weight_format="int8", max_reduction=16)
    with pytest.raises(ValueError, match="no lookup table"):
        lut_lines(np.zeros(0, np.int64), wide)
