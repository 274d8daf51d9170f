"""Fault injection into a compiled program folder: single-byte flips of program.bin, edits of manifest.json and
network.json, missing and swapped files. Every backend refuses the damaged folder with one line naming the file;
with --skip-digest-check (a hand edit the user vouches for) the schema still refuses what would be out of bounds,
and anything it lets through runs to the same output or stops with the engine's error (status 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sw.runtime import BACKENDS, RunError, run_codes

from .conftest import assert_clean_error, run_tool

FLIPS = 150
FLIP_SEED = 20261205


def _copy(compiled: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "program"
    shutil.copytree(compiled, folder)
    return folder


def _flip_positions(size: int) -> list[int]:
    """Byte positions spread over the whole image: instructions, weights, parameters and tensor space."""
    rng = np.random.default_rng(FLIP_SEED)
    return sorted(set(int(p) for p in rng.integers(0, size, FLIPS * 2)))[:FLIPS]


def _codes(compiled: Path, inputs: Path) -> np.ndarray:
    from sw.compiler.network import CompiledNetwork
    net = CompiledNetwork.load(compiled).network
    return net.tensors[net.input].quantize(np.load(inputs))


def test_every_flipped_byte_is_refused_by_every_backend(compiled, inputs, tmp_path):
    folder = _copy(compiled, tmp_path)
    image = (folder / "program.bin").read_bytes()
    positions = _flip_positions(len(image))
    assert len(positions) == FLIPS
    codes = _codes(compiled, inputs)
    refused = 0
    for i, at in enumerate(positions):
        damaged = bytearray(image)
        damaged[at] ^= 1 << (i % 8)
        (folder / "program.bin").write_bytes(bytes(damaged))
        for backend in BACKENDS:          # refused before the backend runs: the rtl one needs no simulator here
            with pytest.raises(RunError, match="program.bin does not match the digest"):
                run_codes(folder, codes, backend)
        refused += 1
    assert refused == FLIPS


@pytest.mark.parametrize("backend", ["golden", "emulator"])
def test_a_flipped_byte_is_refused_at_the_command_line(backend, compiled, inputs, tmp_path):
    folder = _copy(compiled, tmp_path)
    image = bytearray((folder / "program.bin").read_bytes())
    image[len(image) // 3] ^= 0x10
    (folder / "program.bin").write_bytes(bytes(image))
    out = tmp_path / "out.npy"
    result = run_tool("sw.run", folder, "--backend", backend, "--input", inputs, "--output", out)
    assert_clean_error(result, "sw.run", contains="program.bin does not match the digest in manifest.json")
    assert "--skip-digest-check" in result.lines[0]
    assert not out.exists()


def _edits() -> dict[str, callable]:
    """Edits of the manifest, each as a function of the parsed manifest."""
    def setter(path, value):
        def edit(m):
            node = m
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        return edit

    def deleter(path):
        def edit(m):
            node = m
            for key in path[:-1]:
                node = node[key]
            del node[path[-1]]
        return edit
    return {
        "output address moved": lambda m: m["output"].update(addr=m["output"]["addr"] + 16),
        "output name swapped": lambda m: m["output"].update(name=m["input"]["name"]),
        "instruction count + 1": lambda m: m["program"].update(instructions=m["program"]["instructions"] + 1),
        "instruction count - 1": lambda m: m["program"].update(instructions=m["program"]["instructions"] - 1),
        "instruction count huge": setter(("program", "instructions"), 10 ** 12),
        "program address": lambda m: m["program"].update(addr=m["program"]["addr"] + 16),
        "negative program address": setter(("program", "addr"), -16),
        "image size": lambda m: m["program"].update(dram_size=m["program"]["dram_size"] * 1000),
        "image size as text": setter(("program", "dram_size"), "big"),
        "rows": setter(("config", "rows"), 8),
        "activation format": setter(("config", "act_format"), "minifloat6"),
        "buffer depth": setter(("config", "act_buffer_depth"), 1 << 30),
        "config hash": setter(("config_hash", ), "0" * 16),
        "tensor channels huge": lambda m: next(iter(m["tensors"].values())).update(channels=10 ** 9),
        "tensor height zero": lambda m: next(iter(m["tensors"].values())).update(height=0),
        "tensor region unknown": lambda m: next(iter(m["tensors"].values())).update(region="nowhere"),
        "region beyond the image": lambda m: next(iter(m["regions"].values())).update(addr=1 << 40),
        "region misaligned": lambda m: next(iter(m["regions"].values())).update(addr=3),
        "layer starts beyond the program": lambda m: m["layers"][-1].update(first_instruction=10 ** 9),
        "layer plan missing": lambda m: m["layers"][0].pop("plan"),
        "layers not a list": setter(("layers", ), {"a": 1}),
        "version": setter(("version", ), 1),
        "no version": deleter(("version", )),
        "files removed": deleter(("files", )),
        "digest of program.bin": lambda m: m["files"]["program.bin"].update(sha256="0" * 64),
        "scale": lambda m: m["output"]["encoding"].update(scale=2.0),
        "useful macs negative": setter(("useful_macs", ), -1),
        "not an object": lambda m: m.clear(),
        "segments split": lambda m: m.update(segments=[[0, m["segments"][0][1] - 1], [m["segments"][0][1] - 1, 1]]),
        "segments short": lambda m: m.update(segments=[[0, m["segments"][0][1] - 1]]),
        "segments missing": deleter(("segments", )),
        "program run twice": lambda m: m["steps"].append(m["steps"][0]),
        "unknown host step": lambda m: m["steps"].append({"kind": "host", "layer": "nowhere"}),
        "no steps": setter(("steps", ), []),
    }


EDITS = _edits()


@pytest.mark.parametrize("edit", list(EDITS))
def test_manifest_edits_are_refused(edit, compiled, inputs, tmp_path):
    folder = _copy(compiled, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    EDITS[edit](manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out.npy"
    result = run_tool("sw.run", folder, "--backend", "emulator", "--input", inputs, "--output", out)
    assert_clean_error(result, "sw.run", contains="manifest.json")
    assert not out.exists()


@pytest.mark.parametrize("edit", list(EDITS))
def test_manifest_edits_with_the_digest_check_skipped(edit, compiled, inputs, reference_output, tmp_path):
    """The schema still refuses what is out of bounds; what it lets through gives the same output or stops with
    the engine's error flag: never a silently different result."""
    folder = _copy(compiled, tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    EDITS[edit](manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "out.npy"
    result = run_tool("sw.run", folder, "--backend", "emulator", "--input", inputs, "--output", out,
                      "--skip-digest-check")
    if result.status == 0:
        assert edit in HARMLESS_EDITS, f"{edit}: ran with the check skipped, so it must change nothing"
        np.testing.assert_array_equal(np.load(out), reference_output)
    else:
        assert result.status in (2, 3), result.stderr
        assert_clean_error(result, "sw.run", result.status)
        assert not out.exists()


#: Edits of what only the digest check reads: with it skipped, they change nothing.
HARMLESS_EDITS = ("files removed", "digest of program.bin")


@pytest.mark.parametrize("what", ["network.json", "network.npz", "config.json", "program.bin", "manifest.json"])
@pytest.mark.parametrize("how", ["missing", "empty", "from another compile"])
def test_damaged_or_foreign_files(what, how, compiled, inputs, tmp_path):
    folder = _copy(compiled, tmp_path)
    if how == "missing":
        (folder / what).unlink()
    elif how == "empty":
        (folder / what).write_bytes(b"")
    else:
        other = tmp_path / "other"
        assert run_tool("sw.compile", Path(__file__).resolve().parents[2] / "models" / "digits" / "digits_cnn.onnx",
                        "--pe", "int8", "--rows", "4", "--calibrate", inputs, "--out", other).status == 0
        shutil.copy(other / what, folder / what)
    out = tmp_path / "out.npy"
    for backend in ("golden", "emulator"):
        result = run_tool("sw.run", folder, "--backend", backend, "--input", inputs, "--output", out)
        if what == "config.json" and how != "empty":
            assert result.status == 0          # a copy for people: the manifest holds the engine's configuration
            continue
        assert_clean_error(result, "sw.run", contains=what if what != "manifest.json" or how != "missing"
                           else "no manifest.json")
        assert not out.exists()


def test_an_engine_fault_has_its_own_status(compiled, inputs, tmp_path):
    """A hand-edited program that deadlocks (a LOAD waiting for a token nobody sends) is legal to the static
    checks; the engine raises DEADLOCK, and sw.run exits 3 naming the error code and the instruction."""
    from hw.spec.isa import INSTRUCTION_BYTES, Opcode, decode, encode

    folder = _copy(compiled, tmp_path)
    image = bytearray((folder / "program.bin").read_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    base = manifest["program"]["addr"]
    first = int.from_bytes(image[base:base + INSTRUCTION_BYTES], "little")
    kind, fields = decode(first)
    assert kind.opcode is Opcode.LOAD and not fields["pop_next"]
    fields["pop_next"] = 1
    image[base:base + INSTRUCTION_BYTES] = encode("LOAD", **{k: v for k, v in fields.items() if k != "opcode"}) \
        .to_bytes(INSTRUCTION_BYTES, "little")
    (folder / "program.bin").write_bytes(bytes(image))
    out = tmp_path / "out.npy"
    result = run_tool("sw.run", folder, "--backend", "emulator", "--input", inputs, "--output", out,
                      "--skip-digest-check")
    assert_clean_error(result, "sw.run", 3, contains="DEADLOCK at instruction")
    assert not out.exists()
