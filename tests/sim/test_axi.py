"""The AXI models of sim/axi.py on Verilator, through the AxiCopy test design.

One build serves every test (the fault to inject is a register). Copies must match byte for byte under
several latencies and heavy random back-pressure; the design's own handshake counters must agree with the
model's; out-of-range bursts must come back SLVERR; every injected breach of the AXI rules must fail the run
with the model's message.
"""

import json
from xml.etree import ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from sim import runner
from sim.engine_harness import Traffic as MemoryTraffic
from sim.axi import AxiMemory, beat_addresses, crosses_page
from tests.sim.axi_copy import DONE, ERROR, REGISTERS, AxiCopy, Fault

SIZE = 0xF100      # not a whole number of 4 KiB pages, so that a burst can run past the end

# (src, dst, beats): lengths around the 16-beat burst, starts just below 4 KiB pages of either side.
COPIES = [
    (0x0000, 0x8000, 1),
    (0x0108, 0x9000, 2),
    (0x0200, 0xA008, 16),
    (0x0FF8, 0xB000, 17),           # src page ends after one beat
    (0x1F80, 0xBFF0, 33),           # both pages end inside the first bursts, at different beats
    (0x2008, 0xC000, 100),
    (0x3E00, 0xD3C8, 257),          # many blocks
    (0x6000, 0xE000, 256),          # page-aligned: one 256-beat burst when blocks are 256 long
    (0x5000, 0x5800, 0),            # nothing to do
]


@dataclass(frozen=True)
class Traffic(MemoryTraffic):
    """The memory's behaviour (latency 0 by default here) and how the AXI copy design drives the bus."""

    latency: int = 0
    block: int = 0            # AxiCopy's beats per block (0: 16)
    pieces: int = 0           # AxiCopy's beats per burst (0: one burst per block)
    throttle: bool = False    # AxiCopy holds RREADY and BREADY low, and pauses W, on about half the cycles


@dataclass
class CopyRun:
    initial: np.ndarray
    memory: np.ndarray
    copies: np.ndarray        # per copy: done, r_beats, w_beats, r_wait, b_wait (design), beats read, written (model)
    errors: list = field(default_factory=list)     # (kind, addr, beats) with kind "read" or "write"
    totals: tuple = ()        # the model's beats_read, beats_written, bursts_read, bursts_written, peak_reads,
                              # peak_writes, longest_burst
    refusals: list = field(default_factory=list)   # AxiLiteMaster's errors for a read and a write off the map


def _run(traffic: Traffic, copies, fault: Fault = Fault.NONE) -> dict:
    return {"size": SIZE, "latency": traffic.latency, "ready_stall": traffic.ready_stall,
            "valid_gap": traffic.valid_gap, "seed": traffic.seed, "registers": REGISTERS,
            "setup": {"fault": int(fault), "block": traffic.block, "pieces": traffic.pieces,
                      "throttle": int(traffic.throttle)},
            "copies": [list(c) for c in copies]}


def _simulate(work_dir: Path, runs: list[dict], seed: int) -> np.ndarray:
    """Run the plan on AxiCopy (one cocotb test per run); returns the initial memory."""
    work_dir.mkdir(parents=True, exist_ok=True)
    initial = np.random.default_rng(seed + 100).integers(0, 256, SIZE, dtype=np.uint8)
    np.save(work_dir / "memory.npy", initial)
    (work_dir / "plan.json").write_text(json.dumps({"runs": runs}))
    design = runner.build(AxiCopy(), "axi-copy")
    runner.run(design, "sim.tb.axi_copy_tb", work_dir, env={
        "TB_PLAN": str(work_dir / "plan.json"), "TB_MEMORY": str(work_dir / "memory.npy"),
        "TB_RESULT": str(work_dir)})
    return initial


def run_copies(work_dir: Path, copies, traffic: Traffic) -> CopyRun:
    initial = _simulate(work_dir, [_run(traffic, copies)], traffic.seed)
    result = np.load(work_dir / "run-0.npz")
    errors = [("read" if k == 0 else "write", int(a), int(n)) for k, a, n in result["errors"]]
    return CopyRun(initial, result["memory"], result["copies"], errors, tuple(int(x) for x in result["totals"]),
                   [str(x) for x in result["refusals"]])


def expected_memory(initial: np.ndarray, copies) -> np.ndarray:
    mem = initial.copy()
    for src, dst, beats in copies:
        mem[dst:dst + 8 * beats] = mem[src:src + 8 * beats]
    return mem


def assert_same_memory(expected: np.ndarray, got: np.ndarray):
    wrong = np.flatnonzero(expected != got)
    if wrong.size:
        at = int(wrong[0])
        raise AssertionError(f"{wrong.size} bytes differ, first at 0x{at:x}: expected "
                             f"{expected[at:at + 8].tobytes().hex()}, got {got[at:at + 8].tobytes().hex()}")


TRAFFIC = [Traffic(latency=0), Traffic(latency=1), Traffic(latency=7)] + [
    Traffic(latency=seed % 4, ready_stall=0.6, valid_gap=0.5, seed=seed, throttle=seed > 1) for seed in (1, 2, 3)] + [
    Traffic(latency=7, pieces=3), Traffic(latency=2, ready_stall=0.5, valid_gap=0.5, seed=4, pieces=5, throttle=True),
    Traffic(latency=3, ready_stall=0.3, valid_gap=0.3, seed=5, block=256, throttle=True)]


def _name(t: Traffic) -> str:
    extra = (f"-block{t.block}" if t.block else "") + (f"-pieces{t.pieces}" if t.pieces else "")
    return f"lat{t.latency}-stall{t.ready_stall}-gap{t.valid_gap}-seed{t.seed}{extra}" + "-throttle" * t.throttle


@pytest.mark.parametrize("traffic", TRAFFIC, ids=_name)
def test_copies_match(traffic, tmp_path):
    run = run_copies(tmp_path, COPIES, traffic)
    assert_same_memory(expected_memory(run.initial, COPIES), run.memory)
    assert run.errors == []
    for (src, dst, beats), (done, r_beats, w_beats, r_wait, b_wait, read, written) in zip(COPIES, run.copies):
        where = f"copy of {beats} beats from 0x{src:x}"
        assert done == DONE, f"{where}: done register 0x{done:x}"     # no error, every RLAST in place
        # The design counts its own handshakes: the model must have seen exactly the same ones.
        assert r_beats == w_beats == read == written == beats, where
        if not beats or traffic.pieces:
            continue        # with several bursts per block, answers to early ones may wait before the count
        if traffic.ready_stall == traffic.valid_gap == 0:
            # Latency L means L idle cycles: the answer is taken L + 1 edges after the request.
            assert (r_wait, b_wait) == (traffic.latency + 1,) * 2, where
        else:
            assert r_wait >= traffic.latency + 1 and b_wait >= traffic.latency + 1, where
    assert run.refusals == ["ctrl: read of 0xfc answered SLVERR (2)", "ctrl: write to 0xfc answered SLVERR (2)"]
    total = sum(c[2] for c in COPIES)
    beats_read, beats_written, bursts_read, bursts_written, peak_reads, peak_writes, longest = run.totals
    assert (beats_read, beats_written) == (total, total)
    piece = traffic.pieces or traffic.block or 16
    assert longest == piece
    assert bursts_read == bursts_written >= sum(-(-c[2] // piece) for c in COPIES)
    if traffic.pieces:
        # A 16-beat block in bursts of `pieces` beats: that many requests wait in the model at once.
        assert peak_reads == peak_writes == -(-16 // piece), (peak_reads, peak_writes)
    else:
        assert peak_reads == peak_writes == 1


def test_out_of_range_is_slverr(tmp_path):
    copies = [
        (SIZE + 0x100, 0x1000, 4),      # read beyond the memory: SLVERR, zeros written
        (0x2000, SIZE - 16, 4),         # one write burst whose last two beats fall outside: SLVERR, dropped
        (0x3000, 0x4000, 3),            # a clean copy afterwards clears the error bit
    ]
    run = run_copies(tmp_path, copies, Traffic(latency=2, ready_stall=0.3, valid_gap=0.3, seed=9))
    expected = run.initial.copy()
    expected[0x1000:0x1000 + 32] = 0
    expected[0x4000:0x4000 + 24] = run.initial[0x3000:0x3000 + 24]
    assert_same_memory(expected, run.memory)
    assert run.errors == [("read", SIZE + 0x100, 4), ("write", SIZE - 16, 4)]
    assert [int(c[0]) for c in run.copies] == [DONE | ERROR, DONE | ERROR, DONE]


FAULTS = {
    Fault.FIXED_BURST: (0, "AR: burst at 0x0 (4 beats): burst type must be INCR (1), not FIXED (0)"),
    Fault.NARROW: (0, "AR: burst at 0x0 (4 beats): size must be 3 (8-byte beats, the bus width), not 2"),
    Fault.CROSS_4K: (0xFF0, "AR: burst at 0xff0 (4 beats): crosses a 4 KiB boundary (last byte 0x100f)"),
    Fault.EARLY_WLAST: (0, "W: wlast on beat 3 of the 4-beat write burst at 0x8000 (must be on beat 4)"),
    Fault.NO_WLAST: (0, "W: wlast missing on beat 4, the last of the 4-beat write burst at 0x8000"),
    Fault.UNSTABLE_AR: (0, "AR: payload changed while valid was high and ready low: addr=0x0"),
    Fault.UNSTABLE_W: (0, "W: payload changed while valid was high and ready low"),
    Fault.AWVALID_DROP: (0, "AW: valid went low before ready while offering addr=0x8000"),
}


def test_protocol_breaches_fail_the_run(tmp_path, monkeypatch):
    """Each fault is one cocotb test of a single simulation; each must fail with the model's message."""
    # Back-pressure on the address and data channels gives the stability faults a chance to show.
    traffic = Traffic(ready_stall=0.7, seed=4)
    runs = [_run(traffic, [(src, 0x8000, 4)] * 4, fault) for fault, (src, _) in FAULTS.items()]
    with pytest.raises(RuntimeError, match=rf"axi_copy_tb failed \({len(FAULTS)} of {len(FAULTS)} tests\)"):
        _simulate(tmp_path, runs, traffic.seed)
    failures = {case.get("name"): case.find("failure")
                for case in ElementTree.parse(tmp_path / "results.xml").iter("testcase")}
    for run, (fault, (_, message)) in enumerate(FAULTS.items()):
        failure = failures[f"copies/run={run}"]
        assert failure is not None, f"{fault.name}: the run passed"
        assert failure.get("message").startswith(f"data {message}"), f"{fault.name}: {failure.get('message')}"


def test_beat_addresses():
    assert beat_addresses(0x1000, 3, 8) == [0x1000, 0x1008, 0x1010]
    assert beat_addresses(0x1003, 3, 8) == [0x1003, 0x1008, 0x1010]     # only the first beat is unaligned
    assert not crosses_page(0xF80, 16, 8)
    assert crosses_page(0xF88, 16, 8)
    assert not crosses_page(0x0, 256, 16)
    assert not crosses_page(0x8, 256, 16)    # the beats cover 0x0..0xfff
    assert crosses_page(0x10, 256, 16)


class _FakePort:
    def __init__(self, width):
        self.width = width

    def __len__(self):
        return self.width


class _FakeDesign:
    """Ports by name, enough for AxiMemory to check its arguments before it starts any coroutine."""

    clk = _FakePort(1)

    def __getattr__(self, name):
        if not name.startswith("data__"):
            raise AttributeError(name)
        return _FakePort(64 if name.endswith("__data") else 8)


@pytest.mark.parametrize("kwargs,message", [
    ({"size": 100}, r"Memory size must be a positive multiple of 8 bytes \(the bus width\), not 100"),
    ({"size": 64, "latency": -1}, r"Latency must be a non-negative integer, not -1"),
    ({"size": 64, "ready_stall": 1.0}, r"ready_stall must be a probability in \[0, 1\), not 1.0"),
    ({"size": 64, "memory": bytearray(32)}, r"Memory must be a bytearray or a uint8 numpy array of 64 bytes"),
])
def test_memory_arguments_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AxiMemory(_FakeDesign(), "data", **kwargs)


def test_memory_names_a_missing_port():
    with pytest.raises(AttributeError, match=r"The design has no port 'dma__ar__valid'; AxiMemory expects"):
        AxiMemory(_FakeDesign(), "dma", 64)
