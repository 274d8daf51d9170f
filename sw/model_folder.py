"""A model folder of ``models/``: a trained ONNX model with its held-out test set, calibration images and metadata.

The layout every training script writes (``models/digits``, ``models/mnist``)::

    metadata.json        "model": NAME, "float_test_accuracy", "sha256": {file: digest}, "test_set": {"file"}
    NAME.onnx            the float model (input ``input`` (N, ...), output ``logits`` (N, classes))
    calibration.npy      float32 training images the quantizers calibrate on
    test_set.npz         ``images`` float32 (already preprocessed) and ``labels`` int64 of the held-out set
    NAME_qdq.onnx        optional: onnxruntime's QDQ int8 export of the model

:func:`model_folder` reads and checks one (every file present, every digest in the metadata equal to the file's)
and refuses a broken one with a one-line :class:`UsageError`.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.spec.cli import UsageError

__all__ = ["MODELS", "DIGITS", "MNIST", "ModelFolder", "model_folder"]

MODELS = Path(__file__).resolve().parents[1] / "models"
DIGITS = MODELS / "digits"
MNIST = MODELS / "mnist"

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")


@dataclass(frozen=True)
class ModelFolder:
    """A checked model folder: where its files are and what its metadata says."""
    path: Path
    name: str                      # the model's name: its ONNX file is NAME.onnx
    float_accuracy: float          # onnxruntime's top-1 on the test set, as the training script measured it
    digests: dict[str, str]        # file name -> SHA-256 (hex), as the training script wrote them
    test_set_file: str = "test_set.npz"

    @property
    def onnx(self) -> Path:
        """The float ONNX model."""
        return self.path / f"{self.name}.onnx"

    @property
    def calibration(self) -> Path:
        """float32 calibration images, the model's input shape with the batch replaced by N."""
        return self.path / "calibration.npy"

    @property
    def test_set(self) -> Path:
        """The held-out test set (``images``, ``labels``)."""
        return self.path / self.test_set_file

    @property
    def qdq(self) -> Path | None:
        """onnxruntime's QDQ int8 export of the model, if the folder holds one."""
        path = self.path / f"{self.name}_qdq.onnx"
        return path if path.is_file() else None

    def load_test_set(self, images: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The first ``images`` (default all) held-out images and their labels."""
        try:
            with np.load(self.test_set, allow_pickle=False) as data:
                x, labels = data["images"][:images], data["labels"][:images]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise UsageError(f"{self.test_set}: not a test set of images and labels "
                             f"({' '.join(str(e).split())[:120]})") from None
        if x.dtype != np.float32 or labels.ndim != 1 or len(x) != len(labels):
            raise UsageError(f"{self.test_set}: images must be float32 with one int label each")
        return x, labels

    def load_calibration(self) -> np.ndarray:
        """The calibration images."""
        try:
            return np.load(self.calibration, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UsageError(f"{self.calibration}: not a .npy array ({' '.join(str(e).split())[:120]})") from None


def model_folder(path: Path | str = DIGITS, flag: str = "--model") -> ModelFolder:
    """Read and check the model folder at ``path``; a UsageError names the flag, the folder and what is wrong."""
    path = Path(path)
    where = f"{flag} {path}"
    if not path.is_dir():
        raise UsageError(f"{where}: no such folder; give a model folder such as models/digits or models/mnist")
    meta = _metadata(path, where)
    folder = ModelFolder(path, meta["model"], float(meta["float_test_accuracy"]), dict(meta["sha256"]),
                         str(meta.get("test_set", {}).get("file", "test_set.npz")))
    for file in (folder.onnx, folder.calibration, folder.test_set):
        if not file.is_file():
            raise UsageError(f"{where}: {file.name} is missing; the folder's training script writes it")
    for name, digest in folder.digests.items():
        file = path / name
        if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            raise UsageError(f"{where}: {name} does not match the SHA-256 in metadata.json; restore it or rerun "
                             f"the folder's training script")
    return folder


def _metadata(path: Path, where: str) -> dict:
    """metadata.json of a model folder, checked for the entries :class:`ModelFolder` needs."""
    file = path / "metadata.json"
    if not file.is_file():
        raise UsageError(f"{where}: no metadata.json; a model folder holds the files its training script writes")
    try:
        meta = json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise UsageError(f"{where}: metadata.json is not JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{where}: metadata.json must hold a JSON object")
    if not isinstance(meta.get("model"), str) or not _NAME.fullmatch(meta["model"]):
        raise UsageError(f"{where}: metadata.json's \"model\" must name the ONNX file (letters, digits, _ . -)")
    accuracy = meta.get("float_test_accuracy")
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1:
        raise UsageError(f"{where}: metadata.json's \"float_test_accuracy\" must be a number in [0, 1]")
    digests = meta.get("sha256", {})
    if not isinstance(digests, dict) or not all(isinstance(k, str) and _NAME.fullmatch(k) and isinstance(v, str)
                                                for k, v in digests.items()):
        raise UsageError(f"{where}: metadata.json's \"sha256\" must map file names to hex digests")
    test_set = meta.get("test_set", {})
    if not isinstance(test_set, dict) or not _NAME.fullmatch(str(test_set.get("file", "test_set.npz"))):
        raise UsageError(f"{where}: metadata.json's \"test_set\" must name the test set's file")
    return meta
