"""What the command-line tools of ``sw`` share: one-line usage errors (exit status 2), input arrays checked
before any work, and output folders written whole or not at all."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["UsageError", "Parser", "load_array", "check_out_folder", "write_folder", "fail"]


class UsageError(Exception):
    """A mistake of the user's (arguments, files, shapes): printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def fail(prog: str, error: Exception) -> int:
    print(f"{prog}: error: {error}", file=sys.stderr)
    return 2


def load_array(path: Path, what: str, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 ``.npy`` array shaped (N, *shape), or a UsageError that says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path}: no such file")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:          # noqa: BLE001 - any unreadable file is the user's to fix
        raise UsageError(f"{what} {path} is not a .npy array ({e})") from None
    expected = f"(N, {', '.join(map(str, shape))})"
    if x.dtype != np.float32:
        raise UsageError(f"{what} {path} holds {x.dtype}; it must be float32 shaped {expected} in the model's "
                         f"own layout and units")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape) or x.shape[0] < 1:
        raise UsageError(f"{what} {path} is shaped {x.shape}; it must be {expected}: the model's input shape with "
                         f"its batch dimension replaced by N")
    if not np.isfinite(x).all():
        raise UsageError(f"{what} {path} contains NaN or infinity")
    return x


def check_out_folder(out: Path, marker: str, flag: str = "--out") -> None:
    """Refuse to replace anything but an earlier output of the same tool (recognised by ``marker``)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).is_file())):
        raise UsageError(f"{flag} {out} exists and is not an earlier output of this tool (no {marker} in it); "
                         f"choose a new or empty folder")
    parent = Path(out).resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {out}: {parent} is not a folder this user can write into")


def write_folder(out: Path, write: Callable[[Path], None]) -> None:
    """Write into a scratch folder beside ``out``, then replace ``out``: never a half-written output."""
    out = Path(out).resolve()
    scratch = out.with_name(f".{out.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        write(scratch)
        if out.exists():
            shutil.rmtree(out)
        scratch.rename(out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
