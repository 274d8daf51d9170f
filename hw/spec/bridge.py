"""The UART bridge's framed protocol: one definition for the gateware (boards/bridge.py) and the host (sw/board).

The host sends a request, the bridge answers it; nothing else crosses the link. All numbers are little-endian.

Request::

    command (1) | address (4) | count (2) | header checksum (1) [| payload (4 * count) | payload checksum (1)]

- ``command``: :class:`Command`; the payload follows the writes only.
- ``address``: byte address of the first 32-bit word, a multiple of 4: in the board's memory, or of a control
  register (``hw/spec/registers.py``) for the register commands. Word ``i`` is at ``address + 4 * i``.
- ``count``: 32-bit words, 1..65535.
- a checksum byte makes the bytes it closes sum to zero modulo 256 (:func:`checksum`): the header's covers the
  seven bytes before it, the payload's the payload.

Response: for a read whose header was accepted, ``4 * count`` data bytes; then, always, ``status (1) |
checksum (1)``, the checksum closing everything the response sent. A header that fails its checks is answered at
once with its status, and the bridge then drops every byte until the line has been quiet for its idle timeout,
so a host resynchronises by waiting that long. A frame whose bytes stop arriving half-way is answered ``TIMEOUT``
after the idle timeout. A write's words are written as they arrive: a ``BAD_PAYLOAD_CHECKSUM`` or ``BUS_ERROR``
answer means the range must be written again. A word beyond the memory or the register window is not accessed and
makes the status ``BUS_ERROR`` (its read data is zero); the transfer still runs to its end, so the frame's length
never depends on the data.
"""

from __future__ import annotations

import enum

__all__ = ["Command", "Status", "HEADER_BYTES", "MAX_WORDS", "checksum", "header", "WRITES"]


class Command(enum.IntEnum):
    READ_MEMORY = 0x01
    WRITE_MEMORY = 0x02
    READ_REGISTER = 0x03
    WRITE_REGISTER = 0x04


#: Commands whose request carries a payload.
WRITES = (Command.WRITE_MEMORY, Command.WRITE_REGISTER)


class Status(enum.IntEnum):
    OK = 0x00
    BAD_HEADER_CHECKSUM = 0x01
    BAD_COMMAND = 0x02
    BAD_COUNT = 0x03
    MISALIGNED = 0x04
    BUS_ERROR = 0x05
    BAD_PAYLOAD_CHECKSUM = 0x06
    TIMEOUT = 0x07


#: Bytes of a request header, its checksum included.
HEADER_BYTES = 8
#: Most words one request moves (the count field's range).
MAX_WORDS = 0xFFFF


def checksum(data: bytes) -> int:
    """The byte that makes ``data`` plus itself sum to zero modulo 256."""
    return -sum(data) & 0xFF


def header(command: int, address: int, count: int) -> bytes:
    """A request header with its checksum (no range checks: tests build malformed ones with it too)."""
    body = bytes([command & 0xFF]) + (address & 0xFFFFFFFF).to_bytes(4, "little") + (count & 0xFFFF).to_bytes(2, "little")
    return body + bytes([checksum(body)])
