"""cocotb driver and monitor for one ProcessingElement: every (weight, activation) pair, one per cycle.

The weights are used one after another, each for a run of activations; the next weight shifts into the
idle bank during the first cycle of the run, so the double buffer is exercised on every swap. What the
PE produced is saved for the checker (pytest + golden model); nothing is judged here.
"""

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge


@cocotb.test()
async def stream_all_pairs(dut):
    stimulus = np.load(os.environ["TB_STIMULUS"])
    weights, acts = stimulus["weights"].tolist(), stimulus["acts"].tolist()
    psum_in = [int(v) for v in stimulus["psum_in"]]
    act_bits = int(stimulus["act_bits"])
    psum_bits = int(stimulus["psum_bits"])

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.en.value = 0
    dut.w_shift.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    dut.w_shift.value, dut.w_bank.value, dut.w_in.value = 1, 0, weights[0]
    await RisingEdge(dut.clk)

    latency = int(stimulus["latency"])
    mask = (1 << psum_bits) - 1
    en, a_in, p_in, w_shift, w_bank, w_in = dut.en, dut.a_in, dut.psum_in, dut.w_shift, dut.w_bank, dut.w_in
    psum_out = dut.psum_out
    seen = []
    en.value = 1
    k = 0
    for i in range(len(weights)):
        bank = i & 1
        for j, a in enumerate(acts):
            if j == 0 and i + 1 < len(weights):
                w_shift.value, w_bank.value, w_in.value = 1, bank ^ 1, weights[i + 1]
            elif j == 1:
                w_shift.value = 0
            a_in.value = a | (bank << act_bits)
            # The partial sum meets the activation's product latency - 1 edges after the activation.
            if k >= latency - 1:
                p_in.value = psum_in[k - (latency - 1)] & mask
            k += 1
            await RisingEdge(dut.clk)
            seen.append(psum_out.value.to_unsigned())
    for tail in range(latency):
        if k + tail >= latency - 1 and k + tail - (latency - 1) < len(psum_in):
            p_in.value = psum_in[k + tail - (latency - 1)] & mask
        await RisingEdge(dut.clk)
        seen.append(psum_out.value.to_unsigned())
    en.value = 0
    # A value read just after an edge is the one from before it: result i is read latency edges later.
    np.save(os.environ["TB_RESULT"], np.array([str(v) for v in seen[latency:latency + len(psum_in)]]))
