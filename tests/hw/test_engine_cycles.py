"""The emulator's cycle model against the RTL's cycle counter (memory latency fixed, no bus stalls)."""

import numpy as np
import pytest

from sim.cycle_suite import CONFIG, load_fixture, measure, one_instruction_programs
from sim.engine_harness import Traffic, check_programs
from sim.layer_programs import random_layer_program
from sim.programs import random_program


def assert_within_two_percent(pairs: list[tuple[int, int]], total: bool = False) -> None:
    """Every (RTL, emulator) cycle pair within 2 %; with ``total``, their sums within 0.5 %."""
    deviations = [abs(emulator - rtl) / rtl for rtl, emulator in pairs]
    assert max(deviations) <= 0.02, sorted(zip(deviations, pairs))[-3:]
    if total:
        total_rtl, total_emulator = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        assert abs(total_emulator - total_rtl) / total_rtl <= 0.005


def store_programs(config, shapes) -> list:
    """One STORE a program: (rows, lines a row, DRAM stride in output lines, byte offset, negative_param) each."""
    from hw.spec.layout import output_line_bytes
    from sw.compiler.program import ProgramBuilder

    line = output_line_bytes(config)
    programs = []
    for y, x, s, at, n in shapes:
        b = ProgramBuilder(config, max_instructions=8)
        data = b.region("data", bytes(8192))
        b.emit("STORE", acc_addr=1, y_size=y, x_size=x, acc_stride=x, dram_stride=s * line, dram_addr=data.addr + at,
               negative_param=n)
        programs.append(b.build(f"store y{y} x{x} s{s} at{at} n{n}"))
    return programs



@pytest.mark.parametrize("latency", [1, 4])
def test_single_instructions_are_cycle_exact(latency, tmp_path):
    pairs = check_programs(CONFIG, one_instruction_programs(), tmp_path, Traffic(latency=latency))
    assert [rtl for rtl, _ in pairs] == [emulator for _, emulator in pairs]


def test_single_instructions_without_command_queues_are_cycle_exact(tmp_path):
    """command_queue_depth 0: each word handed to its engine in the cycle the engine starts it (no queue's two
    cycles), the next fetch after that."""
    from dataclasses import replace

    config = replace(CONFIG, command_queue_depth=0)
    programs = [replace(p, config=config) for p in one_instruction_programs()]     # the same words
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert [rtl for rtl, _ in pairs] == [emulator for _, emulator in pairs]


def test_single_instructions_with_a_registered_dispatch_are_cycle_exact(tmp_path):
    """mid_clock without command queues: the dispatcher acts on the decoder's result a cycle later (its offer's
    checks and target registered), one more cycle every fetch (AcceleratorConfig.dispatch_latency), cycle for
    cycle."""
    from dataclasses import replace

    config = replace(CONFIG, command_queue_depth=0, mid_clock=True)
    assert config.dispatch_latency == 1 and replace(CONFIG, mid_clock=True).dispatch_latency == 0
    programs = [replace(p, config=config) for p in one_instruction_programs()]     # the same words
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert [rtl for rtl, _ in pairs] == [emulator for _, emulator in pairs] and len(pairs) == len(programs)


def test_single_instructions_with_slow_clock_are_cycle_exact(tmp_path):
    """slow_clock: the post-processing lane without the registers of POSTPROCESS_SLOW_STAGES (a STORE ends five cycles
    sooner), accumulator lines updated as they leave the block RAM (SLOW_ACCUMULATE_LATENCY: COMPUTE's results two
    cycles sooner) and the ALU without its operand and result registers (four cycles sooner, no element waits, its
    chains and repeated lines seen through the read's transparency), cycle for cycle."""
    from dataclasses import replace

    config = replace(CONFIG, slow_clock=True)
    assert config.alu_latency == config.accumulate_latency == 1 and config.postprocess_latency == 7
    programs = [replace(p, config=config) for p in one_instruction_programs()]     # the same words
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert [rtl for rtl, _ in pairs] == [emulator for _, emulator in pairs] and len(pairs) == len(programs)


@pytest.mark.parametrize("mid", [False, True], ids=["compact", "mid_clock"])
def test_compute_compact_layer_programs_within_two_percent(mid, tmp_path):
    """compute_compact with slow_clock (the retire side on tags through the array, one adder for COMPUTE's updates and
    ALU ADD/MAX, ALU MUL in a DSP, the ALU's destination walk on the activation walker, as the buffers are equally
    deep, and the next kernel row's first line from a register of the row's first): layer programs (kernels of
    several rows and columns) and random ones keep every byte and the cycle model; with ``mid``, mid_clock's
    registers of the last output column and an ALU row's last element (same cycles)."""
    from dataclasses import replace

    config = replace(CONFIG, slow_clock=True, compute_compact=True, acc_buffer_depth=CONFIG.act_buffer_depth,
                     mid_clock=mid)
    rng = np.random.default_rng(12)
    programs = [random_layer_program(config, rng) for _ in range(12)] + [random_program(config, rng)
                                                                          for _ in range(12)]
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert len(pairs) >= 20
    assert_within_two_percent(pairs, total=True)


def test_whole_programs_within_two_percent(tmp_path):
    rng = np.random.default_rng(11)
    programs = [random_layer_program(CONFIG, rng) for _ in range(20)] + [random_program(CONFIG, rng)
                                                                          for _ in range(20)]
    pairs = check_programs(CONFIG, programs, tmp_path, Traffic(latency=4))
    assert_within_two_percent(pairs, total=True)


def test_the_pinned_cycle_fixture_is_what_the_rtl_counts():
    """sim/cycle_fixture.json (which tests/sw holds the cycle model to) is true of this RTL; if the RTL's timing
    changed on purpose, regenerate it with python -m sim.cycle_suite."""
    assert measure()["cases"] == load_fixture()["cases"]


@pytest.mark.parametrize("compact", [False, True])
def test_format_switching_programs_within_two_percent(compact, tmp_path):
    """A multi-format engine keeps the cycle model: random programs whose tiles switch formats (``compact``: with
    compute_compact and slow_clock, the format indices beside the tags in the activation feeder's FIFO)."""
    from hw.spec.config import AcceleratorConfig

    config = AcceleratorConfig(rows=4, cols=4, formats=("int4", "int8", "minifloat6"), act_buffer_depth=512,
                               weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8, dma_bits=64,
                               compute_compact=compact, slow_clock=compact)
    rng = np.random.default_rng(12)
    pairs = check_programs(config, [random_program(config, rng) for _ in range(30)], tmp_path, Traffic(latency=4))
    assert_within_two_percent(pairs, total=True)


def test_packed_int4_programs_within_two_percent(tmp_path):
    """A packed int4 engine (two codes per PE lane: 2 PE rows reduce over 4) keeps the cycle model: its weight
    tiles take reduction_rows lines, its skew the PE rows."""
    from hw.spec.config import AcceleratorConfig

    config = AcceleratorConfig(rows=2, cols=4, weight_format="int4", act_format="int4", act_buffer_depth=512,
                               weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8, dma_bits=64)
    assert config.reduction_rows == 4
    rng = np.random.default_rng(14)
    programs = [random_layer_program(config, rng) for _ in range(15)] + [random_program(config, rng)
                                                                          for _ in range(15)]
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert_within_two_percent(pairs, total=True)


@pytest.mark.parametrize("compact", [False, True])
def test_per_layer_packing_programs_within_two_percent(compact, tmp_path):
    """A multi-format engine that packs per layer (2x4 int4+int8+minifloat6): int4 x int4 tiles load 2 * rows
    weight lines and reduce over them, the other pairs rows; random programs switching between them keep the
    cycle model (``compact``: with compute_compact, the packed bit beside the tags)."""
    from hw.spec.config import AcceleratorConfig

    config = AcceleratorConfig(rows=2, cols=4, formats=("int4", "int8", "minifloat6"), act_buffer_depth=512,
                               weight_buffer_depth=128, acc_buffer_depth=128, param_buffer_depth=8, dma_bits=64,
                               compute_compact=compact)
    assert config.packed_pairs == ((0, 0),)
    rng = np.random.default_rng(15)
    pairs = check_programs(config, [random_program(config, rng) for _ in range(30)], tmp_path, Traffic(latency=4))
    assert_within_two_percent(pairs, total=True)


@pytest.mark.parametrize("latency", [1, 4])
def test_scattered_stores_are_cycle_exact(latency, tmp_path):
    """The STOREs a scattered output makes (sw/compiler/tiling.py, Scatter): a row of lines each its own burst
    (x_size 1, DRAM stride s lines), one accumulator line apart or a pool's stride apart, some across a 4 KiB
    boundary, back to back: the cycle model's count, cycle for cycle, and the same bytes."""
    from hw.spec.layout import output_line_bytes
    from sim.cycle_suite import _single
    line = output_line_bytes(CONFIG)
    programs = [_single(f"scatter y{y} s{s} acc{a} at{at}", "STORE", acc_addr=3, dram_addr=at, y_size=y, x_size=1,
                        acc_stride=a, dram_stride=s * line)
                for y, s, a, at in ((1, 1, 1, 0), (7, 2, 1, 0), (12, 3, 1, line), (20, 2, 2, 4096 - 5 * line),
                                    (5, 16, 1, 4000 - 4000 % line))]
    pairs = check_programs(CONFIG, programs, tmp_path, Traffic(latency=latency))
    assert len(pairs) == len(programs)
    assert [rtl for rtl, _ in pairs] == [emulator for _, emulator in pairs]


@pytest.mark.parametrize("latency, merged, per_lane", [(1, False, 4), (4, False, 4), (4, True, 4), (4, False, 2)])
def test_shared_lane_stores_are_cycle_exact(latency, merged, per_lane, tmp_path):
    """One post-processing lane for the four columns of an int8 4x4 engine (AcceleratorConfig.postprocess_shared),
    or two lanes of two columns each (postprocess_columns_per_lane=2), SETPP's values held rather than piped
    (postprocess_held), with or without the 9-stage lane (postprocess_merged):
    single STOREs (one line, rows, negative_param, a 4 KiB crossing) cycle for cycle, and random programs (computed
    accumulators through the time-multiplexed lane, SETPPs between STOREs) byte for byte, within 2 %."""
    from hw.spec.config import AcceleratorConfig
    from hw.spec.layout import output_line_bytes

    config = AcceleratorConfig(rows=4, cols=4, dma_bits=32, act_buffer_depth=64, weight_buffer_depth=64,
                               acc_buffer_depth=64, param_buffer_depth=2, postprocess_shared=per_lane == 4,
                               postprocess_columns_per_lane=1 if per_lane == 4 else per_lane,
                               postprocess_held=True, postprocess_merged=merged)
    line = output_line_bytes(config)

    programs = store_programs(config, ((1, 1, 1, 0, 0), (1, 3, 3, 0, 0), (3, 2, 4, 0, 1), (4, 3, 3, 0, 0),
                                       (2, 4, 4, 4096 - 2 * line, 0), (1, 12, 12, 0, 0)))
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=latency))
    assert [rtl for rtl, _ in pairs] == [emulator for _, emulator in pairs] and len(pairs) == len(programs)
    if latency == 4:
        rng = np.random.default_rng(41 + merged + 2 * (per_lane == 2))
        pairs = check_programs(config, [random_program(config, rng) for _ in range(12)], tmp_path / "random",
                               Traffic(latency=latency))
        assert len(pairs) >= 8
        assert_within_two_percent(pairs)


@pytest.mark.parametrize("shape", ["4x8", "8x4", "4x16", "4x8-int4"])
def test_rectangular_network_programs_within_two_percent(shape, tmp_path):
    """Compiled networks on rectangular engines keep the cycle model: random networks on the engines of
    tests/sim/test_networks_rtl.py (4x8: LOADs a line at a time; 8x4: STOREs; 4x16: unused upper columns;
    4x8-int4: packed, two int4 codes per PE lane, an 8-deep reduction)."""
    from dataclasses import replace

    from sim.random_network import random_inputs, random_network
    from sw.compiler.network import compile_network
    from tests.sim.test_networks_rtl import INT4_4X8, INT8_4X8, INT8_4X16, INT8_8X4

    config = {"4x8": INT8_4X8, "8x4": INT8_8X4, "4x16": INT8_4X16, "4x8-int4": INT4_4X8}[shape]
    cols = config.cols
    rng = np.random.default_rng(13 + cols)
    programs = []
    for _ in range(3):
        compiled = compile_network(random_network(rng, config.acts.name, config.weights.name, config.acc_bits),
                                   config)
        x = random_inputs(rng, compiled.network, 1)[0]
        programs.append(replace(compiled.program, dram=compiled.dram_with_input(x)))
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert len(pairs) == len(programs)
    assert_within_two_percent(pairs)



#: A small part's engine (the iCEBreaker's buffers and bus, boards/top.py): one instruction per command queue, four
#: carry chains per decoder stage.
SMALL_PART = dict(weight_format="int4", act_format="int4", dma_bits=64, act_buffer_depth=16, weight_buffer_depth=16,
                  acc_buffer_depth=16, param_buffer_depth=2, max_reduction=64, command_queue_depth=1, decode_chains=4)
BUSY_AND_STALL = ("busy_load", "busy_compute", "busy_store", "stall_load", "stall_compute", "stall_store")


@pytest.mark.parametrize("shape, perf_counters, decode_shared, serial, queue, slow",
                         [((1, 1), False, True, False, 1, False), ((2, 2), True, False, False, 1, False),
                          ((2, 2), False, True, True, 1, False), ((2, 2), True, False, False, 0, False),
                          ((1, 1), False, True, True, 0, False), ((2, 2), False, True, True, 0, True)])
def test_small_part_programs_within_two_percent(shape, perf_counters, decode_shared, serial, queue, slow, tmp_path):
    """A small part's choices (AcceleratorConfig.command_queue_depth, ``queue``: 0 hands each word to its engine
    with no queue, and then load_direct_write, the LOAD's lines written without a register stage; decode_chains,
    perf_counters, decode_shared; with ``serial`` decode_serial, every fetch waiting SERIAL_DECODE_LATENCY cycles
    for the checks, postprocess_shared, one post-processing lane taking the columns in turn, postprocess_held and
    postprocess_merged, a lane of 9 stages; with ``slow`` slow_clock, the lane of 4 stages, accumulator lines and
    the ALU updated as they leave the block RAM, each PARAM bias held saturated, and table_bram and
    narrow_line_fifo, the table in a block RAM and the line FIFO as wide as the codes, and dram_addr_bits, burst
    addresses in the 17 bits of a 128 KiB memory, which the programs' 64 KiB fit; with no queue compute_compact,
    the retire side following tags through the array) keep the cycle model: random
    programs within 2 %, every byte, cycle count, instruction and MAC count checked; the busy and stall counters
    count (at most every cycle, some cycles) or, left out, read 0."""
    from hw.spec.config import AcceleratorConfig
    from sim.engine_harness import run_on_rtl

    config = AcceleratorConfig(rows=shape[0], cols=shape[1], perf_counters=perf_counters, decode_shared=decode_shared,
                               decode_serial=serial, postprocess_shared=serial, postprocess_held=serial,
                               postprocess_merged=serial, load_direct_write=queue == 0, slow_clock=slow,
                               table_bram=slow, narrow_line_fifo=slow, dram_addr_bits=17 if slow else 32,
                               compute_compact=queue == 0,
                               **{**SMALL_PART, "command_queue_depth": queue})
    rng = np.random.default_rng(14 + shape[0])
    # random_layer_program's layers assume buffers deeper than 16 lines: random programs only.
    programs = [random_program(config, rng) for _ in range(30)]
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert len(pairs) >= 20
    assert_within_two_percent(pairs)
    runs = [r for r in run_on_rtl(config, programs[:6], tmp_path / "counters", Traffic(latency=4)) if r]
    assert runs
    for r in runs:
        counted = [r.registers[n] for n in BUSY_AND_STALL]
        if perf_counters:
            assert all(n <= r.registers["cycles_lo"] for n in counted) and r.registers["busy_compute"] > 0, counted
        else:
            assert counted == [0] * len(BUSY_AND_STALL)


@pytest.mark.parametrize("cols", [1, 2])
def test_serial_lane_stores_are_cycle_exact(cols, tmp_path):
    """postprocess_serial on the iCEBreaker's small-part choices (1x1: a lane per column; 2x2: one lane taking the
    two columns in turn, each postprocess_interval cycles after the last): single STOREs (one line, rows,
    negative_param, a 4 KiB crossing) cycle for cycle, and random programs byte for byte, within 2 %."""
    from hw.spec.config import AcceleratorConfig
    from hw.spec.layout import output_line_bytes

    config = AcceleratorConfig(rows=cols, cols=cols, decode_shared=True, decode_serial=True,
                               postprocess_shared=cols > 1, postprocess_held=True, postprocess_merged=True,
                               load_direct_write=True, slow_clock=True, table_bram=True, narrow_line_fifo=True,
                               perf_counters=False, postprocess_serial=True, **{**SMALL_PART, "command_queue_depth": 0})
    assert config.postprocess_interval > 40
    line = output_line_bytes(config)

    programs = store_programs(config, ((1, 1, 1, 0, 0), (1, 3, 3, 0, 0), (3, 2, 4, 0, 1), (4, 3, 3, 0, 0),
                                       (2, 4, 4, 4096 - 2 * line, 0)))
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert [rtl for rtl, _ in pairs] == [emulator for _, emulator in pairs] and len(pairs) == len(programs)
    rng = np.random.default_rng(43 + cols)
    pairs = check_programs(config, [random_program(config, rng) for _ in range(16)], tmp_path / "random",
                           Traffic(latency=4))
    assert len(pairs) >= 10


@pytest.mark.parametrize("shared", [False, True])
def test_serial_lane_stores_of_multi_beat_lines_are_cycle_exact(shared, tmp_path):
    """postprocess_serial where an output line is several bus beats (16 int8 columns on a 32-bit bus: 4 beats),
    with a lane per column or one for all: the last line's beats follow its last element out of the lane, which
    the cycle model once left out (31 cycles short at 128 columns)."""
    from hw.spec.config import AcceleratorConfig
    from hw.spec.layout import output_line_bytes

    config = AcceleratorConfig(rows=1, cols=16, weight_format="int8", act_format="int8", dma_bits=32,
                               act_buffer_depth=16, weight_buffer_depth=16, acc_buffer_depth=16, param_buffer_depth=2,
                               max_reduction=64, command_queue_depth=0, decode_chains=4, decode_shared=True,
                               decode_serial=True, postprocess_shared=shared, postprocess_held=True,
                               postprocess_merged=True, load_direct_write=True, slow_clock=True, table_bram=True,
                               narrow_line_fifo=True, perf_counters=False, postprocess_serial=True)
    line = output_line_bytes(config)
    assert line // 4 == 4
    shapes = ((1, 1, 1, 0, 0), (1, 3, 3, 0, 0), (3, 2, 4, 0, 1))
    if not shared:      # a line every 57 cycles, not every 912: rows of lines and a 4 KiB crossing stay short
        shapes += ((4, 3, 3, 0, 0), (2, 4, 4, 4096 - 2 * line, 0))
    programs = store_programs(config, shapes)
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert [rtl for rtl, _ in pairs] == [emulator for _, emulator in pairs] and len(pairs) == len(programs)


def test_stepped_decoder_programs_within_two_percent(tmp_path):
    """The iCEBreaker's decoder (AcceleratorConfig.decode_stepped: the range checks as programs through one adder,
    every fetch waiting its kind's program's cycles for them) with the small part's other choices: random programs
    within 2 % of the cycle model, every byte, error and count checked."""
    from hw.spec.config import AcceleratorConfig

    config = AcceleratorConfig(rows=1, cols=1, perf_counters=False, decode_shared=True, decode_serial=True,
                               decode_stepped=True, postprocess_shared=True, postprocess_held=True,
                               postprocess_merged=True, load_direct_write=True, slow_clock=True, table_bram=True,
                               narrow_line_fifo=True, **{**SMALL_PART, "command_queue_depth": 0})
    rng = np.random.default_rng(41)
    programs = [random_program(config, rng) for _ in range(24)]
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert len(pairs) >= 16
    assert_within_two_percent(pairs)


def test_a_small_part_fetch_past_dram_size_is_dram_range(tmp_path):
    """The serial decoder's build checks a fetch by the high bits of its address (hw/engine.py): a program that runs
    off the end of dram_size (no FINISH) stops with DRAM_RANGE at the emulator's pc, for a size on a word boundary
    and two inside the last word; a size one word larger reaches the word past the program (zero: ILLEGAL_OPCODE)."""
    from dataclasses import replace

    from hw.spec.config import AcceleratorConfig
    from hw.spec.isa import INSTRUCTION_BYTES, ErrorCode
    from sw.compiler.program import ProgramBuilder

    config = AcceleratorConfig(rows=1, cols=1, perf_counters=False, decode_shared=True, decode_serial=True,
                               postprocess_shared=True, postprocess_held=True, postprocess_merged=True,
                               load_direct_write=True, **{**SMALL_PART, "command_queue_depth": 0})
    b = ProgramBuilder(config, max_instructions=8)
    for _ in range(3):
        b.emit("SETPP", clamp_lo=0x8, clamp_hi=0x7)
    built = b.build("runs off the end")
    end = 3 * INSTRUCTION_BYTES          # the FINISH word's address: zeroed, then cut off by dram_size
    dram = bytearray(built.dram)
    dram[end:end + INSTRUCTION_BYTES] = bytes(INSTRUCTION_BYTES)
    assert len(dram) >= end + 2 * INSTRUCTION_BYTES
    cases = [(end, ErrorCode.DRAM_RANGE), (end + 8, ErrorCode.DRAM_RANGE), (end + INSTRUCTION_BYTES - 1,
              ErrorCode.DRAM_RANGE), (end + INSTRUCTION_BYTES, ErrorCode.ILLEGAL_OPCODE)]
    programs = [replace(built, dram=bytearray(dram), dram_size=size, expected_error=error) for size, error in cases]
    check_programs(config, programs, tmp_path, Traffic(latency=2))     # raises on any difference


@pytest.mark.parametrize("board,rows", [("icebreaker-1x1", 1), ("icebreaker", 2)])
def test_icebreaker_engines_with_mid_clock_within_two_percent(board, rows, tmp_path):
    """The iCEBreaker's engines (boards/top.py: the 1x1 board's, and the 2x2 board's, whose decoder reads two bits a
    cycle, decode_pairs) with mid_clock: the registered dispatch (a cycle more a fetch), the serial lane's three
    stages registered again (three cycles more a STORE's elements), the registers of the compute walk, the store's
    rows, the start, the narrow burst generator's row end and the stepped decoder's registered bit (a cycle more per
    operand, ``decode_latency_of``): random programs (which fit the board's 128 KiB; layer programs do not) within 2 %
    of the cycle model, every byte checked."""
    from dataclasses import replace

    from boards.build import board_config
    from boards.top import BOARDS

    config = replace(board_config(BOARDS[board], rows=rows, cols=rows), mid_clock=True)
    assert config.dispatch_latency == 1 and config.dram_addr_bits == 17
    assert config.decode_pairs == (board == "icebreaker")
    rng = np.random.default_rng(43 + rows)
    programs = [random_program(config, rng) for _ in range(20)]
    pairs = check_programs(config, programs, tmp_path, Traffic(latency=4))
    assert len(pairs) >= 12
    assert_within_two_percent(pairs)
