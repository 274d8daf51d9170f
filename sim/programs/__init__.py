"""Random whole programs for one configuration: run each on the RTL engine and on the emulator, compare memory.

A legal program is a few *tiles*, each the classic pattern of an accelerated layer: LOADs of parameters,
weights and activations (random padding and pad value) -> COMPUTEs (GEMMs, and convolutions with random
kernel, stride, dilation and padding, several of them accumulating into one accumulator region) -> optional
ALU operations (MAX or ADD between accumulator lines, with steps and strides) -> SETPP (random zero point
and clamps) -> STOREs (random blocks, strides and parameter lines, one or two of them: negative_param;
STORE.packed, two codes a slot, in most 4-bit-output tiles of a build that packs per layer). Tiles
alternate between two halves of every buffer (double buffering), may be software-pipelined (the next tile's
loads issued before this one's computes), may read the output of an earlier tile back from external memory, and
may write their output over an input nobody reads any more.

Tokens are not placed by hand: :func:`random_program` lists what every instruction reads and writes
(:func:`footprint`) and gives each instruction exactly the pops it needs so that every pair of instructions of
different engines that touch one buffer line or memory beat, one of them writing, is ordered by program
order whatever the timing: ``LOAD push_next``/``COMPUTE pop_prev`` for data, ``COMPUTE push_next``/``STORE
pop_prev`` for results, and the reverse tokens when a buffer region is overwritten while an earlier user of
another engine might still need it. Load and store are not neighbours: an order between them goes through a
compute-engine instruction that is already ordered after the first one, or through a one-line ``ALU MAX`` on a
scratch accumulator line (a *barrier*) inserted for that purpose. A token queue holds ``TOKEN_QUEUE_DEPTH``
tokens: when the producer of a queue could run far enough ahead of its consumer to push onto a full queue,
the producer is made to wait for the consumer (:func:`check_schedule` proves neither can happen).

Every pop matches a push of an earlier instruction, so no legal program can deadlock, and the result of a
race-free program is that of running its instructions one at a time in program order: that is what
:func:`reference_run` does, with its own loops and the golden model (:mod:`sw.golden`), independently of the
emulator, to give each program's expected external memory.

Data: codes are drawn among the finite codes of a format or, in about a third of the programs ("all codes" in
the description), among all codes, NaN and Inf included; pad values are mostly the code of zero. In half the
programs ("padding garbage") the unused bits that pad each packed line to whole bus beats hold random bits,
which the engine must ignore; every other byte of memory starts random too. Parameters scale most outputs
into the output format (some saturate); one column in ten gets any bias, multiplier and shift (0..63).

:func:`illegal_program` puts one faulty instruction (or a deadlock, or a token overflow) after a legal prefix.

Layout: :mod:`.common` (the program types, engines and token flags), :mod:`.footprint` (what an instruction
reads and writes; the race check behind :func:`check_schedule`, on the token analysis of
:mod:`sw.emulator.order`), :mod:`.tokens` (placing tokens), :mod:`.hand` (hand-written programs),
:mod:`.reference` (:func:`reference_run`), :mod:`.tiles` (drawing the tiles of a legal program),
:mod:`.legal` (:func:`random_program`) and :mod:`.illegal` (:func:`illegal_program`).
"""

from .common import Program, StoreRecord
from .footprint import check_schedule, footprint
from .hand import one_mac_program, place
from .illegal import ILLEGAL_KINDS, illegal_program
from .legal import random_program
from .reference import reference_run

__all__ = ["ILLEGAL_KINDS", "Program", "StoreRecord", "random_program", "illegal_program", "footprint",
           "check_schedule", "reference_run", "one_mac_program", "place"]

#: Whether ALU instructions may update one destination line several times (``dst_stride < x_size``); the ISA
#: defines it (one element after the other), tests/sim/test_programs.py::test_emulator_alu_repeated_destination
#: pins it. It lives here, on the package: :mod:`.tiles` reads ``sim.programs.REPEATED_ALU_DESTINATIONS`` each
#: time it draws an ALU instruction, so set it here (a submodule holds no copy).
REPEATED_ALU_DESTINATIONS = True
