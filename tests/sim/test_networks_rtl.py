"""Whole ONNX networks through the RTL (the compiled Verilator testbench): golden, emulator and RTL give identical
bytes for every stored tensor of every image, and the RTL's cycle counter agrees with the cycle model.

Adding a network is one line in NETWORKS: its ONNX file (beside it ``calibration.npy``, float32 samples the
quantizer calibrates on, and ``test_set.npz`` with ``images`` and ``labels``), the engine, how many test images.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sw.compile import compile_model
from sw.evaluate import DIGITS
from sw.runtime import run_codes


def engine(fmt: str, n: int, **buffers) -> AcceleratorConfig:
    """An n x n engine of one number format (buffers: the configuration's defaults unless given)."""
    return AcceleratorConfig(rows=n, cols=n, weight_format=fmt, act_format=fmt, **buffers)


@dataclass(frozen=True)
class Network:
    model: Path                       # the ONNX file; calibration.npy and test_set.npz sit beside it
    config: AcceleratorConfig
    images: int                       # the first images of the test set
    min_accuracy: float = 0.85        # of the RTL's top-1 on those images (a sanity check, not a benchmark)
    options: dict = field(default_factory=lambda: {"method": "mmse", "per_channel": True})


SMALL_8X8 = dict(act_buffer_depth=1024, weight_buffer_depth=256, acc_buffer_depth=512, param_buffer_depth=16,
                 dma_bits=64)

NETWORKS = {
    "digits-minifloat6-8x8": Network(DIGITS / "digits_cnn.onnx", engine("minifloat6", 8, **SMALL_8X8), images=8),
    "digits-minifloat6-16x16": Network(DIGITS / "digits_cnn.onnx", engine("minifloat6", 16), images=32),
    "digits-int8-16x16": Network(DIGITS / "digits_cnn.onnx", engine("int8", 16), images=32),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_network_on_rtl_equals_golden_and_emulator(name, tmp_path):
    case = NETWORKS[name]
    folder = case.model.parent
    compiled = compile_model(case.model, case.config, np.load(folder / "calibration.npy"), log=lambda *_: None,
                             **case.options)
    with np.load(folder / "test_set.npz") as data:
        x, labels = data["images"][:case.images], data["labels"][:case.images]
    net = compiled.network
    codes = net.tensors[net.input].quantize(x)
    runs = {backend: run_codes(compiled, codes, backend, keep=True, work_dir=tmp_path)
            for backend in ("golden", "emulator", "rtl")}
    for i in range(case.images):
        for tensor in compiled.materialized:
            for backend in ("emulator", "rtl"):
                np.testing.assert_array_equal(runs[backend].tensors[i][tensor], runs["golden"].tensors[i][tensor],
                                              err_msg=f"{name}: {backend}, tensor {tensor}, image {i}")
    logits = net.tensors[net.output].dequantize(runs["rtl"].codes)
    assert (logits.argmax(axis=1) == labels).mean() >= case.min_accuracy
    for r, e in zip(runs["rtl"].cycles, runs["emulator"].cycles):
        assert abs(r - e) <= 0.03 * r, (r, e)
