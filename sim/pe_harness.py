"""Every operand pair of a format pair through one ProcessingElement on Verilator."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw.pe import ProcessingElement
from hw.spec.formats import Format, accumulator_bits, get_format, product_of
from hw.spec.microarchitecture import PE_LATENCY
from sw.golden import multiply

from . import runner
from .checking import compare, split_psums

__all__ = ["PE_TERMS", "PairRun", "run_all_pairs", "check_all_pairs"]

#: The PE under test gets a partial-sum width for this many products; ``psum_in`` spans the sum of the others.
PE_TERMS = 4


@dataclass
class PairRun:
    weights: np.ndarray      # weight code of each result
    acts: np.ndarray         # activation code of each result
    psum_in: np.ndarray      # Python ints
    value: np.ndarray        # what the PE produced: Python ints
    nonfinite: np.ndarray    # bool


def _stimulus(wf: Format, af: Format, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    weights = rng.permutation(1 << wf.bits)
    acts = rng.permutation(1 << af.bits)
    p = product_of(af, wf)
    lo, hi = (PE_TERMS - 1) * p.fixed_min, (PE_TERMS - 1) * p.fixed_max
    n = weights.size * acts.size
    # Uniform over the whole legal range, plus the two extremes and zero in every run of activations.
    span = hi - lo
    draws = rng.integers(0, 1 << 62, size=n, dtype=np.int64).tolist()
    psum_in = [lo + (d * span >> 62) for d in draws]
    for i in range(0, n, acts.size):
        psum_in[i], psum_in[i + 1], psum_in[i + 2] = lo, hi, 0
    return {"weights": weights, "acts": acts, "psum_in": np.array([str(v) for v in psum_in])}


def run_all_pairs(weight_format, act_format, work_dir: Path, *, seed: int = 0, waves: bool = False,
                  pe_factory=ProcessingElement) -> PairRun:
    wf, af = get_format(weight_format), get_format(act_format)
    psum_bits = accumulator_bits(af, wf, PE_TERMS)
    stim = _stimulus(wf, af, seed)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    np.savez(work_dir / "stimulus.npz", **stim, act_bits=af.bits, psum_bits=psum_bits, latency=PE_LATENCY)
    design = runner.build(pe_factory(wf, af, psum_bits), f"pe-{wf.name}-{af.name}", waves=waves)
    runner.run(design, "sim.tb.pe_tb", work_dir, env={
        "TB_STIMULUS": str(work_dir / "stimulus.npz"), "TB_RESULT": str(work_dir / "result.npy")})
    value, nonfinite = split_psums(np.load(work_dir / "result.npy"), psum_bits)
    n_w, n_a = stim["weights"].size, stim["acts"].size
    return PairRun(
        weights=np.repeat(stim["weights"], n_a), acts=np.tile(stim["acts"], n_w),
        psum_in=np.array([int(v) for v in stim["psum_in"]], dtype=object), value=value, nonfinite=nonfinite)


def check_all_pairs(weight_format, act_format, work_dir: Path, **kwargs) -> PairRun:
    """Run every pair and compare each result with ``psum_in + a * w`` from the golden model."""
    wf, af = get_format(weight_format), get_format(act_format)
    run = run_all_pairs(wf, af, work_dir, **kwargs)
    product = multiply(run.acts, run.weights, af, wf)
    expected_value = run.psum_in + product.value.astype(object)
    expected = [f"{v}/{int(f)}" for v, f in zip(expected_value, product.nonfinite)]
    observed = [f"{v}/{int(f)}" for v, f in zip(run.value, run.nonfinite)]

    def describe(i):
        return f"w={run.weights[i]:#x} ({wf.name} {wf.decode(run.weights[i])}) x a={run.acts[i]:#x} " \
               f"({af.name} {af.decode(run.acts[i])}) + psum_in={run.psum_in[i]} [value/nonfinite]"

    def waves():
        again = run_all_pairs(wf, af, Path(work_dir) / "waves", waves=True,
                              **{k: v for k, v in kwargs.items() if k != "waves"})
        return str(Path(work_dir) / "waves" / "dump.fst") if again is not None else "(none)"

    compare(np.array(expected, dtype=object), np.array(observed, dtype=object), describe,
            waves=None if os.environ.get("NO_WAVES_ON_FAILURE") else waves)
    return run
