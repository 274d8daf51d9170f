"""The host's end of the UART bridge: memory and control registers of a board (real or simulated) over a serial link.

``BoardLink(port)`` opens a serial port (``/dev/ttyUSB1``) or any pyserial URL (``socket://127.0.0.1:PORT`` for the
board simulated on Verilator, see ``sim/board_sim.py``) and speaks the protocol of ``hw/spec/bridge.py``: read and
write memory in chunks, read and write registers by name (``hw/spec/registers.py``), start the engine and wait for
it. Pure Python and pyserial: no Amaranth.

A memory transfer whose answer is damaged or says the frame was damaged (checksums, a timeout) is resynchronised and
repeated, at most :data:`RETRIES` times; a register access is not repeated (a start must not run twice): it raises.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hw.spec.bridge import WRITES, Command, Status, checksum, header
from hw.spec.registers import CONTROL_START, STATUS_BUSY, STATUS_DONE, STATUS_ERROR, by_name

__all__ = ["BoardLink", "BridgeError", "EngineStatus", "CHUNK_WORDS", "RETRIES"]

#: Words per memory frame: 1 KiB of payload, so a damaged frame costs little to send again.
CHUNK_WORDS = 256
RETRIES = 3
#: Statuses after which sending the same frame again can succeed.
_TRANSIENT = (Status.BAD_HEADER_CHECKSUM, Status.BAD_PAYLOAD_CHECKSUM, Status.TIMEOUT)


class BridgeError(RuntimeError):
    """The bridge answered an error, or did not answer; ``status`` is the bridge's, None for no answer."""

    def __init__(self, message: str, status: Status | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class EngineStatus:
    done: bool
    error: int
    error_pc: int
    cycles: int


class BoardLink:
    """A board behind its UART bridge. ``idle_timeout``: the bridge's, in seconds (it drains this long after a bad
    header); ``timeout``: seconds to wait for an answer beyond its transfer time at ``baud``."""

    def __init__(self, port: str, *, baud: int = 115200, timeout: float = 2.0, idle_timeout: float = 0.05,
                 connection=None):
        """``connection``: an open serial-like object (``read``, ``write``, ``timeout``, ``reset_input_buffer``,
        ``close``) to use instead of opening ``port``, which then only names it in messages."""
        if connection is None:
            import serial
            connection = serial.serial_for_url(port, baudrate=baud, timeout=timeout)
        self._serial = connection
        self._port, self._baud, self._timeout, self._idle = port, baud, timeout, idle_timeout

    def close(self) -> None:
        self._serial.close()

    def __enter__(self) -> "BoardLink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- memory ------------------------------------------------------------------------------------------------
    def write_memory(self, address: int, data: bytes) -> None:
        """Write ``data`` (a whole number of 32-bit words) at ``address`` (a multiple of 4)."""
        data = bytes(data)
        if address % 4 or len(data) % 4:
            raise ValueError(f"memory writes take whole 32-bit words at a multiple of 4, not {len(data)} bytes "
                             f"at 0x{address:x}")
        step = 4 * CHUNK_WORDS
        for at in range(0, len(data), step):
            self._retried(Command.WRITE_MEMORY, address + at, data[at:at + step])

    def read_memory(self, address: int, nbytes: int) -> bytes:
        """``nbytes`` (a multiple of 4) from ``address`` (a multiple of 4)."""
        if address % 4 or nbytes % 4:
            raise ValueError(f"memory reads take whole 32-bit words at a multiple of 4, not {nbytes} bytes "
                             f"at 0x{address:x}")
        step = 4 * CHUNK_WORDS
        return b"".join(self._retried(Command.READ_MEMORY, address + at, min(step, nbytes - at) // 4)
                        for at in range(0, nbytes, step))

    # --- registers ---------------------------------------------------------------------------------------------
    def read_register(self, name: str) -> int:
        data = self._transfer(Command.READ_REGISTER, by_name(name).address, 1)
        return int.from_bytes(data, "little")

    def write_register(self, name: str, value: int) -> None:
        self._transfer(Command.WRITE_REGISTER, by_name(name).address, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    def start(self, program_addr: int, dram_size: int, *, idle_within: float = 5.0) -> None:
        """Start the engine at ``program_addr`` with a memory window of ``dram_size`` bytes. An engine still busy
        (a run another host left) ignores a start: it is given ``idle_within`` seconds to finish, else an error."""
        deadline = time.monotonic() + idle_within
        while self.read_register("status") & STATUS_BUSY:
            if time.monotonic() > deadline:
                raise BridgeError(f"the engine on {self._port} is still busy with an earlier run after "
                                  f"{idle_within:g} s; reset the board")
        self.write_register("program_addr", program_addr)
        self.write_register("dram_size", dram_size)
        self.write_register("control", CONTROL_START)

    def wait(self, seconds: float) -> EngineStatus | None:
        """Poll the status until the engine is done or failed; None if it is still busy after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            status = self.read_register("status")
            if not status & STATUS_BUSY and status & (STATUS_DONE | STATUS_ERROR):
                cycles = self.read_register("cycles_lo") | self.read_register("cycles_hi") << 32
                return EngineStatus(bool(status & STATUS_DONE), self.read_register("error_code"),
                                    self.read_register("error_pc"), cycles)
            if time.monotonic() > deadline:
                return None

    # --- frames ------------------------------------------------------------------------------------------------
    def _retried(self, command: Command, address: int, payload_or_count):
        for attempt in range(RETRIES + 1):
            try:
                return self._transfer(command, address, payload_or_count)
            except BridgeError as e:
                if attempt == RETRIES or (e.status is not None and e.status not in _TRANSIENT):
                    raise
                self.resync()

    def resync(self) -> None:
        """Let the bridge drop whatever it was in the middle of, and forget what it sent."""
        time.sleep(2 * self._idle)
        self._serial.reset_input_buffer()

    def _transfer(self, command: Command, address: int, payload_or_count) -> bytes:
        """One request and its answer: the read data (empty for writes)."""
        if command in WRITES:
            payload = bytes(payload_or_count)
            count = len(payload) // 4
            frame = header(command, address, count) + payload + bytes([checksum(payload)])
            expected = 2
        else:
            count = payload_or_count
            frame = header(command, address, count)
            expected = 4 * count + 2
        self._serial.write(frame)
        self._serial.timeout = self._timeout + 20 * (len(frame) + expected) / self._baud
        answer = self._serial.read(expected)
        what = f"{command.name} of {count} words at 0x{address:x} on {self._port}"
        if len(answer) != expected:
            if len(answer) == 2 and sum(answer) % 256 == 0 and answer[0] in Status._value2member_map_:
                raise BridgeError(f"{what}: the bridge answered {Status(answer[0]).name}", Status(answer[0]))
            raise BridgeError(f"{what}: {len(answer)} of {expected} answer bytes arrived")
        if sum(answer) % 256:
            raise BridgeError(f"{what}: the answer's checksum is wrong")
        status = Status(answer[-2]) if answer[-2] in Status._value2member_map_ else None
        if status is not Status.OK:
            name = status.name if status is not None else f"unknown status 0x{answer[-2]:02x}"
            raise BridgeError(f"{what}: the bridge answered {name}", status)
        return answer[:-2]

