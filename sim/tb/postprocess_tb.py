"""cocotb driver and monitor for one PostProcessor: a vector per accepted cycle, under random stalls and bubbles.

The stimulus file holds one vector per element (acc, nonfinite, bias, multiplier, shift, multiplier_neg,
shift_neg, negative_param, zero_point, clamp_lo, clamp_hi, lut; wide integers as decimal strings) and, optionally,
the activation table's LUT lines, written through ``lut_write`` before the first vector, and optionally the
``interval`` in ``en`` cycles between vectors (a serial unit's, whose vector then stays on the inputs until the
next). Each cycle ``en`` is low
with probability ``stall``, and while it is low the inputs carry another vector with ``i_valid`` high, which the
unit must ignore; with ``en`` high, a bubble (``i_valid`` low, junk data) comes with probability ``bubble``. The
monitor records every output code with the number of ``en`` cycles it took; checking is left to pytest and the
golden model.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

PORTS = ("acc", "nonfinite", "bias", "multiplier", "shift", "multiplier_neg", "shift_neg", "negative_param",
         "zero_point", "clamp_lo", "clamp_hi", "lut")


@cocotb.test()
async def stream_vectors(dut):
    stimulus = np.load(os.environ["TB_STIMULUS"])
    handles = [getattr(dut, name) for name in PORTS]
    # Two's-complement words of each port's width, prepared once: the loop below only assigns.
    columns = [[int(v) & ((1 << len(h)) - 1) for v in stimulus[name]] for name, h in zip(PORTS, handles)]
    vectors = list(zip(*columns))
    n = len(vectors)
    stall, bubble = float(stimulus["stall"]), float(stimulus["bubble"])
    # A serial unit (postprocess_serial) takes a vector every ``interval`` en cycles at most.
    interval = int(stimulus["interval"]) if "interval" in stimulus.files else 1
    # Its M and S are held on the ports (the store engine holds a column's): between vectors, the last one stays.
    hold = interval > 1
    held = vectors[0]
    rng = random.Random(int(stimulus["seed"]))

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    en, i_valid, o_valid, code = dut.en, dut.i_valid, dut.o_valid, dut.code
    dut.rst.value = 1
    en.value = 0
    i_valid.value = 0
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    if "table" in stimulus.files:
        for addr, line in enumerate(stimulus["table"]):
            dut.lut_write__en.value, dut.lut_write__addr.value, dut.lut_write__data.value = 1, addr, int(line)
            await RisingEdge(dut.clk)
        dut.lut_write__en.value = 0

    codes, emitted = [], []  # each output code and the en-cycle count at which it appeared
    accepted = []            # en-cycle count at which each vector was sampled
    en_cycles = 0            # en-high edges so far
    last_en = False          # whether the previous edge had en high (only then can a new output appear)
    sent = 0
    flush = 0
    while len(codes) < n and flush < 100 + 10 * n:
        go = rng.random() >= stall
        ready = not accepted or en_cycles + 1 - accepted[-1] >= interval
        feed = go and sent < n and ready and rng.random() >= bubble
        vector = vectors[sent] if feed else held if hold else vectors[rng.randrange(n)]
        if feed:
            held = vector
        for h, v in zip(handles, vector):
            h.value = v
        en.value = int(go)
        i_valid.value = int(feed or (not go and rng.random() < 0.5))
        await RisingEdge(dut.clk)
        # Values read just after an edge are those from before it: the outputs of the previous edge.
        if last_en and o_valid.value:
            codes.append(code.value.to_unsigned())
            emitted.append(en_cycles)
        if go:
            en_cycles += 1
            if feed:
                accepted.append(en_cycles)
                sent += 1
        last_en = go
        flush += sent == n
    # Drain: nothing more may come out.
    extra = 0
    en.value, i_valid.value = 1, 0
    for _ in range(int(stimulus["drain"])):
        await RisingEdge(dut.clk)
        extra += int(last_en and o_valid.value)
        last_en = True
    np.savez(os.environ["TB_RESULT"], code=np.array(codes, dtype=np.int64),
             emitted=np.array(emitted, dtype=np.int64), accepted=np.array(accepted, dtype=np.int64), extra=extra)
