"""sw.model_folder: a model folder is read with its files and digests checked; a broken one is refused with one
line naming the folder and what is wrong; sw.evaluate takes one with --model."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw.spec.cli import UsageError
from sw.model_folder import DIGITS, MNIST, model_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path,name,onnx_file,images", [(DIGITS, "digits_cnn", "digits_cnn.onnx", 360),
                                                        (MNIST, "mnist_resnet", "mnist_resnet.onnx", 1000)])
def test_reads_the_bundled_folders(path, name, onnx_file, images):
    folder = model_folder(path)
    meta = json.loads((path / "metadata.json").read_text())
    assert folder.name == name and folder.onnx == path / onnx_file
    assert folder.float_accuracy == meta["float_test_accuracy"]
    x, labels = folder.load_test_set()
    assert len(x) == len(labels) == images
    with np.load(path / "test_set.npz") as data:
        np.testing.assert_array_equal(folder.load_test_set(5)[0], data["images"][:5])
    np.testing.assert_array_equal(folder.load_calibration(), np.load(path / "calibration.npy"))


def test_qdq_export_only_where_there_is_one():
    assert model_folder(DIGITS).qdq == DIGITS / "digits_cnn_qdq.onnx"
    assert model_folder(MNIST).qdq is None


def _copy(tmp_path: Path) -> Path:
    folder = tmp_path / "mnist"
    shutil.copytree(MNIST, folder, ignore=shutil.ignore_patterns("*.py", "*.md", "__pycache__"))
    return folder


def _edit_metadata(folder: Path, **changes) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    meta.update(changes)
    (folder / "metadata.json").write_text(json.dumps(meta))


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


BROKEN = {
    "missing": lambda f: shutil.rmtree(f),
    "a file": lambda f: (shutil.rmtree(f), f.write_text("x")),
    "no metadata": lambda f: (f / "metadata.json").unlink(),
    "metadata not JSON": lambda f: (f / "metadata.json").write_text("{"),
    "metadata a list": lambda f: (f / "metadata.json").write_text("[]"),
    "model name a path": lambda f: _edit_metadata(f, model="../digits/digits_cnn"),
    "accuracy not a number": lambda f: _edit_metadata(f, float_test_accuracy="0.98"),
    "accuracy above 1": lambda f: _edit_metadata(f, float_test_accuracy=98.3),
    "digests not a mapping": lambda f: _edit_metadata(f, sha256=["x"]),
    "onnx missing": lambda f: (f / "mnist_resnet.onnx").unlink(),
    "calibration missing": lambda f: (f / "calibration.npy").unlink(),
    "test set edited": lambda f: _flip_byte(f / "test_set.npz", 1000),
}


@pytest.mark.parametrize("case", BROKEN)
def test_refuses_a_broken_folder_in_one_line(case, tmp_path):
    folder = _copy(tmp_path)
    BROKEN[case](folder)
    with pytest.raises(UsageError) as error:
        model_folder(folder)
    message = str(error.value)
    assert message.startswith(f"--model {folder}") and "\n" not in message


def test_a_corrupt_test_set_without_a_digest_is_a_usage_error(tmp_path):
    folder = _copy(tmp_path)
    (folder / "test_set.npz").write_bytes(b"not an archive")
    _edit_metadata(folder, sha256={})
    with pytest.raises(UsageError, match="not a test set"):
        model_folder(folder).load_test_set()


def _evaluate(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sw.evaluate", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_evaluate_takes_a_model_folder(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"rows": 8, "cols": 8, "weight_format": "int8", "act_format": "int8"}))
    out = tmp_path / "mnist.json"
    done = _evaluate("--config", config, "--out", out, "--model", MNIST, "--images", 4)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["model"] == "mnist_resnet" and result["images"] == 4
    assert result["golden_emulator_mismatches"] == 0
    assert result["cycles_per_inference"] == sum(layer["cycles"] for layer in result["layers"])


def test_evaluate_refuses_a_bad_model_folder_in_one_line(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"rows": 4, "cols": 4}))
    out = tmp_path / "out.json"
    done = _evaluate("--config", config, "--out", out, "--model", tmp_path / "nowhere")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("python -m sw.evaluate: error: --model ")
    assert not out.exists()
