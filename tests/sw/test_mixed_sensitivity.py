"""sw/mixed/sensitivity.py: measured output error per unit and format, and the additive proxy."""

import math

import numpy as np
import pytest

from sw.frontend.float_model import run_float
from sw.frontend.onnx_import import load_onnx
from sw.golden.network import run_network
from sw.mixed import parse_menu
from sw.mixed.sensitivity import measure_sensitivity
from sw.mixed.units import decision_units, layer_formats
from sw.model_folder import DIGITS
from sw.quantize import quantize_network

ENGINE = ("int8", "int8")
ACC = 32


@pytest.fixture(scope="module")
def setup():
    net = load_onnx(DIGITS / "digits_cnn.onnx")
    x = np.load(DIGITS / "calibration.npy")[:32].astype(np.float64)
    units, menu = decision_units(net), parse_menu("int2,int4,int8")
    lines = []
    sens = measure_sensitivity(net, units, menu, ENGINE, ACC, x, progress=lines.append)
    return net, x, units, menu, sens, lines


def _noise(net, x, units, choices):
    """Output error power of a network quantized with ``choices``, computed from scratch (golden vs float)."""
    qnet = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=ACC, samples=x, method="mmse",
                            per_channel=True, layer_formats=layer_formats(units, choices, ENGINE))
    out = qnet.tensors[qnet.output].dequantize(run_network(qnet, qnet.tensors[qnet.input].quantize(x)))
    return float(np.mean((out - run_float(net, x)) ** 2))


def test_losses_are_measured_per_unit_and_format(setup):
    net, x, units, menu, sens, lines = setup
    assert sens.loss.shape == (len(units), 3)
    assert (sens.loss[:, 2] == 0).all()                          # the engine's own format adds nothing
    assert (sens.loss[:, 0] > sens.loss[:, 1]).all() and (sens.loss[:, 1] > 0).all()    # int2 worse than int4
    assert sens.baseline == pytest.approx(_noise(net, x, units, {}))
    assert sens.noise[1, 0] == pytest.approx(_noise(net, x, units, {1: menu[0]}))
    assert sens.signal == pytest.approx(float(np.mean(run_float(net, x) ** 2)))
    assert len(lines) == len(units) * 2 and "sensitivity 8/8" in lines[-1]        # progress per measurement


def test_the_additive_proxy_predicts_a_mix(setup):
    net, x, units, menu, sens, _ = setup
    picks = [2, 1, 1, 2]                                         # int8, int4, int4, int8
    measured = _noise(net, x, units, {u: menu[k] for u, k in enumerate(picks)})
    predicted = sens.baseline + sens.loss[1, 1] + sens.loss[2, 1]
    assert 0.5 < measured / predicted < 2
    assert sens.predicted_sqnr_db(picks) == pytest.approx(10 * math.log10(sens.signal / predicted))
