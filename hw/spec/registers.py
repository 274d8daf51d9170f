"""The control/status registers on the AXI4-Lite port: one map for the RTL, the host driver and the docs.

All registers are 32 bits; 64-bit counters are two registers, low word first. Writes to read-only
registers are ignored; reads of unmapped addresses return 0.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Register", "REGISTERS", "by_name", "CONTROL_START", "STATUS_BUSY", "STATUS_DONE", "STATUS_ERROR",
           "STATUS_NONFINITE"]

CONTROL_START = 1 << 0
STATUS_BUSY = 1 << 0
STATUS_DONE = 1 << 1
STATUS_ERROR = 1 << 2
STATUS_NONFINITE = 1 << 3


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    writable: bool
    doc: str


REGISTERS = (
    Register("control", 0x00, True, "Write 1 to bit 0 to start at `program_addr` (ignored while busy); "
                                     "clears done, error and the counters."),
    Register("status", 0x04, False, "Bit 0 busy, bit 1 done (FINISH reached), bit 2 error, bit 3 a STORE met "
                                    "a NaN/Inf operand."),
    Register("error_code", 0x08, False, "`ErrorCode` of the first error (0 none)."),
    Register("error_pc", 0x0C, False, "Index of the instruction that raised the error, or of FINISH."),
    Register("program_addr", 0x10, True, "Byte address of the first instruction, a multiple of 16 (else DRAM_RANGE)."),
    Register("dram_size", 0x14, True, "Bytes of the external-memory window starting at address 0; accesses at "
                                      "or beyond it raise DRAM_RANGE."),
    Register("cycles_lo", 0x20, False, "Cycles from start to done or error, low word."),
    Register("cycles_hi", 0x24, False, "High word (0 in a build without `perf_counters`: 32-bit counts)."),
    Register("instructions", 0x28, False, "Instructions dispatched."),
    Register("busy_load", 0x2C, False, "Cycles the load engine executed an instruction (this and the five below: 0 "
                                       "in a build without `perf_counters`)."),
    Register("busy_compute", 0x30, False, "Cycles the compute engine executed an instruction."),
    Register("busy_store", 0x34, False, "Cycles the store engine executed an instruction."),
    Register("stall_load", 0x38, False, "Cycles the load engine held an instruction but waited for a token."),
    Register("stall_compute", 0x3C, False, "Same, compute engine."),
    Register("stall_store", 0x40, False, "Same, store engine."),
    Register("macs_lo", 0x44, False, "Multiply-accumulates issued by COMPUTE (rows*cols per vector), low word."),
    Register("macs_hi", 0x48, False, "High word (0 in a build without `perf_counters`)."),
)


def by_name(name: str) -> Register:
    for r in REGISTERS:
        if r.name == name:
            return r
    raise KeyError(f"No register {name!r}; registers are {', '.join(r.name for r in REGISTERS)}")
