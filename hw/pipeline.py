"""Arithmetic spread over pipeline stages, with no multipliers: sums and shift-and-add products whose values know
when they are ready.

A :class:`Staged` value is ready ``depth`` carry chains after the register of stage ``stage`` (stage 0 is the
input). Each operation starts where its latest operand is ready, delays earlier operands through registers, and
registers its operands first when one more carry chain would exceed ``levels`` chains in a stage: so every stage
holds at most ``levels`` carry chains (two fit a 10 ns cycle on an ECP5 with room for routing), however deep the
arithmetic. A product is the sum of the shifted copies of its wider operand selected by the bits of the narrower
one (the selection folds into the adders' LUTs), added as a balanced tree.

A serial pipeline (``start`` given: the pulse its inputs arrive with, which then hold until the result is read)
makes each product a shift-and-add loop, one bit of the narrower operand per cycle, and holds values instead of
delaying them: the same results, a few cycles later, in a fraction of the logic.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value

__all__ = ["Staged", "Pipeline", "shift_add", "times"]


def _balanced_sum(values: list[Value]) -> Value:
    while len(values) > 1:
        values = [a + b for a, b in zip(values[0::2], values[1::2])] + values[len(values) & ~1:]
    return values[0]


def shift_add(a: Value, b: Value) -> Value:
    """``a * b`` in one cycle without a multiplier: a shifted copy of the wider operand per bit of the narrower one,
    added as a balanced tree (a signed narrower operand's top bit weighs ``-2**(n-1)``: its copy is subtracted).
    For narrow operands (a 3-bit stride, a 4-bit kernel size or significand) this is two or three short carry
    chains, where yosys would put a DSP and its routing in the path."""
    a, b = Value.cast(a), Value.cast(b)
    if len(a) > len(b) or (len(a) == len(b) and b.shape().signed and not a.shape().signed):
        a, b = b, a
    if len(a) == 0:
        return Const(0, 1)
    if not a.shape().signed:
        return _balanced_sum([Mux(a[i], b << i, 0) for i in range(len(a))])
    top = len(a) - 1
    positive = [Mux(a[i], b << i, 0) for i in range(top)]
    negative = Mux(a[top], b << top, 0)
    return (_balanced_sum(positive) if positive else Const(0, 1)) - negative


def times(a: Value, constant: int) -> Value:
    """``a * constant`` (a non-negative integer) as shifts and additions: one shifted copy per set bit."""
    if constant < 0:
        raise ValueError(f"Constant must be a non-negative integer, not {constant}")
    a = Value.cast(a)
    bits = [i for i in range(constant.bit_length()) if constant >> i & 1]
    return _balanced_sum([a << i for i in bits]) if bits else Const(0, 1)


@dataclass(frozen=True)
class Staged:
    """``value`` is ready ``depth`` carry chains after the register of stage ``stage``."""

    value: Value
    stage: int
    depth: int = 0


class Pipeline:
    """Builds staged arithmetic inside ``m``; registers load every cycle (the pipeline never stalls)."""

    def __init__(self, m: Module, name: str, *, levels: int = 2, start: Value | None = None):
        if levels < 1:
            raise ValueError(f"Levels per stage must be at least 1, not {levels}")
        self._m, self._name, self._levels = m, name, levels
        self._registers = 0
        self._delayed: dict[tuple[int, int], Staged] = {}
        self._pulses = [] if start is None else [Value.cast(start)]

    @property
    def serial(self) -> bool:
        """Products are shift-and-add loops and values are held (the inputs hold from ``start`` on)."""
        return bool(self._pulses)

    def _pulse(self, stage: int) -> Value:
        """``start`` delayed ``stage`` cycles: high in the cycle the values of ``stage`` are first ready."""
        while len(self._pulses) <= stage:
            pulse = Signal(name=f"{self._name}_start_s{len(self._pulses)}")
            self._m.d.sync += pulse.eq(self._pulses[-1])
            self._pulses.append(pulse)
        return self._pulses[stage]

    def input(self, value, depth: int = 0) -> Staged:
        """A value of stage 0 (combinational from the pipeline's input, ``depth`` chains of logic into it)."""
        return Staged(Value.cast(value), 0, depth)

    def register(self, x: Staged) -> Staged:
        """``x`` through one register: ready at the start of the next stage."""
        reg = Signal(x.value.shape(), name=f"{self._name}_s{x.stage + 1}_{self._registers}")
        self._registers += 1
        self._m.d.sync += reg.eq(x.value)
        return Staged(reg, x.stage + 1, 0)

    def at(self, x: Staged, stage: int) -> Staged:
        """``x`` delayed through registers until ``stage`` (where it is ready with no logic after the register)."""
        if x.stage > stage:
            raise ValueError(f"A value of stage {x.stage} cannot be used at stage {stage}")
        if self.serial and x.stage < stage:
            # The inputs hold, so a value once ready stays ready: one register (behind logic) is enough.
            if x.depth:
                key = (id(x.value), x.stage)
                if key not in self._delayed:
                    self._delayed[key] = self.register(x)
                x = self._delayed[key]
            return Staged(x.value, stage, 0)
        while x.stage < stage:
            key = (id(x.value), x.stage)
            if key not in self._delayed:
                self._delayed[key] = self.register(x)
            x = self._delayed[key]
        return x

    def _align(self, operands: list[Staged]) -> tuple[list[Value], int, int]:
        """The operands' values at the stage where one more chain can follow all of them: (values, stage, depth)."""
        stage = max(x.stage for x in operands)
        depth = max(x.depth for x in operands if x.stage == stage)
        if depth >= self._levels:
            operands = [self.at(x, stage) if x.stage < stage else x for x in operands]
            operands = [self.register(x) if x.depth else self.at(x, stage + 1) for x in operands]
            stage, depth = stage + 1, 0
        values = [self.at(x, stage).value if x.stage < stage else x.value for x in operands]
        return values, stage, depth

    def apply(self, function, *operands: Staged, chains: int = 1) -> Staged:
        """``function(*values)`` as ``chains`` more carry chains (0 for a few LUTs of plain logic) after the
        latest operand."""
        values, stage, depth = self._align(list(operands))
        return Staged(Value.cast(function(*values)), stage, depth + chains)

    def add(self, a: Staged, b: Staged) -> Staged:
        return self.apply(lambda x, y: x + y, a, b)

    def sum(self, terms: list[Staged]) -> Staged:
        """The sum of ``terms`` (at least one), as a balanced tree of additions."""
        if not terms:
            raise ValueError("A sum needs at least one term")
        terms = sorted(terms, key=lambda x: (x.stage, x.depth))
        while len(terms) > 1:
            # Pair the earliest-ready terms first, so late ones join the tree as late as possible.
            a, b, *rest = terms
            terms = sorted([*rest, self.add(a, b)], key=lambda x: (x.stage, x.depth))
        return terms[0]

    def product(self, a: Staged, b: Staged, addend: Staged | None = None) -> Staged:
        """``a * b`` by shifts and additions: one shifted copy of the wider operand per bit of the narrower one.
        ``addend`` (unsigned): ``a * b + addend``; a serial pipeline starts the loop's running sum at it (no adder
        of its own), the other adds it to the copies."""
        if len(a.value) > len(b.value):
            a, b = b, a
        if len(a.value) == 0:
            return Staged(Const(0, 1), a.stage, a.depth) if addend is None else addend
        values, stage, depth = self._align([a, b] + ([addend] if addend is not None else []))
        narrow, wide = values[:2]
        if self.serial:
            return self._serial_product(narrow, wide, stage, values[2] if addend is not None else None)
        copies = [Staged(Mux(narrow[i], wide << i, 0), stage, depth) for i in range(len(narrow))]
        return self.sum(copies + ([Staged(values[2], stage, depth)] if addend is not None else []))

    def _serial_product(self, narrow: Value, wide: Value, stage: int, addend: Value | None = None) -> Staged:
        """``narrow * wide (+ addend)`` (unsigned), all ready at ``stage`` (and held): for ``len(narrow)`` cycles after
        the pulse of ``stage``, the high part plus ``wide`` if the low part's last bit is set, shifted right one bit
        into the low part, which started as ``narrow`` (a shift-and-add multiplier: one adder as wide as ``wide``).
        The high part starts at ``addend`` (else 0): each step halves what it holds, the bits shifted out land in the
        low part, so the result is ``addend`` more (one bit wider than the wider of ``wide`` and ``addend``)."""
        if narrow.shape().signed or wide.shape().signed or (addend is not None and addend.shape().signed):
            raise ValueError("A serial product takes unsigned operands")
        n = len(narrow)
        index = self._registers
        self._registers += 1
        width = len(wide) if addend is None else max(len(wide), len(addend)) + 1
        high = Signal(width, name=f"{self._name}_mul{index}_high")
        low = Signal(n, name=f"{self._name}_mul{index}_low")
        busy = Signal(name=f"{self._name}_mul{index}_busy")
        step = high + Mux(low[0], wide, 0)
        # Both pulses before the If: a pulse register made inside it would load only under its condition.
        first, last = self._pulse(stage), self._pulse(stage + n)
        with self._m.If(first):
            self._m.d.sync += [high.eq(0 if addend is None else addend), low.eq(narrow), busy.eq(1)]
        with self._m.Elif(busy):
            self._m.d.sync += [high.eq(step[1:]), low.eq(Cat(low[1:], step[0]))]
            with self._m.If(last):
                self._m.d.sync += busy.eq(0)
        return Staged(Cat(low, high), stage + 1 + n, 0)

    def times(self, a: Staged, constant: int) -> Staged:
        """``a * constant`` (a non-negative integer): one shifted copy of ``a`` per set bit of the constant."""
        if constant < 0:
            raise ValueError(f"Constant must be a non-negative integer, not {constant}")
        if constant == 0:
            return Staged(Const(0, 1), a.stage, a.depth)
        bits = [i for i in range(constant.bit_length()) if constant >> i & 1]
        return self.sum([Staged(a.value << i, a.stage, a.depth) for i in bits])
