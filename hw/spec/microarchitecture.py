"""Microarchitecture constants that both the RTL and the emulator's cycle model depend on.

The RTL asserts that it matches these (e.g. the post-processing pipeline's length); the cycle model in
``sw/emulator/timing.py`` is written from them, so a change to the hardware that moves a cycle shows up as
a failing comparison of RTL and emulator cycle counts instead of a silent drift.
"""

#: Stages of the post-processing pipeline (offset, multiply, locate, align, round, clamp).
POSTPROCESS_LATENCY = 6
#: Instructions each engine's command queue holds.
COMMAND_QUEUE_DEPTH = 4


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
