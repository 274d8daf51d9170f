"""The engines' side of a buffer's memory ports, sized from the buffer's depth and line shape."""

from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In

__all__ = ["address_bits", "read_port", "write_port"]


def address_bits(depth: int) -> int:
    """Bits that address ``depth`` lines (at least one)."""
    return (depth - 1).bit_length() or 1


def read_port(depth: int, shape):
    """A signature member for reading a buffer (the port's signature, flipped: the engine drives the address)."""
    return In(ReadPort.Signature(addr_width=address_bits(depth), shape=shape))


def write_port(depth: int, shape):
    """A signature member for writing a buffer."""
    return In(WritePort.Signature(addr_width=address_bits(depth), shape=shape))
