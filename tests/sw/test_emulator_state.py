"""The emulator's COMPUTE products (sw/emulator/state.py) against a reference written from the ISA's definition:
out[y, x, n] = sum over (dy, dx, r) of act[act_addr + (y*stride + dy*dilation)*pitch + x*stride + dx*dilation][r]
* weight[weight_addr + (dy*kw + dx)*rows + r][n], computed on int64. Batches large enough for the per-tap GEMMs
read in place and small ones that copy their windows take different paths; both must give the reference."""

from __future__ import annotations

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.formats import get_format
from sw.emulator import state as ops
from sw.emulator.memory import BatchedMemory
from sw.golden.exact import fixed_values


def _reference(act: np.ndarray, weight: np.ndarray, f: dict, rows: int) -> np.ndarray:
    """(out_h * out_w, samples, cols) int64."""
    oh, ow, kh, kw = f["out_h"], f["out_w"], f["kh"], f["kw"]
    out = np.zeros((oh * ow, act.shape[1], weight.shape[2]), dtype=np.int64)
    for y in range(oh):
        for x in range(ow):
            for dy in range(kh):
                for dx in range(kw):
                    line = (f["act_addr"] + (y * f["stride"] + dy * f["dilation"]) * f["act_pitch"]
                            + x * f["stride"] + dx * f["dilation"])
                    w = weight[f["weight_addr"] + (dy * kw + dx) * rows:][:rows, 0]     # (rows, cols)
                    out[y * ow + x] += act[line].astype(np.int64) @ w.astype(np.int64)
    return out


def _fields(rng: np.random.Generator, taps_max: int) -> dict:
    kh, kw = (int(v) for v in rng.integers(1, taps_max + 1, 2))
    stride, dilation = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    out_h, out_w = int(rng.integers(1, 5)), int(rng.integers(1, 7))
    pitch = (out_w - 1) * stride + (kw - 1) * dilation + 1 + int(rng.integers(0, 3))
    return dict(act_addr=int(rng.integers(0, 20)), weight_addr=int(rng.integers(0, 8)), acc_addr=0, out_h=out_h,
                out_w=out_w, kh=kh, kw=kw, stride=stride, dilation=dilation, act_pitch=pitch, accumulate=0)


@pytest.mark.parametrize("samples", [1, 3, 80])
@pytest.mark.parametrize("fmt", ["int8", "int4", "minifloat6", "uint8"])
def test_compute_products_equal_the_definition(fmt, samples):
    rows = cols = 4
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format="int8" if fmt == "uint8" else fmt,
                               act_format=fmt, act_buffer_depth=256, weight_buffer_depth=256)
    rng = np.random.default_rng(samples * 7 + len(fmt))
    for _ in range(12):
        s = ops.EngineState(config, BatchedMemory(np.zeros(4096, np.uint8), batch=samples))
        f = _fields(rng, 3)
        act_values, _, _ = fixed_values(config.acts)
        weight_values, _, _ = fixed_values(config.weights)
        act = act_values[rng.integers(0, act_values.size, (config.act_buffer_depth, samples, rows))]
        weight = weight_values[rng.integers(0, weight_values.size, (config.weight_buffer_depth, 1, cols))]
        weight[f["weight_addr"] + rows * int(rng.integers(0, f["kh"] * f["kw"]))] = 0     # a zero row, sometimes
        s.act = act.astype(s.act.dtype)
        s.weight = weight.astype(s.weight.dtype)
        value, columns, nonfinite = ops.compute_products(s, f)
        want = _reference(act, weight, f, rows)[..., columns]
        assert np.array_equal(np.asarray(value, dtype=np.int64), want), f


def test_large_batches_take_the_per_tap_gemms(monkeypatch):
    """The path the test above must cover: 80 samples at stride 1 read the buffer in place."""
    config = AcceleratorConfig(rows=4, cols=4, act_buffer_depth=256, weight_buffer_depth=256)
    calls = []
    original = ops._tap_products
    monkeypatch.setattr(ops, "_tap_products", lambda *a: calls.append(1) or original(*a))
    s = ops.EngineState(config, BatchedMemory(np.zeros(4096, np.uint8), batch=80))
    s.act = np.ones((256, 80, 4), dtype=s.act.dtype)
    s.weight = np.ones((256, 1, 4), dtype=s.weight.dtype)
    f = dict(act_addr=0, weight_addr=0, acc_addr=0, out_h=2, out_w=3, kh=2, kw=2, stride=1, dilation=1,
             act_pitch=4, accumulate=0)
    value, _, _ = ops.compute_products(s, f)
    assert calls and np.all(np.asarray(value) == 16)
    assert s.act.dtype == np.float32 and get_format("int8").bits == 8


def test_wide_accumulators_take_integer_sums():
    """Accumulators beyond 62 bits hold Python ints: a COMPUTE's float sums reach them as ints, so accumulating
    into a value near 2**69 stays exact (Python floats would lose it)."""
    config = AcceleratorConfig(rows=4, cols=4, acc_bits=70, act_buffer_depth=256, weight_buffer_depth=256)
    s = ops.EngineState(config, BatchedMemory(np.zeros(4096, np.uint8), batch=80))
    s.act = np.full((256, 80, 4), 3, dtype=s.act.dtype)
    s.weight = np.full((256, 1, 4), 1, dtype=s.weight.dtype)
    f = dict(act_addr=0, weight_addr=0, acc_addr=0, out_h=1, out_w=2, kh=1, kw=1, stride=1, dilation=1,
             act_pitch=2, accumulate=1)
    s.acc[0:2] = (1 << 68) + 1
    ops.compute_accumulate(s, f, ops.compute_products(s, f))
    assert all(v == (1 << 68) + 13 and type(v) is int for v in s.acc[0:2].ravel())
