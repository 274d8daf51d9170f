"""Whole networks compiled and run on the emulator against the golden model, tensor by tensor."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sim.random_network import random_inputs, random_network
from sw.compiler.network import CompiledNetwork, CompileError, compile_network
from sw.emulator import Emulator
from sw.golden.network import run_network


def _config(weights, acts, n, **kw):
    base = dict(rows=n, cols=n, weight_format=weights, act_format=acts, act_buffer_depth=1024,
                weight_buffer_depth=256, acc_buffer_depth=256, param_buffer_depth=16, dma_bits=64)
    base.update(kw)
    return AcceleratorConfig(**base)


def _emulate(compiled: CompiledNetwork, codes: np.ndarray):
    dram = compiled.dram_with_input(codes)
    emulator = Emulator(compiled.config, bytes(dram))
    status = emulator.run(compiled.program.program_addr)
    assert status.done and int(status.error) == 0, status
    return emulator.dram, status


@pytest.mark.parametrize("weights,acts,n", [("int8", "int8", 4), ("int4", "int8", 8), ("minifloat6", "minifloat6", 4),
                                            ("fp8_e4m3", "fp8_e4m3", 8), ("int8", "uint8", 4)])
def test_random_network_matches_golden_on_every_tensor(weights, acts, n):
    config = _config(weights, acts, n)
    rng = np.random.default_rng(n + len(weights) + len(acts))
    net = random_network(rng, acts, weights, config.acc_bits)
    compiled = compile_network(net, config)
    x = random_inputs(rng, net, 2)
    golden = run_network(net, x, keep=True)
    for i in range(len(x)):
        dram, status = _emulate(compiled, x[i])
        for name in compiled.materialized:
            got = compiled.read_tensor(dram, name)
            np.testing.assert_array_equal(got, golden[name][i], err_msg=f"tensor {name}, sample {i}")
    assert {"p1", "dw", "sum", "cat", "mp", "avg", "dil", "gap", "fc", "out"} <= set(compiled.materialized)
    assert "c1" not in compiled.materialized          # fused into its max pool


def test_saved_network_runs_the_same(tmp_path):
    config = _config("int8", "int8", 4)
    rng = np.random.default_rng(5)
    net = random_network(rng, "int8", "int8", config.acc_bits)
    compiled = compile_network(net, config)
    compiled.save(tmp_path)
    loaded = CompiledNetwork.load(tmp_path)
    x = random_inputs(rng, net, 1)[0]
    a, _ = _emulate(compiled, x)
    b, _ = _emulate(loaded, x)
    assert bytes(a) == bytes(b)
    listing = (tmp_path / "program.asm").read_text()
    assert "; layer conv0 (conv + maxpool1)" in listing and "COMPUTE" in listing


def test_formats_must_match_the_engine():
    net = random_network(np.random.default_rng(0), "int8", "int8", 20)
    with pytest.raises(CompileError, match="quantized for int8 weights x int8 activations, the engine is built for "
                                           "int4 x int8"):
        compile_network(net, _config("int4", "int8", 4))


def test_layer_too_big_names_the_layer():
    config = _config("int8", "int8", 4, act_buffer_depth=64, acc_buffer_depth=16)
    net = random_network(np.random.default_rng(0), "int8", "int8", config.acc_bits, size=(3, 9, 40))
    with pytest.raises(CompileError, match="layer 'conv0' cannot be mapped onto this engine: one output row"):
        compile_network(net, config)


@pytest.mark.parametrize("weights", ["int8", "minifloat6"])
@pytest.mark.parametrize("order,max_rows", [("chunk", 1), ("chunk", 2), ("block", 1), ("block", 3)])
def test_every_tiling_gives_the_same_bytes(weights, order, max_rows):
    """Both loop orders and small tiles (many chunks) compute what the golden model computes."""
    config = _config(weights, weights, 4)
    rng = np.random.default_rng(3)
    net = random_network(rng, weights, weights, config.acc_bits)
    compiled = compile_network(net, config, order=order, max_rows=max_rows)
    orders = {e["plan"]["order"] for e in compiled.layers}
    assert order in orders and max(e["plan"]["rows"] for e in compiled.layers) <= max_rows
    x = random_inputs(rng, net, 1)
    golden = run_network(net, x, keep=True)
    dram, _ = _emulate(compiled, x[0])
    for name in compiled.materialized:
        np.testing.assert_array_equal(compiled.read_tensor(dram, name), golden[name][0], err_msg=name)
