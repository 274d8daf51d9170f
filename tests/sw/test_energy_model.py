"""The energy model (sw/energy/model.py): the table's points are met exactly and the scaling rules hold, worked
by hand from Horowitz's figures."""

import math

import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sw.energy import load_table
from sw.energy.model import adder_pj, buffer_capacities, event_energies, mac_pj, multiplier_pj, sram_pj_per_bit

T = load_table()


def test_adder_by_width():
    assert adder_pj(T, 8) == pytest.approx(0.03) and adder_pj(T, 32) == pytest.approx(0.1)
    assert adder_pj(T, 20) == pytest.approx(0.03 + 12 * 0.07 / 24)      # between the points: linear
    assert adder_pj(T, 4) == pytest.approx(0.015)                        # below: proportional to width
    assert adder_pj(T, 64) == pytest.approx(0.2)                         # above: proportional


def test_multiplier_by_product_of_widths():
    assert multiplier_pj(T, 8, 8) == pytest.approx(0.2) and multiplier_pj(T, 32, 32) == pytest.approx(3.1)
    assert multiplier_pj(T, 4, 4) == pytest.approx(0.2 * 16 / 64)
    assert multiplier_pj(T, 4, 8) == multiplier_pj(T, 8, 4) == pytest.approx(0.1)
    assert multiplier_pj(T, 16, 16) == pytest.approx(0.2 + (256 - 64) * 2.9 / 960)


def test_mac_by_significand_multiplier_and_aligned_adder():
    int8, mf6, int4 = get_format("int8"), get_format("minifloat6"), get_format("int4")
    # int8: an 8x8 multiplier and a 20-bit partial-sum adder
    assert mac_pj(T, int8, int8, 20) == pytest.approx(0.2 + 0.03 + 12 * 0.07 / 24)
    # E3M2: significands of 4 signed bits (sign, hidden bit, 2 mantissa bits), 3-bit shifts added in 4 bits
    assert mac_pj(T, mf6, mf6, 23) == pytest.approx(0.2 * 16 / 64 + 0.03 * 4 / 8 + 0.03 + 15 * 0.07 / 24)
    # int4 weights x int8 activations: a 4x8 multiplier
    assert mac_pj(T, int4, int8, 16) == pytest.approx(0.1 + 0.03 + 8 * 0.07 / 24)


def test_sram_by_capacity():
    assert sram_pj_per_bit(T, 8192) * 64 == pytest.approx(10)
    assert sram_pj_per_bit(T, 1 << 20) * 64 == pytest.approx(100)
    assert sram_pj_per_bit(T, 16384) * 64 == pytest.approx(math.sqrt(10 * 20))     # log-log between points
    assert sram_pj_per_bit(T, 2048) * 64 == pytest.approx(5)                       # sqrt of capacity beyond
    assert sram_pj_per_bit(T, 4 << 20) * 64 == pytest.approx(200)


def test_event_energies_of_a_configuration():
    c = AcceleratorConfig(rows=16, cols=16, weight_format="int8", act_format="int8", act_buffer_depth=4096,
                          weight_buffer_depth=512, acc_buffer_depth=1024)
    assert buffer_capacities(c)["act"] == 4096 * 16 == 65536
    assert buffer_capacities(c)["weight"] == 512 * 16 == 8192
    assert buffer_capacities(c)["acc"] == 1024 * 16 * c.acc_bits / 8
    e = event_energies(c, T)
    assert e["weight_read_bits"] == pytest.approx(10 / 64) == e["weight_write_bits"]
    assert e["dram_read_bytes"] == pytest.approx(1950 / 8) and e["instructions"] == pytest.approx(2 * 1950)
    assert e["acc_ops"] == pytest.approx(adder_pj(T, c.acc_bits))
    assert e["ppu_outputs"] == pytest.approx(adder_pj(T, c.acc_bits) + multiplier_pj(T, c.acc_bits, 32))
