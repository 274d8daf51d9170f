"""Placing tokens: each instruction of a legal program gets the pops (and its producers the pushes) that order
it after every earlier instruction of another engine it shares data with, and no queue can overflow."""

from __future__ import annotations

from dataclasses import dataclass, field

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import KINDS, AluOp, Opcode, encode

from .common import _COMPUTE, _ENGINE, _FLAGS
from .footprint import _analyse, _conflict


# --- placing tokens ----------------------------------------------------------------------------------------

class _Retry(Exception):
    """This random draw cannot be made into a program; draw again."""


def _no_flags() -> dict:
    return dict.fromkeys(_FLAGS, 0)


@dataclass(eq=False)
class _Instr:
    opcode: Opcode
    fields: dict
    #: Where the instruction goes in program order (instructions are sorted by it).
    order: tuple = ()
    #: Instructions that must complete before this one starts, besides those it shares data with.
    after: list = field(default_factory=list)
    flags: dict = field(default_factory=_no_flags)
    touches: tuple = (frozenset(), frozenset())

    @property
    def engine(self) -> int:
        return _ENGINE[KINDS[self.opcode].queue]

    def word(self) -> int:
        return encode(self.opcode, **self.fields, **{k: v for k, v in self.flags.items() if v})


def _barrier(config: AcceleratorConfig, after: _Instr) -> _Instr:
    """A compute-engine instruction that changes nothing anyone reads: MAX of the scratch line with itself."""
    line = config.acc_buffer_depth - 1
    fields = dict(op=int(AluOp.MAX), dst_addr=line, src_addr=line, y_size=1, x_size=1, dst_stride=0,
                  src_stride=0, src_step=1)
    return _Instr(Opcode.ALU, fields, after=[after])


def _schedule(instrs: list[_Instr], config: AcceleratorConfig) -> list[_Instr]:
    """Set the token flags of ``instrs`` (in program order), inserting barriers where needed."""
    out: list[_Instr] = []
    for ins in instrs:
        _append(out, ins, config)
    return out


def _append(out: list[_Instr], ins: _Instr, config: AcceleratorConfig) -> None:
    """Append ``ins`` to the scheduled ``out``, with the pops it needs and the matching pushes.

    ``ins`` pops, from each neighbour, the token of the last earlier instruction of that neighbour it must
    wait for, unless it is already ordered after it. That instruction cannot have pushed towards ``ins``'s
    engine yet, nor can any later one of its engine (else ``ins`` would already be ordered after it), so the
    k-th push onto a queue is always the one the k-th pop wants.
    """
    ins.flags = _no_flags()
    required = {id(x) for x in ins.after}
    need: dict[int, int] = {}
    for idx, prev in enumerate(out):
        if prev.engine != ins.engine and (id(prev) in required or _conflict(prev.touches, ins.touches)):
            need[prev.engine] = idx
    if not need:
        out.append(ins)
        return
    a = _analyse([(x.engine, x.flags) for x in out])
    same = [idx for idx, x in enumerate(out) if x.engine == ins.engine]
    base = [0, 0, 0]
    if same:
        base = list(a.clock[same[-1]])
        base[ins.engine] = max(base[ins.engine], a.pos[same[-1]] + 1)
    partners: dict[int, int] = {}
    far = None
    for engine, i in need.items():
        if a.before(i, engine, base):
            continue
        if abs(engine - ins.engine) == 1:
            partners[engine] = i
        else:
            far = (engine, i)
    if far is not None:                  # load <-> store: through the compute engine
        engine, i = far
        p = partners.get(_COMPUTE)
        computes = [idx for idx, x in enumerate(out) if x.engine == _COMPUTE]
        if p is not None and a.before(i, engine, a.clock[p]):
            pass
        elif computes and a.before(i, engine, a.clock[computes[-1]]):
            partners[_COMPUTE] = computes[-1]
        else:
            _append(out, _barrier(config, out[i]), config)
            partners[_COMPUTE] = len(out) - 1
    for engine, idx in partners.items():
        push, pop = ("push_next", "pop_prev") if engine < ins.engine else ("push_prev", "pop_next")
        assert not out[idx].flags[push], "an instruction never pushes twice towards one engine"
        out[idx].flags[push] = 1
        ins.flags[pop] = 1
    out.append(ins)


def _place_tokens(instrs: list[_Instr], config: AcceleratorConfig) -> list[_Instr]:
    """Schedule, then make producers wait wherever a queue could overflow; repeat until none can."""
    for _ in range(100):
        out = _schedule(instrs, config)
        a = _analyse([(x.engine, x.flags) for x in out])
        assert not a.unmatched, "every pop is fed by an earlier push"
        if not a.overflows:
            return out
        i, q, j = a.overflows[0]
        if j is None or j > i:
            raise _Retry("a queue would overflow and the producer cannot wait for an earlier pop")
        out[i].after.append(out[j])
        instrs = out
    raise _Retry("token placement did not settle")
