"""Payloads that travel between PEs. The same layouts appear at the PE, the array and the streams."""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .spec.formats import Format

__all__ = ["act_lane", "psum_lane"]


def act_lane(fmt: Format) -> data.StructLayout:
    """An activation code and the weight bank it multiplies with (the bank travels with the data)."""
    return data.StructLayout({"code": unsigned(fmt.bits), "bank": unsigned(1)})


def psum_lane(bits: int) -> data.StructLayout:
    """A partial sum and its sticky flag: set once any product in it had a NaN or Inf operand."""
    return data.StructLayout({"value": signed(bits), "nonfinite": unsigned(1)})
