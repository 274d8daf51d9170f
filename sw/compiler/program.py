"""A program for the engine: instructions and the external-memory image they run on.

``ProgramBuilder`` lays out external memory (instructions first, then data regions, every region aligned
to the bus), collects instructions, and inserts the dependency tokens of a step schedule (see
:meth:`ProgramBuilder.schedule`), so that DMA overlaps compute without races.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import INSTRUCTION_BYTES, ErrorCode, encode

__all__ = ["Program", "Region", "Step", "ProgramBuilder"]


@dataclass
class Program:
    config: AcceleratorConfig
    words: list[int]
    dram: bytearray
    program_addr: int
    dram_size: int
    expected_error: ErrorCode = ErrorCode.NONE
    description: str = ""
    #: Named regions of external memory (inputs and outputs), for the runtime and the checks.
    regions: dict = field(default_factory=dict)
    #: Multiply-accumulates of the layer itself (without padding of K and N to the array).
    useful_macs: int = 0
    #: The programs in the image, in the order they run: (first instruction, count) each, FINISH included. A
    #: network with host layers between engine layers has several; ``program_addr`` is the first one's.
    segments: list = field(default_factory=list)

    def listing(self) -> str:
        """One line per instruction: index and disassembly (words that do not decode show why)."""
        from sw.asm import AsmError, disassemble

        def line(index: int, word: int) -> str:
            try:
                return f"{index:4d}  {disassemble(word)}"
            except AsmError as e:
                return f"{index:4d}  {word:#034x}  ({e})"
        return "\n".join(line(i, w) for i, w in enumerate(self.words))

    def read(self, dram: bytes | np.ndarray, name: str) -> bytes:
        r = self.regions[name]
        return bytes(np.asarray(np.frombuffer(bytes(dram), np.uint8))[r.addr:r.addr + r.size])


@dataclass(frozen=True)
class Region:
    addr: int
    size: int


@dataclass
class Step:
    """One compute step and the loads it needs. ``begins``/``ends`` mark the first and last step of an output
    tile (which owns one of two accumulator regions); ``store`` holds the STOREs that follow its last step."""

    loads: list = field(default_factory=list)        # (opcode name, fields) tuples
    computes: list = field(default_factory=list)
    begins: bool = False
    ends: bool = False
    stores: list = field(default_factory=list)


class ProgramBuilder:
    def __init__(self, config: AcceleratorConfig, max_instructions: int = 1 << 16):
        self.config = config
        self.bus = config.dma_bits // 8
        self._data: list[tuple[int, bytes]] = []
        self._code_size = max_instructions * INSTRUCTION_BYTES
        self._next = self._align(self._code_size)
        self.regions: dict[str, Region] = {}
        self.words: list[int] = []
        #: Tokens the last schedule left in the compute->load and store->compute queues (see :meth:`barrier`).
        self._spare_load_tokens = 0
        self._spare_store_tokens = 0
        #: Tokens the next schedule's prologue must take before its loads may start.
        self._pending_load_pops = 0
        #: Programs ended so far (first instruction, count) and where the current one starts.
        self._segments: list[tuple[int, int]] = []
        self._segment_start = 0

    def _align(self, n: int) -> int:
        """``n`` rounded up to the bus: the DMA's addresses are beat-aligned, and it splits its bursts at 4 KiB itself,
        so a small board's memory holds the program without page-sized gaps between its regions."""
        return -(-n // self.bus) * self.bus

    def region(self, name: str, data: bytes | None = None, size: int | None = None) -> Region:
        """Reserve an aligned region of external memory, optionally filled with ``data``."""
        size = len(data) if data is not None else size
        r = Region(self._next, size)
        self._next = self._align(self._next + max(size, 1))
        self.regions[name] = r
        if data is not None:
            self._data.append((r.addr, bytes(data)))
        return r

    def release(self, name: str) -> None:
        """Give region ``name`` back if it is the last one reserved and holds no data (a tensor whose writer was
        redirected before anything was emitted); otherwise it stays, unused."""
        r = self.regions[name]
        if list(self.regions)[-1] == name and all(addr != r.addr for addr, _ in self._data):
            del self.regions[name]
            self._next = r.addr

    def emit(self, opcode: str, **fields) -> None:
        self.words.append(encode(opcode, **fields))

    @property
    def waits_for_barrier(self) -> bool:
        """The next schedule's prologue takes a :meth:`barrier`'s tokens."""
        return bool(self._pending_load_pops)

    def schedule(self, steps: list[Step], prologue: list = (), setpp: dict | None = None, early: list = ()) -> None:
        """Emit ``steps`` with the tokens that make them race-free and overlapping.

        Rules: the loads of step s end with a push to compute; from step 2 on, the first load of step s waits
        for the compute of step s-2 (so two-way buffers alternate by step parity); every compute step sends a
        token back to load. Output tiles alternate between two accumulator regions: the last step of tile o
        sends a token to store, its STOREs send one back, and the first step of tile o+2 waits for it.
        After a :meth:`barrier`, the prologue's loads take the tokens the barrier left for them (the first prologue
        load is repeated as often as needed, so prologue loads must be idempotent). ``early``: loads emitted before
        the prologue that take no token, so they overlap the last schedule's tail (PARAM lines of the half its
        STOREs do not read).
        """
        for opcode, fields in early:
            self.emit(opcode, **fields)
        prologue = list(prologue)
        pops = self._pending_load_pops
        if pops:
            if not prologue or prologue[0][0] != "LOAD":
                raise ValueError("A schedule after a barrier needs a prologue that starts with a LOAD")
            prologue = [prologue[0]] * (pops - 1) + prologue
        for i, (opcode, fields) in enumerate(prologue):
            self.emit(opcode, **fields, **({"pop_next": 1} if i < pops else {}))
        self._pending_load_pops = 0
        if setpp is not None:
            self.emit("SETPP", **setpp)
        tile = -1
        for s, step in enumerate(steps):
            if not step.loads or not step.computes:
                raise ValueError(f"Step {s} needs at least one load and one compute")
            for i, (opcode, fields) in enumerate(step.loads):
                flags = {}
                if i == 0 and s >= 2:
                    flags["pop_next"] = 1
                if i == len(step.loads) - 1:
                    flags["push_next"] = 1
                self.emit(opcode, **fields, **flags)
            if step.begins:
                tile += 1
            for i, (opcode, fields) in enumerate(step.computes):
                flags = {}
                if i == 0:
                    flags["pop_prev"] = 1
                    if step.begins and tile >= 2:
                        flags["pop_next"] = 1
                if i == len(step.computes) - 1:
                    flags["push_prev"] = 1
                    if step.ends:
                        flags["push_next"] = 1
                self.emit(opcode, **fields, **flags)
            if step.ends:
                for i, (opcode, fields) in enumerate(step.stores):
                    flags = {}
                    if i == 0:
                        flags["pop_prev"] = 1
                    if i == len(step.stores) - 1:
                        flags["push_prev"] = 1
                    self.emit(opcode, **fields, **flags)
        self._spare_load_tokens = min(len(steps), 2)
        self._spare_store_tokens = min(tile + 1, 2)

    def barrier(self) -> None:
        """Make the next schedule's loads wait until every STORE so far has completed.

        The compute engine takes the tokens the last schedule's STOREs left (waiting for them) with no-op ALU
        instructions (``max`` of an accumulator line with itself) and sends one token to load; the next
        schedule's prologue takes that one and the buffer-free tokens the last schedule left.
        """
        spare = self._spare_store_tokens
        if spare == 0:
            return
        for i in range(spare):
            flags = {"pop_next": 1}
            if i == spare - 1:
                flags["push_prev"] = 1
            self.emit("ALU", op=0, dst_addr=0, src_addr=0, y_size=1, x_size=1, src_step=1, **flags)
        self._pending_load_pops = self._spare_load_tokens + 1
        self._spare_load_tokens = self._spare_store_tokens = 0

    def end_segment(self) -> None:
        """End the program so far with FINISH; what follows is another program of the same image (the host runs
        between them), starting with no tokens in flight."""
        self.emit("FINISH")
        self._segments.append((self._segment_start, len(self.words) - self._segment_start))
        self._segment_start = len(self.words)
        self._spare_load_tokens = self._spare_store_tokens = self._pending_load_pops = 0

    @property
    def segment_empty(self) -> bool:
        return len(self.words) == self._segment_start

    @property
    def segments_ended(self) -> int:
        return len(self._segments)

    def build(self, description: str = "", useful_macs: int = 0) -> Program:
        if not self.segment_empty or not self._segments:
            self.end_segment()
        if len(self.words) * INSTRUCTION_BYTES > self._code_size:
            raise ValueError(f"{len(self.words)} instructions do not fit the {self._code_size} bytes reserved")
        size = self._align(self._next)
        dram = bytearray(size)
        for i, w in enumerate(self.words):
            dram[i * INSTRUCTION_BYTES:(i + 1) * INSTRUCTION_BYTES] = w.to_bytes(INSTRUCTION_BYTES, "little")
        for addr, data in self._data:
            dram[addr:addr + len(data)] = data
        return Program(self.config, list(self.words), dram, 0, size, ErrorCode.NONE, description,
                       dict(self.regions), useful_macs, list(self._segments))
