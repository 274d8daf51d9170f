"""GEMM tiles through the SystolicArray on Verilator, checked against the golden model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.array import SystolicArray
from hw.spec.config import AcceleratorConfig
from hw.spec.formats import Format
from sw.golden import gemm

from . import runner
from .checking import compare, split_psums

__all__ = ["Tile", "Traffic", "ArrayRun", "random_codes", "random_tiles", "run_tiles", "check_tiles",
           "check_long_reduction"]


@dataclass
class Tile:
    """One weight tile (rows x cols codes) and the batch of activation vectors (M x rows) that uses it."""

    weights: np.ndarray
    acts: np.ndarray


@dataclass(frozen=True)
class Traffic:
    """Probabilities of an idle cycle on each input and of back-pressure on the output."""

    gap_weights: float = 0.0
    gap_acts: float = 0.0
    stall_psums: float = 0.0


@dataclass
class ArrayRun:
    value: np.ndarray        # (vectors, cols) Python ints
    nonfinite: np.ndarray    # (vectors, cols) bool
    cycles: int              # clock cycles from reset to the last result
    first_accept: int        # cycle of the first accepted activation vector
    blocked: int             # cycles after that with an activation offered but not accepted


def random_codes(fmt: Format, shape, rng: np.random.Generator, mode: str = "uniform") -> np.ndarray:
    """Codes for stimulus. ``uniform``: any code (NaN and Inf included); ``extreme``: only codes of
    largest magnitude, both signs (the widest products and sums); ``finite``: any finite code."""
    codes = np.arange(1 << fmt.bits)
    values = fmt.decode(codes)
    if mode == "extreme":
        finite = np.isfinite(values)
        pool = codes[finite & (np.abs(values) == np.abs(values[finite]).max())]
    elif mode == "finite":
        pool = codes[np.isfinite(values)]
    elif mode == "uniform":
        pool = codes
    else:
        raise ValueError(f"Unknown stimulus mode {mode!r}")
    return rng.choice(pool, size=shape)


def random_tiles(config: AcceleratorConfig, count: int, rng: np.random.Generator,
                 batch: tuple[int, int] = (1, 24), modes=("uniform", "extreme", "finite")) -> list[Tile]:
    tiles = []
    for i in range(count):
        mode = modes[i % len(modes)]
        m = int(rng.integers(batch[0], batch[1] + 1))
        tiles.append(Tile(random_codes(config.weights, (config.reduction_rows, config.cols), rng, mode),
                          random_codes(config.acts, (m, config.reduction_rows), rng, mode)))
    return tiles


def run_tiles(config: AcceleratorConfig, tiles: list[Tile], work_dir: Path, *, traffic: Traffic = Traffic(),
              seed: int = 0, waves: bool = False) -> ArrayRun:
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    act_last = np.concatenate([np.arange(len(t.acts)) == len(t.acts) - 1 for t in tiles])
    np.savez(
        work_dir / "stimulus.npz",
        rows=config.reduction_rows, cols=config.cols, w_bits=config.weights.bits, a_bits=config.acts.bits,
        psum_bits=config.psum_bits, seed=seed,
        weight_rows=np.concatenate([t.weights for t in tiles]), act_vectors=np.concatenate([t.acts for t in tiles]),
        act_last=act_last, gap_weights=traffic.gap_weights, gap_acts=traffic.gap_acts,
        stall_psums=traffic.stall_psums,
    )
    design = runner.build(SystolicArray(config), f"array-{config.rows}x{config.cols}-{config.weights.name}-"
                                                 f"{config.acts.name}", waves=waves)
    runner.run(design, "sim.tb.array_tb", work_dir, env={
        "TB_STIMULUS": str(work_dir / "stimulus.npz"), "TB_RESULT": str(work_dir / "result.npy"),
        "TB_STATS": str(work_dir / "stats.npy")})
    value, nonfinite = split_psums(np.load(work_dir / "result.npy"), config.psum_bits)
    cycles, first_accept, blocked = (int(x) for x in np.load(work_dir / "stats.npy"))
    return ArrayRun(value, nonfinite, cycles, first_accept, blocked)


def _expected(config: AcceleratorConfig, tiles: list[Tile]):
    results = [gemm(t.acts, t.weights, config.acts, config.weights) for t in tiles]
    value = np.concatenate([r.value.astype(object) for r in results])
    nonfinite = np.concatenate([r.nonfinite for r in results])
    return value, nonfinite


def _as_text(value, nonfinite):
    return np.array([f"{v}/{int(f)}" for v, f in zip(value.ravel(), nonfinite.ravel())], dtype=object)


def check_tiles(config: AcceleratorConfig, tiles: list[Tile], work_dir: Path, *, traffic: Traffic = Traffic(),
                seed: int = 0) -> ArrayRun:
    """Run ``tiles`` and compare every partial sum (value and NaN/Inf flag) with the golden model."""
    run = run_tiles(config, tiles, work_dir, traffic=traffic, seed=seed)
    value, nonfinite = _expected(config, tiles)
    starts = np.cumsum([0] + [len(t.acts) for t in tiles])

    def describe(i):
        vector, col = divmod(i, config.cols)
        tile = int(np.searchsorted(starts, vector, side="right") - 1)
        return f"tile {tile} vector {vector - starts[tile]} column {col} [value/nonfinite]"

    def waves():
        run_tiles(config, tiles, Path(work_dir) / "waves", traffic=traffic, seed=seed, waves=True)
        return str(Path(work_dir) / "waves" / "dump.fst")

    compare(_as_text(value, nonfinite), _as_text(run.value, run.nonfinite), describe,
            waves=None if os.environ.get("NO_WAVES_ON_FAILURE") else waves)
    return run


def check_long_reduction(config: AcceleratorConfig, acts: np.ndarray, weights: np.ndarray, work_dir: Path, *,
                         traffic: Traffic = Traffic(), seed: int = 0) -> None:
    """``acts @ weights`` with K a multiple of ``rows``: K/rows tiles whose exact partial sums must add up to
    the golden model's single exact sum over all K (the accumulator buffer will do this addition in RTL)."""
    k = weights.shape[0]
    if k % config.reduction_rows or weights.shape[1] != config.cols or acts.shape[1] != k:
        raise ValueError("K must be a multiple of rows and N must equal cols")
    chunks = range(0, k, config.reduction_rows)
    tiles = [Tile(weights[s:s + config.reduction_rows], acts[:, s:s + config.reduction_rows]) for s in chunks]
    run = run_tiles(config, tiles, work_dir, traffic=traffic, seed=seed)
    m = acts.shape[0]
    total = sum(run.value[i * m:(i + 1) * m] for i in range(len(tiles)))
    flags = np.logical_or.reduce([run.nonfinite[i * m:(i + 1) * m] for i in range(len(tiles))])
    golden = gemm(acts, weights, config.acts, config.weights)
    compare(_as_text(golden.value.astype(object), golden.nonfinite), _as_text(total, flags),
            lambda i: f"row {i // config.cols} column {i % config.cols} of the K={k} reduction")
