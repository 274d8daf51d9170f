"""The trained models of models/: the committed files are the ones their training scripts recorded, onnxruntime
scores them as recorded, and the MNIST residual CNN runs quantized on the engine (golden model == emulator, byte
for byte, on the whole held-out set) within 1.5 points of its float accuracy."""

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from hw.spec.config import AcceleratorConfig
from sw.compile import compile_model
from sw.model_folder import DIGITS, MNIST
from sw.runtime import run_codes

FOLDERS = {"digits": (DIGITS, "digits_cnn.onnx"), "mnist": (MNIST, "mnist_resnet.onnx")}


def _metadata(folder: Path) -> dict:
    return json.loads((folder / "metadata.json").read_text())


@pytest.mark.parametrize("name", FOLDERS)
def test_committed_files_match_the_digests_in_metadata(name):
    folder, onnx_file = FOLDERS[name]
    digests = _metadata(folder)["sha256"]
    assert {onnx_file, "test_set.npz"} <= set(digests)
    for file, digest in digests.items():
        assert hashlib.sha256((folder / file).read_bytes()).hexdigest() == digest, file


def test_mnist_digests_cover_the_calibration_images():
    assert "calibration.npy" in _metadata(MNIST)["sha256"]


@pytest.mark.parametrize("name", FOLDERS)
def test_onnxruntime_accuracy_is_the_recorded_float_accuracy(name):
    folder, onnx_file = FOLDERS[name]
    with np.load(folder / "test_set.npz") as data:
        x, labels = data["images"], data["labels"]
    session = ort.InferenceSession(str(folder / onnx_file), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": x})[0]
    meta = _metadata(folder)
    assert len(labels) == meta["dataset"]["num_test"]
    assert round(float((logits.argmax(axis=1) == labels).mean()), 6) == meta["float_test_accuracy"]


def test_mnist_test_set_and_calibration_shapes():
    meta = _metadata(MNIST)
    with np.load(MNIST / "test_set.npz") as data:
        x, labels, indices = data["images"], data["labels"], data["indices"]
    calibration = np.load(MNIST / "calibration.npy")
    assert x.dtype == calibration.dtype == np.float32
    assert x.shape == (1000, 1, 28, 28) and calibration.shape == (64, 1, 28, 28)
    assert labels.dtype == indices.dtype == np.int64
    assert 0 <= x.min() and x.max() <= 1 and 0 <= calibration.min() and calibration.max() <= 1
    assert np.array_equal(np.bincount(labels), np.full(10, 100))           # stratified: 100 per class
    assert np.all(np.diff(indices) > 0) and indices.max() < meta["dataset"]["num_images"]


def test_mnist_int8_16x16_golden_equals_emulator_and_keeps_the_float_accuracy():
    config = AcceleratorConfig(rows=16, cols=16, weight_format="int8", act_format="int8")
    compiled = compile_model(MNIST / "mnist_resnet.onnx", config, np.load(MNIST / "calibration.npy"),
                             method="mmse", per_channel=True, log=lambda *_: None)
    with np.load(MNIST / "test_set.npz") as data:
        x, labels = data["images"], data["labels"]
    net = compiled.network
    codes = net.tensors[net.input].quantize(x)
    golden = run_codes(compiled, codes, "golden").codes
    emulated = run_codes(compiled, codes, "emulator").codes
    assert golden.shape == (len(x), 10)
    np.testing.assert_array_equal(emulated, golden)
    logits = net.tensors[net.output].dequantize(golden)
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= _metadata(MNIST)["float_test_accuracy"] - 0.015
