"""AXI4 (data) and AXI4-Lite (control) interfaces as wiring signatures, from the master's side.

Only the signals the engine needs: one ID (all zero, so ``ID`` wires are omitted), INCR bursts, full-width
beats; caches, protection and QoS take their AXI defaults in the interconnect. Channel members keep AXI's
names (``ar.addr`` is ARADDR), so the Verilog ports read ``data__ar__addr`` and so on.
"""

from amaranth.hdl import unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["axi4_signature", "axi4_read_signature", "axi4_write_signature", "axi4_lite_signature",
           "BURST_INCR", "RESP_OKAY"]

BURST_INCR = 1
RESP_OKAY = 0


def _channel(members: dict, *, to_slave: bool) -> wiring.Signature:
    """A valid/ready channel; ``to_slave`` channels are driven by the master."""
    d = Out if to_slave else In
    u = In if to_slave else Out
    return wiring.Signature({"valid": d(1), "ready": u(1), **{k: d(v) for k, v in members.items()}})


def axi4_signature(addr_bits: int = 32, data_bits: int = 64) -> wiring.Signature:
    """An AXI4 master port: AR/R for reads, AW/W/B for writes."""
    if data_bits not in (32, 64, 128, 256, 512, 1024):
        raise ValueError(f"AXI data width must be a power of two from 32 to 1024, not {data_bits}")
    return wiring.Signature({
        "ar": Out(_channel({"addr": unsigned(addr_bits), "len": unsigned(8), "size": unsigned(3),
                            "burst": unsigned(2)}, to_slave=True)),
        "r": Out(_channel({"data": unsigned(data_bits), "resp": unsigned(2), "last": unsigned(1)}, to_slave=False)),
        "aw": Out(_channel({"addr": unsigned(addr_bits), "len": unsigned(8), "size": unsigned(3),
                            "burst": unsigned(2)}, to_slave=True)),
        "w": Out(_channel({"data": unsigned(data_bits), "strb": unsigned(data_bits // 8), "last": unsigned(1)},
                          to_slave=True)),
        "b": Out(_channel({"resp": unsigned(2)}, to_slave=False)),
    })


def axi4_read_signature(addr_bits: int = 32, data_bits: int = 64) -> wiring.Signature:
    """The read half (AR, R) of an AXI4 master port."""
    members = axi4_signature(addr_bits, data_bits).members
    return wiring.Signature({"ar": members["ar"], "r": members["r"]})


def axi4_write_signature(addr_bits: int = 32, data_bits: int = 64) -> wiring.Signature:
    """The write half (AW, W, B) of an AXI4 master port."""
    members = axi4_signature(addr_bits, data_bits).members
    return wiring.Signature({"aw": members["aw"], "w": members["w"], "b": members["b"]})


def axi4_lite_signature(addr_bits: int = 8) -> wiring.Signature:
    """An AXI4-Lite master port with 32-bit data (the engine's control port is its flipped form)."""
    return wiring.Signature({
        "ar": Out(_channel({"addr": unsigned(addr_bits)}, to_slave=True)),
        "r": Out(_channel({"data": unsigned(32), "resp": unsigned(2)}, to_slave=False)),
        "aw": Out(_channel({"addr": unsigned(addr_bits)}, to_slave=True)),
        "w": Out(_channel({"data": unsigned(32), "strb": unsigned(4)}, to_slave=True)),
        "b": Out(_channel({"resp": unsigned(2)}, to_slave=False)),
    })
