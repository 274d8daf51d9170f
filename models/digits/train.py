"""Train the reference CNN on scikit-learn's digits and export it to ONNX.

The model is a small LeNet-style network chosen to exercise the accelerator's frontend and datapath:

    Conv(1->8, 3x3, pad 1) + BatchNorm + ReLU, MaxPool 2x2,
    Conv(8->16, 3x3, pad 1) + BatchNorm + ReLU, MaxPool 2x2,
    Flatten, Linear(256 -> 32) + ReLU, Linear(32 -> 10)

BatchNorm is kept as its own node in the ONNX file on purpose (the export disables constant folding,
which would otherwise fuse it into the convolution): folding it is the frontend's job.

Data: the 1,797 8x8 images of ``sklearn.datasets.load_digits`` (they ship inside the wheel; no network).
Preprocessing (the model's input units): pixel values 0..16 are divided by 16 to [0, 1], then each image is
upsampled to 16x16 with bilinear interpolation (``torch.nn.functional.interpolate``, ``mode="bilinear"``,
``align_corners=False``), giving float32 NCHW tensors of shape (N, 1, 16, 16) whose values stay in [0, 1].

Split: ``sklearn.model_selection.train_test_split(indices, test_size=0.2, stratify=labels,
random_state=SEED)`` over ``arange(1797)``: 1,437 training and 360 test images. The train indices are implied
by the seed; the test indices, images (already preprocessed) and labels are saved to ``test_set.npz``.

Training is deterministic: fixed seeds, one thread, ``torch.use_deterministic_algorithms(True)``; running
the script twice writes byte-identical files.

Usage: python models/digits/train.py [--out DIR]
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # models/: the shared training module
import training  # noqa: E402
from training import Settings, make_deterministic, sha256  # noqa: E402

try:
    import onnx
    import onnxruntime
    import sklearn
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn
    from torch.nn import functional as F
except ImportError as error:
    training.exit_missing(error)


SEED = 0
TEST_FRACTION = 0.2
IMAGE_SIZE = 16
NUM_CLASSES = 10
SETTINGS = Settings(epochs=30, batch_size=64, learning_rate=3e-3, weight_decay=1e-4)
OPSET = 13
ORT_TOLERANCE = 1e-4

DEFAULT_OUT = Path(__file__).resolve().parent


class DigitsCNN(nn.Module):
    """LeNet-style CNN for (N, 1, 16, 16) inputs in [0, 1]; returns (N, 10) logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, NUM_CLASSES)

    def forward(self, x):
        x = self.pool1(F.relu(self.bn1(self.conv1(x))))
        x = self.pool2(F.relu(self.bn2(self.conv2(x))))
        x = F.relu(self.fc1(self.flatten(x)))
        return self.fc2(x)


def preprocess(images_8x8):
    """uint8-valued 0..16 images (N, 8, 8) -> float32 (N, 1, 16, 16) in [0, 1], bilinear upsampling."""
    x = torch.from_numpy(np.asarray(images_8x8, dtype=np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return x.contiguous()


def load_split(seed):
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=TEST_FRACTION,
                                           stratify=labels, random_state=seed)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    images = preprocess(digits.images)
    return (images[train_idx], torch.from_numpy(labels[train_idx]),
            images[test_idx], torch.from_numpy(labels[test_idx]), test_idx)


def run(out):
    out.mkdir(parents=True, exist_ok=True)
    make_deterministic(SEED)
    started = time.perf_counter()
    x_train, y_train, x_test, y_test, test_idx = load_split(SEED)
    print(f"digits: {len(x_train)} train, {len(x_test)} test images of shape {tuple(x_test.shape[1:])}")

    model = DigitsCNN()
    num_params, _ = training.fit(model, x_train, y_train, x_test, y_test, SEED, SETTINGS, started)

    onnx_path = out / "digits_cnn.onnx"
    ops, ort_acc = training.export_checked(model, onnx_path, (1, IMAGE_SIZE, IMAGE_SIZE), OPSET, x_test, y_test,
                                           ORT_TOLERANCE)

    test_path = out / "test_set.npz"
    training.save_npz(test_path, {"images": x_test.numpy().astype(np.float32),
                                  "labels": y_test.numpy().astype(np.int64),
                                  "indices": np.asarray(test_idx, dtype=np.int64)})

    metadata = {
        "model": "digits_cnn",
        "architecture": ("Conv(1->8,3x3,pad1)+BatchNorm+ReLU, MaxPool2x2, Conv(8->16,3x3,pad1)+BatchNorm+ReLU, "
                         "MaxPool2x2, Flatten, Linear(256->32)+ReLU, Linear(32->10)"),
        "onnx_ops": ops,
        "opset": OPSET,
        "input": {"name": "input", "shape": ["batch", 1, IMAGE_SIZE, IMAGE_SIZE], "layout": "NCHW",
                  "dtype": "float32", "units": "intensity in [0, 1] (0 = background, 1 = full ink)"},
        "output": {"name": "logits", "shape": ["batch", NUM_CLASSES], "dtype": "float32",
                   "units": "unnormalised class scores; the prediction is the argmax"},
        "preprocessing": ("sklearn.datasets.load_digits().images (8x8, integers 0..16) divided by 16, then "
                          "upsampled to 16x16 with torch.nn.functional.interpolate(mode='bilinear', "
                          "align_corners=False)"),
        "num_classes": NUM_CLASSES,
        "dataset": {"name": "sklearn.datasets.load_digits", "num_images": len(x_train) + len(x_test),
                    "num_train": len(x_train), "num_test": len(x_test),
                    "split": (f"sklearn.model_selection.train_test_split(arange(1797), "
                              f"test_size={TEST_FRACTION}, stratify=target, random_state={SEED})")},
        "test_set": {"file": test_path.name, "arrays": {
            "images": f"float32 {tuple(x_test.shape)}, preprocessed as the model's input",
            "labels": f"int64 ({len(y_test)},)",
            "indices": f"int64 ({len(test_idx)},), indices into load_digits() of the test images"}},
        "training": SETTINGS.metadata(),
        "seed": SEED,
        "num_parameters": num_params,
        "float_test_accuracy": round(ort_acc, 6),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "scikit-learn": sklearn.__version__,
                     "numpy": np.__version__},
        "sha256": {"digits_cnn.onnx": sha256(onnx_path), "test_set.npz": sha256(test_path)},
    }
    metadata_path = out / "metadata.json"
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    for path in (onnx_path, test_path, metadata_path):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    print(f"total time {time.perf_counter() - started:.1f} s")


def main(argv=None):
    return training.main(run, "Train the digits CNN and export it to ONNX.", DEFAULT_OUT, argv)


if __name__ == "__main__":
    sys.exit(main())
