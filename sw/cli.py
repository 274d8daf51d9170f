"""What the command-line tools of ``sw`` share: the project-wide contract (:mod:`hw.spec.cli`, re-exported here)
and input arrays checked before any work."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from hw.spec.cli import (Parser, UsageError, check_out_file, check_out_folder, integer, main_guard, number,
                         write_file, write_folder)
from hw.spec.config import AcceleratorConfig, ConfigError

__all__ = ["UsageError", "Parser", "integer", "number", "main_guard", "load_array", "load_config",
           "check_out_folder", "check_out_file", "write_folder", "write_file"]

#: Largest input array we read (bytes): a calibration set or a batch of inputs, not a data set.
MAX_ARRAY_BYTES = 4 << 30


def load_config(path: Path, flag: str = "--config") -> AcceleratorConfig:
    """An engine's configuration from a build's config.json (``python -m hw.build``, ``python -m boards.build``)."""
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    try:
        return AcceleratorConfig.from_json(path.read_text())
    except (ConfigError, UnicodeDecodeError) as e:
        raise UsageError(f"{flag} {path}: {e}") from None


def load_array(path: Path, what: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 ``.npy`` array shaped (N, *shape), or a UsageError that says what is wrong."""
    path = Path(path)
    expected = f"(N, {', '.join(map(str, shape))})"
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    if zipfile.is_zipfile(path):
        raise UsageError(f"{what} {path} is a .npz archive; save one float32 array shaped {expected} with "
                         f"numpy.save (a .npy file)")
    try:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:          # noqa: BLE001 - any unreadable file is the user's to fix
        raise UsageError(f"{what} {path} is not a .npy array ({' '.join(str(e).split())[:160]})") from None
    if header.dtype != np.float32:
        raise UsageError(f"{what} {path} holds {header.dtype}; it must be float32 shaped {expected} in the model's "
                         f"own layout and units")
    if header.ndim != len(shape) + 1 or tuple(header.shape[1:]) != tuple(shape) or header.shape[0] < 1:
        raise UsageError(f"{what} {path} is shaped {header.shape}; it must be {expected}: the model's input shape "
                         f"with its batch dimension replaced by N")
    if header.nbytes > MAX_ARRAY_BYTES:
        raise UsageError(f"{what} {path} holds {header.nbytes >> 20} MiB; split it into files below "
                         f"{MAX_ARRAY_BYTES >> 30} GiB")
    x = np.array(header)
    if not np.isfinite(x).all():
        raise UsageError(f"{what} {path} contains NaN or infinity")
    return x
