"""A mixed-format network whose adds and concats join branches quantized in different formats, and whose fused
activations (the post-processing unit's lookup table) sit in int4, int8 and minifloat6 layers.

The quantizer stores each add's (concat's) inputs in the widest format their producers ask for; every producer's
requantizing store writes it. A lookup table of a layer narrower than the engine's slots has one entry per code of
its own format. Checked: the formats the network declares, golden == emulator on every stored tensor of a 4x4
int4+int8+minifloat6 build (8x8 for the zoo's ResNet-8), and golden == emulator == RTL for the activations network.
"""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sw.frontend.onnx_import import load_onnx
from sw.model_folder import DIGITS
from sw.quantize import quantize_network
from tests.onnx_models import activations_resnet, global_pools_digits
from tests.sw.test_compiler_network import assert_every_tensor_matches_golden

FORMATS = ("int4", "int8", "minifloat6")
CONFIG = AcceleratorConfig(rows=4, cols=4, formats=FORMATS)
#: activations_resnet: HardSwish (c1, s1), LeakyRelu (c2), HardSigmoid (c4), SiLU (c5), Tanh (c7) and Sigmoid
#: (logits) in each of the formats; the add s1 joins c1 (minifloat6) and c3 (int4), s2 joins c5 (int8) and c6
#: (minifloat6).
ACTIVATIONS = {"c1": "minifloat6", "c2": "int4", "c3": "int4", "s1": "int8", "c4": "int4", "c5": "int8",
               "c6": "minifloat6", "s2": "minifloat6", "c7": "int4", "gap": "int8", "logits": "minifloat6"}


def _quantize(path, formats: dict):
    net = load_onnx(path)
    samples = np.load(DIGITS / "calibration.npy")[:16]
    qnet = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=CONFIG.acc_bits,
                            samples=samples, method="mmse", per_channel=True,
                            layer_formats={n: (f, f) for n, f in formats.items()}, formats=list(FORMATS))
    return qnet, qnet.tensors[qnet.input].quantize(samples[:2])


@pytest.fixture(scope="module")
def activations(tmp_path_factory):
    return _quantize(activations_resnet(tmp_path_factory.mktemp("act") / "m.onnx"), ACTIVATIONS)


def test_adds_store_the_widest_branch_format_and_tables_have_their_formats_entries(activations):
    qnet, _ = activations
    layer = {la.name: la for la in qnet.layers}
    fmt = {t: q.format for t, q in qnet.tensors.items()}
    assert (layer["c1"].weight_format, layer["c3"].weight_format) == ("minifloat6", "int4")
    assert fmt["a1"] == fmt["c3"] == "minifloat6"            # c3 (int4) writes the add's minifloat6
    assert (layer["c5"].weight_format, layer["c6"].weight_format) == ("int8", "minifloat6")
    assert fmt["a5"] == fmt["c6"] == "int8"                  # c6 (minifloat6) writes the add's int8
    assert (fmt["a2"], fmt["a3"], fmt["a6"], fmt["y"]) == ("int4", "int8", "minifloat6", "minifloat6")
    tables = {name: la.table for name, la in layer.items() if la.table is not None}
    assert set(tables) >= {"c1", "c2", "s1", "c4", "c5", "s2", "c7", "logits"}
    for name, table in tables.items():
        assert len(table) == 1 << get_format(fmt[layer[name].output]).bits, name


def test_mixed_activations_match_golden_on_every_tensor(activations):
    qnet, x = activations
    assert_every_tensor_matches_golden(qnet, CONFIG, x)


def test_concat_of_branches_in_different_formats_matches_golden(tmp_path):
    """global_pools_digits: an int4 conv whose global average pool (minifloat6) and global max pool are
    concatenated: the conv, both pools and the concat store minifloat6, the widest asked for."""
    qnet, x = _quantize(global_pools_digits(tmp_path / "m.onnx"), {"c1": "int4", "avg": "minifloat6",
                                                                   "y": "int8"})
    layer = {la.name: la for la in qnet.layers}
    assert layer["c1"].weight_format == "int4"
    assert {qnet.tensors[t].format for t in ("r1", "avg", "max", "both")} == {"minifloat6"}
    assert_every_tensor_matches_golden(qnet, CONFIG, x)


def test_mixed_activations_on_rtl(activations, tmp_path):
    """The activations network in three formats on the 4x4 int4+int8+minifloat6 build's Verilog: golden ==
    emulator == RTL on every stored tensor of one image."""
    from sw.compiler.network import compile_network
    from sw.runtime import run_codes

    qnet, x = activations
    compiled = compile_network(qnet, CONFIG)
    runs = {backend: run_codes(compiled, x[:1], backend, keep=True, work_dir=tmp_path)
            for backend in ("golden", "emulator", "rtl")}
    assert runs["golden"].tensors[0]
    for tensor, codes in runs["golden"].tensors[0].items():
        for backend in ("emulator", "rtl"):
            np.testing.assert_array_equal(runs[backend].tensors[0][tensor], codes, err_msg=f"{backend}, {tensor}")


def test_the_ilp_may_give_the_branches_of_an_add_different_formats():
    """sw.mixed on a residual network with a multi-format build: each branch of the add is a unit of its own; some
    weight-bits budget makes the two branches differ, and that choice builds and runs golden == emulator."""
    from sw.mixed import build, choose, measure, parse_menu, prepare
    from tests.sw.test_golden_mixed_formats import residual_float

    net, samples = residual_float()
    plan = prepare(net, parse_menu("int4,int8,minifloat6"), CONFIG, samples, metrics=("weight-bits",),
                   progress=lambda *a: None)
    assert [u.layers for u in plan.units] == [("c1",), ("c2",), ("c3",), ("add",), ("c4",)]
    costs = plan.costs["weight-bits"]
    branches = {}
    for budget in np.linspace(costs.smallest(), max(costs.uniform), 12):
        picks = choose(plan, "weight-bits", float(np.ceil(budget)))
        branches[tuple(plan.menu[picks[u]].name for u in (1, 2))] = picks
    split = [pair for pair in branches if pair[0] != pair[1]]
    assert split, branches
    picks = branches[split[0]]
    compiled = build(plan, picks)
    layer = {la.name: la for la in compiled.network.layers}
    assert (layer["c2"].weight_format, layer["c3"].weight_format) == split[0]
    x = samples[:4]
    result = measure(plan, picks, compiled, inputs=x)
    assert result["measured"]["golden_emulator_mismatches"] == 0


@pytest.mark.parametrize("shift", range(3))
def test_resnet8_with_formats_round_robin_matches_golden(shift):
    """The zoo's ResNet-8 (projection shortcuts, strided blocks) with the layers taking int4, int8 and minifloat6 in
    turn: every add reads the widest of the formats its inputs' writers were given, on an 8x8 build golden ==
    emulator on every stored tensor."""
    from pathlib import Path

    from sw.mixed.units import decision_units

    zoo = Path(__file__).parents[2] / "models" / "zoo"
    net = load_onnx(zoo / "resnet8.onnx")
    samples = np.load(zoo / "resnet8_calibration.npy")[:16]
    units = decision_units(net, declared=True)
    given = {u.layers[0]: FORMATS[(i + shift) % 3] for i, u in enumerate(units)}
    config = AcceleratorConfig(rows=8, cols=8, formats=FORMATS)
    qnet = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=config.acc_bits, samples=samples,
                            method="mmse", per_channel=True, layer_formats={n: (f, f) for n, f in given.items()},
                            formats=list(FORMATS))
    writer = {la.output: la.name for la in qnet.layers}
    bits = {"int4": 4, "minifloat6": 6, "int8": 8}
    adds = [la for la in qnet.layers if la.op == "add"]
    assert len(adds) == 3 and any(len({given[writer[t]] for t in la.inputs}) > 1 for la in adds)
    for add in adds:
        widest = max((given[writer[t]] for t in add.inputs), key=bits.get)
        assert {qnet.tensors[t].format for t in add.inputs} == {widest}, add.name
    assert_every_tensor_matches_golden(qnet, config, qnet.tensors[qnet.input].quantize(samples[:1]))
