"""cocotb driver and monitor for the SystolicArray: weight tiles and activation batches in, partial sums out.

Valid gaps on both inputs and back-pressure on the output are random (seeded), so the double buffer and
the stall logic are exercised. Each cycle: write inputs, settle (ReadOnly), see which beats moved, tick.
What the array produced is saved for the checker; nothing is judged here.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


def _pack(codes, bits):
    word = 0
    for i, c in enumerate(codes):
        word |= int(c) << (i * bits)
    return word


@cocotb.test()
async def stream_tiles(dut):
    stim = np.load(os.environ["TB_STIMULUS"])
    rows, cols = int(stim["rows"]), int(stim["cols"])
    w_bits, a_bits, psum_bits = int(stim["w_bits"]), int(stim["a_bits"]), int(stim["psum_bits"])
    weight_beats = [_pack(row, w_bits) for row in stim["weight_rows"]]
    act_beats = [_pack(v, a_bits) | (int(last) << (rows * a_bits))
                 for v, last in zip(stim["act_vectors"], stim["act_last"])]
    gap_w, gap_a, stall = (float(stim[k]) for k in ("gap_weights", "gap_acts", "stall_psums"))
    rng = random.Random(int(stim["seed"]))
    lane = psum_bits + 1

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.weights__valid.value = 0
    dut.acts__valid.value = 0
    dut.psums__ready.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0

    out, wi, ai = [], 0, 0
    cycles, first_accept, blocked = 0, None, 0
    budget = 50 * (len(weight_beats) + len(act_beats) + rows + cols) + 1000
    while len(out) < len(act_beats):
        offer_w = wi < len(weight_beats) and rng.random() >= gap_w
        offer_a = ai < len(act_beats) and rng.random() >= gap_a
        ready = rng.random() >= stall
        dut.weights__valid.value = int(offer_w)
        if offer_w:
            dut.weights__payload.value = weight_beats[wi]
        dut.acts__valid.value = int(offer_a)
        if offer_a:
            dut.acts__payload.value = act_beats[ai]
        dut.psums__ready.value = int(ready)
        await ReadOnly()
        if offer_w and dut.weights__ready.value:
            wi += 1
        if offer_a:
            if dut.acts__ready.value:
                ai += 1
                if first_accept is None:
                    first_accept = cycles
            elif first_accept is not None:
                blocked += 1
        if ready and dut.psums__valid.value:
            word = dut.psums__payload.value.to_unsigned()
            out.append([(word >> (c * lane)) & ((1 << lane) - 1) for c in range(cols)])
        cycles += 1
        assert cycles < budget, f"array stopped: {len(out)} of {len(act_beats)} results after {cycles} cycles"
        await RisingEdge(dut.clk)

    np.save(os.environ["TB_RESULT"], np.array([[str(v) for v in row] for row in out]))
    np.save(os.environ["TB_STATS"], np.array([cycles, first_accept, blocked]))
