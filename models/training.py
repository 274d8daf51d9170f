"""What the training scripts of models/ share: determinism, the training loop, the ONNX export and its check
against PyTorch, byte-reproducible archives, digests and the command line.

A script imports it after putting this folder on ``sys.path`` (``models/NAME/train.py`` runs as a plain script):

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import training

Every function here is deterministic given the seed: two runs of a script write byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: pip distribution names of modules whose import name differs
DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def exit_missing(error: ImportError) -> None:
    """One line naming the missing package and how to install it; exit status 2."""
    module = (error.name or "").split(".")[0]
    missing = DISTRIBUTIONS.get(module, module or str(error))
    print(f"error: {missing} is missing or broken; install the training extra with: pip install -e '.[train]'",
          file=sys.stderr)
    sys.exit(2)


try:
    import onnx
    import onnxruntime
    import torch
    from torch.nn import functional as F
except ImportError as _error:
    exit_missing(_error)

#: A fixed timestamp for the entries of the .npz archives, so that they are byte-identical run to run.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


class TrainError(Exception):
    """A failure reported as one line on the command line, with exit status 2."""


@dataclass(frozen=True)
class Settings:
    """Adam with a cosine schedule over ``epochs``, cross-entropy loss, shuffled mini-batches; optionally each
    training batch shifted by up to ``max_shift`` pixels in each direction (see :func:`random_shift`)."""
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    max_shift: int = 0

    def metadata(self) -> dict:
        """The settings as metadata.json's ``training`` entry."""
        entry = {"epochs": self.epochs, "batch_size": self.batch_size, "optimizer": "Adam",
                 "learning_rate": self.learning_rate, "schedule": "cosine annealing",
                 "weight_decay": self.weight_decay, "loss": "cross entropy"}
        if self.max_shift:
            entry["augmentation"] = (f"each training image shifted by a random whole number of pixels in "
                                     f"-{self.max_shift}..{self.max_shift} per axis (zero fill), drawn per batch "
                                     f"from torch.Generator().manual_seed(seed + 1)")
        return entry


def make_deterministic(seed: int) -> None:
    """Seed numpy and torch, one thread, deterministic algorithms only."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)


def accuracy(logits, labels) -> float:
    """Top-1 accuracy of (N, classes) logits against (N,) labels."""
    return float((np.asarray(logits).argmax(axis=1) == np.asarray(labels)).mean())


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """(N, C, H, W) images each moved by a random offset in -max_shift..max_shift per axis, zeros shifted in."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def train(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
          y_test: torch.Tensor, seed: int, settings: Settings) -> None:
    """Train ``model`` in place, printing the loss and the test accuracy after every epoch."""
    generator = torch.Generator().manual_seed(seed)
    shifts = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs)
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss = 0.0
        for start in range(0, len(order), settings.batch_size):
            batch = order[start:start + settings.batch_size]
            x = x_train[batch]
            if settings.max_shift:
                x = random_shift(x, settings.max_shift, shifts)
            loss = F.cross_entropy(model(x), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
        scheduler.step()
        model.eval()
        with torch.no_grad():
            test_acc = accuracy(model(x_test), y_test)
        print(f"epoch {epoch:2d}/{settings.epochs}: train loss {total_loss / len(x_train):.4f}, "
              f"test accuracy {test_acc:.4f}")


def export_onnx(model: torch.nn.Module, path: Path, input_shape: tuple[int, ...], opset: int) -> None:
    """ONNX with input ``input`` (batch, *input_shape) and output ``logits``; BatchNorm kept as its own node."""
    model.eval()
    # do_constant_folding=False keeps BatchNormalization as its own node: with folding on, the exporter's
    # eval peephole pass fuses it into the preceding Conv, and the frontend's folding would go untested.
    # The TorchScript exporter (dynamo=False) is chosen on purpose: it runs offline without onnxscript.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, *input_shape),), str(path),
                          dynamo=False, opset_version=opset, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=False)


def verify_onnx(path: Path, model: torch.nn.Module, x_test: torch.Tensor,
                tolerance: float) -> tuple[onnx.ModelProto, np.ndarray, float]:
    """Check the file with onnx's full checker and onnxruntime against PyTorch on ``x_test``.

    Returns the model, onnxruntime's logits and the largest absolute difference; raises TrainError above
    ``tolerance``."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_logits = session.run(["logits"], {"input": x_test.numpy()})[0]
    with torch.no_grad():
        torch_logits = model(x_test).numpy()
    max_diff = float(np.abs(ort_logits - torch_logits).max())
    if not max_diff < tolerance:
        raise TrainError(f"onnxruntime and PyTorch differ by {max_diff:.3g} on the test set, "
                         f"more than {tolerance:g}")
    return proto, ort_logits, max_diff


def fit(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
        y_test: torch.Tensor, seed: int, settings: Settings, started: float) -> tuple[int, float]:
    """Train ``model`` (:func:`train`) and report it: (parameters, PyTorch's test accuracy)."""
    num_params = sum(p.numel() for p in model.parameters())
    print(f"model: {num_params} parameters")
    train(model, x_train, y_train, x_test, y_test, seed, settings)
    model.eval()
    with torch.no_grad():
        torch_acc = accuracy(model(x_test), y_test)
    print(f"float test accuracy (PyTorch): {torch_acc:.4f} "
          f"({time.perf_counter() - started:.1f} s including data loading)")
    return num_params, torch_acc


def export_checked(model: torch.nn.Module, path: Path, input_shape: tuple[int, ...], opset: int,
                   x_test: torch.Tensor, y_test: torch.Tensor, tolerance: float) -> tuple[list[str], float]:
    """Export (:func:`export_onnx`) and verify (:func:`verify_onnx`) the model: (its ops, onnxruntime's accuracy)."""
    export_onnx(model, path, input_shape, opset)
    proto, ort_logits, max_diff = verify_onnx(path, model, x_test, tolerance)
    ort_acc = accuracy(ort_logits, y_test)
    ops = sorted({node.op_type for node in proto.graph.node})
    print(f"onnx: {path} checked; ops {', '.join(ops)}; max |onnxruntime - PyTorch| = {max_diff:.3g}")
    print(f"float test accuracy (onnxruntime): {ort_acc:.4f}")
    return ops, ort_acc


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed-compatible archive, written with a fixed entry timestamp so it is byte-identical."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue())


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(run: Callable[[Path], None], description: str, default_out: Path, argv: list[str] | None = None) -> int:
    """``--out DIR`` (default ``default_out``), then ``run(out)``; a TrainError or OSError is one line, status 2."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=default_out,
                        help="output directory (default: the directory of this script)")
    args = parser.parse_args(argv)
    try:
        run(args.out)
    except (TrainError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
