"""cocotb models of the far ends of our AXI ports: a memory behind an AXI4 master, a master for AXI4-Lite.

Both address the ports by Amaranth's flattened names (``hw/axi.py``): for ``prefix="data"`` they drive and
watch ``data__ar__valid``, ``data__ar__addr``, ``data__r__data`` and so on.

Handshake sampling, used by every channel here: each cycle a channel coroutine

1. drives its outputs for the cycle (right after a ``RisingEdge``, or at start-up),
2. waits for ``ReadOnly`` and reads the settled signals: ``valid and ready`` there is a handshake that the
   next rising edge completes, for the design and for the model alike,
3. records what moved in the model's (Python) state, still in ``ReadOnly``, and waits for ``RisingEdge``.

Reads thus never depend on whether a simulator shows pre- or post-edge values right after an edge, and no
coroutine writes signals in ``ReadOnly``. Because state changes before the edge, a request accepted in
cycle n is visible to every other channel from cycle n + 1, whatever order the coroutines resume in. Cycle
numbers count rising edges since the model started; every channel coroutine starts in the same step, so
their counts agree.

``AxiMemory.latency`` is the number of idle cycles between a request and its response: with latency 0 the
first R beat is valid in the cycle right after the AR handshake, and B in the cycle right after the burst is
complete (its AW and its last W beat both accepted, in either order).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

import numpy as np
from cocotb import start_soon
from cocotb.triggers import Lock, ReadOnly, RisingEdge

__all__ = ["AxiMemory", "AxiLiteMaster", "AxiError", "beat_addresses", "crosses_page", "BURST_FIXED", "BURST_INCR",
           "BURST_WRAP", "RESP_OKAY", "RESP_EXOKAY", "RESP_SLVERR", "RESP_DECERR", "RESP_NAMES"]

BURST_FIXED, BURST_INCR, BURST_WRAP = 0, 1, 2
RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0, 1, 2, 3
_BURST_NAMES = {0: "FIXED", 1: "INCR", 2: "WRAP", 3: "reserved"}
RESP_NAMES = {0: "OKAY", 1: "EXOKAY", 2: "SLVERR", 3: "DECERR"}
_PAGE = 4096


def _port(dut, prefix: str, name: str, what: str):
    full = f"{prefix}__{name}"
    try:
        return getattr(dut, full)
    except AttributeError:
        raise AttributeError(f"The design has no port {full!r}; {what} expects the flattened names that "
                             f"hw/axi.py's signatures give (such as {prefix}__ar__addr)") from None


def beat_addresses(addr: int, beats: int, bytes_per_beat: int) -> list[int]:
    """Start address of each beat of an INCR burst of full-width beats (AXI: only the first may be unaligned)."""
    aligned = addr - addr % bytes_per_beat
    return [addr] + [aligned + i * bytes_per_beat for i in range(1, beats)]


def crosses_page(addr: int, beats: int, bytes_per_beat: int) -> bool:
    """Whether an INCR burst touches two 4 KiB pages, which AXI forbids."""
    last_byte = addr - addr % bytes_per_beat + beats * bytes_per_beat - 1
    return addr // _PAGE != last_byte // _PAGE


@dataclass(frozen=True)
class AxiError:
    """A burst that touched addresses at or beyond the memory's size, answered with SLVERR."""

    kind: str      # "read" or "write"
    addr: int      # AxADDR
    beats: int     # AxLEN + 1
    cycle: int     # cycle of the address handshake

    def __str__(self):
        return f"{self.kind} burst of {self.beats} beats at 0x{self.addr:x} (cycle {self.cycle})"


@dataclass
class _Burst:
    addr: int
    beats: int
    cycle: int           # cycle of the address handshake
    error: bool          # some beat lies at or beyond the memory's size
    due: int = 0         # first cycle the response may be valid


class _Watch:
    """The stability rule on one master-driven channel: once valid is high it stays high, with the same
    payload, until ready."""

    def __init__(self, name: str):
        self.name = name
        self.held: dict | None = None

    def check(self, valid: bool, ready: bool, payload: dict | None):
        if self.held is not None:
            assert valid, (f"{self.name}: valid went low before ready while offering "
                           f"{_show(self.held)} (AXI: once valid, a master holds it until the handshake)")
            assert payload == self.held, (f"{self.name}: payload changed while valid was high and ready low: "
                                          f"{_show(self.held)} became {_show(payload)}")
        self.held = payload if valid and not ready else None

    def clear(self):
        self.held = None


def _show(payload: dict) -> str:
    return ", ".join(f"{k}=0x{v:x}" for k, v in payload.items())


class _Channel:
    """Handles of one valid/ready channel: ``valid``, ``ready`` and the payload fields."""

    def __init__(self, dut, prefix: str, channel: str, fields: tuple[str, ...], what: str):
        self.valid = _port(dut, prefix, f"{channel}__valid", what)
        self.ready = _port(dut, prefix, f"{channel}__ready", what)
        self.fields = {f: _port(dut, prefix, f"{channel}__{f}", what) for f in fields}

    def payload(self) -> dict:
        return {k: int(h.value) for k, h in self.fields.items()}


class AxiMemory:
    """A memory behind the AXI4 master port ``prefix`` of ``dut``: an AXI4 slave with checks on the master.

    Serves INCR bursts of 1 to 256 full-width beats, honours write strobes, and runs reads (AR, R) and
    writes (AW, W, B) independently; requests queue without limit and are answered in order. A burst with
    any beat at or beyond ``size`` is answered SLVERR as a whole (read data zero, write dropped) and recorded
    in ``errors``. Breaches of the AXI rules by the master fail the test with an ``AssertionError`` naming the
    rule: burst type not INCR, beat size not the bus width, a burst crossing 4 KiB, ``wlast`` off the last
    beat, valid dropped or payload changed before ready (on AR, AW and W).

    ``latency``: idle cycles from the AR handshake to the first R beat, and from the completion of a write
    burst to B. ``ready_stall``: probability that ``arready``, ``awready`` and ``wready`` are each low in a
    cycle. ``valid_gap``: probability of an idle cycle before each R beat and before each B. The
    back-pressure comes from ``random.Random(seed)`` (one stream per channel), so a run is reproducible.
    ``reset``: when given, no handshake counts while it is high. ``memory``: a ``bytearray`` or numpy
    ``uint8`` array to serve in place (its length must equal ``size``); otherwise a zeroed one is made.
    The coroutines start at construction: create the model inside a running cocotb test.
    """

    def __init__(self, dut, prefix: str, size: int, *, clock=None, reset=None, latency: int = 0,
                 ready_stall: float = 0.0, valid_gap: float = 0.0, seed: int = 0, memory=None):
        self._ar = _Channel(dut, prefix, "ar", ("addr", "len", "size", "burst"), "AxiMemory")
        self._r = _Channel(dut, prefix, "r", ("data", "resp", "last"), "AxiMemory")
        self._aw = _Channel(dut, prefix, "aw", ("addr", "len", "size", "burst"), "AxiMemory")
        self._w = _Channel(dut, prefix, "w", ("data", "strb", "last"), "AxiMemory")
        self._b = _Channel(dut, prefix, "b", ("resp",), "AxiMemory")
        self._bytes = len(self._r.fields["data"]) // 8
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0 or size % self._bytes:
            raise ValueError(f"Memory size must be a positive multiple of {self._bytes} bytes (the bus width), "
                             f"not {size!r}")
        if not isinstance(latency, int) or isinstance(latency, bool) or latency < 0:
            raise ValueError(f"Latency must be a non-negative integer, not {latency!r}")
        for name, p in (("ready_stall", ready_stall), ("valid_gap", valid_gap)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), not {p!r}")
        if memory is None:
            memory = np.zeros(size, np.uint8)
        elif isinstance(memory, (bytearray, memoryview)):
            memory = np.frombuffer(memory, np.uint8)
        if not isinstance(memory, np.ndarray) or memory.dtype != np.uint8 or memory.shape != (size,):
            raise ValueError(f"Memory must be a bytearray or a uint8 numpy array of {size} bytes")
        self.mem: np.ndarray = memory
        self._size = size
        self._name = prefix
        self._clock = clock if clock is not None else dut.clk
        self._reset = reset
        self.latency = latency
        self.ready_stall = ready_stall
        self.valid_gap = valid_gap
        self._rng = {ch: random.Random(f"{seed}/{ch}") for ch in ("ar", "r", "aw", "w", "b")}

        self.errors: list[AxiError] = []
        self.beats_read = 0
        self.beats_written = 0
        self.bursts_read = 0
        self.bursts_written = 0
        self.peak_reads = 0           # most read bursts accepted and not yet fully answered at once
        self.peak_writes = 0          # the same for write bursts (AW accepted, B not yet taken)
        self.longest_burst = 0        # most beats in one accepted burst, read or write

        self._reads: deque[_Burst] = deque()          # AR accepted, R not finished
        self._aw_waiting: deque[_Burst] = deque()     # AW accepted, data not complete
        self._w_open: list[tuple[int, int]] = []      # (data, strb) of the W burst in progress
        self._w_done: deque[list] = deque()           # complete W bursts (their beats) with no AW yet
        self._responses: deque[_Burst] = deque()      # writes done, B not yet sent

        self._tasks = [start_soon(c()) for c in
                       (self._ar_channel, self._r_channel, self._aw_channel, self._w_channel, self._b_channel)]

    # ---- back door for testbenches -------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._size

    @property
    def bytes_per_beat(self) -> int:
        return self._bytes

    @property
    def idle(self) -> bool:
        """No request outstanding on either path (and no write data waiting for its address)."""
        return not (self._reads or self._aw_waiting or self._w_open or self._w_done or self._responses)

    def read(self, addr: int, length: int) -> bytes:
        """The memory's bytes, bypassing the bus (no cycles, no checks)."""
        return self.mem[addr:addr + length].tobytes()

    def write(self, addr: int, data) -> None:
        """Store bytes, bypassing the bus: preload programs and tensors in bulk this way."""
        self.mem[addr:addr + len(data)] = np.frombuffer(bytes(data), np.uint8)

    def stop(self) -> None:
        """End the channel coroutines (the outputs keep their last values)."""
        for task in self._tasks:
            task.cancel()

    async def wait_idle(self, timeout: int = 100_000) -> None:
        """Wait until ``idle`` (checked each cycle), at most ``timeout`` cycles."""
        for _ in range(timeout):
            if self.idle:
                return
            await RisingEdge(self._clock)
        raise AssertionError(f"{self._name}: still busy after {timeout} cycles")

    # ---- channel coroutines ---------------------------------------------------------------------------

    def _in_reset(self) -> bool:
        return self._reset is not None and bool(self._reset.value)

    def _address(self, kind: str, ch: _Channel, watch: _Watch, ready: bool, cycle: int) -> _Burst | None:
        """In ReadOnly: check the address channel and return the burst it hands over, if any."""
        if self._in_reset():
            watch.clear()
            return None
        valid = bool(ch.valid.value)
        payload = ch.payload() if valid else None
        watch.check(valid, ready, payload)
        if not (valid and ready):
            return None
        addr, beats = payload["addr"], payload["len"] + 1
        where = f"{watch.name}: burst at 0x{addr:x} ({beats} beats)"
        assert payload["burst"] == BURST_INCR, (
            f"{where}: burst type must be INCR (1), not {_BURST_NAMES[payload['burst']]} ({payload['burst']})")
        expected = self._bytes.bit_length() - 1
        assert payload["size"] == expected, (
            f"{where}: size must be {expected} ({self._bytes}-byte beats, the bus width), not {payload['size']}")
        assert not crosses_page(addr, beats, self._bytes), (
            f"{where}: crosses a 4 KiB boundary (last byte 0x{addr - addr % self._bytes + beats * self._bytes - 1:x})")
        self.longest_burst = max(self.longest_burst, beats)
        error = beat_addresses(addr, beats, self._bytes)[-1] >= self._size
        if error:
            self.errors.append(AxiError(kind, addr, beats, cycle))
        return _Burst(addr, beats, cycle, error)

    async def _ar_channel(self):
        ch, rng, watch, cycle = self._ar, self._rng["ar"], _Watch(f"{self._name} AR"), 0
        while True:
            ready = rng.random() >= self.ready_stall
            ch.ready.value = int(ready)
            await ReadOnly()
            burst = self._address("read", ch, watch, ready, cycle)
            if burst is not None:
                burst.due = cycle + 1 + self.latency
                self._reads.append(burst)
                self.peak_reads = max(self.peak_reads, len(self._reads))
            await RisingEdge(self._clock)
            cycle += 1

    async def _r_channel(self):
        ch, rng, cycle = self._r, self._rng["r"], 0
        beat, offer = 0, False
        ch.valid.value = 0
        while True:
            if not offer and self._reads and self._reads[0].due <= cycle and rng.random() >= self.valid_gap:
                burst = self._reads[0]
                offer = True
                if burst.error:
                    data, resp = 0, RESP_SLVERR
                else:
                    a = burst.addr - burst.addr % self._bytes + beat * self._bytes
                    data, resp = int.from_bytes(self.mem[a:a + self._bytes].tobytes(), "little"), RESP_OKAY
                ch.fields["data"].value = data
                ch.fields["resp"].value = resp
                ch.fields["last"].value = int(beat == burst.beats - 1)
            ch.valid.value = int(offer)
            await ReadOnly()
            if offer and not self._in_reset() and bool(ch.ready.value):
                offer = False
                self.beats_read += 1
                beat += 1
                if beat == self._reads[0].beats:
                    self._reads.popleft()
                    self.bursts_read += 1
                    beat = 0
            await RisingEdge(self._clock)
            cycle += 1

    async def _aw_channel(self):
        ch, rng, watch, cycle = self._aw, self._rng["aw"], _Watch(f"{self._name} AW"), 0
        while True:
            ready = rng.random() >= self.ready_stall
            ch.ready.value = int(ready)
            await ReadOnly()
            burst = self._address("write", ch, watch, ready, cycle)
            if burst is not None:
                self._aw_waiting.append(burst)
                self.peak_writes = max(self.peak_writes, len(self._aw_waiting) + len(self._responses))
                self._pair(cycle)
                self._check_open_burst(last=False)
            await RisingEdge(self._clock)
            cycle += 1

    async def _w_channel(self):
        ch, rng, watch, cycle = self._w, self._rng["w"], _Watch(f"{self._name} W"), 0
        while True:
            ready = rng.random() >= self.ready_stall
            ch.ready.value = int(ready)
            await ReadOnly()
            if self._in_reset():
                watch.clear()
            else:
                valid = bool(ch.valid.value)
                payload = ch.payload() if valid else None
                watch.check(valid, ready, payload)
                if valid and ready:
                    self._w_open.append((payload["data"], payload["strb"]))
                    self._check_open_burst(last=bool(payload["last"]))
                    if payload["last"]:
                        self._w_done.append(self._w_open)
                        self._w_open = []
                        self._pair(cycle)
            await RisingEdge(self._clock)
            cycle += 1

    def _check_open_burst(self, last: bool):
        """``wlast`` must mark exactly the last beat: check the burst in progress against its AW, if known."""
        if self._w_done or not self._aw_waiting:
            assert len(self._w_open) <= 256, f"{self._name} W: {len(self._w_open)} beats without wlast (max 256)"
            return
        burst, n = self._aw_waiting[0], len(self._w_open)
        if last:
            assert n == burst.beats, (f"{self._name} W: wlast on beat {n} of the {burst.beats}-beat write burst "
                                      f"at 0x{burst.addr:x} (must be on beat {burst.beats})")
        else:
            assert n < burst.beats, (f"{self._name} W: wlast missing on beat {burst.beats}, the last of the "
                                     f"{burst.beats}-beat write burst at 0x{burst.addr:x}")

    def _pair(self, cycle: int):
        """Match complete W bursts with their AWs in order; commit each and queue its B."""
        while self._aw_waiting and self._w_done:
            burst = self._aw_waiting.popleft()
            beats = self._w_done.popleft()
            assert len(beats) == burst.beats, (
                f"{self._name} W: wlast on beat {len(beats)} of the {burst.beats}-beat write burst at "
                f"0x{burst.addr:x} (must be on beat {burst.beats})")
            if not burst.error:
                self._commit(burst, beats)
            self.beats_written += burst.beats
            burst.due = cycle + 1 + self.latency
            self._responses.append(burst)

    def _commit(self, burst: _Burst, beats: list[tuple[int, int]]):
        full = (1 << self._bytes) - 1
        for i, (a, (data, strb)) in enumerate(zip(beat_addresses(burst.addr, burst.beats, self._bytes), beats)):
            base = a - a % self._bytes
            strb &= full & (full << (a - base))       # lanes below an unaligned start are not written
            raw = np.frombuffer(data.to_bytes(self._bytes, "little"), np.uint8)
            if strb == full:
                self.mem[base:base + self._bytes] = raw
            else:
                lanes = np.array([(strb >> k) & 1 for k in range(self._bytes)], bool)
                self.mem[base:base + self._bytes][lanes] = raw[lanes]

    async def _b_channel(self):
        ch, rng, cycle, offer = self._b, self._rng["b"], 0, False
        ch.valid.value = 0
        while True:
            if (not offer and self._responses and self._responses[0].due <= cycle
                    and rng.random() >= self.valid_gap):
                offer = True
                ch.fields["resp"].value = RESP_SLVERR if self._responses[0].error else RESP_OKAY
            ch.valid.value = int(offer)
            await ReadOnly()
            if offer and not self._in_reset() and bool(ch.ready.value):
                offer = False
                self._responses.popleft()
                self.bursts_written += 1
            await RisingEdge(self._clock)
            cycle += 1


class AxiLiteMaster:
    """Drives the AXI4-Lite slave port ``prefix`` of ``dut`` (32-bit data), one access at a time.

    ``await read(addr)`` returns the word; ``await write(addr, value, strb=0xF)`` waits for B. Both fail with
    an ``AssertionError`` when the response is not OKAY or the slave does not answer within ``timeout``
    cycles. Calls from several coroutines are served one after another.
    """

    def __init__(self, dut, prefix: str, *, clock=None, timeout: int = 1000):
        what = "AxiLiteMaster"
        self._ar = _Channel(dut, prefix, "ar", ("addr",), what)
        self._r = _Channel(dut, prefix, "r", ("data", "resp"), what)
        self._aw = _Channel(dut, prefix, "aw", ("addr",), what)
        self._w = _Channel(dut, prefix, "w", ("data", "strb"), what)
        self._b = _Channel(dut, prefix, "b", ("resp",), what)
        self._name = prefix
        self._clock = clock if clock is not None else dut.clk
        self._timeout = timeout
        self._lock = Lock()
        for ch in (self._ar, self._aw, self._w):
            ch.valid.value = 0
        self._r.ready.value = 0
        self._b.ready.value = 0

    async def read(self, addr: int) -> int:
        async with self._lock:
            self._ar.fields["addr"].value = addr
            self._ar.valid.value = 1
            self._r.ready.value = 1
            pending_ar, result = True, None
            for _ in range(self._timeout):
                await ReadOnly()
                ar_moved = pending_ar and bool(self._ar.ready.value)
                if bool(self._r.valid.value):
                    result = (int(self._r.fields["data"].value), int(self._r.fields["resp"].value))
                await RisingEdge(self._clock)
                if ar_moved:
                    pending_ar = False
                    self._ar.valid.value = 0
                if result is not None:
                    self._r.ready.value = 0
                    break
            else:
                raise AssertionError(f"{self._name}: no answer to the read of 0x{addr:x} in {self._timeout} cycles")
            data, resp = result
            assert resp == RESP_OKAY, f"{self._name}: read of 0x{addr:x} answered {RESP_NAMES[resp]} ({resp})"
            return data

    async def write(self, addr: int, value: int, strb: int = 0xF) -> None:
        async with self._lock:
            self._aw.fields["addr"].value = addr
            self._w.fields["data"].value = value & 0xFFFF_FFFF
            self._w.fields["strb"].value = strb
            self._aw.valid.value = 1
            self._w.valid.value = 1
            self._b.ready.value = 1
            pending_aw = pending_w = True
            resp = None
            for _ in range(self._timeout):
                await ReadOnly()
                aw_moved = pending_aw and bool(self._aw.ready.value)
                w_moved = pending_w and bool(self._w.ready.value)
                if bool(self._b.valid.value):
                    resp = int(self._b.fields["resp"].value)
                await RisingEdge(self._clock)
                if aw_moved:
                    pending_aw = False
                    self._aw.valid.value = 0
                if w_moved:
                    pending_w = False
                    self._w.valid.value = 0
                if resp is not None:
                    self._b.ready.value = 0
                    break
            else:
                raise AssertionError(f"{self._name}: no answer to the write of 0x{addr:x} in {self._timeout} cycles")
            assert not (pending_aw or pending_w), f"{self._name}: B arrived before AW and W of the write to 0x{addr:x}"
            assert resp == RESP_OKAY, f"{self._name}: write to 0x{addr:x} answered {RESP_NAMES[resp]} ({resp})"
