"""sw/mixed/costs.py: per-layer cycles, weight bits and the energy hook, from compiled programs."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sw.compiler.network import compile_network
from sw.frontend.onnx_import import load_onnx
from sw.mixed import Choice, MixedError, costs, set_energy_model
from sw.mixed.costs import (COSTS, cost_table, cycles_per_layer, energy_per_layer, engine_config,
                            weight_bits_per_layer)
from sw.mixed.units import decision_units, layer_formats, tensor_units
from sw.model_folder import DIGITS
from sw.quantize import quantize_network
from sw.runtime import run_codes


@pytest.fixture(scope="module")
def net():
    return load_onnx(DIGITS / "digits_cnn.onnx")


def _compiled(net, config, formats=None):
    samples = np.load(DIGITS / "calibration.npy")[:16]
    qnet = quantize_network(net, act_format=config.acts.name, weight_format=config.weights.name,
                            acc_bits=config.acc_bits, samples=samples, method="mmse", per_channel=True,
                            layer_formats=formats)
    return compile_network(qnet, config)


@pytest.mark.parametrize("rows, fmt", [(16, "int8"), (32, "int4")])
def test_layer_cycles_add_up_to_the_emulators_total(net, rows, fmt):
    compiled = _compiled(net, AcceleratorConfig(rows=rows, cols=rows, weight_format=fmt, act_format=fmt))
    per_layer = cycles_per_layer(compiled)
    assert set(per_layer) == {e["output"] for e in compiled.layers}
    codes = np.load(DIGITS / "calibration.npy")[:2]
    run = run_codes(compiled, compiled.network.tensors[compiled.network.input].quantize(codes), "emulator",
                    cycles=True)
    assert sum(per_layer.values()) == run.cycles[0] > 0


def test_weight_bits_count_each_layer_at_its_own_format(net):
    config = AcceleratorConfig(rows=16, cols=16)
    units = decision_units(net)
    formats = layer_formats(units, {1: Choice("int4", "int4"), 2: Choice("int2", "int2")}, ("int8", "int8"))
    bits = weight_bits_per_layer(_compiled(net, config, formats))
    width = {units[1].layers[0]: 4, units[2].layers[0]: 2}
    expected = {la.output: la.weight.size * width.get(la.name, 8) for la in net.layers if la.weight is not None}
    assert bits == expected


def test_weight_bits_refuse_codes_outside_the_claimed_format(net):
    compiled = _compiled(net, AcceleratorConfig(rows=16, cols=16))
    compiled.network.report[0]["weight_format"] = "int2"        # int8 weights claimed as int2
    with pytest.raises(MixedError, match="weight codes are not all int2 values"):
        weight_bits_per_layer(compiled)


def test_energy_needs_a_model_and_uses_the_one_plugged_in(net, monkeypatch):
    compiled = _compiled(net, AcceleratorConfig(rows=16, cols=16))
    monkeypatch.setattr(costs, "sw_energy_model", lambda: None)        # as on a build without sw.energy
    with pytest.raises(MixedError, match="energy-uj= needs an energy model"):
        energy_per_layer(compiled)
    try:
        set_energy_model(lambda c: {e["output"]: 0.5 * e["macs"] for e in c.layers})
        table = cost_table("energy-uj", [compiled], tensor_units(net, decision_units(net)), 4)
        assert table.uniform == [0.5 * sum(e["macs"] for e in compiled.layers)]
        assert table.table[:, 0].sum() == table.uniform[0] and table.fixed == 0
    finally:
        set_energy_model(None)


def test_sw_energy_layers_add_up_to_its_inference_energy(net):
    energy = pytest.importorskip("sw.energy")
    compiled = _compiled(net, AcceleratorConfig(rows=16, cols=16))
    per_layer = costs.sw_energy_model()(compiled)
    report = energy.energy_report(compiled.config, energy.program_events(compiled), energy.load_table(None))
    assert set(per_layer) == {e["output"] for e in compiled.layers}
    assert sum(per_layer.values()) == pytest.approx(report["dynamic_uj"], rel=1e-4)


def test_cost_table_charges_each_unit_its_layers_in_each_program(net):
    config = AcceleratorConfig(rows=16, cols=16)
    menu = [Choice("int4", "int4"), Choice("int8", "int8")]
    programs = [_compiled(net, engine_config(config, c)) for c in menu]
    units = decision_units(net)
    table = cost_table("weight-bits", programs, tensor_units(net, units), len(units))
    for u, unit in enumerate(units):
        layer = next(la for la in net.layers if la.name == unit.layers[0])
        assert list(table.table[u]) == [layer.weight.size * get_format(c.weights).bits for c in menu]
    assert table.uniform == [float(table.table[:, k].sum()) for k in range(2)]
    with pytest.raises(MixedError, match="unknown budget"):
        cost_table("joules", programs, {}, len(units))
    assert set(COSTS) == {"cycles", "weight-bits", "energy-uj"}


def test_engine_config_keeps_the_geometry_and_resizes_the_accumulator():
    config = AcceleratorConfig(rows=32, cols=32, weight_format="int8", act_format="int8", dma_bits=64)
    small = engine_config(config, Choice("int4", "int4"))
    assert (small.rows, small.cols, small.dma_bits, small.weights.name) == (32, 32, 64, "int4")
    assert small.acc_bits == AcceleratorConfig(rows=32, cols=32, weight_format="int4", act_format="int4").acc_bits


def test_a_packed_int4_engine_makes_int4_layers_cheaper_in_cycles(net):
    """On an engine twice as wide as tall, int4 packs two codes per PE lane (a reduction twice as deep), so the
    cycles the ILP budgets charge every int4 layer less than int8; on a square engine it does not pack."""
    wide, square = AcceleratorConfig(rows=8, cols=16), AcceleratorConfig(rows=8, cols=8)
    int4 = cycles_per_layer(_compiled(net, engine_config(wide, Choice("int4", "int4"))))
    int8 = cycles_per_layer(_compiled(net, engine_config(wide, Choice("int8", "int8"))))
    assert engine_config(wide, Choice("int4", "int4")).values_per_lane == 2
    assert all(int4[layer] < int8[layer] for layer in int8), (int4, int8)
    assert engine_config(square, Choice("int4", "int4")).values_per_lane == 1
