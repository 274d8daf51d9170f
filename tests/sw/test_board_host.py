"""The host driver of the UART bridge (sw/board/host.py) against a model of the bridge written from the protocol's
description (hw/spec/bridge.py): chunked transfers, registers by name, the engine's start and status, damaged
answers and frames repeated, errors that are not repeated raised, and a silent bridge a clear error, not a hang."""

import pytest

from hw.spec.bridge import HEADER_BYTES, WRITES, Command, Status, checksum
from hw.spec.registers import STATUS_DONE, STATUS_ERROR, by_name
from sw.board import BoardLink, BridgeError
from sw.board.host import CHUNK_WORDS, RETRIES


class FakeBridge:
    """A serial port with the bridge behind it: a byte memory, the registers, and faults to inject. ``faults`` is
    a list of what happens to the next frames: "ok", "silent" (no answer), "garble" (an answer byte flipped) or a
    Status to answer instead."""

    def __init__(self, memory_bytes: int = 64 * 1024, faults=()):
        self.memory = bytearray(memory_bytes)
        self.registers = {r: 0 for r in range(0, 0x50, 4)}
        self.faults = list(faults)
        self.frames: list[tuple[Command, int, int]] = []
        self.timeout = 1.0
        self.resyncs = 0
        self._answer = b""
        self.on_start = lambda: None

    # --- the serial port's side -------------------------------------------------------------------------------
    def write(self, data: bytes) -> int:
        command, address = Command(data[0]), int.from_bytes(data[1:5], "little")
        count = int.from_bytes(data[5:7], "little")
        assert sum(data[:HEADER_BYTES]) % 256 == 0, "the driver sent a bad header checksum"
        self.frames.append((command, address, count))
        payload = data[HEADER_BYTES:-1] if command in WRITES else b""
        if command in WRITES:
            assert len(payload) == 4 * count and (sum(payload) + data[-1]) % 256 == 0
        fault = self.faults.pop(0) if self.faults else "ok"
        if fault == "silent":
            self._answer = b""
        elif isinstance(fault, Status):
            self._answer = self._close(b"", fault)
        else:
            self._answer = self._serve(command, address, count, payload)
            if fault == "garble":
                self._answer = bytes([self._answer[0] ^ 0x20]) + self._answer[1:]
        return len(data)

    def read(self, n: int) -> bytes:
        out, self._answer = self._answer[:n], self._answer[n:]
        return out

    def reset_input_buffer(self) -> None:
        self.resyncs += 1
        self._answer = b""

    def close(self) -> None:
        pass

    # --- the bridge's side --------------------------------------------------------------------------------------
    def _serve(self, command, address, count, payload) -> bytes:
        data, status = b"", Status.OK
        for i in range(count):
            at = address + 4 * i
            if command in (Command.READ_MEMORY, Command.WRITE_MEMORY):
                inside = at + 4 <= len(self.memory)
            else:
                inside = at in self.registers
            if not inside:
                status = Status.BUS_ERROR
            if command == Command.READ_MEMORY:
                data += bytes(self.memory[at:at + 4]) if inside else bytes(4)
            elif command == Command.WRITE_MEMORY and inside:
                self.memory[at:at + 4] = payload[4 * i:4 * i + 4]
            elif command == Command.READ_REGISTER:
                data += (self.registers[at] if inside else 0).to_bytes(4, "little")
            elif inside:
                self.registers[at] = int.from_bytes(payload[4 * i:4 * i + 4], "little")
                if at == by_name("control").address:
                    self.on_start()
        return self._close(data, status)

    @staticmethod
    def _close(data: bytes, status: Status) -> bytes:
        body = data + bytes([status])
        return body + bytes([checksum(body)])


def _link(bridge: FakeBridge) -> BoardLink:
    return BoardLink("fake", connection=bridge, idle_timeout=0.001, timeout=0.01)


def test_memory_in_chunks():
    bridge = FakeBridge()
    data = bytes(i * 7 % 256 for i in range(4 * (2 * CHUNK_WORDS + 3)))
    link = _link(bridge)
    link.write_memory(0x400, data)
    assert bridge.memory[0x400:0x400 + len(data)] == data
    assert link.read_memory(0x400, len(data)) == data
    assert [f[2] for f in bridge.frames] == [CHUNK_WORDS, CHUNK_WORDS, 3] * 2


def test_only_whole_words():
    link = _link(FakeBridge())
    for call in (lambda: link.write_memory(2, bytes(4)), lambda: link.write_memory(0, bytes(3)),
                 lambda: link.read_memory(0, 6)):
        with pytest.raises(ValueError, match="whole 32-bit words"):
            call()


def test_registers_by_name_and_a_run():
    bridge = FakeBridge()
    link = _link(bridge)

    def finish():
        bridge.registers[by_name("status").address] = STATUS_DONE
        bridge.registers[by_name("cycles_lo").address] = 1234
        bridge.registers[by_name("cycles_hi").address] = 1
    bridge.on_start = finish
    link.start(0x40, 0x8000)
    assert bridge.registers[by_name("program_addr").address] == 0x40
    assert bridge.registers[by_name("dram_size").address] == 0x8000
    status = link.wait(1.0)
    assert status.done and status.error == 0 and status.cycles == (1 << 32) + 1234


def test_a_start_waits_for_an_earlier_run_and_gives_up():
    bridge = FakeBridge()
    bridge.registers[by_name("status").address] = 1           # busy
    with pytest.raises(BridgeError, match="still busy with an earlier run"):
        _link(bridge).start(0, 1024, idle_within=0.05)
    assert bridge.registers[by_name("control").address] == 0


def test_an_engine_error_and_an_engine_that_never_stops():
    bridge = FakeBridge()
    link = _link(bridge)
    bridge.registers[by_name("status").address] = STATUS_ERROR
    bridge.registers[by_name("error_code").address] = 3
    bridge.registers[by_name("error_pc").address] = 17
    status = link.wait(1.0)
    assert not status.done and (status.error, status.error_pc) == (3, 17)
    bridge.registers[by_name("status").address] = 1           # busy for ever
    assert link.wait(0.05) is None


@pytest.mark.parametrize("fault", ["silent", "garble", Status.BAD_PAYLOAD_CHECKSUM, Status.TIMEOUT,
                                   Status.BAD_HEADER_CHECKSUM])
def test_a_damaged_memory_transfer_is_repeated(fault):
    bridge = FakeBridge(faults=[fault])
    link = _link(bridge)
    link.write_memory(0, b"abcd")
    assert bridge.memory[:4] == b"abcd" and len(bridge.frames) == 2 and bridge.resyncs == 1


def test_repeats_end():
    bridge = FakeBridge(faults=["silent"] * (RETRIES + 1))
    with pytest.raises(BridgeError, match=r"READ_MEMORY of 1 words at 0x0 on fake: 0 of 6 answer bytes arrived"):
        _link(bridge).read_memory(0, 4)
    assert len(bridge.frames) == RETRIES + 1


def test_errors_that_repeat_identically_are_not_repeated():
    bridge = FakeBridge(memory_bytes=1024)
    with pytest.raises(BridgeError, match="the bridge answered BUS_ERROR") as caught:
        _link(bridge).read_memory(1020, 8)
    assert caught.value.status is Status.BUS_ERROR and len(bridge.frames) == 1


def test_register_writes_are_never_repeated():
    bridge = FakeBridge(faults=[Status.TIMEOUT])
    with pytest.raises(BridgeError, match="WRITE_REGISTER of 1 words at 0x0 on fake: the bridge answered TIMEOUT"):
        _link(bridge).write_register("control", 1)
    assert len(bridge.frames) == 1


def test_the_host_side_never_imports_amaranth():
    """A host that only drives a board needs pyserial and numpy, not the hardware generator."""
    import subprocess
    import sys
    code = ("import sys, sw.board, sw.runtime.board, sw.run; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('amaranth', 'boards', 'sim')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", (done.stdout, done.stderr)
