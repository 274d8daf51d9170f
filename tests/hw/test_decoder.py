"""The RTL decoder raises exactly the error the emulator's checks raise, for random and corrupted words."""

from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.decoder import InstructionDecoder
from hw.spec.config import AcceleratorConfig
from hw.spec.isa import HEADER, INSTRUCTION_BITS, KINDS, ErrorCode
from sw.emulator.checks import decode_checked

CONFIGS = [
    AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", act_buffer_depth=256,
                      weight_buffer_depth=64, acc_buffer_depth=128, param_buffer_depth=4),
    AcceleratorConfig(rows=8, cols=4, weight_format="fp8_e4m3", act_format="minifloat6", act_buffer_depth=64,
                      weight_buffer_depth=128, acc_buffer_depth=32, param_buffer_depth=2, dma_bits=128),
    # A small part's engine (boards/top.py, the iCEBreaker's): every check in one or two stages, the same latency.
    AcceleratorConfig(rows=1, cols=1, weight_format="int4", act_format="int4", act_buffer_depth=16,
                      weight_buffer_depth=16, acc_buffer_depth=16, param_buffer_depth=2, dma_bits=64,
                      max_reduction=64, decode_chains=16),
    # The kinds' products of fields through shared multipliers (AcceleratorConfig.decode_shared).
    AcceleratorConfig(rows=1, cols=1, weight_format="int4", act_format="int4", act_buffer_depth=256,
                      weight_buffer_depth=256, acc_buffer_depth=256, param_buffer_depth=16, dma_bits=64,
                      max_reduction=64, decode_chains=4, decode_shared=True),
    AcceleratorConfig(rows=8, cols=4, weight_format="fp8_e4m3", act_format="minifloat6", act_buffer_depth=64,
                      weight_buffer_depth=128, acc_buffer_depth=32, param_buffer_depth=2, dma_bits=128,
                      decode_shared=True),
]
IDS = ["int8-4x4", "fp8xmf6-8x4-128bit", "int4-1x1-16-chains", "int4-1x1-shared", "fp8xmf6-8x4-shared"]


def _random_word(rng, kind, small: bool) -> int:
    word = int(kind.opcode)
    for f in HEADER[1:] + kind.fields:
        hi = f.max - f.min
        if small and f.bits > 4:
            hi = min(hi, int(rng.choice([3, 16, 64, 300])))
        value = int(rng.integers(0, hi + 1))
        if rng.random() < 0.1:
            value = 0
        word |= value << kind.offsets[f.name]
    if rng.random() < 0.05:
        word |= 1 << int(rng.integers(kind.used_bits, INSTRUCTION_BITS))
    return word


def _words(rng, n):
    kinds = list(KINDS.values())
    words = [_random_word(rng, kinds[int(rng.integers(len(kinds)))], small=rng.random() < 0.8) for _ in range(n)]
    words += [int(rng.integers(0, 1 << 62)) << 4 | op for op in (0, 7, 9, 15)]
    return words


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_decoder_matches_emulator_checks(config):
    rng = np.random.default_rng(config.rows)
    dram_size = 1 << 14
    words = _words(rng, 3000)
    expected = [int(decode_checked(w, config, dram_size)[2]) for w in words]
    dut = InstructionDecoder(config)
    got = []

    async def bench(ctx):
        # One word per cycle: the result of word i is on the outputs from cycle i + latency (pipelined checks).
        ctx.set(dut.en, 1)
        ctx.set(dut.dram_size, dram_size)
        for i in range(len(words) + dut.latency - 1):
            if i < len(words):
                ctx.set(dut.word, words[i])
            else:
                ctx.set(dut.en, 0)
            await ctx.tick()
            if i >= dut.latency - 1:
                assert ctx.get(dut.valid)
                got.append(ctx.get(dut.error))
        for _ in range(3):                  # the last result holds until the next word
            await ctx.tick()
            assert ctx.get(dut.valid) and ctx.get(dut.error) == got[-1]

    _assert_decodes_like_the_emulator(dut, bench, words, expected, got)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_negative_param_reads_a_second_param_line(config):
    """STORE negative_param reads PARAM lines param_addr and param_addr + 1: on the last line it is SRAM_RANGE, in
    the decoder as in the emulator (a legal STORE otherwise, so no other check comes first)."""
    from hw.spec.isa import Opcode, encode

    depth = config.param_buffer_depth
    cases = [(a, n) for a in (0, depth - 2, depth - 1, depth) if a >= 0 for n in (0, 1)]
    words = [encode(Opcode.STORE, acc_addr=0, dram_addr=0, y_size=1, x_size=1, param_addr=a, negative_param=n)
             for a, n in cases]
    expected = [ErrorCode.SRAM_RANGE if a + n >= depth else ErrorCode.NONE for a, n in cases]
    assert [decode_checked(w, config, 1 << 14)[2] for w in words] == expected
    dut = InstructionDecoder(config)
    got = []

    async def bench(ctx):
        ctx.set(dut.dram_size, 1 << 14)
        for word in words:
            ctx.set(dut.en, 1)
            ctx.set(dut.word, word)
            await ctx.tick()
            ctx.set(dut.en, 0)
            for _ in range(dut.latency):
                await ctx.tick()
            got.append(ErrorCode(ctx.get(dut.error)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == expected


#: Decoders whose products of fields are shift-and-add loops (AcceleratorConfig.decode_serial), alone and with shared
#: multipliers: the iCEBreaker's engine (boards/top.py), a deeper one, a 128-bit minifloat one with two chains a stage.
SERIAL = [
    AcceleratorConfig(rows=2, cols=2, weight_format="int4", act_format="int4", act_buffer_depth=256,
                      weight_buffer_depth=256, acc_buffer_depth=256, param_buffer_depth=16, dma_bits=64,
                      max_reduction=64, decode_chains=4, decode_shared=True, decode_serial=True),
    AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", act_buffer_depth=4096,
                      weight_buffer_depth=1024, acc_buffer_depth=1024, param_buffer_depth=64, decode_serial=True),
    AcceleratorConfig(rows=8, cols=4, weight_format="fp8_e4m3", act_format="minifloat6", act_buffer_depth=64,
                      weight_buffer_depth=128, acc_buffer_depth=32, param_buffer_depth=2, dma_bits=128,
                      decode_shared=True, decode_serial=True),
]
SERIAL_IDS = ["int4-2x2-icebreaker-serial-shared", "int8-4x4-serial", "fp8xmf6-8x4-serial-shared"]


@pytest.mark.parametrize("config", SERIAL, ids=SERIAL_IDS)
def test_serial_decoder_matches_emulator_checks(config):
    """A word held from ``en`` on: ``valid`` drops, and rises ``decode_latency`` cycles after ``en`` with the error
    the emulator's checks raise (random and corrupted words, one at a time as the engine's fetch gives them)."""
    from hw.spec.microarchitecture import SERIAL_DECODE_LATENCY

    _check_held_words(config, config.rows + 7, 1000, SERIAL_DECODE_LATENCY)


def _check_held_words(config, seed: int, count: int, latency: int) -> None:
    """``count`` random and corrupted words, one at a time, against the emulator's checks; the decoder's latency
    is ``latency`` (the longest kind's, for a stepped decoder, whose words wait for their kind's)."""
    rng = np.random.default_rng(seed)
    dram_size = int(rng.choice([1 << 14, 1 << 17, (1 << 32) - 64]))
    words = _words(rng, count)
    expected = [int(decode_checked(w, config, dram_size)[2]) for w in words]
    dut = InstructionDecoder(config)
    assert dut.latency == config.decode_latency == latency
    got = []
    _assert_decodes_like_the_emulator(dut, _one_word_at_a_time(dut, dram_size, words, got, config), words,
                                      expected, got)


def _one_word_at_a_time(dut, dram_size: int, words: list[int], got: list, config=None):
    """A testbench that gives ``dut`` each word as the engine's fetch does (``en`` for a cycle, the word held) and
    appends its error code to ``got`` when ``valid`` rises, ``dut.latency`` cycles later (not before); with
    ``config``, its ``decode_latency_of`` the word's opcode."""
    async def bench(ctx):
        ctx.set(dut.dram_size, dram_size)
        for word in words:
            ctx.set(dut.word, word)
            ctx.set(dut.en, 1)
            await ctx.tick()
            ctx.set(dut.en, 0)
            latency = dut.latency if config is None else config.decode_latency_of(word & 0xF)
            for _ in range(latency - 1):
                assert not ctx.get(dut.valid)
                await ctx.tick()
            assert ctx.get(dut.valid)
            got.append(ctx.get(dut.error))
    return bench


def _assert_decodes_like_the_emulator(dut, bench, words, expected, got,
                                      outcomes=(ErrorCode.BAD_FIELD, ErrorCode.SRAM_RANGE, ErrorCode.NONE)):
    """Run ``bench`` (which appends the RTL's error code of each of ``words`` to ``got``) and compare with the
    emulator's ``expected`` codes, which must cover ``outcomes``."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert {ErrorCode(e) for e in expected} >= set(outcomes)
    bad = [(hex(w), e, g) for w, e, g in zip(words, expected, got) if e != g]
    assert not bad, f"{len(bad)} words decode differently (word, emulator, RTL): {bad[:5]}"



@pytest.mark.parametrize("config", [SERIAL[0], SERIAL[2]], ids=[SERIAL_IDS[0], SERIAL_IDS[2]])
def test_serial_dram_checks_of_load_and_store(config):
    """Serial decoders with shared products: LOAD and STORE words whose only question is the DRAM range (just
    inside, just outside) decode like the emulator's checks."""
    from hw.spec.isa import Opcode

    rng = np.random.default_rng(31)
    dram_size = 4096
    words, expected = [], []
    for i in range(160):
        kind = KINDS[(Opcode.LOAD, Opcode.STORE)[i % 2]]
        fields = {f.name: int(f.nonzero) for f in kind.fields}
        fields.update(x_size=int(rng.integers(1, 5)), y_size=int(rng.integers(1, 5)),
                      dram_stride=16 * int(rng.integers(0, 40)),
                      dram_addr=(dram_size - int(rng.integers(0, 800))) // 16 * 16)
        word = int(kind.opcode)
        for name, value in fields.items():
            word |= value << kind.offsets[name]
        words.append(word)
        expected.append(int(decode_checked(word, config, dram_size)[2]))
    for op in (Opcode.LOAD, Opcode.STORE):
        outcomes = {e for w, e in zip(words, expected) if w & 0xF == op}
        assert outcomes == {int(ErrorCode.NONE), int(ErrorCode.DRAM_RANGE)}, (op, outcomes)
    dut = InstructionDecoder(config)
    got = []
    _assert_decodes_like_the_emulator(dut, _one_word_at_a_time(dut, dram_size, words, got), words, expected, got,
                                      outcomes=(ErrorCode.NONE, ErrorCode.DRAM_RANGE))


@pytest.mark.parametrize("width", [1, 3, 5, 6])
def test_bit_test_comparisons_equal_the_comparisons(width):
    """The serial decoder's comparisons with buffer depths (hw/decoder.py ``_greater``, ``_at_least``): every value
    of ``width`` bits against 0 and the powers of two around it, as Python compares them."""
    from amaranth.hdl import Module, Signal

    from hw.decoder import _at_least, _greater

    x = Signal(width)
    limits = [1 << k for k in range(width + 2)]
    greater = [Signal(name=f"gt{limit}") for limit in [0, *limits]]
    at_least = [Signal(name=f"ge{limit}") for limit in limits]
    m = Module()
    m.d.comb += [s.eq(_greater(x, limit)) for s, limit in zip(greater, [0, *limits])]
    m.d.comb += [s.eq(_at_least(x, limit)) for s, limit in zip(at_least, limits)]
    wrong = []

    async def bench(ctx):
        for value in range(1 << width):
            ctx.set(x, value)
            await ctx.delay(1e-9)
            wrong.extend((value, ">", limit) for s, limit in zip(greater, [0, *limits])
                         if ctx.get(s) != (value > limit))
            wrong.extend((value, ">=", limit) for s, limit in zip(at_least, limits)
                         if ctx.get(s) != (value >= limit))
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not wrong, wrong[:5]


#: Decoders whose range checks are programs through one adder (AcceleratorConfig.decode_stepped): the iCEBreaker's
#: engine (boards/top.py), a deeper int8 one, a 128-bit multi-format one that packs per layer (tiles twice as long),
#: without decode_serial.
STEPPED = [
    AcceleratorConfig(rows=1, cols=1, weight_format="int4", act_format="int4", act_buffer_depth=256,
                      weight_buffer_depth=256, acc_buffer_depth=256, param_buffer_depth=16, dma_bits=64,
                      max_reduction=64, decode_chains=4, decode_shared=True, decode_serial=True, decode_stepped=True),
    AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", act_buffer_depth=4096,
                      weight_buffer_depth=1024, acc_buffer_depth=1024, param_buffer_depth=64, decode_serial=True,
                      decode_stepped=True),
    AcceleratorConfig(rows=4, cols=4, formats=("int4", "int8"), act_buffer_depth=64, weight_buffer_depth=128,
                      acc_buffer_depth=32, param_buffer_depth=2, dma_bits=128, decode_stepped=True),
]
#: And the iCEBreaker's with mid_clock (its range flags set the cycle after each addition, from the sum's register).
STEPPED.append(replace(STEPPED[0], mid_clock=True))
#: Each of them reading its operands two bits a cycle (decode_pairs): odd and even widths, with mid_clock too.
STEPPED += [replace(c, decode_pairs=True) for c in STEPPED]
STEPPED_IDS = ["int4-1x1-icebreaker-stepped", "int8-4x4-stepped", "int4+int8-4x4-128bit-stepped",
               "int4-1x1-icebreaker-stepped-mid"]
STEPPED_IDS += [f"{name}-pairs" for name in STEPPED_IDS]


@pytest.mark.parametrize("config", STEPPED, ids=STEPPED_IDS)
def test_stepped_decoder_matches_emulator_checks(config):
    """Random and corrupted words, one at a time: the error the emulator's checks raise, the word's kind's program
    cycles after ``en`` (hw/spec/decode_programs.py: each kind's steps at their longest, two cycles more, three
    with mid_clock; two or three for SETPP and FINISH; the longest kind's for an unknown opcode). A count shorter
    than a program can run on some word would return its flags before they are final."""
    from hw.spec.decode_programs import PROGRAMS, stepped_plan
    from hw.spec.isa import Opcode

    late = 2 + int(config.mid_clock)
    cycles = stepped_plan(config).cycles
    assert all(config.decode_latency_of(int(op)) == cycles[op] + late for op in PROGRAMS)
    assert config.decode_latency_of(int(Opcode.SETPP)) == config.decode_latency_of(int(Opcode.FINISH)) == late
    assert config.decode_latency_of(0) == config.decode_latency == max(cycles.values()) + late
    _check_held_words(config, config.rows + 11, 600, max(cycles.values()) + late)


#: Per kind, the address fields whose range checks the stepped decoder runs, and the limit each is moved near.
_NEAR = {"LOAD": ("sram_addr", "dram_addr"), "COMPUTE": ("act_addr", "weight_addr", "acc_addr"),
         "ALU": ("dst_addr", "src_addr"), "STORE": ("acc_addr", "param_addr", "dram_addr")}


@pytest.mark.parametrize("config", STEPPED, ids=STEPPED_IDS)
def test_stepped_range_checks_at_their_limits(config):
    """Every range check of every kind, just inside and just outside its limit: valid words with small sizes whose
    one address field lies a few lines (or bus words) from its buffer's depth (or dram_size) decode like the
    emulator's checks, and each check both passes and fails somewhere."""
    from hw.spec.isa import Opcode

    rng = np.random.default_rng(config.rows + 23)
    dram_size = (1 << 14) + 3 * config.rows         # not always a whole number of bus words
    bus = config.dma_bits // 8
    depth = {"sram_addr": config.act_buffer_depth, "act_addr": config.act_buffer_depth,
             "weight_addr": config.weight_buffer_depth, "acc_addr": config.acc_buffer_depth,
             "dst_addr": config.acc_buffer_depth, "src_addr": config.acc_buffer_depth,
             "param_addr": config.param_buffer_depth}
    words, expected, outcomes = [], [], {}
    for name, fields in _NEAR.items():
        kind = KINDS[Opcode[name]]
        for moved in fields:
            for _ in range(40):
                values = {f.name: int(rng.integers(1, 4)) if f.nonzero else 0 for f in kind.fields}
                if name == "COMPUTE":
                    values.update(act_pitch=int(rng.integers(0, 6)))
                elif name == "ALU":
                    values.update(dst_stride=int(rng.integers(0, 6)), src_stride=int(rng.integers(0, 6)))
                elif name == "STORE":
                    values.update(acc_stride=int(rng.integers(0, 6)), negative_param=int(rng.integers(0, 2)),
                                  dram_stride=bus * int(rng.integers(0, 4)))
                else:
                    values.update(dram_stride=bus * int(rng.integers(0, 4)), pad_top=int(rng.integers(0, 3)),
                                  pad_left=int(rng.integers(0, 3)))
                if moved == "dram_addr":
                    values[moved] = bus * (dram_size // bus - int(rng.integers(0, 12)))
                else:
                    values[moved] = max(depth[moved] - int(rng.integers(0, 24)), 0)
                word = int(kind.opcode)
                for field, value in values.items():
                    word |= value << kind.offsets[field]
                words.append(word)
                expected.append(int(decode_checked(word, config, dram_size)[2]))
                outcomes.setdefault((name, moved), set()).add(expected[-1])
    for key, seen in outcomes.items():
        assert ErrorCode.NONE in seen and seen & {ErrorCode.SRAM_RANGE, ErrorCode.DRAM_RANGE}, (key, seen)
    dut = InstructionDecoder(config)
    got = []
    _assert_decodes_like_the_emulator(dut, _one_word_at_a_time(dut, dram_size, words, got, config), words, expected,
                                      got, outcomes=(ErrorCode.SRAM_RANGE, ErrorCode.DRAM_RANGE, ErrorCode.NONE))


def test_a_stepped_decoder_of_deep_buffers_waits_longer_and_still_checks():
    """Buffers of 32768 lines make wider operands and longer programs: the latency grows with them (the cycle model
    reads the same ``decode_latency_of``), and held words still decode as the emulator's checks say."""
    deep = AcceleratorConfig(decode_stepped=True, weight_buffer_depth=32768)
    assert deep.decode_latency > AcceleratorConfig(decode_stepped=True).decode_latency
    _check_held_words(deep, 5, 150, deep.decode_latency)