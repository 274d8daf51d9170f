"""Energy reports (sw/energy/report.py): totals and layers worked by hand on a table of round numbers, the keys
stable, inferences/s at the clock target or a given fmax, static power only when the table gives it; the events of
a network run line up with its instructions, host layers between engine programs included."""

import json

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import decode
from sw.emulator.events import EVENTS, Events, count_events
from sw.energy import energy_markdown, energy_report, network_layers, program_events
from sw.energy.table import parse_table

CONFIG = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", act_buffer_depth=64,
                           weight_buffer_depth=64, acc_buffer_depth=64, param_buffer_depth=4, dma_bits=64,
                           clock_mhz=50)


def _table(static_mw: float = 0.0):
    """An adder costs 1 pJ per bit, a multiplier 1 pJ per product bit, an SRAM bit 1 pJ at 8 bytes (sqrt of the
    capacity beyond), DRAM 8 pJ per byte."""
    src = {"unit": "pJ", "source": "round numbers for a test"}
    return parse_table({"int_add": [{"bits": 1, "value": 1, **src}], "int_mult": [{"bits": 1, "value": 1, **src}],
                        "sram_read_64b": [{"capacity_bytes": 8, "value": 64, **src}],
                        "sram_write_over_read": {"value": 2, "unit": "ratio", "source": "x"},
                        "dram_64b": {"value": 64, **src},
                        "static_power": {"value": static_mw, "unit": "mW", "source": "x"}})


def _events(rows: list[dict]) -> Events:
    counts = np.array([[row.get(name, 0) for name in EVENTS] for row in rows], dtype=np.int64)
    return Events(counts, (("int8", "int8"),), np.zeros(len(rows), np.int64))


def test_by_hand():
    events = _events([{"macs": 10, "dram_read_bytes": 100, "instructions": 1},
                      {"weight_read_bits": 3, "weight_write_bits": 5, "instructions": 1},
                      {"acc_ops": 7, "ppu_outputs": 2, "dram_write_bytes": 4, "instructions": 1}])
    r = energy_report(CONFIG, events, _table(), cycles=500, layers=[("a", 0, 1), ("b", 1, 3)])
    mac = 8 * 8 + CONFIG.psum_bits                    # 8x8 multiplier, partial-sum adder
    weight_bit = (64 * 32 / 8 / 8) ** 0.5             # 64 lines of 32 bits: 256 bytes, sqrt(256 / 8) pJ per bit
    ppu = CONFIG.acc_bits + CONFIG.acc_bits * 32
    by_class = {"mac": 10 * mac, "weight_sram": 3 * weight_bit + 5 * 2 * weight_bit, "accumulate": 7 * CONFIG.acc_bits,
                "postprocess": 2 * ppu, "dram": 104 * 8, "instruction_fetch": 3 * 128}
    for name, pj in by_class.items():
        assert r["by_class_uj"][name] == pytest.approx(pj * 1e-6, abs=1e-6), name
    total = sum(by_class.values())
    assert r["energy_uj_per_inference"] == pytest.approx(total * 1e-6, abs=1e-6) == r["dynamic_uj"]
    assert r["static_uj"] == 0 and "no static power" in r["scope"]
    assert r["inferences_per_second"] == pytest.approx(50e6 / 500)
    assert r["inferences_per_second_per_watt"] == pytest.approx(1e12 / total, rel=1e-6)
    assert r["average_power_mw"] == pytest.approx(total * 1e-12 * 1e5 * 1e3, rel=1e-3)
    assert r["clock_source"] == "clock target of the configuration" and r["clock_mhz"] == 50
    a, b = r["layers"]
    assert a["name"] == "a" and a["energy_uj"] == pytest.approx((10 * mac + 800 + 128) * 1e-6, abs=1e-6)
    assert a["energy_uj"] + b["energy_uj"] == pytest.approx(r["energy_uj_per_inference"], abs=2e-6)
    assert r["macs_by_formats"] == {"int8 x int8": 10} and r["events"]["dram_read_bytes"] == 100
    assert r["energy_per_event_pj"]["mac[int8 x int8]"] == pytest.approx(mac)
    json.dumps(r)
    text = energy_markdown(r)
    assert "| a |" in text and "inferences/s per watt" in text and "100,000.0 inferences/s at 50 MHz" in text


def test_stable_keys():
    r = energy_report(CONFIG, _events([{"instructions": 1}]), _table())
    assert list(r) == ["energy_table", "scope", "energy_uj_per_inference", "dynamic_uj", "static_uj", "by_class_uj",
                       "events", "macs_by_formats", "energy_per_event_pj", "clock_mhz", "clock_source",
                       "cycles_per_inference", "cycles_source", "inferences_per_second", "average_power_mw",
                       "inferences_per_second_per_watt", "layers"]
    assert r["inferences_per_second"] is None and r["average_power_mw"] is None


def test_fmax_and_static_power():
    events = _events([{"instructions": 1}])           # 128 pJ
    r = energy_report(CONFIG, events, _table(static_mw=2.0), cycles=1000, fmax_mhz=100.0)
    assert r["clock_source"] == "achieved fmax (given)" and r["inferences_per_second"] == pytest.approx(1e5)
    static = 2e-3 * 1000 / 100e6 * 1e12               # 2 mW for 10 us: 20,000 pJ
    assert r["static_uj"] == pytest.approx(static * 1e-6) and "static power 2 mW" in r["scope"]
    assert r["energy_uj_per_inference"] == pytest.approx((static + 128) * 1e-6)


def test_network_events_line_up_with_instructions(tmp_path):
    """An engine program, the host's LSTM, another engine program: the run's rows are the program's words, the
    same in the functional and timed runs and as counted from the words alone."""
    from sw.compile import compile_model
    from sw.evaluate import DIGITS
    from sw.runtime import run_codes
    from tests.onnx_models import lstm_digits

    config = AcceleratorConfig(rows=8, cols=8, weight_format="int8", act_format="int8")
    compiled = compile_model(lstm_digits(tmp_path / "lstm.onnx"), config, np.load(DIGITS / "calibration.npy"),
                             log=lambda *_: None)
    assert len(compiled.program.segments) == 2
    codes = compiled.network.tensors[compiled.network.input].quantize(np.load(DIGITS / "calibration.npy")[:3])
    fast, timed = run_codes(compiled, codes, "emulator"), run_codes(compiled, codes, "emulator", cycles=True)
    words = compiled.program.words
    assert len(fast.events) == len(timed.events) == len(words)
    np.testing.assert_array_equal(fast.events.counts, timed.events.counts)
    decoded = [decode(w) for w in words]
    static = Events.concatenate([count_events(config, decoded[a:a + n - 1]) for a, n in compiled.program.segments])
    np.testing.assert_array_equal(fast.events.counts, static.counts)
    np.testing.assert_array_equal(fast.events.counts, program_events(compiled).counts)
    spans = network_layers(compiled)
    assert spans[0][1] == 0 and spans[-1][2] == len(words)
    assert all(a < b for _, a, b in spans)
