"""Quantize the digits CNN with onnxruntime into a QDQ model: the frontend's example of a pre-quantized model.

Steps (deterministic; running it twice writes byte-identical files):

1. ``onnxruntime.quantization.quant_pre_process`` on ``digits_cnn.onnx``: shape inference and onnxruntime's
   graph optimizations, which fold each BatchNormalization into the Conv before it. Without this step the
   quantizer would quantize the Conv weights and leave a float BatchNormalization behind them, which no
   integer engine can fold without requantizing the weights.
2. ``quantize_static`` with ``QuantFormat.QDQ``, int8 activations and int8 weights (``QuantType.QInt8`` for
   both), per-tensor weights (``per_channel=False``), MinMax calibration.

Calibration data: the first 64 *training* images, rebuilt exactly as ``train.py`` does (same split, same
preprocessing) without torch: ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` from
8x8 to 16x16 is re-implemented in numpy below. It is exact, not just close: pixels are multiples of 1/16 and
the interpolation weights are 0, 1/4, 3/4 or 1, so every output is a multiple of 1/256 computed without
rounding in float64 and float32 alike. The script checks this on the stored test images (``test_set.npz``
holds the test split preprocessed by torch) and refuses to write anything if they differ.

Usage: python models/digits/export_qdq.py [--out DIR]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
SEED = 0              # as train.py
TEST_FRACTION = 0.2   # as train.py
IMAGE_SIZE = 16       # as train.py
NUM_CALIBRATION = 64


def upsample_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) -> (N, size, size), as torch's bilinear interpolate with align_corners=False."""
    def taps(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = (np.arange(size) + 0.5) * (n_in / size) - 0.5
        src = np.maximum(src, 0.0)
        i0 = np.floor(src).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0
    y0, y1, ly = taps(images.shape[1])
    x0, x1, lx = taps(images.shape[2])
    rows = images[:, y0, :] * (1 - ly)[None, :, None] + images[:, y1, :] * ly[None, :, None]
    return rows[:, :, x0] * (1 - lx)[None, None, :] + rows[:, :, x1] * lx[None, None, :]


def preprocess(images_8x8: np.ndarray) -> np.ndarray:
    """Integers 0..16 (N, 8, 8) -> float32 (N, 1, 16, 16) in [0, 1], as train.py's preprocess."""
    x = np.asarray(images_8x8, dtype=np.float64) / 16.0
    return upsample_bilinear(x, IMAGE_SIZE).astype(np.float32)[:, None]


def split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All preprocessed images, and the sorted train and test indices, as train.py's load_split."""
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                                           stratify=labels, random_state=SEED)
    return preprocess(digits.images), np.sort(train_idx), np.sort(test_idx)


class Images(CalibrationDataReader):
    def __init__(self, name: str, images: np.ndarray):
        self.batches = iter([{name: images[i:i + 1]} for i in range(len(images))])

    def get_next(self):
        return next(self.batches, None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: this script's)")
    args = parser.parse_args(argv)

    images, train_idx, test_idx = split()
    with np.load(HERE / "test_set.npz") as stored:
        if not (np.array_equal(stored["indices"], test_idx) and np.array_equal(stored["images"], images[test_idx])):
            print("error: the numpy preprocessing does not reproduce test_set.npz; calibration images would "
                  "differ from train.py's", file=sys.stderr)
            return 2
    calibration = images[train_idx[:NUM_CALIBRATION]]
    # The same images calibrate our own quantizer (python -m sw.compile --calibrate, the front door, bench/).
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "calibration.npy", calibration)

    source = HERE / "digits_cnn.onnx"
    out = args.out / "digits_cnn_qdq.onnx"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
        name = onnx.load(str(pre)).graph.input[0].name
        quantize_static(str(pre), str(out), Images(name, calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=False,
                        calibrate_method=CalibrationMethod.MinMax)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    ops = sorted({n.op_type for n in model.graph.node})
    print(f"wrote {out} ({out.stat().st_size} bytes); ops {', '.join(ops)}; and {args.out / 'calibration.npy'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
