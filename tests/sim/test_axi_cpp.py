"""The compiled testbench's C++ AXI4 memory (sim/cpp/axi_memory.h) on the AxiCopy test design, held to the checks
that tests/sim/test_axi.py holds sim/axi.py to: copies byte for byte under latency and back-pressure, the answer
``latency + 1`` edges after the request, SLVERR beyond the memory, every injected breach of the AXI rules caught
with the Python model's own message, and the AXI4-Lite host refusing answers other than OKAY."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from sim.engine_tb_build import build_compiled
from sim.toolchain import verilog_of
from tests.sim.axi_copy import DONE, ERROR, REGISTERS, AxiCopy, Fault
from tests.sim.test_axi import COPIES, FAULTS, SIZE, TRAFFIC, Traffic, _name, assert_same_memory, expected_memory

MAIN = Path(__file__).resolve().parent / "cpp" / "axi_copy_tb.cpp"


class Breach(AssertionError):
    """The testbench stopped on a breach of the AXI rules (exit status 3)."""


def _testbench() -> Path:
    design = AxiCopy()
    header = [f"constexpr unsigned BEAT_BYTES = {len(design.data.r.data) // 8};"]
    header += [f"constexpr uint32_t REG_{name.upper()} = 0x{addr:02x};" for name, addr in REGISTERS.items()]
    return build_compiled("axi-copy-tb", verilog_of(design), MAIN, "#pragma once\n#include <cstdint>\n"
                          + "\n".join(header) + "\n", opt="-O0").executable


def run_copies(work_dir: Path, copies, traffic: Traffic, fault: Fault = Fault.NONE):
    """(initial memory, memory after, per copy [done, r_beats, w_beats, r_wait, b_wait], errors, refusals)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    initial = np.random.default_rng(traffic.seed + 100).integers(0, 256, SIZE, dtype=np.uint8)
    (work_dir / "memory.bin").write_bytes(initial.tobytes())
    plan = [f"{int(fault)} {traffic.block} {traffic.pieces} {int(traffic.throttle)}"] + [
        f"{src} {dst} {beats}" for src, dst, beats in copies]
    (work_dir / "plan.txt").write_text("\n".join(plan) + "\n")
    done = subprocess.run([str(_testbench()), "--dir", str(work_dir), "--latency", str(traffic.latency),
                           "--ready-stall", repr(traffic.ready_stall), "--valid-gap", repr(traffic.valid_gap),
                           "--seed", str(traffic.seed)], capture_output=True, text=True, timeout=300)
    if done.returncode == 3:
        raise Breach(done.stderr.strip())
    assert done.returncode == 0, done.stderr
    result = json.loads((work_dir / "results.json").read_text())
    memory = np.frombuffer((work_dir / "memory.out").read_bytes(), np.uint8)
    errors = [tuple(e) for e in result["errors"]]
    return initial, memory, result["copies"], errors, result["refusals"]


@pytest.mark.parametrize("traffic", TRAFFIC, ids=_name)
def test_copies_match(traffic, tmp_path):
    initial, memory, rows, errors, refusals = run_copies(tmp_path, COPIES, traffic)
    assert_same_memory(expected_memory(initial, COPIES), memory)
    assert errors == []
    for (src, dst, beats), (done, r_beats, w_beats, r_wait, b_wait) in zip(COPIES, rows):
        where = f"copy of {beats} beats from 0x{src:x}"
        assert done == DONE, f"{where}: done register 0x{done:x}"
        assert r_beats == w_beats == beats, where
        if not beats or traffic.pieces:
            continue
        if traffic.ready_stall == traffic.valid_gap == 0:
            assert (r_wait, b_wait) == (traffic.latency + 1,) * 2, where
        else:
            assert r_wait >= traffic.latency + 1 and b_wait >= traffic.latency + 1, where
    assert refusals == ["ctrl: read of 0xfc answered SLVERR (2)", "ctrl: write to 0xfc answered SLVERR (2)"]


def test_out_of_range_is_slverr(tmp_path):
    copies = [(SIZE + 0x100, 0x1000, 4), (0x2000, SIZE - 16, 4), (0x3000, 0x4000, 3)]
    initial, memory, rows, errors, _ = run_copies(tmp_path, copies,
                                                  Traffic(latency=2, ready_stall=0.3, valid_gap=0.3, seed=9))
    expected = initial.copy()
    expected[0x1000:0x1000 + 32] = 0
    expected[0x4000:0x4000 + 24] = initial[0x3000:0x3000 + 24]
    assert_same_memory(expected, memory)
    assert errors == [("read", SIZE + 0x100, 4), ("write", SIZE - 16, 4)]
    assert [row[0] for row in rows] == [DONE | ERROR, DONE | ERROR, DONE]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_protocol_breaches_stop_the_run(fault, tmp_path):
    src, message = FAULTS[fault]
    with pytest.raises(Breach) as caught:
        run_copies(tmp_path, [(src, 0x8000, 4)] * 4, Traffic(ready_stall=0.7, seed=4), fault)
    assert str(caught.value).startswith(f"data {message}"), str(caught.value)
