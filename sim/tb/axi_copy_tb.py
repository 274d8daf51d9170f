"""cocotb testbench for the AxiCopy test design: copies set up over AXI4-Lite, served by the AxiMemory model.

The plan (``TB_PLAN``, JSON) holds one or more runs, each a cocotb test of its own: the memory model's
settings, the register values and the copies; every run starts from ``TB_MEMORY`` (``.npy``) after a reset.
Per copy the testbench programs the registers, reads them back, starts, polls ``done`` and records the
design's status and counters next to the model's. Run i lands in ``TB_RESULT/run-i.npz`` for the checker;
only AXI protocol breaches and stuck copies fail here (several runs share one simulator start-up, which is
most of a short run's time).
"""

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from sim.axi import AxiLiteMaster, AxiMemory

COUNTERS = ("done", "r_beats", "w_beats", "r_wait", "b_wait")


def _plan() -> dict:
    return json.loads(Path(os.environ["TB_PLAN"]).read_text())


@cocotb.test()
@cocotb.parametrize(run=range(len(_plan()["runs"])) if "TB_PLAN" in os.environ else [0])
async def copies(dut, run):
    plan = _plan()["runs"][run]
    regs = plan["registers"]

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    memory = AxiMemory(dut, "data", plan["size"], reset=dut.rst, latency=plan["latency"],
                       ready_stall=plan["ready_stall"], valid_gap=plan["valid_gap"], seed=plan["seed"],
                       memory=np.load(os.environ["TB_MEMORY"]))
    ctrl = AxiLiteMaster(dut, "ctrl")

    # The AXI4-Lite master must refuse answers other than OKAY (AxiCopy gives SLVERR off its register map).
    refusals = []
    for access in (ctrl.read(0xFC), ctrl.write(0xFC, 0)):
        try:
            await access
        except AssertionError as e:
            refusals.append(str(e).splitlines()[0])    # cocotb appends its assertion rewrite
        else:
            refusals.append("")

    rows = []
    for src, dst, beats in plan["copies"]:
        setup = {"src": src, "dst": dst, "beats": beats, **plan["setup"]}
        for name, value in setup.items():
            await ctrl.write(regs[name], value)
        for name, value in setup.items():
            got = await ctrl.read(regs[name])
            assert got == value, f"register {name} reads 0x{got:x} after writing 0x{value:x}"
        before = (memory.beats_read, memory.beats_written)
        await ctrl.write(regs["start"], 1)
        for _ in range(200 * beats + 1000):
            status = await ctrl.read(regs["done"])
            if status & 1:
                break
        else:
            raise AssertionError(f"copy of {beats} beats from 0x{src:x} to 0x{dst:x} did not finish")
        await memory.wait_idle()
        row = [await ctrl.read(regs[name]) for name in COUNTERS]
        rows.append(row + [memory.beats_read - before[0], memory.beats_written - before[1]])
    await RisingEdge(dut.clk)

    errors = [(0 if e.kind == "read" else 1, e.addr, e.beats) for e in memory.errors]
    np.savez(Path(os.environ["TB_RESULT"]) / f"run-{run}.npz", memory=memory.mem, refusals=np.array(refusals),
             copies=np.array(rows, np.int64).reshape(-1, len(COUNTERS) + 2),
             errors=np.array(errors, np.int64).reshape(-1, 3),
             totals=np.array([memory.beats_read, memory.beats_written, memory.bursts_read, memory.bursts_written,
                              memory.peak_reads, memory.peak_writes, memory.longest_burst], np.int64))
