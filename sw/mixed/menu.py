"""The format menu of a mixed-precision choice: which (weight, act) format pairs a layer may take, and the engine
that runs them today.

A menu entry ``F`` means weights and output activations in ``F``; ``W/A`` names the two apart (e.g.
``minifloat6/fp8_e4m3``: minifloat6 weights, fp8_e4m3 activations). ``sw.compile --mixed`` runs a mixed
network on one single-format engine whose formats hold every entry's values (the *container*, e.g. int8 for
int2..int8): narrower weights become values on the container's grid and narrower integer activations become clamps
(:func:`sw.quantize.network.quantize_network`'s ``layer_formats``); a multi-format build whose first format is the
container runs the same network with each layer in its own format. A minifloat activation narrower than the
engine's cannot be emulated that way (the post-processing unit rounds to the engine's act format), so such entries
need the multi-format engine: :func:`container` refuses them with a one-line error naming ``--formats``. On a
multi-format build whose first format is no container of the menu (e.g. ``--formats int4,int8,minifloat6``), the
network *declares* each layer's format (:attr:`sw.ir.QuantizedNetwork.formats`): every layer is quantized in its
own format, and the entry of :func:`default` is that of layers outside the choice and the sensitivities' baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw.spec.formats import Format, FormatError, IntFormat, get_format

from .errors import MixedError

__all__ = ["Choice", "parse_menu", "container", "emulates", "default"]


@dataclass(frozen=True)
class Choice:
    """One menu entry: the formats of a layer's weights and of its output activations."""
    weights: str
    acts: str

    @property
    def name(self) -> str:
        return self.weights if self.weights == self.acts else f"{self.weights}/{self.acts}"

    @property
    def weight_format(self) -> Format:
        return get_format(self.weights)

    @property
    def act_format(self) -> Format:
        return get_format(self.acts)


def parse_menu(text: str, flag: str = "--mixed") -> list[Choice]:
    """``"int4,int8,minifloat6/fp8_e4m3"`` as choices (format names canonical, duplicates refused)."""
    entries = [e.strip() for e in str(text).split(",")]
    if len(entries) < 2 or not all(entries):
        raise MixedError(f"{flag} needs at least two comma-separated formats (e.g. int4,int8), not {text!r}")
    menu = []
    for entry in entries:
        parts = entry.split("/")
        if len(parts) > 2:
            raise MixedError(f"{flag} entry {entry!r}: write a format (int4) or weights/acts (minifloat6/fp8_e4m3)")
        try:
            w, a = (get_format(p.strip()) for p in (parts if len(parts) == 2 else parts * 2))
        except FormatError as e:
            raise MixedError(f"{flag} entry {entry!r}: {e}") from None
        menu.append(Choice(w.name, a.name))
    if len(set(menu)) < len(menu):
        raise MixedError(f"{flag} names a format twice ({text!r}); give each once")
    return menu


def _holds(sub: Format, engine: Format) -> bool:
    from sw.quantize import representable
    return representable(sub, engine)


def emulates(choice: Choice, weights: Format, acts: Format) -> str | None:
    """Why an engine of these formats cannot run ``choice`` today (None: it can)."""
    if not _holds(choice.weight_format, weights):
        return f"its {weights.name} weights cannot hold {choice.weights} values"
    a = choice.act_format
    if a != acts and not (isinstance(a, IntFormat) and isinstance(acts, IntFormat) and _holds(a, acts)):
        return (f"{choice.acts} activations on a {acts.name} engine need the multi-format engine (only narrower "
                "integer activations are emulated, by clamps)")
    return None


def container(menu: list[Choice], weights: str | None = None, acts: str | None = None) -> tuple[str, str]:
    """(weight, act) formats of the single engine that runs every menu entry today: the given ones, or else the
    menu's own widest pair; a one-line MixedError when there is none."""
    if weights is not None and acts is not None:
        w, a = get_format(weights), get_format(acts)
        for c in menu:
            if (why := emulates(c, w, a)) is not None:
                raise MixedError(f"--mixed {c.name} cannot run on the {w.name}/{a.name} engine: {why}")
        return w.name, a.name
    for c in menu:
        if all(emulates(other, c.weight_format, c.act_format) is None for other in menu):
            return c.weights, c.acts
    names = ",".join(c.name for c in menu)
    raise MixedError(f"--mixed {names}: no entry's engine runs all the others (one format must hold every "
                     "other's values, e.g. int2,int4,int8); a mix across families runs on a multi-format build: "
                     f"add --formats {','.join(dict.fromkeys(n for c in menu for n in (c.weights, c.acts)))}")


def default(menu: list[Choice]) -> Choice:
    """The entry of a declared-format mix that layers outside the choice take and the baseline of sensitivities:
    the widest (most weight and activation bits; the first of equals)."""
    return max(menu, key=lambda c: c.weight_format.bits + c.act_format.bits)
