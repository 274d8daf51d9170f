"""docs/isa.md is generated from the ISA tables (hw/spec/isa_doc.py) and must not go stale."""

import re
from pathlib import Path

import pytest

from hw.spec.isa import HEADER, INSTRUCTION_BITS, KINDS, AluOp, Buffer, ErrorCode, Opcode
from hw.spec.isa_doc import markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "isa.md"


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


def test_committed_doc_is_current(doc):
    assert doc == markdown(), "docs/isa.md is stale: run python -m hw.spec.isa_doc docs/isa.md"


def test_mentions_every_opcode(doc):
    for opcode in Opcode:
        assert f"| {int(opcode)} | {opcode.name} |" in doc, opcode.name
        assert f"## {opcode.name} (opcode {int(opcode)})" in doc, opcode.name


def test_mentions_every_field(doc):
    for f in HEADER:
        assert f"`{f.name}`" in doc, f.name
    for kind in KINDS.values():
        section = doc.split(f"## {kind.name} (opcode")[1].split("\n## ")[0]
        for f in kind.fields:
            assert re.search(rf"^\| [0-9:]+ \| `{f.name}` \|", section, re.M), f"{kind.name}.{f.name}"


def test_mentions_every_enumeration(doc):
    for enum_type in (Buffer, AluOp, ErrorCode):
        for member in enum_type:
            assert f"{int(member)} {member.name}" in doc, f"{enum_type.__name__}.{member.name}"


def test_bits_used_match_the_widths(doc):
    for kind in KINDS.values():
        used = 8 + sum(f.bits for f in kind.fields)
        assert f"| {kind.name} | " in doc and f"| {used} of {INSTRUCTION_BITS} |" in doc
