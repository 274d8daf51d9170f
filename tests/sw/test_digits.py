"""The bundled CNN end to end: ONNX -> quantizer -> compiler -> emulator, against the golden model on every
held-out image, and the QDQ int8 export against onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest

from hw.spec.config import AcceleratorConfig
from sw.compiler.network import compile_network
from sw.evaluate import DIGITS, evaluate
from sw.frontend.onnx_import import load_onnx
from sw.quantize import quantize_network
from sw.runtime import run_codes


@pytest.mark.parametrize("weights,acts,rows,options", [
    ("minifloat6", "minifloat6", 16, dict(method="mmse", per_channel=True)),
    ("int4", "int8", 8, dict(method="mmse", per_channel=True, multi_tensor=True)),
])
def test_golden_equals_emulator_on_the_held_out_set(weights, acts, rows, options):
    config = AcceleratorConfig(rows=rows, cols=rows, weight_format=weights, act_format=acts)
    result = evaluate(config, log=lambda *_: None, **options)
    assert result["images"] == 360
    assert result["golden_emulator_mismatches"] == 0
    assert result["accuracy"] > 0.93                 # float: 98.06 %
    assert result["cycles_per_inference"] == sum(layer["cycles"] for layer in result["layers"])


def _ort_output(path, x):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_qdq_int8_model_agrees_with_onnxruntime_within_one_lsb():
    path = DIGITS / "digits_cnn_qdq.onnx"
    with np.load(DIGITS / "test_set.npz") as data:
        x = data["images"]
    config = AcceleratorConfig(rows=16, cols=16, weight_format="int8", act_format="int8")
    net = quantize_network(load_onnx(path), act_format="int8", weight_format="int8", acc_bits=config.acc_bits,
                           samples=None)
    compiled = compile_network(net, config)
    codes = net.tensors[net.input].quantize(x)
    ours = run_codes(compiled, codes, "golden").codes.astype(np.int64)
    ours = np.where(ours >= 128, ours - 256, ours)           # int8 codes to values
    out = net.tensors[net.output]
    reference = np.rint(_ort_output(path, x) / np.float32(out.scale)).astype(np.int64) + out.zero_point
    difference = np.abs(ours - reference)
    assert difference.max() <= 1, f"{(difference > 1).sum()} outputs differ by more than 1 LSB"
    assert (difference == 0).mean() > 0.99
    # The emulator runs the same bytes as the golden model, on every held-out image: functional (batched) and
    # timed (cycles) alike.
    golden = run_codes(compiled, codes, "golden").codes
    np.testing.assert_array_equal(run_codes(compiled, codes, "emulator").codes, golden)
    timed = run_codes(compiled, codes, "emulator", cycles=True)
    np.testing.assert_array_equal(timed.codes, golden)
    assert len(set(timed.cycles)) == 1 and timed.cycles[0] > 0
