"""Payloads that travel between PEs. The same layouts appear at the PE, the array and the streams."""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .spec.formats import Format

__all__ = ["act_lane", "psum_lane"]


def act_lane(fmt: Format | int, select_bits: int = 0) -> data.StructLayout:
    """An activation code (of ``fmt``, or a slot of that many bits) and the weight bank it multiplies with (the bank
    travels with the data). With ``select_bits`` (a multi-format array) the indices of the formats the code and
    its weight are decoded in travel with it too, so a layer's formats sweep across the array with its data."""
    fields = {"code": unsigned(fmt if isinstance(fmt, int) else fmt.bits), "bank": unsigned(1)}
    if select_bits:
        fields.update(weight_format=unsigned(select_bits), act_format=unsigned(select_bits))
    return data.StructLayout(fields)


def psum_lane(bits: int) -> data.StructLayout:
    """A partial sum and its sticky flag: set once any product in it had a NaN or Inf operand."""
    return data.StructLayout({"value": signed(bits), "nonfinite": unsigned(1)})
