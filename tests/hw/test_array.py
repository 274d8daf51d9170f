"""The SystolicArray on Verilator: random GEMM tiles of several shapes and formats, bit-exact, under stalls."""

import gc
import warnings

import numpy as np
import pytest

from hw.array import SystolicArray
from hw.spec.config import AcceleratorConfig
from hw.spec.microarchitecture import array_latency
from sim.array_harness import Tile, Traffic, check_long_reduction, check_tiles, random_codes, random_tiles

BUSY = Traffic(gap_weights=0.25, gap_acts=0.25, stall_psums=0.25)

CASES = [
    (1, 1, "int8", "int8"),
    (4, 4, "minifloat6", "minifloat6"),
    (4, 4, "fp8_e5m2", "fp8_e5m2"),
    (8, 8, "fp8_e4m3", "fp8_e4m3"),
    (4, 8, "int4", "int8"),
    (4, 8, "int4", "int4"),             # packed: two codes per PE lane, an 8-deep reduction on 4 PE rows
    (2, 5, "uint4", "int4"),
    (8, 4, "fp8_e4m3", "minifloat6"),
    (8, 8, "minifloat4", "minifloat6_e2m3"),
    (16, 16, "int8", "int8"),
    (16, 16, "minifloat6", "minifloat6"),
]


def _config(rows, cols, weights, acts, **options):
    return AcceleratorConfig(rows=rows, cols=cols, weight_format=weights, act_format=acts, **options)


@pytest.mark.parametrize("rows,cols,weights,acts", CASES, ids=lambda x: str(x))
def test_random_tiles_under_stalls(rows, cols, weights, acts, tmp_path):
    config = _config(rows, cols, weights, acts)
    rng = np.random.default_rng(rows * 1000 + cols)
    tiles = random_tiles(config, 6, rng)
    check_tiles(config, tiles, tmp_path, traffic=BUSY, seed=rows + cols)


@pytest.mark.parametrize("rows,cols,weights,acts,dsp_pes", [(4, 8, "int4", "int4", 13), (2, 5, "uint4", "int4", 10)],
                         ids=lambda x: str(x))
def test_dsp_pes_random_and_extreme_tiles(rows, cols, weights, acts, dsp_pes, tmp_path):
    """Packed PEs whose pair of products one wide multiply makes (dsp_pes: the first in row-major order, here some
    or all of them) give the golden model's sums, under stalls and at the formats' extremes."""
    config = _config(rows, cols, weights, acts, dsp_pes=dsp_pes)
    rng = np.random.default_rng(dsp_pes)
    check_tiles(config, random_tiles(config, 6, rng), tmp_path, traffic=BUSY, seed=dsp_pes)
    a = random_codes(config.acts, (2 * rows + cols, 64), rng, "extreme")
    w = random_codes(config.weights, (64, cols), rng, "extreme")
    check_long_reduction(config, a, w, tmp_path / "extreme", traffic=Traffic(0.1, 0.1, 0.1))


@pytest.mark.parametrize("rows,cols,weights,acts", [(4, 4, "int8", "int8"), (4, 8, "minifloat6", "minifloat6")],
                         ids=lambda x: str(x))
def test_one_vector_batches_back_to_back(rows, cols, weights, acts, tmp_path):
    """Batches of one vector make every tile boundary a double-buffer hazard; none may corrupt a result."""
    config = _config(rows, cols, weights, acts)
    rng = np.random.default_rng(7)
    tiles = random_tiles(config, 24, rng, batch=(1, 2))
    check_tiles(config, tiles, tmp_path, traffic=Traffic(stall_psums=0.3), seed=3)
    check_tiles(config, tiles, tmp_path / "no-stalls", traffic=Traffic(), seed=3)


@pytest.mark.parametrize("rows,cols,weights,acts,k,mode", [
    (8, 8, "int8", "int8", 512, "extreme"),
    (4, 4, "fp8_e5m2", "fp8_e5m2", 256, "extreme"),
    (16, 16, "minifloat6", "minifloat6", 256, "finite"),
    (4, 8, "int4", "int8", 128, "uniform"),
    (4, 8, "int4", "int4", 256, "extreme"),
], ids=lambda x: str(x))
def test_long_reduction(rows, cols, weights, acts, k, mode, tmp_path):
    config = _config(rows, cols, weights, acts)
    rng = np.random.default_rng(k)
    a = random_codes(config.acts, (2 * rows + cols, k), rng, mode)
    w = random_codes(config.weights, (k, cols), rng, mode)
    check_long_reduction(config, a, w, tmp_path, traffic=Traffic(0.1, 0.1, 0.1))


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 4), (8, 8)])
def test_one_mac_per_pe_per_cycle(rows, cols, tmp_path):
    """With batches of 2*rows + cols vectors the next tile loads in the shadow of the current one: once the
    first vector is in, no vector waits and the last result leaves exactly latency cycles after it entered."""
    config = _config(rows, cols, "int8", "int8")
    rng = np.random.default_rng(1)
    batch = 2 * rows + cols
    tiles = random_tiles(config, 5, rng, batch=(batch, batch))
    run = check_tiles(config, tiles, tmp_path)
    vectors = 5 * batch
    assert run.blocked == 0
    latency = array_latency(rows, cols)   # as documented on SystolicArray
    assert run.cycles == run.first_accept + vectors + latency


def test_array_needs_a_config():
    with warnings.catch_warnings():
        # The half-built object is collected here, not during some later test.
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match=r"Configuration must be an AcceleratorConfig, not 'int8'"):
            SystolicArray("int8")
        gc.collect()


def test_bubbles_do_not_leak(tmp_path):
    """Idle cycles between vectors enter the array as zeros and never reach the output."""
    config = _config(4, 4, "int8", "int8")
    rng = np.random.default_rng(5)
    tiles = [Tile(random_codes(config.weights, (4, 4), rng), random_codes(config.acts, (30, 4), rng))]
    run = check_tiles(config, tiles, tmp_path, traffic=Traffic(gap_acts=0.7), seed=11)
    assert run.value.shape == (30, 4)
