"""Payloads that travel between PEs. The same layouts appear at the PE, the array and the streams."""

from amaranth.hdl import C, Cat, signed, unsigned
from amaranth.lib import data

from .spec.formats import Format

__all__ = ["act_lane", "psum_lane", "packed_pair"]


def act_lane(fmt: Format | int, select_bits: int = 0, packed: bool = False) -> data.StructLayout:
    """An activation code (of ``fmt``, or a slot of that many bits) and the weight bank it multiplies with (the bank
    travels with the data). With ``select_bits`` (a multi-format array) the indices of the formats the code and
    its weight are decoded in travel with it too, so a layer's formats sweep across the array with its data."""
    fields = {"code": unsigned(fmt if isinstance(fmt, int) else fmt.bits), "bank": unsigned(1)}
    if select_bits:
        fields.update(weight_format=unsigned(select_bits), act_format=unsigned(select_bits))
    if packed:
        # A build that packs per layer: whether this layer's lane holds two codes (its pair packs).
        fields.update(packed=unsigned(1))
    return data.StructLayout(fields)


def psum_lane(bits: int) -> data.StructLayout:
    """A partial sum and its sticky flag: set once any product in it had a NaN or Inf operand."""
    return data.StructLayout({"value": signed(bits), "nonfinite": unsigned(1)})


def packed_pair(config, weight_format, act_format):
    """High where the format indices ``weight_format`` x ``act_format`` select a pair the build packs
    (:attr:`~hw.spec.config.AcceleratorConfig.packed_pairs`), for the array, the compute engine and the decoder."""
    hits = [(weight_format == i) & (act_format == j) for i, j in config.packed_pairs]
    return Cat(*hits).any() if hits else C(0, 1)
