"""The accelerator configuration (hw/spec/config.py): validation, derived widths, serialisation, hashing."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hw.spec.config import DATAFLOWS, AcceleratorConfig, ConfigError, scaled_accumulator_bits
from hw.spec.formats import accumulator_bits, get_format

ROOT = Path(__file__).resolve().parents[2]

#: A configuration unlike the defaults in every field.
CUSTOM = dict(rows=8, cols=4, weight_format="int4", act_format="e3m2b5", max_reduction=1000, acc_bits=40,
              dataflow="weight_stationary", act_buffer_depth=256, weight_buffer_depth=64, acc_buffer_depth=32,
              dma_bits=128, clock_mhz=150.0)


def init_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(AcceleratorConfig) if f.init}


def names(message: str, value) -> bool:
    """Whether ``message`` shows ``value`` as a token of its own (``0`` is not found in ``128``)."""
    return re.search(rf"(?<![\w.']){re.escape(repr(value))}(?![\w'])(?!\.\d)", message) is not None


def test_defaults():
    config = AcceleratorConfig()
    assert (config.rows, config.cols, config.weight_format, config.act_format) == (16, 16, "int8", "int8")
    assert config.dataflow == "weight_stationary"
    assert config.peak_macs_per_cycle == 256
    # int8 x int8 products lie in -128*127 .. (-128)*(-128) = -16256 .. 16384;
    # 4096 of them need 4096 * 16384 = 2**26 <= 2**27 - 1: 28 bits. 16 of them: 2**18 <= 2**19 - 1: 20 bits.
    assert config.acc_bits == 28
    assert config.psum_bits == 20
    assert isinstance(config.clock_mhz, float)


@pytest.mark.parametrize("kwargs,acc_bits,psum_bits", [
    # int4 x int4: -8*7 .. 64.  4096 * 64 = 2**18 -> 20 bits; 4 PE rows of two codes each: 8 * 64 = 512 -> 11 bits.
    (dict(rows=4, weight_format="int4", act_format="int4"), 20, 11),
    # uint8 x int8: 255*(-128) .. 255*127 = -32640 .. 32385. 4096 * 32640 <= 2**27 -> 28; 16 * 32640 <= 2**19 -> 20.
    (dict(weight_format="uint8", act_format="int8"), 28, 20),
    # uint4 x uint4: 0 .. 225.  100 * 225 = 22500 < 2**15 -> 16 bits; 2 PE rows of two codes: 4 * 225 = 900
    # < 2**10 -> 11 bits.
    (dict(rows=2, weight_format="uint4", act_format="uint4", max_reduction=100), 16, 11),
    # minifloat4 x minifloat4 in units of 2**-2: -144 .. 144 (6 * 6 * 4).  1 * 144 < 2**8 -> 9 bits.
    (dict(rows=1, weight_format="minifloat4", act_format="minifloat4", max_reduction=1), 9, 9),
])
def test_derived_widths_by_hand(kwargs, acc_bits, psum_bits):
    config = AcceleratorConfig(**kwargs)
    assert (config.acc_bits, config.psum_bits) == (acc_bits, psum_bits)


@pytest.mark.parametrize("kwargs", [
    dict(), dict(rows=4, cols=32, weight_format="int4", act_format="int8", max_reduction=1 << 20),
    dict(rows=8, weight_format="fp8_e4m3", act_format="minifloat6", max_reduction=9),
    dict(rows=128, weight_format="fp8_e5m2", act_format="fp8_e5m2", max_reduction=1 << 24),
    dict(rows=3, weight_format="e3m2b5", act_format="uint8", max_reduction=3),
])
def test_derived_widths_follow_formats(kwargs):
    config = AcceleratorConfig(**kwargs)
    w, a = get_format(config.weight_format), get_format(config.act_format)
    assert config.weights == w and config.acts == a
    assert config.acc_bits == accumulator_bits(w, a, config.max_reduction)
    assert config.psum_bits == accumulator_bits(w, a, config.reduction_rows)


@pytest.mark.parametrize("kwargs,values", [
    (dict(weight_format="int4", act_format="int4"), 2),         # two int4 codes in each 8-bit lane
    (dict(weight_format="uint4", act_format="int3"), 2),
    (dict(weight_format="int4", act_format="int8"), 1),         # one side does not pack: neither does
    (dict(weight_format="int8", act_format="int8"), 1),
    (dict(weight_format="minifloat4", act_format="minifloat4"), 1),
    (dict(formats=("int4", "int8", "minifloat6")), 1),          # a multi-format build packs per layer instead
    (dict(weight_format="int4", act_format="int4", cols=7), 1),  # packed, it would be taller than wide
    (dict(weight_format="int4", act_format="int4", cols=4), 1),
])
def test_packed_lanes_double_the_reduction_depth(kwargs, values):
    config = AcceleratorConfig(rows=4, **{"cols": 8, **kwargs})
    assert config.values_per_lane == values
    assert config.reduction_rows == 4 * values
    assert config.peak_macs_per_cycle == 4 * values * config.cols


@pytest.mark.parametrize("kwargs,pairs", [
    (dict(rows=2, cols=4, formats=("int4", "int8", "minifloat6")), [("int4", "int4")]),
    (dict(rows=4, cols=8, formats=("int8", "int4", "uint4")),
     [("int4", "int4"), ("int4", "uint4"), ("uint4", "int4"), ("uint4", "uint4")]),
    (dict(rows=4, cols=4, formats=("int4", "int8", "minifloat6")), []),      # packed, taller than wide
    (dict(rows=16, cols=16, formats=("int4", "int8", "minifloat6")), []),
    (dict(rows=2, cols=4, formats=("int4", "minifloat4")), []),              # 4-bit slots hold one code
    (dict(rows=2, cols=4, formats=("int8", "minifloat6")), []),              # nothing packs
    (dict(rows=2, cols=4, formats=("int4", "int8"), weight_format="int4"), [("int4", "int4")]),
])
def test_per_layer_packing(kwargs, pairs):
    """A multi-format build packs its int4 x int4 layers two codes a lane where the slot holds two and the array is
    no taller than wide: those layers' reduction depth is 2 * rows, every other pair's rows; the lines keep rows
    slots, and the partial sums hold two packed products of every packing pair."""
    config = AcceleratorConfig(**kwargs)
    assert config.packs_per_layer == bool(pairs)
    assert [(config.weight_formats[i].name, config.act_formats[j].name) for i, j in config.packed_pairs] == pairs
    assert config.values_per_lane == 1 and config.reduction_rows == config.rows
    for i, w in enumerate(config.weight_formats):
        for j, a in enumerate(config.act_formats):
            depth = 2 * config.rows if (w.name, a.name) in pairs else config.rows
            assert config.compute_reduction_rows(i, j, 1) == config.layer_reduction_rows(w, a) == depth
            assert config.compute_reduction_rows(i, j, 0) == config.rows        # COMPUTE.packed clear: unpacked
            assert config.psum_bits >= scaled_accumulator_bits(w, a, depth, config.pair_shift(w, a))
    assert config.compute_reduction_rows(len(config.formats), 0, 1) == config.rows     # refused by the decoder
    assert config.packed_reduction_rows == (2 if pairs else 1) * config.rows


def test_explicit_acc_bits():
    assert AcceleratorConfig(acc_bits=28).acc_bits == 28
    assert AcceleratorConfig(acc_bits=48).acc_bits == 48
    with pytest.raises(ConfigError) as caught:
        AcceleratorConfig(acc_bits=27)
    assert "acc_bits" in str(caught.value) and names(str(caught.value), 27), caught.value


@pytest.mark.parametrize("field,value", [
    ("rows", 0), ("rows", 129), ("rows", 1.5), ("rows", True), ("rows", "16"), ("cols", -1), ("cols", None),
    ("weight_format", "int99"), ("act_format", "float8"), ("weight_format", 8),
    ("dataflow", "bogus"), ("dataflow", "output_stationary"),
    ("act_buffer_depth", 1000), ("weight_buffer_depth", 100), ("acc_buffer_depth", 3000), ("param_buffer_depth", 3),
    ("act_buffer_depth", 8), ("dma_bits", 48), ("dma_bits", 16),
    ("max_reduction", 15), ("max_reduction", 0), ("acc_bits", 257), ("acc_bits", 30.0),
    ("clock_mhz", 0), ("clock_mhz", -5.0), ("clock_mhz", 2001), ("clock_mhz", True), ("clock_mhz", "100"),
])
def test_bad_values(field, value):
    with pytest.raises(ConfigError) as caught:
        AcceleratorConfig(**{field: value})
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert field in message, message
    assert names(message, value), message


@pytest.mark.parametrize("field,bits,where", [
    ("act_buffer_depth", 16, "LOAD.sram_addr"), ("weight_buffer_depth", 16, "LOAD.sram_addr"),
    ("acc_buffer_depth", 16, "COMPUTE.acc_addr"), ("param_buffer_depth", 10, "STORE.param_addr"),
])
def test_buffers_hold_no_more_lines_than_the_isa_addresses(field, bits, where):
    """A deeper buffer would accept instructions whose addresses wrap in the RTL's counters (issue 12)."""
    AcceleratorConfig(**{field: 1 << bits})
    with pytest.raises(ConfigError) as caught:
        AcceleratorConfig(**{field: 1 << (bits + 1)})
    low = 1 if field == "param_buffer_depth" else 16
    assert str(caught.value) == (f"{field} must be a power of two in {low}..{1 << bits} (lines the {bits}-bit field "
                                 f"{where} can address), not {1 << (bits + 1)}")


def test_from_dict_unknown_key():
    with pytest.raises(ConfigError, match=r"\bbogus_field\b"):
        AcceleratorConfig.from_dict({"rows": 8, "bogus_field": 1})
    with pytest.raises(ConfigError, match=r"\b_formats\b"):
        AcceleratorConfig.from_dict({"_formats": ()})


@pytest.mark.parametrize("data", [[1, 2], "rows", None])
def test_from_dict_not_an_object(data):
    with pytest.raises(ConfigError):
        AcceleratorConfig.from_dict(data)


def test_from_json_not_json():
    with pytest.raises(ConfigError, match="JSON"):
        AcceleratorConfig.from_json("{rows: 8")


@pytest.mark.parametrize("given,normal", [
    ("E3M2", "minifloat6"), ("e3m2", "minifloat6"), ("e4m3fn", "fp8_e4m3"), ("e5m2ieee", "fp8_e5m2"),
    ("INT8", "int8"), (" uint4 ", "uint4"), ("E3M2B5", "e3m2b5"), ("e2m2FTZ", "e2m2ftz"),
])
def test_format_names_are_normalised(given, normal):
    config = AcceleratorConfig(weight_format=given, act_format=given)
    assert config.weight_format == config.act_format == normal
    assert config == AcceleratorConfig(weight_format=normal, act_format=normal)
    assert config.hash == AcceleratorConfig(weight_format=normal, act_format=normal).hash


@pytest.mark.parametrize("kwargs", [dict(), CUSTOM, dict(weight_format="E3M2", act_format="fp8_e5m2", rows=2,
                                                          max_reduction=7, clock_mhz=33)])
def test_json_round_trip(kwargs):
    config = AcceleratorConfig(**kwargs)
    text = config.to_json()
    again = AcceleratorConfig.from_json(text)
    assert again == config
    assert again.to_json() == text
    assert again.hash == config.hash
    assert AcceleratorConfig.from_dict(config.to_dict()) == config
    # A single-format build's JSON has no set, a build with the default command queues no queue depth.
    assert set(config.to_dict()) == init_fields() - {"formats", "command_queue_depth", "decode_chains",
                                                                 "perf_counters", "decode_shared", "decode_serial",
                                                                 "decode_stepped", "postprocess_shared",
                                                                 "postprocess_held",
                                                                 "postprocess_merged", "postprocess_columns_per_lane",
                                                                 "load_direct_write", "slow_clock", "table_bram",
                                                                 "narrow_line_fifo", "postprocess_serial",
                                                                 "dram_addr_bits", "compute_compact", "mid_clock",
                                                                 "dsp_pes", "decode_pairs"}


def test_hash_is_stable():
    config = AcceleratorConfig(**CUSTOM)
    assert re.fullmatch(r"[0-9a-f]{16}", config.hash)
    assert config.hash == AcceleratorConfig(**CUSTOM).hash
    assert AcceleratorConfig().hash == AcceleratorConfig().hash


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_hash_is_stable_across_processes(seed):
    code = ("import json, sys; from hw.spec.config import AcceleratorConfig; "
            "print(AcceleratorConfig(**json.loads(sys.argv[1])).hash)")
    env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, json.dumps(CUSTOM)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == AcceleratorConfig(**CUSTOM).hash


#: One other valid value for every field but dataflow, which has only one value so far.
CHANGES = dict(rows=8, cols=4, weight_format="int4", act_format="uint8", max_reduction=4095, acc_bits=29,
               act_buffer_depth=2048, weight_buffer_depth=2048, acc_buffer_depth=512, param_buffer_depth=128, dma_bits=32, clock_mhz=100.5,
               formats=("int8", "int4"), command_queue_depth=1, decode_chains=8,
               perf_counters=False, decode_shared=True, decode_serial=True, postprocess_shared=True,
               postprocess_held=True, postprocess_merged=True, postprocess_columns_per_lane=4,
               load_direct_write=True, slow_clock=True, table_bram=True, narrow_line_fifo=True,
               postprocess_serial=True, dram_addr_bits=17, decode_stepped=True,
               compute_compact=True, mid_clock=True, dsp_pes=3, decode_pairs=True)
#: The fields whose change needs others set beside it: dsp_pes needs a packed build, decode_pairs a stepped decoder.
CONTEXT = {"dsp_pes": dict(rows=4, cols=8, weight_format="int4", act_format="int4"),
           "decode_pairs": dict(decode_stepped=True)}


def test_every_field_has_a_change():
    """A new field (or a second dataflow) needs an entry in CHANGES."""
    assert DATAFLOWS == ("weight_stationary",)
    assert set(CHANGES) | {"dataflow"} == init_fields()


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_hash_changes_with_every_field(field):
    base = AcceleratorConfig(**CONTEXT.get(field, {}))
    changed = AcceleratorConfig(**CONTEXT.get(field, {}), **{field: CHANGES[field]})
    assert getattr(changed, field) != getattr(base, field)
    assert changed != base
    assert changed.hash != base.hash


# --- format sets (multi-format builds) -------------------------------------------------------------------------

def test_single_format_json_and_hash_unchanged_by_format_sets():
    """Pinned digests from before format sets existed: existing builds keep their cache keys."""
    assert AcceleratorConfig().hash == "dadfcdcee7b33b0b"
    assert AcceleratorConfig(**CUSTOM).hash == "a205bfc35fada89e"
    assert "formats" not in AcceleratorConfig().to_json()
    assert "command_queue_depth" not in AcceleratorConfig().to_json()
    assert "decode_chains" not in AcceleratorConfig().to_json()
    assert "perf_counters" not in AcceleratorConfig().to_json()
    assert "decode_shared" not in AcceleratorConfig().to_json()
    assert "decode_serial" not in AcceleratorConfig().to_json()
    assert "postprocess_shared" not in AcceleratorConfig().to_json()
    assert "postprocess_held" not in AcceleratorConfig().to_json()
    assert "postprocess_merged" not in AcceleratorConfig().to_json()
    assert "load_direct_write" not in AcceleratorConfig().to_json()
    assert "postprocess_columns_per_lane" not in AcceleratorConfig().to_json()
    assert "slow_clock" not in AcceleratorConfig().to_json()
    assert "table_bram" not in AcceleratorConfig().to_json()
    assert "narrow_line_fifo" not in AcceleratorConfig().to_json()
    assert "postprocess_serial" not in AcceleratorConfig().to_json()
    assert "dram_addr_bits" not in AcceleratorConfig().to_json()
    assert "decode_stepped" not in AcceleratorConfig().to_json()
    assert "compute_compact" not in AcceleratorConfig().to_json()
    assert "mid_clock" not in AcceleratorConfig().to_json()


@pytest.mark.parametrize("name, value, default, lo", [("command_queue_depth", 0, 4, 0), ("decode_chains", 8, 2, 2),
                                                     ("perf_counters", False, True, None),
                                                     ("decode_shared", True, False, None),
                                                     ("decode_serial", True, False, None),
                                                     ("decode_stepped", True, False, None),
                                                     ("postprocess_shared", True, False, None),
                                                     ("postprocess_held", True, False, None),
                                                     ("postprocess_merged", True, False, None),
                                                     ("load_direct_write", True, False, None),
                                                     ("slow_clock", True, False, None),
                                                     ("table_bram", True, False, None),
                                                     ("narrow_line_fifo", True, False, None),
                                                     ("postprocess_serial", True, False, None),
                                                     ("compute_compact", True, False, None),
                                                     ("mid_clock", True, False, None)])
def test_small_part_fields_round_trip_and_range(name, value, default, lo):
    """A small build's choices are in its JSON and hash; their defaults are not (pinned above)."""
    c = AcceleratorConfig(rows=2, **{name: value})
    assert json.loads(c.to_json())[name] == value
    again = AcceleratorConfig.from_json(c.to_json())
    assert again == c and again.hash == c.hash != AcceleratorConfig(rows=2).hash
    assert AcceleratorConfig(**{name: default}) == AcceleratorConfig()
    assert AcceleratorConfig(**{name: default}).to_json() == AcceleratorConfig().to_json()
    if lo is None:                                      # a switch
        for bad in (0, 1, "false", None):
            with pytest.raises(ConfigError, match=rf"{name} must be true or false"):
                AcceleratorConfig(**{name: bad})
        return
    for bad in (lo - 1, 65, 2.0, True):
        with pytest.raises(ConfigError, match=rf"{name} must be an integer in {lo}\.\.64"):
            AcceleratorConfig(**{name: bad})


def test_dram_addr_bits_range():
    """Burst addresses of 13..32 bits (a generator needs two 4 KiB pages); 32, the default, stays out of the JSON."""
    assert json.loads(AcceleratorConfig(dram_addr_bits=17).to_json())["dram_addr_bits"] == 17
    for bad in (12, 33, 17.0, True):
        with pytest.raises(ConfigError, match=r"dram_addr_bits must be an integer in 13\.\.32"):
            AcceleratorConfig(dram_addr_bits=bad)


def test_columns_per_lane_round_trip_and_range():
    """postprocess_columns_per_lane: cols / n lanes, each taking n columns in turn; n divides cols, and
    postprocess_shared (one lane) leaves it at 1."""
    c = AcceleratorConfig(rows=2, cols=24, postprocess_columns_per_lane=6)
    assert (c.postprocess_lanes, c.postprocess_lane_columns) == (4, 6)
    assert json.loads(c.to_json())["postprocess_columns_per_lane"] == 6
    assert AcceleratorConfig.from_json(c.to_json()) == c
    shared = AcceleratorConfig(rows=2, cols=24, postprocess_shared=True)
    assert (shared.postprocess_lanes, shared.postprocess_lane_columns) == (1, 24)
    wide = AcceleratorConfig(cols=24)
    assert (wide.postprocess_lanes, wide.postprocess_lane_columns) == (24, 1)
    for bad in (0, 25, 2.0, True):
        with pytest.raises(ConfigError, match=r"postprocess_columns_per_lane must be an integer in 1\.\.24"):
            AcceleratorConfig(cols=24, postprocess_columns_per_lane=bad)
    with pytest.raises(ConfigError, match=r"must divide cols \(24\): one of 1, 2, 3, 4, 6, 8, 12, 24, not 5"):
        AcceleratorConfig(cols=24, postprocess_columns_per_lane=5)
    with pytest.raises(ConfigError, match="postprocess_shared already gives all the columns one lane"):
        AcceleratorConfig(cols=24, postprocess_shared=True, postprocess_columns_per_lane=24)


def test_dsp_pes_round_trip_and_range():
    """dsp_pes: packed PEs whose two products one wide multiply makes; at most every PE, only in a packed build."""
    c = AcceleratorConfig(rows=4, cols=8, weight_format="int4", act_format="int4", dsp_pes=32)
    assert json.loads(c.to_json())["dsp_pes"] == 32
    assert AcceleratorConfig.from_json(c.to_json()) == c
    assert "dsp_pes" not in AcceleratorConfig().to_json()
    for bad in (-1, 33, 2.0, True):
        with pytest.raises(ConfigError, match=r"dsp_pes must be an integer in 0\.\.32"):
            AcceleratorConfig(rows=4, cols=8, weight_format="int4", act_format="int4", dsp_pes=bad)
    for unpacked in (dict(rows=4, cols=8), dict(rows=8, cols=8, weight_format="int4", act_format="int4"),
                     dict(rows=4, cols=8, formats=("int4", "int8"))):
        with pytest.raises(ConfigError, match="dsp_pes needs a packed build"):
            AcceleratorConfig(**unpacked, dsp_pes=1)


def test_decode_pairs_needs_a_stepped_decoder():
    c = AcceleratorConfig(decode_stepped=True, decode_pairs=True)
    assert json.loads(c.to_json())["decode_pairs"] is True and AcceleratorConfig.from_json(c.to_json()) == c
    assert c.decode_latency_of(None) < AcceleratorConfig(decode_stepped=True).decode_latency_of(None)
    with pytest.raises(ConfigError, match="decode_pairs reads a stepped decoder's operands two bits a cycle: set "
                                          "decode_stepped too"):
        AcceleratorConfig(decode_pairs=True)
    with pytest.raises(ConfigError, match="decode_pairs must be true or false"):
        AcceleratorConfig(decode_stepped=True, decode_pairs=1)


def test_format_set_derived_widths_by_hand():
    c = AcceleratorConfig(rows=4, formats=("int4", "int8", "minifloat6"), max_reduction=16)
    assert (c.weights.name, c.acts.name) == ("int4", "int4")
    assert [f.name for f in c.weight_formats] == [f.name for f in c.act_formats] == ["int4", "int8", "minifloat6"]
    assert (c.act_slot_bits, c.weight_slot_bits) == (8, 8)
    # minifloat6 = e3m2 bias 3: lsb 2**(1 - 3 - 2) = 2**-4, so the finest product is 2**-8 and an int8 x int8
    # product (-16256 .. 16384) enters shifted left by 8: up to 2**22; 16 of them: 2**26 -> 28 bits; 4: 26 bits.
    assert c.acc_exponent == -8
    assert c.pair_shift(get_format("int8"), get_format("int8")) == 8
    assert c.pair_shift(get_format("minifloat6"), get_format("minifloat6")) == 0
    assert (c.acc_bits, c.psum_bits) == (28, 26)
    assert c.lut_entries == 256


def test_format_set_json_round_trip():
    c = AcceleratorConfig(rows=4, formats=["int8", "e3m2"])
    assert c.formats == ("int8", "minifloat6")
    again = AcceleratorConfig.from_json(c.to_json())
    assert again == c and again.hash == c.hash
    assert json.loads(c.to_json())["formats"] == ["int8", "minifloat6"]
    assert c.hash != AcceleratorConfig(rows=4).hash


@pytest.mark.parametrize("kwargs,message", [
    (dict(formats=("int8",)), "formats must list 2..8 formats (one format is a plain --pe build), not 1"),
    (dict(formats=tuple(f"int{b}" for b in range(2, 11))), "formats must list 2..8 formats"),
    (dict(formats=("int8", "int8")), "formats lists int8 more than once; list each format once"),
    (dict(formats=("int8", "e3m2", "minifloat6")), "formats lists minifloat6 more than once"),
    (dict(formats=("int8", "nope")), "formats: "),
    (dict(formats="int8,int4"), "formats must be a list of format names, not 'int8,int4'"),
    (dict(formats=("int4", "int8"), weight_format="int4", act_format="minifloat6"),
     "act_format must be int4, the first of formats, not 'minifloat6'"),
])
def test_format_set_errors(kwargs, message):
    with pytest.raises(ConfigError) as e:
        AcceleratorConfig(**kwargs)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("queue, retire", [(0, 2), (1, 2), (2, 2), (3, 3), (4, 4), (64, 4)])
def test_retire_queue_follows_the_command_queues(queue, retire):
    """The compute engine's retire queue holds as many COMPUTEs as a command queue, from 2 to RETIRE_QUEUE_DEPTH (the
    default build keeps 4, and so its Verilog)."""
    assert AcceleratorConfig(command_queue_depth=queue).retire_queue_depth == retire
