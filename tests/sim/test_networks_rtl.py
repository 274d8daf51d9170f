"""Whole ONNX networks through the RTL (the compiled Verilator testbench): golden, emulator and RTL give identical
bytes for every stored tensor of every image, and the RTL's cycle counter agrees with the cycle model.

Adding a network is one line in NETWORKS: its ONNX file (or a function that writes one), the quantizer's float32
calibration samples, optionally a labelled test set (``images`` and ``labels``; without one the first calibration
samples run), the engine, how many images.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from boards.build import board_config
from boards.top import BOARDS
from hw.spec.config import AcceleratorConfig
from sw.compile import compile_model
from sw.model_folder import DIGITS, MNIST, model_folder
from sw.runtime import run_codes
from tests.onnx_models import (activations_resnet, decoder_digits, global_pools_digits, lstm_digits, prelu_net,
                               softmax_digits, squeeze_excite_digits, squeeze_excite_linear_digits,
                               stem_shortcut_digits)

ZOO = Path(__file__).parents[2] / "models" / "zoo"


def engine(fmt: str, n: int, cols: int | None = None, **buffers) -> AcceleratorConfig:
    """An n x n (or n x cols) engine of one number format (buffers: the configuration's defaults unless given)."""
    return AcceleratorConfig(rows=n, cols=n if cols is None else cols, weight_format=fmt, act_format=fmt, **buffers)


@dataclass(frozen=True)
class Network:
    model: Path | Callable[[Path], Path]   # the ONNX file, or a function writing it into a folder
    calibration: Path                      # float32 samples the quantizer calibrates on
    config: AcceleratorConfig
    images: int                            # how many images run
    test_set: Path | None = None           # images and labels; without it, the first calibration samples
    min_accuracy: float = 0.85             # of the RTL's top-1 on a test set (a sanity check, not a benchmark)
    options: dict = field(default_factory=lambda: {"method": "mmse", "per_channel": True})
    batch: int = 1                         # samples per program run (sw.compile --batch)


def trained(path: Path, config: AcceleratorConfig, images: int, model=None) -> Network:
    """A model folder of models/: its ONNX (or ``model``), calibration images and labelled test set."""
    folder = model_folder(path)
    return Network(model or folder.onnx, folder.calibration, config, images, folder.test_set)


def digits(config: AcceleratorConfig, images: int, model=None, batch: int = 1) -> Network:
    return replace(trained(DIGITS, config, images, model), batch=batch)


def zoo(name: str, config: AcceleratorConfig, images: int) -> Network:
    """A network of models/zoo (random weights: no test set; bit-exactness is the point)."""
    return Network(ZOO / f"{name}.onnx", ZOO / f"{name}_calibration.npy", config, images)


# One Verilator build per engine: the 8x8 ones share these buffers.
SMALL_8X8 = dict(act_buffer_depth=1024, weight_buffer_depth=256, acc_buffer_depth=512, param_buffer_depth=16,
                 dma_bits=64)
INT8_8X8, MINIFLOAT6_8X8 = engine("int8", 8, **SMALL_8X8), engine("minifloat6", 8, **SMALL_8X8)
SMALL_4X4 = dict(act_buffer_depth=1024, weight_buffer_depth=256, acc_buffer_depth=256, param_buffer_depth=16,
                 dma_bits=64)
# Rectangular engines (hw/spec/layout.py: tensor_lanes; sw/compiler/lines.py). On a 32-bit bus, dense: 4x8 reads
# an output line (two beats) as two activation lines (one beat each), a line at a time; 8x4 stores two output lines
# side by side as one activation line, a line at a time. 4x16 on a 64-bit bus: 4 channels a line (32-bit
# activation lines do not fill a beat), the upper columns don't-care, LOADs a line at a time.
RECT = dict(SMALL_8X8, dma_bits=32)
INT8_4X8, INT8_8X4 = engine("int8", 4, 8, **RECT), engine("int8", 8, 4, **RECT)
INT8_4X16 = engine("int8", 4, 16, **SMALL_8X8)
# Packed int4 (hw/spec/config.py: values_per_lane): 4 PE rows of two int4 codes each reduce over 8 rows, like an
# 8x8 engine on half its PEs.
INT4_4X8 = engine("int4", 4, 8, **SMALL_8X8)

NETWORKS = {
    "digits-minifloat6-8x8": digits(MINIFLOAT6_8X8, 8),
    "digits-minifloat6-16x16": digits(engine("minifloat6", 16), 32),
    "digits-int8-16x16": digits(engine("int8", 16), 32),
    # One program computes 8 images (sw.compile --batch 8): the linear layers stream 8 vectors per weight tile;
    # 20 images make two full runs and a padded one.
    "digits-int8-8x8-batch8": digits(INT8_8X8, 20, batch=8),
    "digits-int8-4x8": digits(INT8_4X8, 8),
    "digits-int8-8x4": digits(INT8_8X4, 8),
    "digits-int8-4x16": digits(INT8_4X16, 8),
    "digits-int4-4x8-packed": digits(INT4_4X8, 8),
    "resnet8-int4-4x8-packed": zoo("resnet8", INT4_4X8, 2),
    # One post-processing lane taking the 8 columns of packed int4 in turn (postprocess_shared; the int4 12x24 of
    # bench/fpga.py fits the ECP5-85F with it): a STORE writes a line every 8 cycles.
    "digits-int4-4x8-packed-shared": digits(replace(INT4_4X8, postprocess_shared=True), 8),
    # Two lanes of four columns each (postprocess_columns_per_lane): a line every 4 cycles.
    "digits-int4-4x8-packed-lanes2": digits(replace(INT4_4X8, postprocess_columns_per_lane=4), 8),
    # The pair of products of the first 20 of the 32 PEs from one wide multiply each (dsp_pes; bench/fpga.py's int4
    # 11x22 and 12x24 rows give 152 PEs a MULT18X18D this way), the other 12 in LUTs.
    "digits-int4-4x8-packed-dsp": digits(replace(INT4_4X8, dsp_pes=20), 8),
    # The iCEBreaker's engine (boards/top.py): int4 2x2 with the small part's choices (one-entry command queues,
    # four carry chains per decoder stage, no busy/stall counters).
    "digits-int4-2x2-icebreaker": digits(board_config(BOARDS["icebreaker"]), 8),
    # The iCEBreaker's 30 MHz board (icebreaker-1x1): int4 1x1 with mid_clock's registers and cycles; its burst
    # addresses in 20 bits, as its 540 KiB image needs (the board's 17 fold addresses past 256 KiB).
    "digits-int4-1x1-icebreaker-30": digits(replace(board_config(BOARDS["icebreaker-1x1"]), dram_addr_bits=20), 2),
    "mnist-int8-16x16": trained(MNIST, engine("int8", 16), 8),     # residual blocks, a global pool of 14x14
    # Residual blocks, global average pooling, depthwise and strided convolutions, fused ReLU.
    "resnet8-int8-8x8": zoo("resnet8", INT8_8X8, 4),
    "resnet8-minifloat6-8x8": zoo("resnet8", MINIFLOAT6_8X8, 2),
    "resnet20-int8-8x8": zoo("resnet20", INT8_8X8, 1),
    "mobilenet_v1_025-int8-8x8": zoo("mobilenet_v1_025", INT8_8X8, 2),
    "ds_cnn-minifloat6-8x8": zoo("ds_cnn", MINIFLOAT6_8X8, 2),
    # Host layers between engine programs: a Softmax at the end, an LSTM in the middle.
    "digits-softmax-int8-8x8": digits(INT8_8X8, 8, model=softmax_digits),
    "lstm-int8-8x8": Network(lstm_digits, DIGITS / "calibration.npy", INT8_8X8, 8),
    # Global pools whose windows the accumulators do not hold: pooled in bands of rows.
    "global-pools-int8-8x8": Network(global_pools_digits, DIGITS / "calibration.npy", INT8_8X8, 8),
    # The stack loop order (sw/compiler/stacking.py): a folded 7x7 stem, a strided 1x1 shortcut whose PARAM lines
    # load before its barrier; on 4x4 the stem's chunks share slots.
    "stem-shortcut-int8-8x8": Network(stem_shortcut_digits, DIGITS / "calibration.npy", INT8_8X8, 4),
    "stem-shortcut-int8-4x4": Network(stem_shortcut_digits, DIGITS / "calibration.npy",
                                      engine("int8", 4, **SMALL_4X4), 2),
    # Nonlinear activations in the post-processing unit's lookup table (HardSwish, LeakyRelu, SiLU, HardSigmoid,
    # Tanh, Sigmoid) in residual blocks, before max pools and a global average pool.
    "activations-int8-8x8": Network(activations_resnet, DIGITS / "calibration.npy", INT8_8X8, 8),
    "activations-minifloat6-8x8": Network(activations_resnet, DIGITS / "calibration.npy", MINIFLOAT6_8X8, 4),
    # ConvTranspose (phase-split), nearest Resize and DepthToSpace (scattered STOREs) on a 4x4 engine.
    "decoder-int8-4x4": Network(decoder_digits, DIGITS / "calibration.npy",
                                engine("int8", 4, act_buffer_depth=512, weight_buffer_depth=128,
                                       acc_buffer_depth=128, param_buffer_depth=8), 4),
    # PRelu with one slope per channel (negative, zero, positive) after convs and a Gemm: the requantization's
    # negative side (STORE negative_param), two PARAM lines per block of output channels.
    "prelu-int8-4x4": Network(prelu_net, DIGITS / "calibration.npy", engine("int8", 4, **SMALL_4X4), 4),
    "prelu-minifloat6-4x4": Network(prelu_net, DIGITS / "calibration.npy", engine("minifloat6", 4, **SMALL_4X4), 2),
    # Products of two maps on the engine (ALU MUL): a squeeze-excite gate (N, C, 1, 1), an attention gate of the
    # map's shape and a spatial one (N, 1, H, W), with the zero points of int8 (and none of minifloat6).
    "squeeze-excite-int8-4x4": Network(squeeze_excite_digits, DIGITS / "calibration.npy", engine("int8", 4), 4),
    "squeeze-excite-minifloat6-4x4": Network(squeeze_excite_digits, DIGITS / "calibration.npy",
                                             engine("minifloat6", 4), 2),
    # ALU MUL of packed int4 (5 x 5 operands): shifts and additions instead of a DSP (hw/compute_engine.py).
    "squeeze-excite-int4-4x8-packed": Network(squeeze_excite_digits, DIGITS / "calibration.npy", INT4_4X8, 2),
    # Scattered STOREs and ALU MUL on rectangular arrays (the spread channels' virtual output blocks; identity tiles
    # from each activation line of a tensor line to each output line), the products in a batch of two too.
    "decoder-int8-4x8": Network(decoder_digits, DIGITS / "calibration.npy", INT8_4X8, 2),
    "decoder-int8-8x4": Network(decoder_digits, DIGITS / "calibration.npy", INT8_8X4, 2),
    "squeeze-excite-int8-4x8": Network(squeeze_excite_digits, DIGITS / "calibration.npy", INT8_4X8, 2),
    "squeeze-excite-int8-8x4-batch2": Network(squeeze_excite_digits, DIGITS / "calibration.npy", INT8_8X4, 4,
                                              batch=2),
    "squeeze-excite-int8-4x16": Network(squeeze_excite_digits, DIGITS / "calibration.npy", INT8_4X16, 2),
    "decoder-int8-4x16-batch2": Network(decoder_digits, DIGITS / "calibration.npy", INT8_4X16, 4, batch=2),
    # The gate of linear layers (Gemm, Relu, Gemm, Sigmoid, a Reshape or Unsqueeze to (N, C, 1, 1)).
    "squeeze-excite-linear-int8-4x4": Network(squeeze_excite_linear_digits, DIGITS / "calibration.npy",
                                              engine("int8", 4), 4),
}


def _inputs(case: Network) -> tuple[np.ndarray, np.ndarray | None]:
    if case.test_set is None:
        return np.load(case.calibration)[:case.images], None
    with np.load(case.test_set) as data:
        return data["images"][:case.images], data["labels"][:case.images]


@pytest.mark.parametrize("name", NETWORKS)
def test_network_on_rtl_equals_golden_and_emulator(name, tmp_path):
    case = NETWORKS[name]
    model = case.model if isinstance(case.model, Path) else case.model(tmp_path / f"{name}.onnx")
    compiled = compile_model(model, case.config, np.load(case.calibration), log=lambda *_: None, batch=case.batch,
                             **case.options)
    assert compiled.batch == case.batch
    x, labels = _inputs(case)
    net = compiled.network
    codes = net.tensors[net.input].quantize(x)
    runs = {backend: run_codes(compiled, codes, backend, keep=True, work_dir=tmp_path, cycles=True)
            for backend in ("golden", "emulator", "rtl")}
    for i in range(case.images):
        for tensor in compiled.materialized:
            for backend in ("emulator", "rtl"):
                np.testing.assert_array_equal(runs[backend].tensors[i][tensor], runs["golden"].tensors[i][tensor],
                                              err_msg=f"{name}: {backend}, tensor {tensor}, image {i}")
    if labels is not None:
        logits = net.tensors[net.output].dequantize(runs["rtl"].codes)
        assert (logits.argmax(axis=1) == labels).mean() >= case.min_accuracy
    assert len(runs["rtl"].cycles) == len(runs["emulator"].cycles) == case.images
    for r, e in zip(runs["rtl"].cycles, runs["emulator"].cycles):
        assert abs(r - e) <= 0.03 * r, (r, e)
