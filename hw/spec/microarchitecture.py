"""Microarchitecture constants that both the RTL and the emulator's cycle model depend on.

The RTL asserts that it matches these (e.g. the post-processing pipeline's length); the cycle model in
``sw/emulator/timing.py`` is written from them, so a change to the hardware that moves a cycle shows up as
a failing comparison of RTL and emulator cycle counts instead of a silent drift.
"""

#: Stages of the post-processing pipeline (input, offset, magnitude, multiply, sum, locate, exponent, align, round,
#: saturate, clamp, lookup): each at most one carry chain, DSP, multiplexer tree or block RAM read deep. The lookup
#: stage (the activation table) is there whether or not a SETPP asks for the table, so the latency is constant.
POSTPROCESS_LATENCY = 12
#: The post-processing pipeline's stages, in order (hw/postprocess.py).
POSTPROCESS_STAGES = ("input", "offset", "magnitude", "multiply", "sum", "locate", "exponent", "align", "round",
                      "saturate", "clamp", "lookup")
assert len(POSTPROCESS_STAGES) == POSTPROCESS_LATENCY
#: Stages a ``postprocess_serial`` lane replaces by its serial shift (a register the element is loaded into, then a
#: cycle per bit: ``AcceleratorConfig.postprocess_serial_steps``).
POSTPROCESS_SERIAL_STAGES = ("locate", "exponent", "align")
#: Output lines the store engine's FIFO holds behind ``postprocess_serial`` lanes: a line comes out every
#: ``postprocess_interval`` cycles at most, far slower than its beats leave, so two never throttle the reads.
SERIAL_LINE_FIFO_DEPTH = 2
#: Stages whose registers a ``postprocess_merged`` build leaves out (each then shares a cycle with the next: multiply
#: with sum, locate with exponent, align with round), for a slow clock: the lane alone on the UP5K keeps 31.8 MHz
#: (offset with magnitude, or saturate with clamp, too would bring it under 30).
POSTPROCESS_MERGED_STAGES = ("multiply", "locate", "align")
#: Stages whose registers a ``slow_clock`` build leaves out too (each then shares a cycle with the next: input and
#: offset with magnitude, sum with locate, round and saturate with clamp): with ``postprocess_merged`` the lane in 4
#: stages (input .. magnitude, multiply .. exponent, align .. clamp, lookup), for the iCEBreaker's 12 MHz (the 2x2
#: board engine's lane alone on the UP5K: 15.4 MHz, its critical path align .. clamp; 15.7 with the sum's register).
POSTPROCESS_SLOW_STAGES = ("input", "offset", "sum", "round", "saturate")
#: Of those, the stages a ``mid_clock`` build's ``postprocess_serial`` lane registers again, for the iCEBreaker's
#: 30 MHz PLL clock: ``acc + bias`` apart from the sign it sends for the negative side's PARAM line (the 1x1 board
#: engine's path param_buffer .. offset sum .. side .. param_buffer's address: 24.6 MHz), and the rounding bit, the
#: zero point's carry-in addition with the saturation, and the clamp each in a cycle of its own (all three in one:
#: the 2x2 board engine's path serial_work .. clamp_code, 22.4 MHz).
POSTPROCESS_MID_STAGES = ("offset", "round", "saturate")
#: Advances of a processing element from an activation to the partial sum it adds to: the operands and the product
#: are registered before the addition (the path operand -> bank choice -> multiply -> add in one cycle limited the
#: array's fmax).
PE_LATENCY = 3
#: Entries of the buffer at the systolic array's output; its ``ready`` is a flip-flop, so back-pressure reaches
#: the PEs through a register instead of a combinational enable fanned out to all of them.
ARRAY_OUTPUT_BUFFER = 2


#: Registers every activation passes before the first PE of its row (so no PE multiplies an operand that logic
#: outside the array computed in the same cycle).
ARRAY_INPUT_STAGES = 1


def array_latency(rows: int, cols: int) -> int:
    """Cycles from an activation vector's acceptance to its partial sums on the array's output: the input
    register, the skew of the last row and the de-skew of the first column (``rows - 1 + cols - 1``), the PE's own
    latency, and one more for the output buffer."""
    return ARRAY_INPUT_STAGES + rows - 1 + cols - 1 + PE_LATENCY + 1


def bank_drain(rows: int, cols: int) -> int:
    """Advances after the last activation vector of a tile until its weight bank may be overwritten: until the
    last PE (row ``rows - 1``, column ``cols - 1``) has multiplied that vector."""
    return ARRAY_INPUT_STAGES + rows - 1 + cols - 1
#: Cycles from a partial sum's arrival at the accumulators (or an ALU element's issue) to the write of its line: the
#: block RAM's read, the register its output goes into, then the addition and the write (each in a cycle of its own).
ACCUMULATE_LATENCY = 3
#: The same in a ``slow_clock`` build (``AcceleratorConfig.accumulate_latency``): the line leaves the block RAM the
#: cycle after the read, is added to and written in that cycle; the read of the next cycle, transparent to that write,
#: sees it, so nothing is forwarded.
SLOW_ACCUMULATE_LATENCY = 1
#: Cycles from an ALU element's issue to the write of its line: the accumulator stages up to the forwarded operands,
#: which are registered, then the operation (MAX's compare, ADD's carry chain, MUL's multiplier) into a register, then
#: the write. The operands are taken ``ACCUMULATE_LATENCY`` cycles after the issue, so an element that reads or writes
#: a line one of the ``ALU_LATENCY - ACCUMULATE_LATENCY`` elements issued in the cycles just before writes waits
#: until that write is forwarded (``alu_issue_cycles``). (Only MUL had these stages before the operations behind the
#: forwarding limited the int8 engine's fmax on the ECP5, ``hit_b_settling`` -> ``written``.) A ``slow_clock`` build
#: registers neither: its ALU takes ``SLOW_ACCUMULATE_LATENCY`` cycles and never waits
#: (``AcceleratorConfig.alu_latency``).
ALU_LATENCY = ACCUMULATE_LATENCY + 2


def alu_issue_cycles(dst: list[int], src: list[int], window: int = ALU_LATENCY - ACCUMULATE_LATENCY) -> int:
    """Cycles an ALU takes to issue its elements (destination and source lines in element order): one per element,
    and an element whose lines include the destination of an element issued fewer than ``window + 1`` cycles before
    waits until that one is that far behind (``window``: the ALU's cycles after its operands are read and settled,
    ``ALU_LATENCY - ACCUMULATE_LATENCY``)."""
    if window <= 0:                                 # every write is forwarded in time: no waits
        return len(dst)
    issued: list[tuple[int, int]] = []              # (cycle, destination) of the last ``window`` elements
    cycle = -1
    for d, s in zip(dst, src):
        cycle += 1
        for when, line in issued:
            if line in (d, s):
                cycle = max(cycle, when + window + 1)
        issued = (issued + [(cycle, d)])[-window:]
    return cycle + 1
#: Cycles the decoder takes to check an instruction (its address arithmetic is pipelined, at most two carry chains
#: per cycle); the fetch cadence grows with it.
DECODE_LATENCY = 5
#: Cycles the decoder of a ``decode_serial`` build takes (``AcceleratorConfig.decode_latency``): its products of
#: fields take a cycle per bit of the narrower operand (ten for a 10-bit size), one after another where one feeds the
#: next (COMPUTE's ``(out_h - 1) * stride * act_pitch``).
SERIAL_DECODE_LATENCY = 18
#: Carry chains per decoder stage by default (``AcceleratorConfig.decode_chains``): two fit a 10 ns cycle on an
#: ECP5 with room for routing. Fewer would not fit the checks into ``DECODE_LATENCY`` stages.
DECODE_CHAINS = 2
#: Instructions each engine's command queue holds by default (``AcceleratorConfig.command_queue_depth``).
COMMAND_QUEUE_DEPTH = 4
#: COMPUTEs the compute engine's retire side holds descriptors of (started, results not yet all written), at most;
#: fewer with fewer command queue entries (``AcceleratorConfig.retire_queue_depth``).
RETIRE_QUEUE_DEPTH = 4


def feeder_depth(rows: int) -> int:
    """Lines each of the compute engine's buffer feeders holds (FIFO depth).

    Deep enough that a COMPUTE's reads finish more than ``rows`` cycles before its last vector enters the
    array: the next COMPUTE then starts early enough to load its first weight tile in the array's shadow.
    """
    return rows + 8

#: Longest AXI4 burst the DMA issues, in beats.
MAX_BURST_BEATS = 256
#: AXI4 bursts never cross this boundary, in bytes.
BURST_BOUNDARY = 4096
