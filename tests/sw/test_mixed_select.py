"""sw/mixed/select.py on the digits CNN: the ILP's choice meets its budget in counted figures and beats a uniform
format of larger cost on accuracy."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sw.frontend.onnx_import import load_onnx
from sw.mixed import MixedError, build, choose, costs, measure, parse_budget, parse_menu, prepare
from sw.mixed.costs import weight_bits_per_layer
from sw.model_folder import DIGITS

INT2, INT4, INT8 = range(3)


@pytest.fixture(scope="module")
def plan():
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    samples = np.load(DIGITS / "calibration.npy")
    return prepare(net, parse_menu("int2,int4,int8"), AcceleratorConfig(rows=32, cols=32), samples,
                   progress=lambda line: None)


@pytest.fixture(scope="module")
def test_set():
    with np.load(DIGITS / "test_set.npz") as data:
        return data["images"], data["labels"]


def test_uniform_programs_cost_what_the_emulator_counts(plan):
    # int4 lines of a 32-wide array fit one 128-bit beat, int8 lines take two: the int4 engine is faster
    cycles = plan.costs["cycles"].uniform
    assert cycles[INT4] < cycles[INT8]
    for k, program in enumerate(plan.uniform):
        assert measure(plan, [k] * len(plan.units), program)["measured"]["cycles_on_this_engine"] == cycles[k]


def test_weight_bit_budget_is_met_and_beats_uniform_int4(plan, test_set):
    budget = 0.7 * plan.costs["weight-bits"].uniform[INT4]
    picks = choose(plan, "weight-bits", budget)
    compiled = build(plan, picks)
    result = measure(plan, picks, compiled, *test_set)
    counted = sum(weight_bits_per_layer(compiled).values())          # from the codes the program carries
    assert counted == result["measured"]["weight-bits"] == result["predicted"]["weight-bits"] <= budget
    assert result["measured"]["golden_emulator_mismatches"] == 0
    uniform = measure(plan, [INT4] * len(plan.units), plan.uniform[INT4], *test_set)
    assert uniform["measured"]["weight-bits"] > budget
    assert result["measured"]["accuracy"] > uniform["measured"]["accuracy"]
    assert len(set(result["choice"].values())) > 1                    # a real mix


def test_cycle_budget_is_met_per_layer(plan):
    costs = plan.costs["cycles"]
    budget = (costs.uniform[INT4] + costs.uniform[INT8]) / 2
    picks = choose(plan, "cycles", budget)
    assert costs.total(picks) <= budget
    # more budget never predicts a worse output
    looser = choose(plan, "cycles", costs.uniform[INT8])
    assert looser == [INT8] * len(plan.units)
    assert plan.sensitivity.predicted_sqnr_db(looser) >= plan.sensitivity.predicted_sqnr_db(picks)


def test_costs_on_the_engine_are_what_it_counts():
    # On today's single int8 engine every format costs int8's cycles: a cycles budget then buys accuracy only, and
    # the counted cycles of the chosen network are the predicted ones.
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    on = prepare(net, parse_menu("int4,int8"), AcceleratorConfig(rows=32, cols=32),
                 np.load(DIGITS / "calibration.npy")[:16], costs_on="engine", progress=lambda line: None)
    cycles = on.costs["cycles"]
    assert cycles.uniform[0] == cycles.uniform[1]
    picks = choose(on, "cycles", cycles.uniform[1])
    result = measure(on, picks, build(on, picks))
    assert result["measured"]["cycles"] == result["predicted"]["cycles"] == cycles.uniform[1]
    assert result["measured"]["weight-bits"] == result["predicted"]["weight-bits"]
    with pytest.raises(MixedError, match="costs_on must be one of per-format, engine"):
        prepare(net, on.menu, on.config, on.samples, costs_on="nowhere")


def test_a_multi_format_engine_runs_the_choice_bit_exactly(test_set):
    # The multi-format build of issue 13 item 1: each layer runs in its chosen format; costs counted on it.
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    config = AcceleratorConfig(rows=32, cols=32, formats=("int8", "int4", "int2"))
    on = prepare(net, parse_menu("int2,int4,int8"), config, np.load(DIGITS / "calibration.npy")[:16],
                 costs_on="engine", progress=lambda line: None)
    picks = choose(on, "weight-bits", 0.75 * on.costs["weight-bits"].uniform[INT4])
    result = measure(on, picks, build(on, picks), test_set[0][:40], test_set[1][:40])
    assert result["engine"] == "int8+int4+int2" and len(set(picks)) > 1
    assert result["measured"]["golden_emulator_mismatches"] == 0
    assert result["measured"]["cycles"] == result["predicted"]["cycles"]
    assert result["measured"]["weight-bits"] == result["predicted"]["weight-bits"]


def test_budgets_are_parsed_and_checked(monkeypatch):
    assert parse_budget("cycles=4000") == ("cycles", 4000.0)
    assert parse_budget("weight-bits=1e4") == ("weight-bits", 10000.0)
    for bad in ("cycles", "cycles=-1", "cycles=x", "bits=3"):
        with pytest.raises(MixedError, match="--budget"):
            parse_budget(bad)
    monkeypatch.setattr(costs, "sw_energy_model", lambda: None)        # as on a build without sw.energy
    with pytest.raises(MixedError, match="needs an energy model"):
        parse_budget("energy-uj=2.5")


def test_an_infeasible_budget_stops_before_the_sensitivities(plan):
    with pytest.raises(MixedError, match=r"smallest feasible budget is cycles=\d+"):
        prepare(plan.net, plan.menu, plan.config, plan.samples[:4], budget=("cycles", 10.0),
                progress=lambda line: None)


def test_a_weight_only_minifloat_menu_runs_on_an_fp8_engine():
    from sw.mixed import container
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    menu = parse_menu("minifloat4/fp8_e4m3,minifloat6/fp8_e4m3,fp8_e4m3")
    w, a = container(menu)
    assert (w, a) == ("fp8_e4m3", "fp8_e4m3")
    mf = prepare(net, menu, AcceleratorConfig(rows=16, cols=16, weight_format=w, act_format=a),
                 np.load(DIGITS / "calibration.npy")[:16], progress=lambda line: None)
    assert mf.costs["weight-bits"].uniform == [sum(la.weight.size for la in net.layers if la.weight is not None) * b
                                               for b in (4, 6, 8)]
    budget = sum(mf.costs["weight-bits"].uniform[:2]) / 2
    picks = choose(mf, "weight-bits", budget)
    compiled = build(mf, picks)
    bits = weight_bits_per_layer(compiled)
    widths = {0: 4, 1: 6, 2: 8}
    assert bits == {next(la.output for la in net.layers if la.name == u.layers[0]):
                    next(la.weight.size for la in net.layers if la.name == u.layers[0]) * widths[k]
                    for u, k in zip(mf.units, picks)}
    assert sum(bits.values()) <= budget


def test_packed_int4_costs_hold_in_every_mix():
    """On a build that packs int4 per layer (4x8 int4,int8,minifloat6) a layer's cycles depend on its neighbours'
    formats: the costs counted on the engine, with their packing changes, predict every mix's emulated cycles."""
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    config = AcceleratorConfig(rows=4, cols=8, formats=("int4", "int8", "minifloat6"))
    on = prepare(net, parse_menu("int4,int8"), config, np.load(DIGITS / "calibration.npy")[:16],
                 costs_on="engine", progress=lambda line: None)
    assert on.packed[0] is not None and on.packed[1] is None and on.costs["cycles"].packing
    for picks in ([0, 0, 1, 1], [1, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]):
        result = measure(on, picks, build(on, picks))
        assert result["measured"]["cycles"] == result["predicted"]["cycles"], picks
