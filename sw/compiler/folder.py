"""The program folder: what ``sw.compile`` writes and every backend runs, and how it proves its own integrity.

A folder holds ``program.bin`` (the external-memory image), ``program.asm`` (listing), ``network.json`` and
``network.npz`` (the quantized network, for the golden backend), ``config.json`` and ``manifest.json``. The
manifest records the SHA-256 and size of every file a backend reads, the configuration hash, its own digest
and a version. Loading checks, in this order and before anything is allocated from a field's value:

1. the manifest's size, JSON syntax and version;
2. the digests (the manifest's own, then each file's), unless the caller skips them for a hand-edited program;
3. the schema: types and ranges of every field, every address inside the image, the image as long as the
   manifest says, its instruction count equal to what the image holds (statically legal instructions, the
   last one FINISH), every tensor's placement inside its region, the network's shapes equal to the placements.

A failure is a :class:`FolderError` naming the file and what is wrong with it, never a different output.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from hw.spec.config import AcceleratorConfig, ConfigError
from hw.spec.formats import FormatError, get_format
from hw.spec.isa import INSTRUCTION_BYTES, ErrorCode, Opcode

from .fold import Fold

if TYPE_CHECKING:
    from .network import CompiledNetwork

__all__ = ["FolderError", "FOLDER_VERSION", "save_folder", "load_folder"]

FORMAT = "cnn-accel-gen compiled network"
FOLDER_VERSION = 2
#: The files a backend reads, whose digests the manifest records.
DIGESTED = ("program.bin", "network.json", "network.npz")
MAX_MANIFEST_BYTES = 64 << 20
MAX_INSTRUCTIONS = 1 << 22
MAX_IMAGE_BYTES = 1 << 32                   # the ISA's 32-bit external addresses
MAX_DIMENSION = 1 << 16
SKIP_FLAG = "--skip-digest-check"


class FolderError(ValueError):
    """A program folder that is damaged, edited or incomplete; the message names the file."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _self_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_folder(compiled: "CompiledNetwork", folder: Path) -> None:
    """Write every file of ``compiled`` into ``folder``, the manifest last (it records the others' digests)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "program.bin").write_bytes(bytes(compiled.program.dram[:compiled.program.dram_size]))
    (folder / "program.asm").write_text(compiled.listing())
    (folder / "config.json").write_text(compiled.config.to_json() + "\n")
    compiled.network.save(folder)
    manifest = {"format": FORMAT, "version": FOLDER_VERSION, "config_hash": compiled.config.hash,
                **compiled.manifest(),
                "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
                          for name in DIGESTED}}
    manifest["manifest_sha256"] = _self_digest(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


def load_folder(folder: Path, *, verify_digests: bool = True) -> "CompiledNetwork":
    """The compiled network in ``folder``, after the checks of the module docstring."""
    from sw.ir import NetworkFileError, QuantizedNetwork

    from .network import MAX_BATCH, CompiledNetwork, Placement
    from .program import Program, Region

    folder = Path(folder)
    manifest = _read_manifest(folder)
    if verify_digests:
        _verify_digests(folder, manifest)
    schema = _Schema(folder, manifest)
    config = schema.config()
    program_fields, image = schema.program(config)
    regions = schema.regions(program_fields["dram_size"], config)
    batch = schema.integer(manifest, "batch", 1, MAX_BATCH) if "batch" in manifest else 1
    placements = schema.placements(regions, config, batch)
    layers = schema.layers(program_fields["instructions"])
    try:
        network = QuantizedNetwork.load(folder)
    except NetworkFileError as e:
        raise FolderError(f"{folder / 'network.json'}: {e}") from None
    schema.network(network, config, placements)
    segments = schema.segments(program_fields["instructions"])
    steps = schema.steps(segments, network)
    words = [int.from_bytes(image[program_fields["addr"] + i * INSTRUCTION_BYTES:
                                  program_fields["addr"] + (i + 1) * INSTRUCTION_BYTES], "little")
             for i in range(program_fields["instructions"])]
    schema.instructions(words, config, len(image), segments)
    program = Program(config, words, image, program_fields["addr"], program_fields["dram_size"],
                      description="network", regions={k: Region(*v) for k, v in regions.items()},
                      useful_macs=schema.integer(manifest, "useful_macs", 0, 1 << 62), segments=segments)
    return CompiledNetwork(config, network, program,
                           {k: Placement(**v) for k, v in placements.items()}, layers,
                           float(manifest.get("compile_seconds", 0.0)) if isinstance(
                               manifest.get("compile_seconds", 0.0), (int, float)) else 0.0, steps, batch)


def _read_manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.is_file():
        raise FolderError(f"{folder} holds no compiled network (no manifest.json); make one with "
                          f"python -m sw.compile MODEL.onnx ... --out {folder}")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise FolderError(f"{path} is {path.stat().st_size >> 20} MiB, not a manifest sw.compile wrote")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:
        raise FolderError(f"{path} is not valid JSON ({' '.join(str(e).split())[:120]}); compile again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise FolderError(f"{path} is not the manifest of a compiled network; compile again with python -m "
                          f"sw.compile")
    if manifest.get("version") != FOLDER_VERSION:
        raise FolderError(f"{path} has version {manifest.get('version')!r}; this runtime reads version "
                          f"{FOLDER_VERSION}: compile the model again with this version of python -m sw.compile")
    return manifest


def _verify_digests(folder: Path, manifest: dict) -> None:
    edited = f"compile again, or pass {SKIP_FLAG} (verify_digests=False) if you changed it on purpose"
    if manifest.get("manifest_sha256") != _self_digest(manifest):
        raise FolderError(f"{folder / 'manifest.json'} was changed after sw.compile wrote it (its digest does not "
                          f"match); {edited}")
    files = manifest.get("files")
    for name in DIGESTED:
        entry = files.get(name) if isinstance(files, dict) else None
        path = folder / name
        if not isinstance(entry, dict):
            raise FolderError(f"{folder / 'manifest.json'} records no digest of {name}; compile again")
        if not path.is_file():
            raise FolderError(f"{path} is missing; compile again")
        if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
            raise FolderError(f"{path} does not match the digest in manifest.json (it was changed, truncated or "
                              f"comes from another compile); {edited}")


class _Schema:
    """Checks of the manifest's fields; each method returns the checked values."""

    def __init__(self, folder: Path, manifest: dict):
        self.folder = folder
        self.m = manifest
        self.where = folder / "manifest.json"

    def fail(self, message: str):
        raise FolderError(f"{self.where}: {message}")

    def dict_at(self, parent: dict, key: str) -> dict:
        value = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(value, dict):
            self.fail(f"{key!r} must be an object")
        return value

    def integer(self, parent: dict, key: str, lo: int, hi: int) -> int:
        value = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            self.fail(f"{key!r} must be an integer in {lo}..{hi}, not {_short(value)}")
        return value

    def config(self) -> AcceleratorConfig:
        try:
            config = AcceleratorConfig.from_dict(self.dict_at(self.m, "config"))
        except (ConfigError, TypeError) as e:
            self.fail(f"config: {e}")
        if self.m.get("config_hash") != config.hash:
            self.fail(f"config_hash {_short(self.m.get('config_hash'))} is not the hash of its config "
                      f"({config.hash})")
        config_file = self.folder / "config.json"
        if config_file.is_file():
            try:
                other = AcceleratorConfig.from_json(config_file.read_text())
            except (ConfigError, TypeError, UnicodeDecodeError) as e:
                raise FolderError(f"{config_file}: {e}") from None
            if other.hash != config.hash:
                raise FolderError(f"{config_file} describes another engine than manifest.json (hash {other.hash}, "
                                  f"not {config.hash}); compile again")
        return config

    def program(self, config: AcceleratorConfig) -> tuple[dict, bytearray]:
        p = self.dict_at(self.m, "program")
        image_path = self.folder / "program.bin"
        if not image_path.is_file():
            raise FolderError(f"{image_path} is missing; compile again")
        size = image_path.stat().st_size
        dram_size = self.integer(p, "dram_size", 1, MAX_IMAGE_BYTES)
        if dram_size != size:
            self.fail(f"program.dram_size is {dram_size} but {image_path.name} holds {size} bytes")
        addr = self.integer(p, "addr", 0, dram_size - 1)
        if addr % INSTRUCTION_BYTES:
            self.fail(f"program.addr {addr} is not a multiple of {INSTRUCTION_BYTES}")
        count = self.integer(p, "instructions", 1, min(MAX_INSTRUCTIONS, (dram_size - addr) // INSTRUCTION_BYTES))
        return {"addr": addr, "dram_size": dram_size, "instructions": count}, bytearray(image_path.read_bytes())

    def regions(self, dram_size: int, config: AcceleratorConfig) -> dict[str, tuple[int, int]]:
        out = {}
        for name, r in self.dict_at(self.m, "regions").items():
            addr = self.integer(r, "addr", 0, dram_size)
            size = self.integer(r, "bytes", 0, dram_size - addr)
            if addr % (config.dma_bits // 8):
                self.fail(f"region {_short(name)} starts at {addr}, not on a bus beat")
            out[name] = (addr, size)
        return out

    def placements(self, regions: dict, config: AcceleratorConfig, batch: int = 1) -> dict[str, dict]:
        from hw.spec.layout import tensor_lanes, tensor_line_bytes

        line = tensor_line_bytes(config)
        out = {}
        for name, t in self.dict_at(self.m, "tensors").items():
            if t.get("region") not in regions:
                self.fail(f"tensor {_short(name)} lives in region {_short(t.get('region'))}, which is not listed")
            dims = {k: self.integer(t, k, 1, MAX_DIMENSION) for k in ("channels", "height", "width")}
            packed = t.get("packed", False)
            if packed not in (False, True) or (packed and not config.packs_per_layer):
                self.fail(f"tensor {_short(name)}: packed must be true or absent, and true only on a build that "
                          f"packs per layer")
            blocks = -(-dims["channels"] // (tensor_lanes(config) * (2 if packed else 1)))
            if batch * blocks * dims["height"] * dims["width"] * line > regions[t["region"]][1]:
                self.fail(f"tensor {_short(name)} ({dims['channels']}x{dims['height']}x{dims['width']}"
                          f"{f', {batch} samples' if batch > 1 else ''}) does not fit its region "
                          f"{_short(t['region'])}")
            index = t.get("index")
            if index is not None:
                if not isinstance(index, list) or len(index) > dims["channels"] or not all(
                        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < dims["channels"] for i in index):
                    self.fail(f"tensor {_short(name)}: index must list positions in 0..{dims['channels'] - 1}")
            out[name] = {"region": t["region"], **dims, "index": index}
            if t.get("fold") is not None:
                out[name]["fold"] = self.fold(name, t["fold"], dims)
            if packed:
                out[name]["packed"] = True
        for end in ("input", "output"):
            entry = self.dict_at(self.m, end)
            if entry.get("name") not in out:
                self.fail(f"{end}.name {_short(entry.get('name'))} is not one of the tensors")
            region = regions[out[entry["name"]]["region"]]
            if entry.get("addr") != region[0]:
                self.fail(f"{end}.addr {_short(entry.get('addr'))} is not where its region starts ({region[0]})")
        return out

    def fold(self, name: str, fold, dims: dict) -> Fold:
        """A folded input's window (sw/compiler/fold.py): small integers whose map has the placement's channels."""
        if not isinstance(fold, dict):
            self.fail(f"tensor {_short(name)}: fold must be an object")
        pairs = {}
        for key, count, lo, hi in (("kernel", 2, 1, 15), ("stride", 2, 1, 7), ("dilation", 2, 1, 7),
                                   ("padding", 4, 0, 7)):
            value = fold.get(key)
            if not (isinstance(value, list) and len(value) == count and all(
                    isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value)):
                self.fail(f"tensor {_short(name)}: fold.{key} must list {count} integers in {lo}..{hi}")
            pairs[key] = tuple(value)
        result = Fold(self.integer(fold, "channels", 1, dims["channels"]), **pairs)
        if dims["channels"] != result.channels * pairs["kernel"][0] * pairs["kernel"][1]:
            self.fail(f"tensor {_short(name)}: {dims['channels']} channels are not the fold's "
                      f"{result.channels} x {pairs['kernel'][0]} x {pairs['kernel'][1]}")
        return result

    def layers(self, instructions: int) -> list[dict]:
        layers = self.m.get("layers")
        if not isinstance(layers, list):
            self.fail("'layers' must be a list")
        previous = -1
        for entry in layers:
            first = self.integer(entry, "first_instruction", previous + 1, instructions - 1)
            previous = first
            if not isinstance(entry.get("name"), str) or not isinstance(entry.get("op"), str):
                self.fail("every layer needs a name and an op")
            plan = self.dict_at(entry, "plan")
            for key in ("estimated_cycles", "dram_bytes", "rows"):
                self.integer(plan, key, 0, 1 << 62)
            if not isinstance(plan.get("order"), str):
                self.fail("every layer's plan needs an order")
            self.integer(entry, "macs", 0, 1 << 62)
            if not isinstance(entry.get("fused"), list):
                self.fail("every layer needs its list of fused layers")
        return layers

    def network(self, network, config: AcceleratorConfig, placements: dict) -> None:
        """The network's formats, endpoints and shapes must be those of the program."""
        where = self.folder / "network.json"
        if not network.formats and (get_format(network.act_format), get_format(network.weight_format)) \
                != (config.acts, config.weights):
            raise FolderError(f"{where}: formats {network.weight_format} x {network.act_format} are not the "
                              f"engine's ({config.weights.name} x {config.acts.name})")
        for end in ("input", "output"):
            entry = self.m[end]
            if getattr(network, end) != entry["name"]:
                raise FolderError(f"{where}: the network's {end} is {getattr(network, end)!r}, the program's "
                                  f"{entry['name']!r}")
            t = network.tensors.get(entry["name"])
            if t is None or entry.get("encoding") != {"format": t.format, "scale": t.scale,
                                                      "zero_point": t.zero_point}:
                self.fail(f"{end}.encoding is not the network's encoding of {entry['name']!r}")
            if entry.get("shape") != list(network.shapes[entry["name"]]):
                self.fail(f"{end}.shape is not the network's shape of {entry['name']!r}")
        for name, p in placements.items():
            if name not in network.shapes:
                raise FolderError(f"{where}: tensor {name!r} of the program is not in the network")
            size = math.prod(network.shapes[name])
            if p.get("fold") is not None:
                self.folded(name, network.shapes[name], p)
                continue
            capacity = len(p["index"]) if p["index"] is not None else p["channels"] * p["height"] * p["width"]
            if size != capacity:
                raise FolderError(f"{where}: tensor {name!r} has {size} elements in the network but {capacity} "
                                  f"in the program")
        for name, t in network.tensors.items():
            try:
                get_format(t.format)
            except FormatError as e:
                raise FolderError(f"{where}: tensor {name!r}: {e}") from None
            if not (isinstance(t.scale, (int, float)) and math.isfinite(t.scale) and t.scale > 0):
                raise FolderError(f"{where}: tensor {name!r} has scale {t.scale!r}; scales are finite and positive")

    def folded(self, name: str, shape: tuple, p: dict) -> None:
        """A folded tensor is the network's input, and its map is the fold of the input's shape."""
        from sw.frontend.float_model import FloatModelError

        where = self.folder / "network.json"
        if name != self.m["input"]["name"] or len(shape) != 3 or shape[0] != p["fold"].channels:
            raise FolderError(f"{where}: tensor {name!r} is folded, but only the network's input can be, and its "
                              f"channels must be the fold's")
        try:
            folded = p["fold"].shape(shape[1], shape[2])
        except FloatModelError:
            folded = None
        if folded != (p["channels"], p["height"], p["width"]):
            raise FolderError(f"{where}: tensor {name!r} of shape {tuple(shape)} folds to {folded}, not the "
                              f"program's {p['channels']}x{p['height']}x{p['width']}")

    def segments(self, instructions: int) -> list[tuple[int, int]]:
        """The programs of the image: (first instruction, count), one after the other, covering all of them."""
        segments = self.m.get("segments")
        if not isinstance(segments, list) or not segments:
            self.fail("'segments' must be a list of [first instruction, count]")
        out, at = [], 0
        for seg in segments:
            if not (isinstance(seg, list) and len(seg) == 2 and seg[0] == at
                    and isinstance(seg[1], int) and not isinstance(seg[1], bool) and 1 <= seg[1] <= instructions - at):
                self.fail(f"segments must follow each other from instruction 0 on, not {_short(segments)}")
            out.append((at, seg[1]))
            at += seg[1]
        if at != instructions:
            self.fail(f"segments cover {at} instructions, the program has {instructions}")
        return out

    def steps(self, segments: list, network) -> list[dict]:
        """What runs in order: every program once, host layers of the network between them."""
        steps = self.m.get("steps")
        if not isinstance(steps, list):
            self.fail("'steps' must be a list")
        programs, hosts = [], {layer.name for layer in network.layers if layer.op == "host"}
        for step in steps:
            if isinstance(step, dict) and step.get("kind") == "engine":
                programs.append(self.integer(step, "program", 0, len(segments) - 1))
            elif not (isinstance(step, dict) and step.get("kind") == "host" and step.get("layer") in hosts):
                self.fail(f"a step must be an engine program or a host layer of the network, not {_short(step)}")
        if programs != list(range(len(segments))):
            self.fail("every program must run once, in order")
        if len([s for s in steps if s["kind"] == "host"]) != len(hosts):
            self.fail("every host layer must run once")
        return steps

    def instructions(self, words: list[int], config: AcceleratorConfig, dram_size: int,
                     segments: list[tuple[int, int]]) -> None:
        from sw.emulator.checks import decode_checked

        ends = {first + count - 1 for first, count in segments}
        last = len(words) - 1
        for i, word in enumerate(words):
            kind, _, error = decode_checked(word, config, dram_size)
            if error is not ErrorCode.NONE:
                what = error.name
            elif (kind.opcode is Opcode.FINISH) != (i in ends):
                what = "FINISH before the end of its program" if i not in ends else "no FINISH at the end"
            else:
                continue
            raise FolderError(f"{self.folder / 'program.bin'}: instruction {i} of {len(words)} is illegal "
                              f"({what}); the image does not hold the program the manifest describes")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
