"""Where an instruction's elements lie in the buffers: computed once per distinct instruction, then reused.

A compiled network repeats the same few instruction shapes many times, and a batch runs each instruction once;
the index patterns here depend on the instruction's fields alone, so they are cached by those fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hw.spec.config import AcceleratorConfig

__all__ = ["ComputePlan", "AluPlan", "compute_plan", "alu_plan", "store_lines"]


def _lines(base: int, y: int, x: int, y_stride: int, x_stride: int = 1) -> np.ndarray:
    return (base + np.arange(y)[:, None] * y_stride + np.arange(x)[None, :] * x_stride).ravel()


@dataclass(frozen=True)
class ComputePlan:
    #: Output lines (out_h * out_w) and products summed into each (kh * kw * rows).
    outputs: int
    terms: int
    #: The weight lines the COMPUTE reads: kh * kw tiles of ``rows`` lines.
    weights: slice


def compute_rows(config: AcceleratorConfig, f: dict) -> int:
    """The COMPUTE's reduction depth (codes of an activation line, lines of a weight tile): ``reduction_rows``, or
    twice ``rows`` with ``packed`` set (a pair a per-layer packing build packs, hw/spec/config.py)."""
    return config.compute_reduction_rows(f.get("weight_format", 0), f.get("act_format", 0), f.get("packed", 0))


def compute_plan(config: AcceleratorConfig, f: dict) -> ComputePlan:
    taps, rows = f["kh"] * f["kw"], compute_rows(config, f)
    return ComputePlan(f["out_h"] * f["out_w"], taps * rows, slice(f["weight_addr"], f["weight_addr"] + taps * rows))


@dataclass(frozen=True)
class AluPlan:
    dst: np.ndarray
    src: np.ndarray
    #: No destination repeats and none is a source: every element can be updated at once.
    independent: bool
    #: Otherwise: (start, end) of maximal runs in which no element reads or writes a line an earlier one of the
    #: run wrote; applied at once, such a run gives what one element after the other gives.
    runs: tuple = ()


def alu_plan(f: dict) -> AluPlan:
    return _alu_plan(f["dst_addr"], f["src_addr"], f["y_size"], f["x_size"], f["dst_stride"], f["src_stride"],
                     f["src_step"])


@lru_cache(maxsize=4096)
def _alu_plan(dst_addr, src_addr, y, x, dst_stride, src_stride, src_step) -> AluPlan:
    dst = _lines(dst_addr, y, x, dst_stride)
    src = _lines(src_addr, y, x, src_stride, src_step)
    independent = np.unique(dst).size == dst.size and np.intersect1d(dst, src).size == 0
    for a in (dst, src):
        a.setflags(write=False)
    return AluPlan(dst, src, bool(independent), () if independent else tuple(_independent_runs(dst, src)))


def _independent_runs(dst: np.ndarray, src: np.ndarray):
    start, written = 0, set()
    for i, (d, r) in enumerate(zip(dst.tolist(), src.tolist())):
        if d in written or r in written:
            yield start, i
            start, written = i, set()
        written.add(d)
    yield start, len(dst)


def store_lines(f: dict) -> np.ndarray:
    """Accumulator lines a STORE reads, in the order it writes them."""
    return _store_lines(f["acc_addr"], f["y_size"], f["x_size"], f["acc_stride"])


@lru_cache(maxsize=4096)
def _store_lines(acc_addr, y, x, acc_stride) -> np.ndarray:
    lines = _lines(acc_addr, y, x, acc_stride)
    lines.setflags(write=False)
    return lines
