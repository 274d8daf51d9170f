"""The events the emulator counts (sw/emulator/events.py): exact, by hand from the instruction fields of small
programs, the same in the functional and the timed run, and against independent measurements on a compiled
network (the emulator's own MAC count, the bytes its external memory was asked to move)."""

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import AluOp, Buffer
from sw.compiler.program import ProgramBuilder
from sw.emulator import Emulator
from sw.emulator.events import EVENTS, Events

#: 4x4 int8 on a 64-bit bus: ACT, WEIGHT, LUT and output lines are 4 x 8 = 32 bits (8 bytes: one beat); a PARAM
#: line is 4 x 16 bytes = 512 bits (64 bytes); the LUT holds 256 entries, 4 per line: 64 lines.
CONFIG = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8", act_buffer_depth=64,
                           weight_buffer_depth=64, acc_buffer_depth=64, param_buffer_depth=4, dma_bits=64)


def _program(config: AcceleratorConfig):
    """Every kind once or twice, no tokens (the events do not depend on timing); the expected rows by hand."""
    acc = 4 * config.acc_bits                      # an accumulator line: 4 sums, no flag (int8 has no NaN)
    b = ProgramBuilder(config, max_instructions=16)
    data = b.region("data", size=4096).addr
    rows = []

    def emit(opcode, expected, **fields):
        b.emit(opcode, **fields)
        rows.append(expected)

    # 2 x 3 lines with a padding row above and below and a column left: (1 + 2 + 1) x (1 + 3) = 16 lines written.
    emit("LOAD", dict(act_write_bits=16 * 32, dram_read_bytes=6 * 8), buffer=Buffer.ACT, sram_addr=0, dram_addr=data,
         y_size=2, x_size=3, dram_stride=24, pad_top=1, pad_bottom=1, pad_left=1)
    emit("LOAD", dict(weight_write_bits=8 * 32, dram_read_bytes=8 * 8), buffer=Buffer.WEIGHT, sram_addr=0,
         dram_addr=data, y_size=1, x_size=8)
    emit("LOAD", dict(param_write_bits=512, dram_read_bytes=64), buffer=Buffer.PARAM, sram_addr=0, dram_addr=data,
         y_size=1, x_size=1)
    # every one of the 4 post-processing lanes keeps its own copy of the 64-line table
    emit("LOAD", dict(lut_write_bits=64 * 32 * 4, dram_read_bytes=64 * 8), buffer=Buffer.LUT, sram_addr=0,
         dram_addr=data, y_size=1, x_size=64)
    # 2 x 2 outputs, 1 x 2 kernel: 8 activation lines in, 8 partial-sum lines out, 8 x 16 MACs; the first tap
    # overwrites (no addition), the second adds: 4 lines x 4 columns.
    emit("COMPUTE", dict(macs=8 * 16, act_read_bits=8 * 32, weight_read_bits=2 * 4 * 32, acc_read_bits=8 * acc,
                         acc_write_bits=8 * acc, acc_ops=4 * 4),
         acc_addr=0, act_addr=0, weight_addr=0, out_h=2, out_w=2, act_pitch=4, stride=1, dilation=1, kh=1, kw=2)
    emit("COMPUTE", dict(macs=8 * 16, act_read_bits=8 * 32, weight_read_bits=2 * 4 * 32, acc_read_bits=8 * acc,
                         acc_write_bits=8 * acc, acc_ops=8 * 4),
         acc_addr=0, act_addr=0, weight_addr=0, out_h=2, out_w=2, act_pitch=4, stride=1, dilation=1, kh=1, kw=2,
         accumulate=1)
    emit("ALU", dict(acc_read_bits=2 * 3 * acc, acc_write_bits=3 * acc, acc_ops=3 * 4), op=AluOp.MAX, dst_addr=8,
         src_addr=0, y_size=1, x_size=3, src_step=1)
    emit("ALU", dict(acc_read_bits=2 * 4 * acc, acc_write_bits=4 * acc), op=AluOp.COPY, dst_addr=16, src_addr=0,
         y_size=2, x_size=2, dst_stride=2, src_stride=2, src_step=1)
    # a per-channel gate: one source line times 3 destination lines, 4 lanes each, multiplications not additions
    emit("ALU", dict(acc_read_bits=2 * 3 * acc, acc_write_bits=3 * acc, alu_muls=3 * 4), op=AluOp.MUL, dst_addr=20,
         src_addr=0, y_size=3, x_size=1, dst_stride=1, src_stride=0, src_step=1)
    emit("SETPP", {}, clamp_lo=0x80, clamp_hi=0x7F)
    emit("STORE", dict(acc_read_bits=2 * acc, param_read_bits=512, ppu_outputs=2 * 4, dram_write_bytes=2 * 8),
         acc_addr=0, dram_addr=data + 2048, y_size=1, x_size=2)
    # negative_param: PARAM lines 0 and 1 both read
    emit("STORE", dict(acc_read_bits=2 * acc, param_read_bits=2 * 512, ppu_outputs=2 * 4, dram_write_bytes=2 * 8),
         acc_addr=0, dram_addr=data + 2048, y_size=1, x_size=2, negative_param=1)
    emit("SETPP", {}, clamp_lo=0x80, clamp_hi=0x7F, lut=1)
    # with the table: each of the 4 x 4 codes reads a 32-bit LUT line of its lane
    emit("STORE", dict(acc_read_bits=4 * acc, param_read_bits=512, ppu_outputs=4 * 4, lut_read_bits=4 * 4 * 32,
                       dram_write_bytes=4 * 8),
         acc_addr=0, dram_addr=data + 2048, y_size=2, x_size=2, acc_stride=2, dram_stride=16)
    emit("FINISH", {})
    program = b.build()
    return program, [{name: row.get(name, 0) + (name == "instructions") for name in EVENTS} for row in rows]


@pytest.mark.parametrize("timed", [False, True])
def test_events_by_hand(timed):
    program, expected = _program(CONFIG)
    emulator = Emulator(CONFIG, bytes(program.dram[:program.dram_size]))
    status = emulator.run(program.program_addr, timed=timed)
    assert status.done and status.error == 0
    assert (status.cycles is not None) == timed
    events = status.events
    assert [events.total(i, i + 1) for i in range(len(expected))] == expected
    assert len(events) == len(expected)
    assert events.total()["macs"] == status.macs == 256
    assert events.macs_by_formats() == {("int8", "int8"): 256}


@pytest.mark.parametrize("timed", [False, True])
def test_lookup_flag_carries_over_from_the_program_before(timed):
    """The post-processing keeps its lookup flag between programs: a STORE before the program's first SETPP
    reads the table if the program before left the flag on."""
    b = ProgramBuilder(CONFIG, max_instructions=8)
    data = b.region("data", size=4096).addr
    b.emit("STORE", acc_addr=0, dram_addr=data, y_size=1, x_size=3)
    b.emit("SETPP", clamp_lo=0x80, clamp_hi=0x7F)
    b.emit("STORE", acc_addr=0, dram_addr=data, y_size=1, x_size=3)
    b.emit("FINISH")
    program = b.build()
    for flag in (0, 1):
        emulator = Emulator(CONFIG, bytes(program.dram[:program.dram_size]))
        emulator.state.use_lut = flag
        events = emulator.run(program.program_addr, timed=timed).events
        assert [events.total(i, i + 1)["lut_read_bits"] for i in range(4)] == [flag * 3 * 4 * 32, 0, 0, 0]


def test_accumulator_lines_carry_the_flag_of_formats_with_nan():
    config = AcceleratorConfig(rows=4, cols=4, weight_format="fp8_e4m3", act_format="fp8_e4m3", act_buffer_depth=64,
                               weight_buffer_depth=64, acc_buffer_depth=64, param_buffer_depth=4, dma_bits=64)
    b = ProgramBuilder(config, max_instructions=4)
    b.emit("COMPUTE", acc_addr=0, act_addr=0, weight_addr=0, out_h=1, out_w=3, stride=1, dilation=1, kh=1, kw=1)
    b.emit("FINISH")
    program = b.build()
    status = Emulator(config, bytes(program.dram[:program.dram_size])).run(program.program_addr, timed=False)
    assert status.events.total()["acc_write_bits"] == 3 * 4 * (config.acc_bits + 1)


def test_concatenate_keeps_rows_and_pairs():
    a = Events(np.ones((2, len(EVENTS)), np.int64), (("int8", "int8"),), np.zeros(2, np.int64))
    b = Events(np.full((3, len(EVENTS)), 2, np.int64), (("int4", "int8"),), np.zeros(3, np.int64))
    both = Events.concatenate([a, b])
    assert len(both) == 5 and both.total()["macs"] == 2 + 6
    assert both.macs_by_formats() == {("int8", "int8"): 2, ("int4", "int8"): 6}
    assert both.macs_by_formats(2) == {("int4", "int8"): 6}


def test_a_compiled_network_against_the_memory_it_moved(monkeypatch):
    """The digits CNN on 8x8: the counted DRAM bytes are the bytes the emulator's memory was asked to read and
    write (an independent measurement: the memory model, not the event counter), per engine program."""
    from sw.compile import compile_model
    from sw.emulator.memory import BatchedMemory
    from sw.model_folder import DIGITS, model_folder

    folder = model_folder(DIGITS)
    config = AcceleratorConfig(rows=8, cols=8, weight_format="int8", act_format="int8")
    compiled = compile_model(folder.onnx, config, folder.load_calibration()[:16], log=lambda *_: None)
    moved = {"read": 0, "write": 0}
    rows, write_rows = BatchedMemory.rows, BatchedMemory.write_rows

    def counting_rows(self, addr, count, stride, nbytes):
        moved["read"] += count * nbytes
        return rows(self, addr, count, stride, nbytes)

    def counting_write_rows(self, addr, stride, data):
        moved["write"] += data.shape[1] * data.shape[2]
        return write_rows(self, addr, stride, data)

    def fetch(self, addr, nbytes):           # an instruction fetch (timed run), not data: not counted
        moved["read"] -= nbytes
        return word(self, addr, nbytes)

    word = BatchedMemory.word
    monkeypatch.setattr(BatchedMemory, "rows", counting_rows)
    monkeypatch.setattr(BatchedMemory, "write_rows", counting_write_rows)
    monkeypatch.setattr(BatchedMemory, "word", fetch)
    for timed in (False, True):
        moved.update(read=0, write=0)
        emulator = Emulator(config, compiled.program.dram)
        status = emulator.run(compiled.program.program_addr, timed=timed)
        total = status.events.total()
        assert total["dram_write_bytes"] == moved["write"] > 0
        if timed:        # the functional run reads its code in blocks through the same method as data
            assert total["dram_read_bytes"] == moved["read"] > 0
        assert total["macs"] == status.macs
        assert total["instructions"] == len(compiled.program.words)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape, formats, dma_bits", [
    ((2, 4), ("int4", "int8"), 32), ((4, 4), ("minifloat6", "minifloat6"), 64), ((8, 8), ("fp8_e4m3", "fp8_e4m3"), 128),
    ((1, 1), ("int8", "int8"), 32)])
def test_random_programs(shape, formats, dma_bits, seed, monkeypatch):
    """Random race-free programs of sim.programs: the same events in the functional and the timed run, MACs equal
    to the independent reference's count, DRAM bytes written equal to what the memory model was asked to write."""
    from sim.programs import random_program
    from sw.emulator.memory import BatchedMemory

    config = AcceleratorConfig(rows=shape[0], cols=shape[1], weight_format=formats[0], act_format=formats[1],
                               act_buffer_depth=256, weight_buffer_depth=256, acc_buffer_depth=128,
                               param_buffer_depth=16, dma_bits=dma_bits)
    program = random_program(config, np.random.default_rng([seed, shape[1], dma_bits]))
    written = []
    write_rows = BatchedMemory.write_rows

    def counting(self, addr, stride, data):
        written.append(data.shape[1] * data.shape[2])
        return write_rows(self, addr, stride, data)

    monkeypatch.setattr(BatchedMemory, "write_rows", counting)
    runs = []
    for timed in (False, True):
        written.clear()
        status = Emulator(config, program.dram).run(program.program_addr, timed=timed, max_cycles=2_000_000)
        assert status.done and status.error == 0
        assert status.events.total()["macs"] == program.expected_macs
        assert status.events.total()["dram_write_bytes"] == sum(written)
        assert len(status.events) == len(program.words)
        runs.append(status.events.counts)
    np.testing.assert_array_equal(*runs)


@pytest.mark.parametrize("seed", range(3))
def test_random_programs_on_a_multi_format_build_count_macs_per_selected_pair(seed):
    """A format-switching random program: each COMPUTE's MACs land on the pair its format fields select (counted
    here from the words, apart from count_events), and the pairs sum to the reference's MACs."""
    from hw.spec.isa import Opcode, decode
    from sim.programs import random_program

    config = AcceleratorConfig(rows=4, cols=4, formats=("int8", "int4", "minifloat6"), act_buffer_depth=256,
                               weight_buffer_depth=256, acc_buffer_depth=128, param_buffer_depth=16)
    program = random_program(config, np.random.default_rng([seed, 13]))
    expected: dict = {}
    for word in program.words:
        kind, f = decode(word)
        if kind.opcode is Opcode.COMPUTE:
            key = (config.formats[f["weight_format"]], config.formats[f["act_format"]])
            expected[key] = expected.get(key, 0) + f["out_h"] * f["out_w"] * f["kh"] * f["kw"] * 16
    status = Emulator(config, program.dram).run(program.program_addr, timed=False)
    assert status.done and status.events.macs_by_formats() == {k: v for k, v in expected.items() if v}
    assert sum(expected.values()) == program.expected_macs
