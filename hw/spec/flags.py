"""The number-format flags the front doors share (``python -m hw.build``, ``boards.build``, ``sw.compile``):
``--pe``/``--weights``/``--acts`` and ``--formats``, each checked by the format registry, a bad one a one-line usage
error naming its flag."""

from __future__ import annotations

from .cli import UsageError
from .config import ConfigError
from .formats import FormatError, get_format

__all__ = ["format_flags", "format_set", "flag_error"]


def format_flags(args) -> tuple[str | None, str | None]:
    """The weight and activation formats of ``--weights``/``--acts`` (each overriding ``--pe``), each checked by
    the format registry: a bad one is a UsageError naming its flag."""
    weights, acts = args.weights or args.pe, args.acts or args.pe
    for flag, name in (("--weights" if args.weights else "--pe", weights), ("--acts" if args.acts else "--pe", acts)):
        if name is not None:
            try:
                get_format(name)
            except FormatError as e:
                raise UsageError(f"{flag}: {e}") from None
    return weights, acts


def format_set(args) -> tuple[str, ...] | None:
    """The formats of ``--formats`` (None without it), each checked by the format registry; the flag excludes
    ``--pe``/``--weights``/``--acts``."""
    if getattr(args, "formats", None) is None:
        return None
    if args.pe or args.weights or args.acts:
        raise UsageError("--formats: give either --formats or --pe/--weights/--acts, not both")
    names = tuple(n.strip() for n in args.formats.split(","))
    if len(names) < 2 or not all(names):
        raise UsageError(f"--formats: list two or more formats separated by commas (e.g. int4,int8,minifloat6), "
                         f"not {args.formats!r}; for one format use --pe")
    for name in names:
        try:
            get_format(name)
        except FormatError as e:
            raise UsageError(f"--formats: {e}") from None
    return names


def flag_error(e: ConfigError) -> UsageError:
    """A configuration error as the usage error of the flag that set the field."""
    flag = str(e).split(" ", 1)[0].replace("_format", "").replace("_", "-")
    return UsageError(f"--{flag}: {e}")
