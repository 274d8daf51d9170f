"""hw/buffer_ports.py: which memories may leave read-during-write collisions undefined, and what that saves."""

import re

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.buffer_ports import NO_COLLISIONS
from hw.engine import InferenceEngine
from hw.spec.config import AcceleratorConfig
from hw.synth import synthesize


class _Buffer(wiring.Component):
    """One write port, one registered read port, as the engine's buffers."""

    def __init__(self, width: int, depth: int, attrs: dict | None):
        self._width, self._depth, self._attrs = width, depth, attrs
        super().__init__({"waddr": In(range(depth)), "wdata": In(width), "we": In(1),
                          "raddr": In(range(depth)), "rdata": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=unsigned(self._width), depth=self._depth, init=[], attrs=self._attrs)
        write, read = mem.write_port(), mem.read_port()
        m.d.comb += [write.addr.eq(self.waddr), write.data.eq(self.wdata), write.en.eq(self.we),
                     read.addr.eq(self.raddr), self.rdata.eq(read.data)]
        return m


@pytest.mark.parametrize("attrs, soft_logic", [(None, True), (NO_COLLISIONS, False)])
def test_undefined_collisions_leave_no_soft_logic_beside_the_block_ram(attrs, soft_logic, tmp_path):
    """Without the attribute yosys emulates old-data reads around the iCE40's block RAM: a flip-flop or more per
    read bit (the delayed write and the bypass) and a LUT per bit; with it, the block RAM alone."""
    width = 32
    text = verilog.convert(_Buffer(width, 256, attrs), name="top", emit_src=False)
    ice40 = synthesize(text, tmp_path, targets=("ice40",))["ice40"]
    assert ice40["brams"] >= 1
    if soft_logic:
        assert ice40["flipflops"] >= width and ice40["luts"] >= width
    else:
        assert ice40["flipflops"] == 0 and ice40["luts"] <= 2


def test_engine_buffers_written_by_load_leave_collisions_undefined():
    """act, weight and PARAM (a LOAD writes them while another engine reads other lines) carry the attribute; the
    accumulators, whose compute reads are transparent and whose barriers rewrite lines STOREs read, do not."""
    config = AcceleratorConfig(rows=2, cols=2, weight_format="int8", act_format="int8")
    text = verilog.convert(InferenceEngine(config), name="top", emit_src=False)
    declared = {name: bool(attr) for attr, name in re.findall(r"(\(\* no_rw_check[^)]*\*\)\s*)?reg \[[^\]]*\] (\w+) \[",
                                                            text)}
    assert {name: declared[name] for name in ("act_buffer", "weight_buffer", "param_buffer", "accumulator_buffer")} \
        == {"act_buffer": True, "weight_buffer": True, "param_buffer": True, "accumulator_buffer": False}
