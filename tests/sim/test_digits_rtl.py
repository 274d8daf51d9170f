"""The bundled CNN through Verilator: golden, emulator and RTL give identical bytes for every stored tensor."""

import numpy as np

from hw.spec.config import AcceleratorConfig
from sw.compile import compile_model
from sw.evaluate import DIGITS
from sw.runtime import run_codes

IMAGES = 4


def test_digits_cnn_on_rtl_equals_golden_and_emulator(tmp_path):
    config = AcceleratorConfig(rows=8, cols=8, weight_format="minifloat6", act_format="minifloat6",
                               act_buffer_depth=1024, weight_buffer_depth=256, acc_buffer_depth=512,
                               param_buffer_depth=16, dma_bits=64)
    compiled = compile_model(DIGITS / "digits_cnn.onnx", config, np.load(DIGITS / "calibration.npy"),
                             method="mmse", per_channel=True, log=lambda *_: None)
    with np.load(DIGITS / "test_set.npz") as data:
        x, labels = data["images"][:IMAGES], data["labels"][:IMAGES]
    net = compiled.network
    codes = net.tensors[net.input].quantize(x)
    runs = {backend: run_codes(compiled, codes, backend, keep=True, work_dir=tmp_path)
            for backend in ("golden", "emulator", "rtl")}
    for i in range(IMAGES):
        for name in compiled.materialized:
            for backend in ("emulator", "rtl"):
                np.testing.assert_array_equal(runs[backend].tensors[i][name], runs["golden"].tensors[i][name],
                                              err_msg=f"{backend}: tensor {name}, image {i}")
    logits = net.tensors[net.output].dequantize(runs["rtl"].codes)
    assert (logits.argmax(axis=1) == labels).mean() >= 0.75
    for r, e in zip(runs["rtl"].cycles, runs["emulator"].cycles):
        assert abs(r - e) <= 0.03 * r, (r, e)
