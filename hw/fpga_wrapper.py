"""A wrapper that places and routes any component out of context on a few pins: its ports behind shift chains.

A core has hundreds of ports (the engine's two 128-bit AXI4 buses alone take ~600), more than a small package
has pins (the iCE40 UP5K SG48 has 39), and unregistered pins would put I/O delays into every path. The wrapper
gives every port a flip-flop of its own::

    sin --> [ input chain: one flip-flop per input bit, shifts unless capture ] ==> core inputs
    core outputs ==> [ output chain: loads all outputs when capture, else shifts ] --> sout

so every path the timing report sees starts and ends at a register inside the FPGA, as it would behind an
interconnect, and the core keeps all its logic (every input bit is an independent, unknown value; every output
bit is observed). The chains cost one flip-flop per port bit (``wrapper_flipflops``) and a 2-input multiplexer
per output bit; the report states them. A board top replaces this wrapper with real I/O and memory.
"""

from amaranth.hdl import Cat, Const, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ShiftChainWrapper"]


class ShiftChainWrapper(wiring.Component):
    """``core``'s ports behind an input shift chain (``sin``) and an output capture chain (``capture``, ``sout``).

    The core runs in the same ``sync`` domain; ``clk`` and ``rst`` are the wrapper's own, so the design has four
    pins besides them.
    """

    sin: In(1)
    capture: In(1)
    sout: Out(1)

    def __init__(self, core: wiring.Component):
        if not isinstance(core, wiring.Component):
            raise TypeError(f"Core must be an amaranth.lib.wiring.Component, not {core!r}")
        self._core = core
        # Constant members (the ready of an always-ready stream) are no ports.
        ports = [(member, value) for _, member, value in core.signature.flatten(core)
                 if not isinstance(Value.cast(value), Const)]
        self._inputs = [value for member, value in ports if member.flow == wiring.In]
        self._outputs = [value for member, value in ports if member.flow == wiring.Out]
        super().__init__()

    @property
    def core(self) -> wiring.Component:
        return self._core

    @property
    def flipflops(self) -> int:
        """Flip-flops the chains add: one per input and output bit of the core."""
        return sum(len(v) for v in self._inputs) + sum(len(v) for v in self._outputs)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = self._core

        inputs = Cat(*self._inputs)
        chain_in = Signal(len(inputs), name="input_chain")
        with m.If(~self.capture):           # the inputs hold while the outputs are captured
            m.d.sync += chain_in.eq(Cat(self.sin, chain_in[:-1]))
        m.d.comb += inputs.eq(chain_in)

        outputs = Cat(*self._outputs)
        chain_out = Signal(len(outputs), name="output_chain")
        with m.If(self.capture):
            m.d.sync += chain_out.eq(outputs)
        with m.Else():
            m.d.sync += chain_out.eq(chain_out[1:])
        m.d.comb += self.sout.eq(chain_out[0])
        return m
