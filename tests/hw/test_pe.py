"""The ProcessingElement on Verilator: every operand pair of every format of 8 bits or fewer, bit-exact."""

import gc
import warnings

import pytest

from hw.operand import IntegerDecoder, MinifloatDecoder
from hw.pe import ProcessingElement
from hw.spec.formats import format_names, get_format
from sim.checking import Mismatch
from sim.pe_harness import check_all_pairs

#: Every named format of the registry (all of 8 bits or fewer), plus odd widths: a 3-bit integer and a 5-bit
#: minifloat, so that nothing in the PE assumes a byte or a nibble.
SAME_FORMAT = [*format_names(), "int3", "e2m2"]
assert all(get_format(f).bits <= 8 for f in SAME_FORMAT)
MIXED = [("int4", "int8"), ("fp8_e4m3", "minifloat6"), ("int8", "uint8"), ("minifloat4", "fp8_e4m3")]


@pytest.mark.parametrize("weights,acts", [(f, f) for f in SAME_FORMAT] + MIXED,
                         ids=lambda f: f)
def test_every_operand_pair(weights, acts, tmp_path):
    run = check_all_pairs(weights, acts, tmp_path)
    assert run.value.size == (1 << get_format(weights).bits) * (1 << get_format(acts).bits)


def test_psum_width_is_checked():
    with warnings.catch_warnings():
        # The half-built object is collected here, not during some later test.
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"Partial sum width must be an integer of at least 16 \(one int8 x int8"):
            ProcessingElement("int8", "int8", 15)
        gc.collect()


def test_packed_lanes_are_checked():
    """Two codes a lane: the partial sum holds two products; only integer pairs of one format pack."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # int4 x int4: -56..64 a product, -112..128 two: 9 bits.
        with pytest.raises(ValueError, match=r"at least 9 \(2 int4 x int4 products\)"):
            ProcessingElement("int4", "int4", 8, 2)
        ProcessingElement("int4", "int4", 9, 2)
        for args in (("minifloat4", "minifloat4", 12, 2), (("int4", "int8"), ("int4", "int8"), 20, 2)):
            with pytest.raises(ValueError, match="Only a single-format PE of two integer formats packs codes"):
                ProcessingElement(*args)
        with pytest.raises(ValueError, match="Codes per lane must be a positive integer, not 0"):
            ProcessingElement("int4", "int4", 12, 0)
        gc.collect()


def _inject(monkeypatch, decoder, fault):
    """Append a wrong assignment to a decoder's elaborate(): the last comb assignment wins."""
    original = decoder.elaborate

    def faulty(self, platform):
        m = original(self, platform)
        fault(m, self)
        return m

    monkeypatch.setattr(decoder, "elaborate", faulty)


def test_subnormal_fault_is_caught(monkeypatch, tmp_path):
    """A decoder that gives subnormals the implicit bit (the classic minifloat bug) must fail the proof."""
    def give_subnormals_the_implicit_bit(m, dec):
        f = dec.format
        exp = dec.code[f.man_bits:f.man_bits + f.exp_bits]
        with m.If(exp == 0):
            magnitude = dec.code[:f.man_bits] | (1 << f.man_bits)
            m.d.comb += dec.significand.eq(magnitude)

    _inject(monkeypatch, MinifloatDecoder, give_subnormals_the_implicit_bit)
    monkeypatch.setenv("NO_WAVES_ON_FAILURE", "1")
    with pytest.raises(Mismatch, match=r"results differ from the golden model") as caught:
        check_all_pairs("minifloat6", "minifloat6", tmp_path)
    assert "expected" in str(caught.value)


def test_rounding_bit_fault_is_caught(monkeypatch, tmp_path):
    """One wrong bit for one code of an integer format (the LSB of -128) is enough to fail."""
    def flip_lsb_of_most_negative(m, dec):
        with m.If(dec.code == 0x80):
            m.d.comb += dec.significand.eq(-127)

    _inject(monkeypatch, IntegerDecoder, flip_lsb_of_most_negative)
    monkeypatch.setenv("NO_WAVES_ON_FAILURE", "1")
    with pytest.raises(Mismatch, match=r"^\d+ of 65536 results differ"):
        check_all_pairs("int8", "int8", tmp_path)


def test_failure_writes_a_waveform(monkeypatch, tmp_path):
    """A mismatch re-runs the simulation with FST tracing and names the file in the failure."""
    def wrong_for_one_code(m, dec):
        with m.If(dec.code == 0x8):
            m.d.comb += dec.significand.eq(-7)

    _inject(monkeypatch, IntegerDecoder, wrong_for_one_code)
    monkeypatch.delenv("NO_WAVES_ON_FAILURE", raising=False)
    with pytest.raises(Mismatch, match=r"waveform: .*dump\.fst") as caught:
        check_all_pairs("int4", "int4", tmp_path)
    fst = tmp_path / "waves" / "dump.fst"
    assert str(fst) in str(caught.value)
    assert fst.read_bytes()[:1] == b"\x00"    # an FST file starts with its header block (type 0)
