"""cocotb driver and monitor for the InferenceEngine: many programs, one simulation.

For each program: the external memory gets its image, the host writes program_addr and dram_size and
starts the engine through the control port, waits for the interrupt (bounded), and reads every register.
The memory behind both AXI4 ports is one array; its latency and back-pressure come from the stimulus.
What the engine produced is saved for the checker (pytest + emulator); nothing is judged here.
"""

import os
import pickle

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from hw.spec.registers import REGISTERS, STATUS_BUSY, by_name
from sim.axi import AxiLiteMaster, AxiMemory


@cocotb.test()
async def run_programs(dut):
    with open(os.environ["TB_STIMULUS"], "rb") as f:
        batch = pickle.load(f)
    size = batch["memory_size"]
    memory = np.zeros(size, np.uint8)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    traffic = batch["traffic"]
    data = AxiMemory(dut, "data", size, memory=memory, latency=traffic["latency"],
                     ready_stall=traffic["ready_stall"], valid_gap=traffic["valid_gap"], seed=traffic["seed"])
    insn = AxiMemory(dut, "insn", size, memory=memory, latency=traffic["latency"],
                     ready_stall=traffic["ready_stall"], valid_gap=traffic["valid_gap"], seed=traffic["seed"] + 1)
    ctrl = AxiLiteMaster(dut, "ctrl", timeout=1000)
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    results = []
    for program in batch["programs"]:
        memory[:] = 0
        image = np.frombuffer(bytes(program["dram"]), np.uint8)
        memory[:image.size] = image
        await ctrl.write(by_name("program_addr").address, program["program_addr"])
        await ctrl.write(by_name("dram_size").address, program["dram_size"])
        await ctrl.write(by_name("control").address, 1)
        for waited in range(program["cycle_budget"]):
            await RisingEdge(dut.clk)
            if dut.irq.value:
                break
        else:
            results.append({"timeout": True, "registers": {}, "dram": b""})
            continue
        await data.wait_idle(1000)
        # An error raises the interrupt at once, while the engines may still finish what they were doing (the
        # status register stays busy until they halt); a start written before that would be ignored.
        for _ in range(100000):
            if not await ctrl.read(by_name("status").address) & STATUS_BUSY:
                break
        else:
            raise RuntimeError("the engine is still busy 100000 status reads after the interrupt")
        await data.wait_idle(1000)
        registers = {r.name: await ctrl.read(r.address) for r in REGISTERS}
        results.append({"timeout": False, "registers": registers,
                        "dram": memory[:program["dram_size"]].tobytes(), "bus_errors": len(data.errors)})
    with open(os.environ["TB_RESULT"], "wb") as f:
        pickle.dump(results, f)
