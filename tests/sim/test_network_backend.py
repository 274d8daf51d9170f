"""Random networks (every operator of the IR) through Verilator's compiled testbench: every tensor in external memory
equals the golden model's, byte for byte."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sim.random_network import random_inputs, random_network
from sw.compiler.network import compile_network
from sw.runtime import run_codes


def _config(weights, acts, n, dma_bits=64):
    # The buffers of tests/hw/test_engine.py, so that the Verilator build is shared.
    return AcceleratorConfig(rows=n, cols=n, weight_format=weights, act_format=acts, act_buffer_depth=512,
                             weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8,
                             dma_bits=dma_bits)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("weights,acts,n", [("int8", "int8", 4), ("minifloat6", "minifloat6", 4)])
def test_random_network_on_rtl_matches_golden(weights, acts, n, seed, tmp_path):
    config = _config(weights, acts, n)
    rng = np.random.default_rng(11 * n + 1000 * seed)
    net = random_network(rng, acts, weights, config.acc_bits)
    compiled = compile_network(net, config)
    x = random_inputs(rng, net, 3)
    rtl = run_codes(compiled, x, "rtl", keep=True, work_dir=tmp_path)
    golden = run_codes(compiled, x, "golden", keep=True)
    emulated = run_codes(compiled, x, "emulator", cycles=True)
    for i in range(len(x)):
        for name in compiled.materialized:
            np.testing.assert_array_equal(rtl.tensors[i][name], golden.tensors[i][name],
                                          err_msg=f"tensor {name}, sample {i}")
    # The cycle model is held to the RTL elsewhere (tests/hw/test_engine_cycles.py); here only roughly.
    assert len(rtl.cycles) == len(emulated.cycles) == len(x)
    for r, e in zip(rtl.cycles, emulated.cycles):
        assert abs(r - e) <= 0.05 * r, (r, e)


def test_random_network_batched_on_rtl_matches_golden(tmp_path):
    """A program for 3 samples (sw.compile --batch 3): vectors stacked, convolutions over the samples in one
    schedule, pools, adds and concats; 5 inputs make a full run and a padded one. The 8x8 build of
    tests/sim/test_networks_rtl.py."""
    config = AcceleratorConfig(rows=8, cols=8, weight_format="int8", act_format="int8", act_buffer_depth=1024,
                               weight_buffer_depth=256, acc_buffer_depth=512, param_buffer_depth=16, dma_bits=64)
    rng = np.random.default_rng(7)
    net = random_network(rng, "int8", "int8", config.acc_bits)
    compiled = compile_network(net, config, batch=3)
    x = random_inputs(rng, net, 5)
    rtl = run_codes(compiled, x, "rtl", keep=True, work_dir=tmp_path)
    golden = run_codes(compiled, x, "golden", keep=True)
    emulated = run_codes(compiled, x, "emulator", cycles=True)
    assert len(rtl.tensors) == len(x)
    for i in range(len(x)):
        for name in compiled.materialized:
            np.testing.assert_array_equal(rtl.tensors[i][name], golden.tensors[i][name],
                                          err_msg=f"tensor {name}, sample {i}")
    np.testing.assert_array_equal(emulated.codes, golden.codes)
    for r, e in zip(rtl.cycles, emulated.cycles):
        assert abs(r - e) <= 0.02 * r, (r, e)
