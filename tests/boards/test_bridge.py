"""The UART bridge (boards/bridge.py) with the board's memory behind it, on Amaranth's simulator: reads and writes of
memory and registers, and every malformed frame answered with its status (never a hang), after which the bridge
takes the next request."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from boards.bridge import UARTBridge
from boards.memory import BoardMemory
from hw.axi import axi4_lite_signature, axi4_signature
from hw.spec.bridge import Command, Status, checksum, header

CPB = 4                 # clocks per bit
TIMEOUT = 60 * CPB      # idle timeout: six bytes' time
MEMORY = 1024           # bytes


class _Registers(wiring.Component):
    """A stand-in for the engine's control port: 64 registers of 32 bits, OKAY responses."""

    port: In(axi4_lite_signature(8))

    def elaborate(self, platform):
        m = Module()
        regs = [Signal(32, name=f"r{i}") for i in range(64)]
        p = self.port
        pending_b, pending_r, data = Signal(), Signal(), Signal(32)
        m.d.comb += [p.aw.ready.eq(p.aw.valid & p.w.valid & ~pending_b), p.w.ready.eq(p.aw.ready),
                     p.b.valid.eq(pending_b), p.ar.ready.eq(~pending_r), p.r.valid.eq(pending_r), p.r.data.eq(data)]
        with m.If(p.aw.ready):
            m.d.sync += pending_b.eq(1)
            with m.Switch(p.aw.addr[2:]):
                for i, r in enumerate(regs):
                    with m.Case(i):
                        m.d.sync += r.eq(p.w.data)
        with m.If(p.b.valid & p.b.ready):
            m.d.sync += pending_b.eq(0)
        with m.If(p.ar.valid & p.ar.ready):
            m.d.sync += [pending_r.eq(1), data.eq(regs[0])]
            with m.Switch(p.ar.addr[2:]):
                for i, r in enumerate(regs):
                    with m.Case(i):
                        m.d.sync += data.eq(r)
        with m.If(p.r.valid & p.r.ready):
            m.d.sync += pending_r.eq(0)
        return m


class _Harness(wiring.Component):
    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, data_bits: int = 64, kind: str = "bram", compact: bool = False, held: bool = False):
        self.data_bits, self.kind, self.compact, self.held = data_bits, kind, compact, held
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = UARTBridge(clocks_per_bit=CPB, idle_timeout=TIMEOUT, compact=self.compact,
                                                  held_valids=self.held)
        size = MEMORY if self.kind == "bram" else 16384 * self.data_bits // 8
        m.submodules.memory = memory = BoardMemory(data_bits=self.data_bits, size=size, kind=self.kind)
        m.submodules.registers = registers = _Registers()
        wiring.connect(m, bridge.mem, memory.host)
        wiring.connect(m, bridge.ctrl, registers.port)
        for port in (memory.insn, memory.data):      # the engine's ports stay idle here
            m.d.comb += [port.ar.valid.eq(0), port.aw.valid.eq(0), port.w.valid.eq(0)]
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx)]
        return m


def _exchange(requests: list[tuple[bytes, int]], *, harness: _Harness | None = None,
              gaps: dict[int, int] | None = None, limit: int = 200_000) -> list[bytes]:
    """Send each request (with a pause of ``gaps[i]`` cycles inside it at byte ``i``), wait for the number of answer
    bytes given beside it, and return the answers. A bridge that does not answer fails the test, never hangs it."""
    dut = harness or _Harness()
    answers: list[bytes] = []
    received: list[int] = []

    async def listen(ctx):
        while True:
            while ctx.get(dut.tx):                     # wait for a start bit
                await ctx.tick()
            await ctx.tick().repeat(CPB // 2)
            value = 0
            for i in range(8):
                await ctx.tick().repeat(CPB)
                value |= ctx.get(dut.tx) << i
            await ctx.tick().repeat(CPB)
            assert ctx.get(dut.tx) == 1, "stop bit"
            received.append(value)

    async def talk(ctx):
        for request, answer_bytes in requests:
            start = len(received)
            for i, byte in enumerate(request):
                if gaps and i in gaps:
                    await ctx.tick().repeat(gaps[i])
                for bit in [0, *((byte >> k) & 1 for k in range(8)), 1]:
                    ctx.set(dut.rx, bit)
                    await ctx.tick().repeat(CPB)
            waited = 0
            while len(received) < start + answer_bytes:
                await ctx.tick().repeat(10 * CPB)
                waited += 10 * CPB
                assert waited < limit, f"no answer after {waited} cycles: got {bytes(received[start:])!r}"
            answers.append(bytes(received[start:start + answer_bytes]))
            await ctx.tick().repeat(4 * TIMEOUT)            # the drain after an error ends
            assert len(received) == start + answer_bytes, "the bridge sent more than one answer"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(listen, background=True)
    sim.add_testbench(talk)
    sim.run()
    return answers


def _write(command, address, words) -> tuple[bytes, int]:
    payload = b"".join(w.to_bytes(4, "little") for w in words)
    return header(command, address, len(words)) + payload + bytes([checksum(payload)]), 2


def _read(command, address, count) -> tuple[bytes, int]:
    return header(command, address, count), 4 * count + 2


def _status(answer: bytes) -> Status:
    assert sum(answer) % 256 == 0, f"answer checksum wrong: {answer.hex()}"
    return Status(answer[-2])


def _words(answer: bytes) -> list[int]:
    return [int.from_bytes(answer[i:i + 4], "little") for i in range(0, len(answer) - 2, 4)]


@pytest.mark.parametrize("data_bits,kind,compact,held", [(64, "bram", False, False), (128, "bram", False, False),
                                                         (32, "bram", False, False), (64, "spram", True, False),
                                                         (64, "bram", True, False), (64, "spram", True, True)])
def test_memory_round_trip(data_bits, kind, compact, held):
    """(``held``: the write valids from registers, a mid_clock engine's bridge.)"""
    rng = random.Random(data_bits)
    words = [rng.getrandbits(32) for _ in range(7)]
    answers = _exchange([_write(Command.WRITE_MEMORY, 0x24, words), _read(Command.READ_MEMORY, 0x20, 9),
                         _write(Command.WRITE_MEMORY, 0x2C, [0xDEADBEEF]), _read(Command.READ_MEMORY, 0x24, 3)],
                        harness=_Harness(data_bits, kind, compact, held))
    assert [_status(a) for a in answers] == [Status.OK] * 4
    assert _words(answers[1]) == [0, *words, 0]
    assert _words(answers[3]) == [words[0], words[1], 0xDEADBEEF]


@pytest.mark.parametrize("held", [False, True])
def test_registers_round_trip(held):
    answers = _exchange([_write(Command.WRITE_REGISTER, 0x10, [5, 6]), _read(Command.READ_REGISTER, 0x0C, 4)],
                        harness=_Harness(compact=held, held=held))
    assert [_status(a) for a in answers] == [Status.OK, Status.OK]
    assert _words(answers[1]) == [0, 5, 6, 0]


@pytest.mark.parametrize("compact, held", [(False, False), (True, False), (True, True)])
def test_out_of_range_is_a_bus_error_with_the_frame_complete(compact, held):
    """(``compact``: the small part's bridge, counting in its header's registers; ``held``: its write valids from
    registers.)"""
    last = MEMORY - 4
    answers = _exchange([_write(Command.WRITE_MEMORY, last, [1, 2]), _read(Command.READ_MEMORY, last, 2),
                         _read(Command.READ_REGISTER, 0xFC, 2), _write(Command.WRITE_REGISTER, 0x100, [9]),
                         _read(Command.READ_MEMORY, 0xFFFFFFFC, 1), _read(Command.READ_MEMORY, last, 1),
                         _read(Command.READ_REGISTER, 0, 1)],
                        harness=_Harness(compact=compact, held=held))
    assert [_status(a) for a in answers] == [Status.BUS_ERROR] * 5 + [Status.OK] * 2
    assert _words(answers[1]) == [1, 0] and _words(answers[2]) == [0, 0] and _words(answers[5]) == [1]
    assert _words(answers[6]) == [0]        # the write to 0x100 reached no register (not 0x100's low bits, 0)


@pytest.mark.parametrize("frame,status", [
    (header(0x00, 0, 1), Status.BAD_COMMAND),
    (header(0x7F, 0, 1), Status.BAD_COMMAND),
    (header(Command.READ_MEMORY, 0, 0), Status.BAD_COUNT),
    (header(Command.READ_MEMORY, 2, 1), Status.MISALIGNED),
    (header(Command.READ_MEMORY, 0, 1)[:-1] + b"\x00", Status.BAD_HEADER_CHECKSUM),
    # a header corrupted on the line, its payload following: answered once, the payload drained
    (bytes([0x02, 0, 0, 0, 0, 1, 0, 0x55]) + bytes(5), Status.BAD_HEADER_CHECKSUM),
], ids=["command-0", "command-7f", "count-0", "misaligned", "header-checksum", "corrupt-with-payload"])
def test_malformed_header_is_answered_then_the_bridge_recovers(frame, status):
    answers = _exchange([(frame, 2), _read(Command.READ_MEMORY, 0, 1)])
    assert _status(answers[0]) == status
    assert _status(answers[1]) == Status.OK


def test_bad_payload_checksum():
    frame, n = _write(Command.WRITE_MEMORY, 0, [0x01020304])
    answers = _exchange([(frame[:-1] + bytes([frame[-1] ^ 1]), n), _read(Command.READ_MEMORY, 0, 1)])
    assert _status(answers[0]) == Status.BAD_PAYLOAD_CHECKSUM
    assert _words(answers[1]) == [0x01020304]        # written as it arrived: the host writes it again


@pytest.mark.parametrize("cut", [3, 10])
def test_a_frame_that_stops_is_answered_timeout(cut):
    frame, _ = _write(Command.WRITE_MEMORY, 0, [1, 2])
    answers = _exchange([(frame[:cut], 2), _read(Command.READ_MEMORY, 0, 1)])
    assert _status(answers[0]) == Status.TIMEOUT
    assert _status(answers[1]) == Status.OK


def test_pauses_shorter_than_the_timeout_are_fine():
    frame, n = _write(Command.WRITE_MEMORY, 8, [0xCAFE])
    answers = _exchange([(frame, n), _read(Command.READ_MEMORY, 8, 1)], gaps={3: TIMEOUT // 2, 9: TIMEOUT // 2})
    assert _status(answers[0]) == Status.OK and _words(answers[1]) == [0xCAFE]
