"""The assembler and disassembler (sw/asm.py): round trips, the canonical listing, errors and the command line."""

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from hw.spec.isa import HEADER, INSTRUCTION_BYTES, KINDS, AluOp, Buffer, Opcode, decode, encode
from sw.asm import AsmError, assemble, assemble_line, disassemble, from_bytes, main, to_bytes

FLAGS = [f.name for f in HEADER[1:]]


def random_word(kind, rng: random.Random) -> int:
    values = {f.name: rng.choice([f.min, f.max, 0, rng.randint(f.min, f.max)]) for f in kind.fields}
    values |= {flag: rng.randint(0, 1) for flag in FLAGS if getattr(kind, f"may_{flag}")}
    return encode(kind.opcode, **values)


# --- round trips -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_round_trip(opcode):
    rng = random.Random(int(opcode))
    for _ in range(300):
        word = random_word(KINDS[opcode], rng)
        text = disassemble(word)
        assert assemble(text) == [word]
        assert assemble_line(text.lower()) == word
        assert disassemble(assemble(text)[0]) == text


@pytest.mark.parametrize("opcode", list(Opcode), ids=lambda o: o.name)
def test_any_spelling_assembles_to_the_same_word(opcode):
    """Pairs in any order, any case, decimal or hex, spaces around ``=``, comments: one word, one listing."""
    rng = random.Random(f"spelling{int(opcode)}")
    for _ in range(100):
        word = random_word(KINDS[opcode], rng)
        kind, values = decode(word)
        tokens = []
        for name, value in values.items():
            if name in FLAGS:
                if value:
                    tokens.append(rng.choice([name, name.upper()]))
            elif value or rng.random() < 0.5:
                text = hex(value) if value >= 0 and rng.random() < 0.5 else str(value)
                tokens.append(f"{rng.choice([name, name.upper()])}{rng.choice(['=', ' = ', '= '])}{text}")
        rng.shuffle(tokens)
        line = f"{rng.choice([kind.name, kind.name.lower()])} {' '.join(tokens)}  {rng.choice(['', '# note'])}"
        assert assemble(line) == [word], line
        assert disassemble(assemble(line)[0]) == disassemble(word)


def test_fixed_point_of_hand_written_text():
    text = "load  x_size=4 BUFFER = weight dram_addr=4096 Push_Next y_size=0x4 # a comment"
    canonical = disassemble(assemble(text)[0])
    assert canonical == ("LOAD buffer=WEIGHT sram_addr=0 dram_addr=0x1000 y_size=4 x_size=4 dram_stride=0 "
                         "pad_top=0 pad_bottom=0 pad_left=0 pad_right=0 pad_value=0 push_next")
    assert disassemble(assemble(canonical)[0]) == canonical


# --- the text form ---------------------------------------------------------------------------------------

def test_example_line():
    word = assemble_line("LOAD buffer=ACT sram_addr=0 dram_addr=0x1000 y_size=4 x_size=4 dram_stride=64 "
                         "pop_next push_next")
    assert word == encode(Opcode.LOAD, buffer=Buffer.ACT, dram_addr=0x1000, y_size=4, x_size=4, dram_stride=64,
                          pop_next=1, push_next=1)


def test_listing_is_canonical():
    assert disassemble(encode(Opcode.SETPP, zero_point=-5, clamp_lo=0x80, clamp_hi=127, pop_prev=1, push_prev=1)) \
        == "SETPP zero_point=-5 clamp_lo=128 clamp_hi=127 lut=0 format=0 pop_prev push_prev"
    assert disassemble(encode(Opcode.ALU, op=AluOp.ADD, y_size=1, x_size=2, src_step=1, push_next=1, pop_prev=1)) \
        == "ALU op=ADD dst_addr=0 src_addr=0 y_size=1 x_size=2 dst_stride=0 src_stride=0 src_step=1 pop_prev push_next"
    assert disassemble(encode(Opcode.STORE, dram_addr=0xDEAD_BEEF)) == \
        "STORE acc_addr=0 dram_addr=0xdeadbeef y_size=0 x_size=0 acc_stride=0 dram_stride=0 param_addr=0 " \
        "negative_param=0 packed=0"
    assert disassemble(6) == "FINISH"
    assert disassemble(encode(Opcode.LOAD, buffer=3)).startswith("LOAD buffer=LUT ")
    # ALU MUL prints by name (both 2-bit enumerations are full: no value prints as a number).
    assert disassemble(encode(Opcode.ALU, op=3)).startswith("ALU op=MUL ")


@pytest.mark.parametrize("text, values", [
    ("compute out_h=1 out_w=16 kh=3 kw=3 stride=1 dilation=1 accumulate=1 pop_prev push_next",
     dict(out_h=1, out_w=16, kh=3, kw=3, stride=1, dilation=1, accumulate=1, pop_prev=1, push_next=1)),
    ("COMPUTE act_pitch = 0x3_ff  acc_addr=65_535", dict(act_pitch=1023, acc_addr=65535)),
    ("SETPP zero_point=-0x8000 clamp_hi=0XFF", dict(zero_point=-32768, clamp_hi=255)),
    ("setpp zero_point=+7 clamp_lo=007", dict(zero_point=7, clamp_lo=7)),
    ("ALU op=max src_step=2", dict(op=0, src_step=2)),
    ("ALU op=mul src_step=1", dict(op=3, src_step=1)),
    ("LOAD buffer=Param dram_stride=0", dict(buffer=2)),
    ("LOAD sram_addr=-0", dict()),
])
def test_accepted_forms(text, values):
    assert assemble_line(text) == encode(text.split()[0].upper(), **values)


def test_program():
    text = """
        # A tiny program.
        LOAD buffer=ACT y_size=1 x_size=1 push_next

        COMPUTE out_h=1 out_w=1 stride=1 dilation=1 kh=1 kw=1 pop_prev push_next   # matmul
        STORE y_size=1 x_size=1 pop_prev
        finish
    """
    words = assemble(text)
    assert [decode(w)[0].opcode for w in words] == [Opcode.LOAD, Opcode.COMPUTE, Opcode.STORE, Opcode.FINISH]
    assert assemble("") == [] and assemble("# nothing\n\n   \n") == []
    assert assemble_line("   # only a comment") is None and assemble_line("") is None


# --- errors ----------------------------------------------------------------------------------------------

LOAD_FIELDS = ("its fields are buffer, sram_addr, dram_addr, y_size, x_size, dram_stride, pad_top, pad_bottom, "
               "pad_left, pad_right, pad_value; its token flags are pop_next, push_next")


@pytest.mark.parametrize("line, message", [
    ("MOVE a=1", "unknown mnemonic 'MOVE'; valid mnemonics are LOAD, COMPUTE, ALU, SETPP, STORE, FINISH"),
    ("y_size=3", "unknown mnemonic 'y_size=3'; valid mnemonics are LOAD, COMPUTE, ALU, SETPP, STORE, FINISH"),
    ("LOAD bogus=1", f"LOAD has no field 'bogus'; {LOAD_FIELDS}"),
    ("LOAD opcode=1", f"LOAD has no field 'opcode'; {LOAD_FIELDS}"),
    ("LOAD junk", f"LOAD has no field or flag 'junk'; {LOAD_FIELDS}"),
    ("FINISH x=1", "FINISH has no field 'x'; it has no fields and no token flags"),
    ("LOAD y_size=", f"malformed pair 'y_size=': write FIELD=VALUE; {LOAD_FIELDS}"),
    ("LOAD =3", f"malformed pair '=3': write FIELD=VALUE; {LOAD_FIELDS}"),
    ("LOAD y_size=1=2", f"malformed pair 'y_size=1=2': write FIELD=VALUE; {LOAD_FIELDS}"),
    ("LOAD y_size=four", "LOAD.y_size=four is not a value: write an integer in 0..1023 (decimal, or hex with 0x)"),
    ("LOAD y_size=1.5", "LOAD.y_size=1.5 is not a value: write an integer in 0..1023 (decimal, or hex with 0x)"),
    ("LOAD buffer=FOO", "LOAD.buffer=FOO is not a value: write ACT, WEIGHT, PARAM, LUT or an integer in 0..3 "
                        "(decimal, or hex with 0x)"),
    ("ALU op=MIN", "ALU.op=MIN is not a value: write MAX, ADD, COPY, MUL or an integer in 0..3 (decimal, or hex with 0x)"),
    ("LOAD y_size=1024", "LOAD.y_size must be an integer in 0..1023, not 1024"),
    ("LOAD dram_addr=0x100000000", "LOAD.dram_addr must be an integer in 0..4294967295, not 4294967296"),
    ("LOAD sram_addr=-1", "LOAD.sram_addr must be an integer in 0..65535, not -1"),
    ("SETPP zero_point=0x8000", "SETPP.zero_point must be an integer in -32768..32767, not 32768"),
    ("SETPP zero_point=-32769", "SETPP.zero_point must be an integer in -32768..32767, not -32769"),
    ("LOAD y_size=1 x_size=2 Y_SIZE=3", "repeated field y_size (y_size=1, then Y_SIZE=3): give each field once"),
    ("LOAD pop_next pop_next", "repeated flag pop_next: give each flag once"),
    ("LOAD pop_next=1", "pop_next is a token flag: write it as a bare word, without =1"),
    ("COMPUTE accumulate", "COMPUTE.accumulate needs a value: write accumulate=VALUE"),
    ("LOAD pop_prev", "LOAD cannot pop prev: the load engine has no such neighbour; LOAD takes pop_next, push_next"),
    ("STORE push_next", "STORE cannot push next: the store engine has no such neighbour; "
                        "STORE takes pop_prev, push_prev"),
])
def test_errors(line, message):
    with pytest.raises(AsmError) as info:
        assemble_line(line, 12)
    assert str(info.value) == f"line 12: {message}"
    assert isinstance(info.value, ValueError)


def test_finish_flags_error_reuses_the_isa_message():
    with pytest.raises(AsmError, match=r"^line 1: FINISH cannot push next: .*; FINISH takes no token flags$"):
        assemble_line("FINISH push_next")


def test_error_line_numbers():
    with pytest.raises(AsmError, match=r"^line 4: unknown mnemonic 'NOP'"):
        assemble("FINISH\n\n# comment\nNOP\nFINISH")


def test_disassemble_errors():
    with pytest.raises(AsmError, match=r"^Illegal opcode 0; legal opcodes are 1 LOAD, "):
        disassemble(0)
    with pytest.raises(AsmError, match=r"^LOAD cannot pop prev: "):
        disassemble(1 | 1 << 4)
    with pytest.raises(AsmError, match=r"^FINISH has bits set above bit 7, where it has no fields$"):
        disassemble(6 | 1 << 8)


# --- binary ----------------------------------------------------------------------------------------------

def test_bytes():
    words = [1 | 1 << 127, 6, (1 << 128) - 1, 0]
    data = to_bytes(words)
    assert len(data) == 4 * INSTRUCTION_BYTES == 64
    assert data[:16] == b"\x01" + bytes(14) + b"\x80"
    assert data[16:32] == b"\x06" + bytes(15)
    assert data[32:48] == b"\xff" * 16
    assert from_bytes(data) == words
    assert from_bytes(bytearray(data)) == words
    assert to_bytes([]) == b"" and from_bytes(b"") == []


def test_bytes_errors():
    with pytest.raises(AsmError, match=r"^17 bytes are not a whole number of 16-byte instructions$"):
        from_bytes(bytes(17))
    with pytest.raises(AsmError, match=r"^word 1 must be an integer in 0\.\.2\*\*128-1, not -1$"):
        to_bytes([6, -1])
    with pytest.raises(AsmError, match=rf"^word 0 must be an integer in 0\.\.2\*\*128-1, not {1 << 128}$"):
        to_bytes([1 << 128])
    with pytest.raises(AsmError, match=r"^word 0 must be an integer in 0\.\.2\*\*128-1, not True$"):
        to_bytes([True])


# --- command line ----------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path, monkeypatch, capsys):
    """``python -m sw.asm ARGS`` in ``tmp_path``, in this process: (exit status, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def run(*args):
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_cli_module(tmp_path):
    (tmp_path / "bad.s").write_text("FINISH pop_prev\n")
    r = subprocess.run([sys.executable, "-m", "sw.asm", "bad.s", "-o", "bad.bin"], capture_output=True, text=True,
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2
    assert r.stderr.startswith("python -m sw.asm: error: bad.s: line 1: FINISH cannot pop prev: ")
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_cli_round_trip(tmp_path, run):
    source = tmp_path / "prog.s"
    source.write_text("LOAD buffer=ACT dram_addr=0x40 y_size=2 x_size=3 push_next\n"
                      "compute out_h=1 out_w=6 stride=1 dilation=1 kh=1 kw=1 pop_prev  # go\n"
                      "FINISH\n")
    assert run("prog.s", "-o", "prog.bin") == (0, "wrote 3 instructions (48 bytes) to prog.bin\n", "")
    data = (tmp_path / "prog.bin").read_bytes()
    assert from_bytes(data) == assemble(source.read_text())
    status, listing, err = run("--disassemble", "prog.bin")
    assert (status, err) == (0, "")
    assert listing.splitlines() == [disassemble(w) for w in from_bytes(data)]
    # The listing assembles to the same bytes.
    (tmp_path / "listing.s").write_text(listing)
    assert run("listing.s", "-o", "again.bin")[0] == 0
    assert (tmp_path / "again.bin").read_bytes() == data
    assert run("-d", "prog.bin", "-o", "out.s") == (0, "wrote the listing of 3 instructions to out.s\n", "")
    assert (tmp_path / "out.s").read_text() == listing


@pytest.mark.parametrize("files, args, message", [
    ({"bad.s": "LOAD\nLOAD y_size=5000\n"}, ["bad.s", "-o", "x.bin"],
     "bad.s: line 2: LOAD.y_size must be an integer in 0..1023, not 5000"),
    ({"ok.s": "FINISH\n"}, ["ok.s"], "no output file: add -o FILE.bin (see python -m sw.asm --help)"),
    ({}, ["missing.s", "-o", "x.bin"], "cannot read missing.s: No such file or directory"),
    ({"short.bin": b"\x06" * 17}, ["--disassemble", "short.bin"],
     "short.bin: 17 bytes are not a whole number of 16-byte instructions"),
    ({"zero.bin": b"\x06" + bytes(15) + bytes(16)}, ["--disassemble", "zero.bin"],
     "zero.bin: word 1 (byte 16): Illegal opcode 0; legal opcodes are 1 LOAD, 2 COMPUTE, 3 ALU, 4 SETPP, 5 STORE, "
     "6 FINISH"),
    ({"binary.s": b"\xff\xfe\x00"}, ["binary.s", "-o", "x.bin"],
     "binary.s is not UTF-8 text; to list a binary use --disassemble"),
    ({}, [], "the following arguments are required: input (see python -m sw.asm --help)"),
    ({}, ["a.s", "--bogus"], "unrecognized arguments: --bogus (see python -m sw.asm --help)"),
])
def test_cli_errors(tmp_path, run, files, args, message):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    assert run(*args) == (2, "", f"python -m sw.asm: error: {message}\n")
    assert not (tmp_path / "x.bin").exists()
