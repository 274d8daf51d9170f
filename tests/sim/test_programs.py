"""The random programs of sim/programs/ on the emulator (no RTL): legal ones run clean, give the memory an
independent reference predicts, and give it under any timing; illegal ones stop with the error they name.

The reference (``sim.programs.reference_run``) runs a program one instruction at a time with its own loops
for address generation and padding and the golden model (``sw.golden``); it shares no code with
``sw/emulator/state.py``. Races are looked for two ways: the token analysis (``check_schedule``), and
the final memory under memory latencies 1 and 40 and under two timings of random instruction costs, engine
speeds and queue depths.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import TOKEN_QUEUE_DEPTH, AluOp, Buffer, ErrorCode, Opcode, Queue, encode
from hw.spec.layout import line_bytes, output_line_bytes
from sim.programs import (ILLEGAL_KINDS, Program, check_schedule, illegal_program, one_mac_program, place,
                          random_program, reference_run)
from sw.emulator import Emulator
from sw.emulator.timing import Timing

SHAPES = [(1, 1), (2, 4), (4, 4), (4, 8), (8, 8)]
FORMATS = [("int8", "int8"), ("int4", "int8"), ("uint8", "uint8"), ("minifloat6", "minifloat6"),
           ("fp8_e4m3", "fp8_e4m3"), ("fp8_e5m2", "fp8_e5m2"), ("minifloat4", "minifloat4")]

#: Buffer depths and bus widths the configurations cycle through (omitted fields keep their defaults).
VARIANTS = [
    dict(act_buffer_depth=64, weight_buffer_depth=128, acc_buffer_depth=64, param_buffer_depth=8, dma_bits=64),
    dict(act_buffer_depth=256, weight_buffer_depth=256, acc_buffer_depth=128, param_buffer_depth=16, dma_bits=32),
    # max_reduction = rows: accumulators exact for one column only, longer sums wrap.
    # Two PARAM lines: no software pipelining.
    dict(act_buffer_depth=128, weight_buffer_depth=512, acc_buffer_depth=32, param_buffer_depth=2, dma_bits=128,
         max_reduction=None),
    dict(dma_bits=64),
]


def _config(index: int, shape, formats) -> AcceleratorConfig:
    variant = dict(VARIANTS[index % len(VARIANTS)])
    if "max_reduction" in variant:      # one column's products: reduction_rows (rows, or twice that packed)
        variant["max_reduction"] = AcceleratorConfig(rows=shape[0], cols=shape[1], weight_format=formats[0],
                                                     act_format=formats[1]).reduction_rows
    return AcceleratorConfig(rows=shape[0], cols=shape[1], weight_format=formats[0], act_format=formats[1],
                             **variant)


CONFIGS = [_config(i, shape, formats) for i, (shape, formats) in enumerate(itertools.product(SHAPES, FORMATS))]
#: Packed int4 engines (two codes per PE lane: reduction_rows = 2 * rows), after the others so their seeds stay.
CONFIGS += [_config(len(CONFIGS) + i, shape, formats) for i, (shape, formats) in
            enumerate([((2, 4), ("int4", "int4")), ((4, 8), ("int4", "int4")), ((1, 3), ("uint4", "int4")),
                       ((2, 4), ("int4", "uint4"))])]
PROGRAMS_PER_CONFIG = 12         # 35 configurations: 420 legal programs
ILLEGAL_PER_KIND = 3             # per configuration and kind: 735 illegal programs


def _name(config: AcceleratorConfig) -> str:
    fmt = config.acts.name if config.acts == config.weights else f"{config.weights.name}x{config.acts.name}"
    return f"{config.rows}x{config.cols}-{fmt}-a{config.act_buffer_depth}-bus{config.dma_bits}"


def _rng(config_index: int, seed: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([config_index, seed, salt])


# --- running ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ShuffledTiming:
    """Interleavings no memory latency gives: one engine much slower than the others, random instruction
    costs, short or long engine queues."""

    base: Timing
    rng: np.random.Generator
    queue_depth: int
    slow: dict

    dispatch_to_start = 2

    def fetch(self, opcode) -> int:
        return self.base.fetch(opcode)

    def start(self) -> None:
        self.base.start()

    def schedule(self, kind, fields, start):
        free, results = self.base.schedule(kind, fields, start)
        scale = self.slow.get(kind.queue, 1)
        cost = int(self.rng.integers(1, scale * (free - start) + 2))
        return start + cost, start + cost + int(self.rng.integers(0, results - free + 2))


def _run(program: Program, *, memory_latency: int = 4, shuffle: int | None = None):
    emulator = Emulator(program.config, program.dram, memory_latency=memory_latency)
    if shuffle is not None:
        rng = np.random.default_rng(shuffle)
        slow = {q: int(rng.choice([1, 2, 30])) for q in (Queue.LOAD, Queue.COMPUTE, Queue.STORE)}
        emulator.timing = _ShuffledTiming(emulator.timing, rng, int(rng.choice([1, 4, 16])), slow)
    status = emulator.run(program.program_addr, max_cycles=2_000_000)
    return status, bytes(emulator.dram)


def _explain(program: Program, dram: bytes, expected: bytes) -> str:
    """The first STORE line that differs (decoded), or the first differing byte, then the program."""
    c = program.config
    lines = []
    for record in program.stores:
        for n, (at, data) in enumerate(record.lines):
            if dram[at:at + len(data)] != data:
                got = int.from_bytes(dram[at:at + len(data)], "little")
                codes = [(got >> (i * c.acts.bits)) & ((1 << c.acts.bits) - 1) for i in range(c.cols)]
                lines.append(f"STORE {record.index}, line {n} at {at:#x}: expected codes "
                             f"{record.codes[n].tolist()}, got {codes}")
                break
        if lines:
            break
    if not lines:
        bad = np.flatnonzero(np.frombuffer(dram, np.uint8) != np.frombuffer(expected, np.uint8))
        lines.append(f"{bad.size} bytes differ outside STORE outputs, first at {int(bad[0]):#x}" if bad.size
                     else "memory as expected")
    return "\n".join([program.description, *lines, program.listing()])


# --- legal programs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(PROGRAMS_PER_CONFIG))
@pytest.mark.parametrize("config_index", range(len(CONFIGS)), ids=[_name(c) for c in CONFIGS])
def test_legal_program(config_index, seed):
    _legal(CONFIGS[config_index], config_index, seed)


#: Multi-format builds: every tile of a program draws its weight, activation and output formats from the set.
MULTI_CONFIGS = [
    AcceleratorConfig(rows=4, cols=4, formats=("int4", "int8", "minifloat6"), **VARIANTS[0]),
    AcceleratorConfig(rows=2, cols=4, formats=("int8", "fp8_e4m3"), **VARIANTS[1]),
    AcceleratorConfig(rows=8, cols=8, formats=("minifloat4", "fp8_e5m2", "int4", "uint8"), **VARIANTS[3]),
    AcceleratorConfig(rows=4, cols=8, formats=("int8", "minifloat6"), **{**VARIANTS[2], "max_reduction": 4}),
    # Packing per layer (cols >= 2 * rows): int4 x int4 (and uint4) tiles reduce over 2 * rows, the others rows.
    AcceleratorConfig(rows=2, cols=4, formats=("int4", "int8", "minifloat6"), **VARIANTS[0]),
    AcceleratorConfig(rows=4, cols=8, formats=("int8", "int4", "uint4"), **VARIANTS[1]),
]
assert [c.packs_per_layer for c in MULTI_CONFIGS] == [False] * 4 + [True] * 2


@pytest.mark.parametrize("seed", range(PROGRAMS_PER_CONFIG))
@pytest.mark.parametrize("config_index", range(len(MULTI_CONFIGS)),
                         ids=[f"{c.rows}x{c.cols}-{','.join(c.formats)}" for c in MULTI_CONFIGS])
def test_legal_multi_format_program(config_index, seed):
    _legal(MULTI_CONFIGS[config_index], 100 + config_index, seed)


def _legal(config: AcceleratorConfig, config_index: int, seed: int) -> None:
    program = random_program(config, _rng(config_index, seed))
    assert program.expected_error is ErrorCode.NONE

    # The generator's own proof: every pop fed, no queue can overflow, no unordered conflicting pair.
    problems = check_schedule(config, program.words, program.program_addr)
    assert not problems, "\n".join([program.description, *problems[:10], program.listing()])

    runs = {"latency 1": _run(program, memory_latency=1), "latency 40": _run(program, memory_latency=40),
            **{f"shuffled {k}": _run(program, shuffle=1000 * config_index + 10 * seed + k) for k in range(2)}}
    for name, (status, dram) in runs.items():
        where = f"{name}: {status}\n{program.description}\n{program.listing()}"
        assert status.done and status.error is ErrorCode.NONE, where
        assert status.pc == program.error_pc == len(program.words) - 1, where
        assert status.instructions == len(program.words) - 1, where
        assert status.macs == program.expected_macs, where
        assert status.nonfinite == program.expected_nonfinite, where
    # Race-free: the memory does not depend on timing.
    reference = runs["latency 1"][1]
    for name, (_, dram) in runs.items():
        assert dram == reference, f"{name} differs from latency 1: {_explain(program, dram, reference)}"
    # Right: the memory is what the independent reference predicts.
    assert reference == program.expected_dram, _explain(program, reference, program.expected_dram)


def test_random_program_is_reproducible_and_well_placed():
    config = CONFIGS[10]
    a, b = (random_program(config, np.random.default_rng(7)) for _ in range(2))
    assert a.words == b.words and a.dram == b.dram and a.description == b.description
    bus = config.dma_bits // 8
    for seed in range(20):
        p = random_program(config, np.random.default_rng(seed), max_instructions=30)
        assert 12 <= len(p.words) <= 30
        assert len(p.dram) == p.dram_size == 1 << 16
        assert p.program_addr % bus == 0
        assert p.words[-1] == encode(Opcode.FINISH)
        image = bytes(p.dram[p.program_addr:p.program_addr + 16 * len(p.words)])
        assert image == b"".join(w.to_bytes(16, "little") for w in p.words)
        for record in p.stores:
            for at, data in record.lines:
                assert at % bus == 0 and at + len(data) <= p.dram_size
        assert len(p.listing().splitlines()) == len(p.words)


def test_reference_of_a_hand_written_program():
    """A 1x1 int8 GEMM whose answer is known by hand: 3*5 + 2 = 17, times 3 shifted right by 1 -> 25.5 -> 26."""
    config, dram, words = one_mac_program(bias=2, multiplier=3, shift=1)
    assert check_schedule(config, words) == []
    ref = reference_run(config, dram)
    assert ref.dram[600:604] == bytes([26, 0, 0, 0])
    assert [r.index for r in ref.stores] == [5] and ref.macs == 1
    emulator = Emulator(config, dram)
    assert emulator.run().done and bytes(emulator.dram) == bytes(ref.dram)


# --- the token analysis -----------------------------------------------------------------------------------

def test_check_schedule_finds_races_without_tokens():
    for seed in range(10):
        config = CONFIGS[seed * 3]
        p = random_program(config, np.random.default_rng(seed))
        bare = [w & ~0xF0 if w != encode(Opcode.FINISH) else w for w in p.words]
        problems = check_schedule(config, bare, p.program_addr)
        assert any("race" in s for s in problems), p.description


def _gemm_words(pushes: int, pops: int) -> list[int]:
    """LOADs of one activation line each, then COMPUTEs that each use the next line."""
    loads = [encode(Opcode.LOAD, buffer=int(Buffer.ACT), sram_addr=k, dram_addr=4096, y_size=1, x_size=1,
                    push_next=1) for k in range(pushes)]
    computes = [encode(Opcode.COMPUTE, acc_addr=k, act_addr=k, weight_addr=0, out_h=1, out_w=1, stride=1,
                       dilation=1, kh=1, kw=1, pop_prev=1) for k in range(pops)]
    return loads + computes + [encode(Opcode.FINISH)]


def test_check_schedule_counts_tokens():
    config = CONFIGS[0]
    assert check_schedule(config, _gemm_words(TOKEN_QUEUE_DEPTH, TOKEN_QUEUE_DEPTH)) == []
    problems = check_schedule(config, _gemm_words(TOKEN_QUEUE_DEPTH + 1, TOKEN_QUEUE_DEPTH + 1))
    assert problems == [f"instruction {TOKEN_QUEUE_DEPTH} may push onto a full load->compute queue"]
    problems = check_schedule(config, _gemm_words(1, 2))
    assert problems == ["instruction 2 pops from the load->compute queue, which no earlier push feeds"]


# --- illegal programs ------------------------------------------------------------------------------------

#: Cycles within which every illegal program must stop (the legal prefixes take well under 5000).
ERROR_CYCLES = 20_000


@pytest.mark.parametrize("seed", range(ILLEGAL_PER_KIND))
@pytest.mark.parametrize("kind", list(ILLEGAL_KINDS))
@pytest.mark.parametrize("config_index", range(len(CONFIGS)), ids=[_name(c) for c in CONFIGS])
def test_illegal_program(config_index, kind, seed):
    _illegal(CONFIGS[config_index], config_index, kind, seed)


@pytest.mark.parametrize("seed", range(ILLEGAL_PER_KIND))
@pytest.mark.parametrize("kind", list(ILLEGAL_KINDS))
@pytest.mark.parametrize("config_index", range(len(MULTI_CONFIGS)),
                         ids=[f"{c.rows}x{c.cols}-{','.join(c.formats)}" for c in MULTI_CONFIGS])
def test_illegal_multi_format_program(config_index, kind, seed):
    _illegal(MULTI_CONFIGS[config_index], 100 + config_index, kind, seed)


def test_format_index_outside_the_set_is_a_bad_field():
    """COMPUTE and SETPP may only select formats of the build's set: index 0 in a single-format build."""
    seen = set()
    for config in (CONFIGS[0], MULTI_CONFIGS[0]):
        for seed in range(200):
            p = illegal_program(config, np.random.default_rng(seed), "bad_field")
            if "of a set of" in p.description:
                seen.add((len(config.act_formats), p.description.split(": ")[2].split("=")[0]))
    assert seen == {(n, w) for n in (1, 3) for w in ("COMPUTE weight_format", "COMPUTE act_format", "SETPP format")}


def _illegal(config: AcceleratorConfig, config_index: int, kind: str, seed: int) -> None:
    program = illegal_program(config, _rng(config_index, seed, salt=1 + list(ILLEGAL_KINDS).index(kind)), kind)
    assert program.expected_error is ILLEGAL_KINDS[kind]
    assert program.expected_dram is None and program.stores == []
    for latency in (1, 40):
        emulator = Emulator(config, program.dram, memory_latency=latency)
        status = emulator.run(program.program_addr, max_cycles=ERROR_CYCLES)
        where = f"{program.description}\n{program.listing()}"
        assert not status.done, where
        assert status.error is program.expected_error, f"got {status.error.name}: {where}"
        assert status.pc == program.error_pc, f"error at {status.pc}: {where}"
        assert status.cycles <= ERROR_CYCLES


def test_illegal_program_covers_every_kind_of_fault():
    seen = {kind: set() for kind in ILLEGAL_KINDS}
    for seed in range(150):
        for kind in ILLEGAL_KINDS:
            p = illegal_program(CONFIGS[seed % len(CONFIGS)], np.random.default_rng(seed), kind)
            what = p.description.split(": ")[2].split(";")[0]
            seen[kind].add(what.split()[0])
    assert {"opcode"} == seen["opcode"]
    assert {"LOAD", "SETPP", "STORE", "FINISH"} <= seen["dependency"]
    assert {"LOAD", "COMPUTE", "ALU", "SETPP", "STORE", "WEIGHT", "PARAM", "ACT"} <= seen["bad_field"]
    assert {"ACT", "WEIGHT", "PARAM", "COMPUTE", "ALU", "STORE"} <= seen["sram_range"]
    assert {"LOAD", "STORE", "no"} <= seen["dram_range"]
    assert {"load", "compute", "store", "a"} <= seen["deadlock"]
    assert {str(TOKEN_QUEUE_DEPTH + 1)} == seen["token_overflow"]


def test_program_arguments_are_checked():
    config = CONFIGS[0]
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"^Illegal-program kind must be one of opcode, dependency, bad_field, "
                                         r"sram_range, dram_range, deadlock, token_overflow, not 'parity'$"):
        illegal_program(config, rng, "parity")
    with pytest.raises(TypeError, match=r"^Configuration must be an AcceleratorConfig, not 4$"):
        random_program(4, rng)
    with pytest.raises(ValueError, match=r"^max_instructions must be an integer of at least 12, not 5$"):
        random_program(config, rng, max_instructions=5)


# --- emulator bugs found by these programs ----------------------------------------------------------------

def test_emulator_alu_repeated_destination():
    """ALU runs "one element after the other" (docs/isa.md), so a destination line met twice gets both
    updates. sw/emulator/state.py ``alu`` only goes element by element when source and destination share a
    line; with repeated destination lines (dst_stride < x_size) and a separate source it updates all at once
    and keeps the last update only. Once fixed, set ``sim.programs.REPEATED_ALU_DESTINATIONS = True``."""
    config = AcceleratorConfig(rows=1, cols=1, act_buffer_depth=16, weight_buffer_depth=16, acc_buffer_depth=16,
                               param_buffer_depth=1, dma_bits=32)
    dram = bytearray(1024)
    dram[512:528] = bytes([1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0])      # ACT lines: 1, 2, 3, 4
    dram[528:532] = bytes([1, 0, 0, 0])                                          # WEIGHT: 1
    dram[544:560] = (0).to_bytes(8, "little") + (1).to_bytes(4, "little") + bytes(4)   # PARAM: x1
    assert line_bytes(Buffer.ACT, config) == output_line_bytes(config) == 4
    words = [
        encode(Opcode.LOAD, buffer=int(Buffer.PARAM), sram_addr=0, dram_addr=544, y_size=1, x_size=1),
        encode(Opcode.LOAD, buffer=int(Buffer.WEIGHT), sram_addr=0, dram_addr=528, y_size=1, x_size=1),
        encode(Opcode.LOAD, buffer=int(Buffer.ACT), sram_addr=0, dram_addr=512, y_size=1, x_size=4, push_next=1),
        # acc[0..3] = 1, 2, 3, 4; acc[8] = 0
        encode(Opcode.COMPUTE, acc_addr=0, act_addr=0, weight_addr=0, out_h=1, out_w=4, stride=1, dilation=1,
               kh=1, kw=1, pop_prev=1),
        encode(Opcode.COMPUTE, acc_addr=8, act_addr=0, weight_addr=0, out_h=1, out_w=1, stride=1, dilation=1,
               kh=1, kw=1),
        # acc[8] += acc[0]; acc[8] += acc[1]; acc[8] += acc[2]; acc[8] += acc[3]  ->  1 + 1 + 2 + 3 + 4 = 11
        encode(Opcode.ALU, op=int(AluOp.ADD), dst_addr=8, src_addr=0, y_size=4, x_size=1, dst_stride=0,
               src_stride=1, src_step=1, push_next=1),
        encode(Opcode.SETPP, zero_point=0, clamp_lo=0x80, clamp_hi=0x7F),
        encode(Opcode.STORE, acc_addr=8, dram_addr=600, y_size=1, x_size=1, param_addr=0, pop_prev=1),
        encode(Opcode.FINISH),
    ]
    place(dram, words)
    assert check_schedule(config, words) == []
    assert reference_run(config, dram).dram[600] == 11
    emulator = Emulator(config, dram)
    assert emulator.run().done
    assert emulator.dram[600] == 11, f"emulator stored {emulator.dram[600]} (only the last update, 1 + 4 = 5)"
