"""The host partition (sw/ops/host.py): nodes the engine does not run become host layers between engine programs;
golden == emulator on every stored tensor, and the outputs agree with onnxruntime within the quantization error."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from hw.spec.config import AcceleratorConfig
from sw.compile import compile_model
from sw.evaluate import DIGITS
from sw.frontend import FrontendError, load_onnx, run_float
from sw.runtime import load_program, run_codes
from tests.onnx_models import lstm_digits, softmax_digits

CONFIG = AcceleratorConfig(rows=8, cols=8, weight_format="int8", act_format="int8")


@pytest.fixture(scope="module")
def digits():
    with np.load(DIGITS / "test_set.npz") as data:
        return data["images"][:24].astype(np.float32), data["labels"][:24]


def _compile(path):
    return compile_model(path, CONFIG, np.load(DIGITS / "calibration.npy"), log=lambda *_: None)


def _ort(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {session.get_inputs()[0].name: x[i:i + 1]})[0] for i in range(len(x))])


def _same_everywhere(compiled, codes):
    runs = {b: run_codes(compiled, codes, b, keep=True) for b in ("golden", "emulator")}
    for i in range(len(codes)):
        for name in compiled.materialized:
            np.testing.assert_array_equal(runs["emulator"].tensors[i][name], runs["golden"].tensors[i][name],
                                          err_msg=f"tensor {name}, sample {i}")
    return runs["emulator"]


def test_softmax_at_the_end_agrees_with_onnxruntime(digits, tmp_path):
    x, labels = digits
    path = softmax_digits(tmp_path / "softmax.onnx")
    compiled = _compile(path)
    assert [s["kind"] for s in compiled.steps] == ["engine", "host"]
    assert compiled.host_layers == ["final_softmax"] and compiled.host_macs() == {"final_softmax": ("Softmax", 0)}
    net = compiled.network
    result = _same_everywhere(compiled, net.tensors[net.input].quantize(x))
    probs = net.tensors[net.output].dequantize(result.codes)
    # Softmax moves no probability by more than half the largest change of a logit (its Jacobian's rows sum to
    # 2 p (1 - p) <= 1/2); on top of that the output's own rounding, and its clamp to the encoding's range.
    logits = net.tensors["logits"].dequantize(np.stack([t["logits"] for t in result.tensors]))
    logit_error = np.abs(logits - _ort(DIGITS / "digits_cnn.onnx", x)).max(axis=1)
    t = net.tensors[net.output]
    lo, hi = (float(v) for v in t.dequantize(np.array([t.quantize(-1.0), t.quantize(2.0)])))
    expected = np.clip(_ort(path, x), lo, hi)
    assert (np.abs(probs - expected).max(axis=1) <= logit_error / 2 + t.scale / 2 + 1e-6).all()
    assert (probs.argmax(axis=1) == labels).mean() >= 0.9
    # Exactly: the host's step is the softmax of the engine's logits, rounded to the output's encoding.
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probs, np.clip(e / e.sum(axis=1, keepdims=True), lo, hi), rtol=0,
                               atol=t.scale / 2 + 1e-6)


def test_lstm_in_the_middle_agrees_with_onnxruntime(digits, tmp_path):
    x, _ = digits
    path = lstm_digits(tmp_path / "lstm.onnx")
    reference = _ort(path, x)
    # The float network (host layer by onnx's reference evaluator) is the model.
    np.testing.assert_allclose(run_float(load_onnx(path), x), reference, rtol=1e-4, atol=1e-5)
    compiled = _compile(path)
    assert [s["kind"] for s in compiled.steps] == ["engine", "host", "engine"]
    (name, (types, macs)), = compiled.host_macs().items()
    assert name == "lstm" and "LSTM" in types
    assert macs == 4 * (4 * 8) * (64 + 8)          # steps x (gates x hidden) x (features + hidden)
    net = compiled.network
    y = net.tensors[net.output].dequantize(_same_everywhere(compiled, net.tensors[net.input].quantize(x)).codes)
    sqnr = 10 * np.log10((reference ** 2).sum() / ((y - reference) ** 2).sum())
    assert sqnr >= 35, f"{sqnr:.1f} dB against onnxruntime"
    # The host layer alone: onnxruntime on the extracted subgraph, fed the engine's codes of its input.
    tensors = _same_everywhere(compiled, net.tensors[net.input].quantize(x)).tensors
    onnx.utils.extract_model(str(path), str(tmp_path / "part.onnx"), ["p1"], ["flat"])
    p1 = net.tensors["p1"].dequantize(np.stack([t["p1"] for t in tensors])).astype(np.float32)
    expected = net.tensors["flat"].quantize(_ort(tmp_path / "part.onnx", p1))
    got = np.stack([t["flat"] for t in tensors])
    assert np.abs(got.astype(int) - expected).max() <= 1 and (got == expected).mean() >= 0.99


def test_a_saved_folder_runs_its_steps(digits, tmp_path):
    x, _ = digits
    compiled = _compile(lstm_digits(tmp_path / "lstm.onnx"))
    compiled.save(tmp_path / "program")
    loaded = load_program(tmp_path / "program")
    assert loaded.steps == compiled.steps and loaded.program.segments == compiled.program.segments
    codes = compiled.network.tensors[compiled.network.input].quantize(x[:4])
    timed = run_codes(loaded, codes, "emulator", cycles=True)
    np.testing.assert_array_equal(timed.codes, run_codes(compiled, codes, "golden").codes)
    assert len(timed.layer_cycles[0]) == len(compiled.layers)
    assert sum(timed.layer_cycles[0]) == timed.cycles[0] > 0


def test_a_host_layer_first(digits, tmp_path):
    """The network input goes to the host first (a Sigmoid), then to the engine."""
    x, _ = digits
    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Conv", ["s", "w"], ["y"], pads=[1, 1, 1, 1])],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 1, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 16, 16])],
        initializer=[numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "first.onnx")
    compiled = _compile(tmp_path / "first.onnx")
    assert [s["kind"] for s in compiled.steps] == ["host", "engine"]
    _same_everywhere(compiled, compiled.network.tensors[compiled.network.input].quantize(x[:4]))


def test_engine_only_refuses_host_nodes(tmp_path):
    path = lstm_digits(tmp_path / "lstm.onnx")
    with pytest.raises(FrontendError, match=r"Reshape.*\(N, 4, 8, 8\) to \[0, 4, -1\].*--engine-only"):
        load_onnx(path, engine_only=True)
