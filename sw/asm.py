"""Assembler and disassembler of the instruction set, derived from the tables of ``hw/spec/isa.py``.

One instruction per line: the kind's name, then ``field=value`` pairs in any order, then the token flags as
bare words::

    LOAD buffer=ACT sram_addr=0 dram_addr=0x1000 y_size=4 x_size=4 dram_stride=64 pop_next push_next

Names are case-insensitive. Values are decimal or ``0x`` hex (``_`` may separate digits), negative only for
signed fields; ``buffer`` and ``op`` also take the names of :class:`~hw.spec.isa.Buffer` and
:class:`~hw.spec.isa.AluOp`. Omitted fields are zero. ``#`` starts a comment; blank lines are ignored.

:func:`disassemble` prints the canonical form: every field of the kind in table order, byte addresses in
hex, enumerations by name, then the set flags in header order. Assembling it gives back the same word.

Command line::

    python -m sw.asm prog.s -o prog.bin            # assemble
    python -m sw.asm --disassemble prog.bin        # print the listing (or -o prog.s)
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
from pathlib import Path

from hw.spec import isa
from hw.spec.cli import Parser, UsageError, check_out_file, main_guard, write_file
from hw.spec.isa import HEADER, INSTRUCTION_BITS, INSTRUCTION_BYTES, KINDS, AluOp, Buffer, Field, IsaError, Kind

__all__ = ["AsmError", "FLAGS", "assemble", "assemble_line", "disassemble", "to_bytes", "from_bytes", "main"]


class AsmError(ValueError):
    """Text that is not an instruction, or bytes that are not instructions.

    Assembly errors start with ``line N: ``.
    """


#: The token flags: every header field after the opcode, written as bare words.
FLAGS: tuple[str, ...] = tuple(f.name for f in HEADER[1:])

# How some fields read and print. The tables do not say which fields hold an enumeration or a byte address,
# so these are the only field names this module spells out; they are checked against the tables below.
_ENUMS: dict[str, type[enum.IntEnum]] = {"buffer": Buffer, "op": AluOp}
_HEX: frozenset[str] = frozenset({"dram_addr"})

_MNEMONICS: dict[str, Kind] = {kind.name.lower(): kind for kind in KINDS.values()}
_NUMBER = re.compile(r"([+-]?)(0[xX][0-9a-fA-F](?:_?[0-9a-fA-F])*|[0-9](?:_?[0-9])*)")


def _check_tables() -> None:
    fields = {f.name: f for kind in KINDS.values() for f in kind.fields}
    for name, enum_type in _ENUMS.items():
        if name not in fields:
            raise AssertionError(f"sw.asm reads field {name!r} as {enum_type.__name__}, but no kind has that field")
        if max(enum_type) > fields[name].max:
            raise AssertionError(f"{enum_type.__name__} does not fit in field {name!r}")
    missing = sorted(_HEX - set(fields))
    if missing:
        raise AssertionError(f"sw.asm prints field(s) {', '.join(missing)} in hex, but no kind has them")
    for f in HEADER[1:]:
        if f.bits != 1:
            raise AssertionError(f"header field {f.name!r} is not a one-bit token flag")


_check_tables()


def _allowed_flags(kind: Kind) -> list[str]:
    return [flag for flag in FLAGS if getattr(kind, f"may_{flag}")]


def _describe(kind: Kind) -> str:
    """What a line of ``kind`` may hold, for error messages."""
    fields = f"its fields are {', '.join(f.name for f in kind.fields)}" if kind.fields else "it has no fields"
    flags = _allowed_flags(kind)
    return f"{fields}; its token flags are {', '.join(flags)}" if flags else f"{fields} and no token flags"


def _parse_value(kind: Kind, f: Field, text: str, where: str) -> int:
    enum_type = _ENUMS.get(f.name)
    if enum_type is not None and text.upper() in enum_type.__members__:
        return int(enum_type[text.upper()])
    m = _NUMBER.fullmatch(text)
    if m is None:
        names = f"{', '.join(enum_type.__members__)} or " if enum_type is not None else ""
        raise AsmError(f"{where}{kind.name}.{f.name}={text} is not a value: write {names}an integer in "
                       f"{f.min}..{f.max} (decimal, or hex with 0x)")
    sign, digits = m.groups()
    value = int(digits, 16 if digits[:2].lower() == "0x" else 10)
    return -value if sign == "-" else value


def assemble_line(line: str, number: int = 1) -> int | None:
    """The instruction word of one line of text, or ``None`` for a blank or comment-only line.

    ``number`` is the line number that error messages start with.
    """
    where = f"line {number}: "
    words = line.split("#", 1)[0].split(None, 1)
    if not words:
        return None
    mnemonic, tokens = words[0], re.sub(r"\s*=\s*", "=", words[1] if len(words) > 1 else "").split()
    kind = _MNEMONICS.get(mnemonic.lower())
    if kind is None:
        raise AsmError(f"{where}unknown mnemonic {mnemonic!r}; valid mnemonics are "
                       f"{', '.join(k.name for k in KINDS.values())}")
    fields = {f.name: f for f in kind.fields}
    values: dict[str, int] = {}
    given: dict[str, str] = {}
    for token in tokens:
        name, equals, text_value = token.partition("=")
        key = name.lower()
        if not equals:
            if key in fields:
                raise AsmError(f"{where}{kind.name}.{key} needs a value: write {key}=VALUE")
            if key not in FLAGS:
                raise AsmError(f"{where}{kind.name} has no field or flag {name!r}; {_describe(kind)}")
            if key in values:
                raise AsmError(f"{where}repeated flag {key}: give each flag once")
            values[key], given[key] = 1, token
            continue
        if not name or not text_value or "=" in text_value:
            raise AsmError(f"{where}malformed pair {token!r}: write FIELD=VALUE; {_describe(kind)}")
        if key in FLAGS:
            raise AsmError(f"{where}{key} is a token flag: write it as a bare word, without ={text_value}")
        if key not in fields:
            raise AsmError(f"{where}{kind.name} has no field {name!r}; {_describe(kind)}")
        if key in values:
            raise AsmError(f"{where}repeated field {key} ({given[key]}, then {token}): give each field once")
        values[key], given[key] = _parse_value(kind, fields[key], text_value, where), token
    try:
        return isa.encode(kind.opcode, **values)
    except IsaError as e:
        message = str(e)
        if any(values.get(flag) and flag not in _allowed_flags(kind) for flag in FLAGS):
            allowed = _allowed_flags(kind)
            message += f"; {kind.name} takes {', '.join(allowed) if allowed else 'no token flags'}"
        raise AsmError(f"{where}{message}") from None


def assemble(text: str) -> list[int]:
    """The instruction words of a program: one instruction per line."""
    words = []
    for number, line in enumerate(text.splitlines(), start=1):
        word = assemble_line(line, number)
        if word is not None:
            words.append(word)
    return words


def _format_value(f: Field, value: int) -> str:
    enum_type = _ENUMS.get(f.name)
    if enum_type is not None and value in {int(m) for m in enum_type}:
        return enum_type(value).name
    if f.name in _HEX:
        return f"0x{value:x}"
    return str(value)


def disassemble(word: int) -> str:
    """The canonical text of an instruction word: ``assemble_line(disassemble(w)) == w``."""
    try:
        kind, values = isa.decode(word)
    except IsaError as e:
        raise AsmError(str(e)) from None
    parts = [kind.name]
    parts += [f"{f.name}={_format_value(f, values[f.name])}" for f in kind.fields]
    parts += [flag for flag in FLAGS if values[flag]]
    return " ".join(parts)


def to_bytes(words) -> bytes:
    """Instruction words as memory holds them: each ``INSTRUCTION_BYTES`` bytes, little-endian."""
    out = bytearray()
    for i, word in enumerate(words):
        if not isinstance(word, int) or isinstance(word, bool) or not 0 <= word < 1 << INSTRUCTION_BITS:
            raise AsmError(f"word {i} must be an integer in 0..2**{INSTRUCTION_BITS}-1, not {word!r}")
        out += word.to_bytes(INSTRUCTION_BYTES, "little")
    return bytes(out)


def from_bytes(data) -> list[int]:
    """Inverse of :func:`to_bytes`."""
    data = bytes(data)
    if len(data) % INSTRUCTION_BYTES:
        raise AsmError(f"{len(data)} bytes are not a whole number of {INSTRUCTION_BYTES}-byte instructions")
    return [int.from_bytes(data[i:i + INSTRUCTION_BYTES], "little")
            for i in range(0, len(data), INSTRUCTION_BYTES)]


# --- command line ------------------------------------------------------------------------------------

_PROG = "python -m sw.asm"


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog=_PROG, description="Assemble a program (FILE.s -o FILE.bin) or print the listing of a "
                                        "binary (--disassemble FILE.bin).")
    p.add_argument("input", type=Path, help="assembly text, or a binary with --disassemble")
    p.add_argument("-o", "--output", type=Path, help="where to write the binary (or the listing with "
                                                     "--disassemble; default: print it)")
    p.add_argument("-d", "--disassemble", action="store_true", help="print the listing of a binary")
    return p


def _read(path: Path, binary: bool):
    try:
        return path.read_bytes() if binary else path.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; to list a binary use --disassemble") from None


def _write(path: Path, data) -> None:
    path = check_out_file(path, "-o")
    write_file(path, lambda scratch: scratch.write_bytes(data) if isinstance(data, bytes)
               else scratch.write_text(data, encoding="utf-8"), "-o")


def _listing(path: Path) -> list[str]:
    try:
        words = from_bytes(_read(path, binary=True))
    except AsmError as e:
        raise UsageError(f"{path}: {e}") from None
    lines = []
    for i, word in enumerate(words):
        try:
            lines.append(disassemble(word))
        except AsmError as e:
            raise UsageError(f"{path}: word {i} (byte {i * INSTRUCTION_BYTES}): {e}") from None
    return lines


def _assemble_file(path: Path) -> list[int]:
    try:
        return assemble(_read(path, binary=False))
    except AsmError as e:
        raise UsageError(f"{path}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    return main_guard(_PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    if args.disassemble:
        lines = _listing(args.input)
        listing = "".join(line + "\n" for line in lines)
        if args.output is None:
            sys.stdout.write(listing)
        else:
            _write(args.output, listing)
            print(f"wrote the listing of {len(lines)} instructions to {args.output}")
        return 0
    if args.output is None:
        raise UsageError(f"no output file: add -o FILE.bin (see {_PROG} --help)")
    words = _assemble_file(args.input)
    _write(args.output, to_bytes(words))
    print(f"wrote {len(words)} instructions ({len(words) * INSTRUCTION_BYTES} bytes) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
