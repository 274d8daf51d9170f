"""sw/mixed/units.py: layers that share an encoding choose one format together."""

from sw.frontend.onnx_import import load_onnx
from sw.mixed import Choice
from sw.mixed.units import decision_units, layer_formats, tensor_units
from sw.model_folder import DIGITS, MNIST
from sw.ops import OPERATORS


def test_a_plain_cnn_has_one_unit_per_accumulating_layer():
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    units = decision_units(net)
    assert [u.layers for u in units] == [(la.name,) for la in net.layers if OPERATORS[la.op].accumulating]
    assert all(u.weighted == u.layers for u in units)          # conv and linear only


def test_inputs_of_an_add_share_a_unit():
    net = load_onnx(MNIST / "mnist_resnet.onnx")
    units = decision_units(net)
    unit_of = {name: i for i, u in enumerate(units) for name in u.layers}
    producer = {la.output: la.name for la in net.layers}
    accumulating = [la.name for la in net.layers if OPERATORS[la.op].accumulating]
    assert sorted(unit_of) == sorted(accumulating)              # every accumulating layer in exactly one unit
    adds = [la for la in net.layers if la.op == "add"]
    assert adds
    for add in adds:
        # follow maxpool/flatten-free producers: in this network every add input comes from an accumulating layer
        owners = {unit_of[producer[t]] for t in add.inputs}
        assert len(owners) == 1, add.name
    assert any(len(u.layers) > 1 for u in units)
    # tensors map to the unit that writes them
    where = tensor_units(net, units)
    for la in net.layers:
        if la.name in unit_of:
            assert where[la.output] == unit_of[la.name]


def test_layer_formats_leave_the_engine_format_implicit():
    net = load_onnx(MNIST / "mnist_resnet.onnx")
    units = decision_units(net)
    add_unit = next(i for i, u in enumerate(units) if u.weighted != u.layers)
    formats = layer_formats(units, {0: Choice("int8", "int8"), add_unit: Choice("int4", "int4")}, ("int8", "int8"))
    assert all(formats[name] == (None, None) for name in units[0].layers)
    for name in units[add_unit].layers:
        assert formats[name] == (("int4" if name in units[add_unit].weighted else None), "int4")


def test_a_network_that_declares_formats_decides_per_layer():
    """With each layer in its own declared format, the branches of an add are units of their own; a tensor maps
    to the unit of the layer that wrote it (through maxpool/flatten views)."""
    net = load_onnx(MNIST / "mnist_resnet.onnx")
    units = decision_units(net, declared=True)
    accumulating = [la for la in net.layers if OPERATORS[la.op].accumulating]
    assert [u.layers for u in units] == [(la.name,) for la in accumulating]
    assert len(units) > len(decision_units(net))             # the tied mode joins the add's producers
    where = tensor_units(net, units, declared=True)
    index = {u.layers[0]: i for i, u in enumerate(units)}
    assert where["/blocks/blocks.1/shortcut/shortcut.1/BatchNormalization_output_0"] == \
        index["/blocks/blocks.1/shortcut/shortcut.0/Conv"]      # one input of the add: its own producer's unit
    assert where["/blocks/blocks.1/conv2/conv2.1/BatchNormalization_output_0"] == \
        index["/blocks/blocks.1/conv2/conv2.0/Conv"]            # the other: another unit
    assert where["/Flatten_output_0"] == where["/GlobalAveragePool_output_0"] == index["/GlobalAveragePool"]
    assert where["logits"] == index["/fc/Gemm"] and "input" not in where
