"""The engines' side of a buffer's memory ports, sized from the buffer's depth and line shape."""

from amaranth.lib.memory import ReadPort, WritePort
from amaranth.lib.wiring import In

__all__ = ["NO_COLLISIONS", "address_bits", "read_port", "write_port"]


#: Attributes of a memory whose read ports never read a line in the cycle it is written (or whose reader does not use
#: what such a read returns), such as a single-ported RAM modelled with a read and a write port. Without them yosys
#: keeps the old-data-on-collision behaviour of a non-transparent read port by delaying every write a cycle and adding
#: a bypass multiplexer in soft logic (memory_libmap's "emulate read-first behavior"): a LUT and two flip-flops per
#: line bit on the ECP5 and the iCE40, and an address comparison ahead of every block RAM. The engine's act, weight,
#: PARAM and LUT buffers qualify: a LOAD writes them and COMPUTE or STORE reads them, and in a race-free program (the
#: premise of the emulator and of the compiler's programs, checked by ``sim.programs.check_schedule``) no line is read
#: by one engine while another writes it. The accumulators do not: the compute engine's reads are transparent, and the
#: compiler's barriers rewrite a line with its own value while STOREs read it. Simulation is unchanged (reads see the
#: old line).
NO_COLLISIONS = {"no_rw_check": 1}


def address_bits(depth: int) -> int:
    """Bits that address ``depth`` lines (at least one)."""
    return (depth - 1).bit_length() or 1


def read_port(depth: int, shape):
    """A signature member for reading a buffer (the port's signature, flipped: the engine drives the address)."""
    return In(ReadPort.Signature(addr_width=address_bits(depth), shape=shape))


def write_port(depth: int, shape, granularity: int | None = None):
    """A signature member for writing a buffer (``granularity``: bits one enable writes, None: the whole line)."""
    return In(WritePort.Signature(addr_width=address_bits(depth), shape=shape, granularity=granularity))
