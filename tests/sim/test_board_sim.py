"""The board top (engine, memory, UART bridge) on Verilator with a UART model on a TCP socket, and the host driver
(sw/board) at the other end: the digits CNN gives the emulator's bytes through ``run_codes(..., "board")`` and
through ``python -m sw.run --backend board --port``, engine faults come back as the other backends report them,
and the bridge answers malformed frames on the real line."""

import socket
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from boards.build import board_config
from boards.top import BOARDS
from hw.spec.bridge import Command, Status, header
from hw.spec.isa import INSTRUCTION_BYTES, ErrorCode
from sim.board_sim import MEMORY_BYTES, simulated_board
from sw.board import BoardLink
from sw.compile import compile_model
from sw.compiler.network import CompiledNetwork
from sw.emulator import Emulator
from sw.evaluate import DIGITS
from sw.runtime import EngineFault, RunError, run_codes
from tests.onnx_models import softmax_digits

#: The ULX3S build's engine (8x8 int8, the default buffers, a 128-bit bus).
CONFIG = board_config(BOARDS["ulx3s-85f"])


@pytest.fixture(scope="module")
def board():
    """The pyserial URL of one simulated board shared by this module's tests (its state persists between them)."""
    with simulated_board(CONFIG) as url:
        yield url


def _compiled(model=DIGITS / "digits_cnn.onnx"):
    return compile_model(model, CONFIG, np.load(DIGITS / "calibration.npy"), method="mmse", per_channel=True,
                         log=lambda *_: None)


def _images(n: int) -> np.ndarray:
    with np.load(DIGITS / "test_set.npz") as data:
        return data["images"][:n]


def test_digits_on_the_board_equal_the_emulator(board):
    compiled = _compiled()
    net = compiled.network
    codes = net.tensors[net.input].quantize(_images(4))
    on_board = run_codes(compiled, codes, "board", keep=True, port=board)
    emulated = run_codes(compiled, codes, "emulator", keep=True)
    np.testing.assert_array_equal(on_board.codes, emulated.codes)
    for i in range(len(codes)):
        for name in compiled.materialized:
            np.testing.assert_array_equal(on_board.tensors[i][name], emulated.tensors[i][name],
                                          err_msg=f"tensor {name}, image {i}")
    assert len(set(on_board.cycles)) == 1 and on_board.cycles[0] > 1000


def test_sw_run_on_the_board_with_host_layers(board, tmp_path):
    """The command line, on the digits CNN with a Softmax the host runs between the board's programs."""
    folder = tmp_path / "digits"
    compiled = _compiled(softmax_digits(tmp_path / "softmax.onnx"))
    assert compiled.host_layers
    compiled.save(folder)
    np.save(tmp_path / "in.npy", _images(2))
    outputs = {}
    for backend, extra in (("board", ["--port", board]), ("emulator", [])):
        done = subprocess.run([sys.executable, "-m", "sw.run", str(folder), "--backend", backend, "--input",
                               str(tmp_path / "in.npy"), "--output", str(tmp_path / f"{backend}.npy"), *extra],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs[backend] = np.load(tmp_path / f"{backend}.npy")
    np.testing.assert_array_equal(outputs["board"], outputs["emulator"])


def test_an_engine_fault_is_reported_like_the_emulator(board):
    compiled = _compiled()
    bad = bytearray(compiled.program.dram)
    at = compiled.program.program_addr + 5 * INSTRUCTION_BYTES
    bad[at:at + INSTRUCTION_BYTES] = bytes([0xFF] * INSTRUCTION_BYTES)      # no such opcode
    broken = replace(compiled, program=replace(compiled.program, dram=bytes(bad)))
    codes = compiled.network.tensors[compiled.network.input].quantize(_images(1))
    messages = {}
    for backend in ("board", "emulator"):
        with pytest.raises(EngineFault) as caught:
            run_codes(broken, codes, backend, port=board if backend == "board" else None)
        messages[backend] = str(caught.value)
    expected = Emulator(compiled.config, bytes(bad)).run(compiled.program.program_addr)
    where = f"{ErrorCode(expected.error).name} at instruction {expected.pc}"
    assert ErrorCode(expected.error) is not ErrorCode.NONE
    assert where in messages["board"] and where in messages["emulator"], messages


def test_an_image_larger_than_the_memory_is_refused(board):
    """The zoo's ResNet-8 (its 78 k weights and 32x32 maps) is too large for the board's 128 KiB."""
    zoo = DIGITS.parent / "zoo"
    calibration = np.load(zoo / "resnet8_calibration.npy")
    compiled = compile_model(zoo / "resnet8.onnx", CONFIG, calibration, log=lambda *_: None)
    assert len(compiled.program.dram) > MEMORY_BYTES
    codes = compiled.network.tensors[compiled.network.input].quantize(calibration[:1])
    with pytest.raises(RunError, match="does not fit the board's memory"):
        run_codes(compiled, codes, "board", port=board)


def _raw(url: str, frames: list[tuple[bytes, int]]) -> list[bytes]:
    host, port = url.removeprefix("socket://").rsplit(":", 1)
    answers = []
    with socket.create_connection((host, int(port)), timeout=20) as s:
        for frame, expected in frames:
            s.sendall(frame)
            data = b""
            while len(data) < expected:
                data += s.recv(expected - len(data))
            answers.append(data)
            time.sleep(0.5)       # an answered error drains the line until it has been quiet a while
    return answers


def test_malformed_frames_on_the_line_are_answered(board):
    with BoardLink(board) as link:
        link.write_memory(0x100, bytes(range(8)))
    corrupt = bytearray(header(Command.READ_MEMORY, 0x100, 2))
    corrupt[3] ^= 0x40
    answers = _raw(board, [(bytes(corrupt), 2), (header(0x09, 0, 1), 2), (header(Command.READ_MEMORY, 1 << 20, 1), 6)])
    assert [a[-2] for a in answers] == [Status.BAD_HEADER_CHECKSUM, Status.BAD_COMMAND, Status.BUS_ERROR]
    assert all(sum(a) % 256 == 0 for a in answers)
    with BoardLink(board) as link:                # the bridge took the next host's requests as ever
        assert link.read_memory(0x100, 8) == bytes(range(8))


def test_a_batched_program_on_the_board_equals_the_emulator(board, tmp_path):
    """A program for 3 images (sw.compile --batch 3) with a host Softmax between engine programs: 4 images make a
    full run and a padded one, each image's tensors the emulator's."""
    compiled = compile_model(softmax_digits(tmp_path / "softmax.onnx"), CONFIG, np.load(DIGITS / "calibration.npy"),
                             method="mmse", per_channel=True, log=lambda *_: None, batch=3)
    assert compiled.host_layers
    net = compiled.network
    codes = net.tensors[net.input].quantize(_images(4))
    on_board = run_codes(compiled, codes, "board", keep=True, port=board)
    emulated = run_codes(compiled, codes, "emulator", keep=True)
    np.testing.assert_array_equal(on_board.codes, emulated.codes)
    assert len(on_board.tensors) == len(on_board.cycles) == 4
    for i in range(len(codes)):
        for name in compiled.materialized:
            np.testing.assert_array_equal(on_board.tensors[i][name], emulated.tensors[i][name],
                                          err_msg=f"tensor {name}, image {i}")



@pytest.mark.parametrize("name", ["icebreaker", "icebreaker-1x1"])
def test_random_programs_on_the_icebreaker_engine_equal_the_emulator(name):
    """The iCEBreaker's engine (int4 2x2 with the small part's choices: no command queues, four carry chains
    per decoder stage, no busy/stall counters, a serial decoder, one post-processing lane) in the simulated board
    top with the board's SPRAM memory (its behavioural model) and compact bridge, through the bridge: random
    programs leave the emulator's bytes in memory and its status. And the 30 MHz board's 1x1 engine with
    mid_clock, its bridge's write valids from registers."""
    from sim.programs import random_program

    config = board_config(BOARDS[name])
    rng = np.random.default_rng(21)
    programs = [random_program(config, rng) for _ in range(4)]
    with simulated_board(config, memory_kind="spram") as url, BoardLink(url) as link:
        for i, program in enumerate(programs):
            image = bytes(program.dram) + bytes(-len(program.dram) % 4)
            assert len(image) <= MEMORY_BYTES
            link.write_memory(0, image)
            link.start(program.program_addr, len(image))
            status = link.wait(120)
            emulator = Emulator(config, image)
            expected = emulator.run(program.program_addr)
            assert status is not None and (status.done, status.error) == (expected.done, int(expected.error)), i
            assert link.read_memory(0, len(image)) == bytes(emulator.dram), f"program {i}: memory differs"
            assert link.read_register("busy_compute") == 0       # left out of this build


@pytest.mark.parametrize("name", ["icebreaker", "icebreaker-1x1"])
def test_digits_on_the_icebreaker_board_equal_the_emulator(tmp_path, name):
    """The digits CNN compiled for the iCEBreaker's engine (``python -m sw.compile --config`` of the board build's
    config.json) fits the board's 128 KiB (its Gemms stacked, its regions packed to the bus; on the 30 MHz board's
    1x1, conv2's channel blocks in tall kernels of four and its strips' weights stored once) and runs on the
    simulated iCEBreaker board, SPRAM memory and compact bridge included: the logits and every stored tensor are the
    emulator's."""
    config = board_config(BOARDS[name])
    (tmp_path / "config.json").write_text(config.to_json())
    done = subprocess.run([sys.executable, "-m", "sw.compile", str(DIGITS / "digits_cnn.onnx"), "--config",
                           str(tmp_path / "config.json"), "--calibrate", str(DIGITS / "calibration.npy"), "--method",
                           "mmse", "--per-channel", "--out", str(tmp_path / "digits")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    compiled = CompiledNetwork.load(tmp_path / "digits")
    assert compiled.config == config
    assert len(compiled.program.dram) <= BOARDS[name].memory_bytes == MEMORY_BYTES
    net = compiled.network
    codes = net.tensors[net.input].quantize(_images(1))
    with simulated_board(config, memory_kind="spram") as url:
        on_board = run_codes(compiled, codes, "board", keep=True, port=url)
    emulated = run_codes(compiled, codes, "emulator", keep=True, cycles=True)
    np.testing.assert_array_equal(on_board.codes, emulated.codes)
    for name in compiled.materialized:
        np.testing.assert_array_equal(on_board.tensors[0][name], emulated.tensors[0][name], err_msg=name)
    assert abs(on_board.cycles[0] - emulated.cycles[0]) <= 0.02 * emulated.cycles[0], (on_board.cycles,
                                                                                      emulated.cycles)


def test_a_load_beyond_the_icebreaker_memory_is_a_bus_error_not_a_wrapped_read():
    """The iCEBreaker's engine counts burst addresses in the 17 bits of its 128 KiB (``dram_addr_bits``). With a
    ``dram_size`` larger than the memory the decoder lets a LOAD at 0x40028 through; its address keeps bit 17 set
    (not wrapped to 0x28, which the memory holds), so the memory answers an error: DRAM_RANGE, the engine stopped.
    The same LOAD at 0x28 completes."""
    from sw.compiler.program import ProgramBuilder

    config = board_config(BOARDS["icebreaker"])
    assert 1 << config.dram_addr_bits == MEMORY_BYTES

    def load_at(dram_addr: int) -> tuple[bytes, int]:
        b = ProgramBuilder(config, max_instructions=4)
        b.emit("LOAD", buffer=0, sram_addr=0, dram_addr=dram_addr, y_size=1, x_size=1, dram_stride=0)
        built = b.build("one LOAD")
        return bytes(built.dram) + bytes(-len(built.dram) % 4), built.program_addr

    with simulated_board(config) as url, BoardLink(url) as link:
        for dram_addr, error in ((0x28, ErrorCode.NONE), (0x40028, ErrorCode.DRAM_RANGE)):   # the error last
            image, program_addr = load_at(dram_addr)
            link.write_memory(0, image)
            link.start(program_addr, 1 << 20)
            status = link.wait(60)
            assert status is not None and status.error == error, (hex(dram_addr), status)
            assert status.done == (error is ErrorCode.NONE)
