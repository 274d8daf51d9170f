"""The model zoo on the engine: what compiles, how fast it runs, how close to the roofline.

For every model of models/zoo (torch, random weights; exported as a user would), every array shape and every
number format asked for, compiles the model (quantized on its 8 seeded calibration inputs), then reports:
compiled or the exact refusal, layers on the engine and on the host, MACs per inference, cycles per inference
(the emulator's timed run), MAC utilization (MACs / (cycles x PEs)) against the roofline bound
``max(MACs / PEs, DRAM bytes / bus bytes per cycle)``, compile time, emulator time per image, and whether the
golden model and the emulator agree on two inputs.

Usage: python bench/zoo.py [--models a,b] [--shapes 8x8,16x16] [--formats int8,int4,minifloat6] [--images 2]
Needs the train extra for the export (pip install -e '.[train]'); exports are cached in models/zoo/onnx/.
Writes bench/results/zoo.json and prints the table (README.md shows the last one).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from common import RESULTS, ROOT, progress, run, table, update_readme, write  # (importing common puts the repo on sys.path)

from hw.spec.cli import Parser, UsageError, integer  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402
from hw.spec.isa import INSTRUCTION_BYTES, Buffer, Opcode, decode  # noqa: E402
from hw.spec.layout import line_bytes, output_line_bytes  # noqa: E402

ZOO = ROOT / "models" / "zoo"
MARKERS = ("<!-- zoo-table: python bench/zoo.py -->", "<!-- end zoo-table -->")
MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "squeezenet1_1", "resnet8", "resnet20", "ds_cnn",
          "mobilenet_v1_025", "vgg11", "unet")


def model_files(name: str) -> tuple[Path, Path]:
    """The model's ONNX file and calibration inputs: committed beside the zoo, else exported once."""
    for folder in (ZOO, ZOO / "onnx"):
        if (folder / f"{name}.onnx").is_file():
            return folder / f"{name}.onnx", folder / f"{name}_calibration.npy"
    sys.path.insert(0, str(ZOO))
    from export import export  # noqa: PLC0415 - torch only when a model must be exported
    progress(f"  exporting {name} (torch) ...")
    return export(name, ZOO / "onnx")


def dram_bytes(compiled) -> int:
    """Bytes the program moves between external memory and the engine: instruction fetch, LOADs, STOREs."""
    c = compiled.config
    total = len(compiled.program.words) * INSTRUCTION_BYTES
    for word in compiled.program.words:
        kind, f = decode(word)
        if kind.opcode is Opcode.LOAD:
            total += f["y_size"] * f["x_size"] * line_bytes(Buffer(f["buffer"]), c)
        elif kind.opcode is Opcode.STORE:
            total += f["y_size"] * f["x_size"] * output_line_bytes(c)
    return total


def point(name: str, shape: tuple[int, int], fmt: str, images: int) -> dict:
    from sw.compile import compile_model
    from sw.compiler.network import CompileError
    from sw.frontend import FrontendError
    from sw.quantize import QuantizationError
    from sw.runtime import run_codes

    path, samples_path = model_files(name)
    rows, cols = shape
    config = AcceleratorConfig(rows=rows, cols=cols, weight_format=fmt, act_format=fmt)
    record = {"model": name, "shape": f"{rows}x{cols}", "format": fmt}
    samples = np.load(samples_path)
    started = time.perf_counter()
    try:
        compiled = compile_model(path, config, samples, method="mmse", per_channel=True, log=lambda *_: None)
    except (CompileError, FrontendError, QuantizationError) as e:
        return {**record, "compiled": False, "refusal": str(e), "compile_s": round(time.perf_counter() - started, 2)}
    compile_s = time.perf_counter() - started
    net = compiled.network
    codes = net.tensors[net.input].quantize(samples[:images])
    golden = run_codes(compiled, codes, "golden")
    started = time.perf_counter()
    emulated = run_codes(compiled, codes, "emulator", cycles=True)
    emulator_s = (time.perf_counter() - started) / images
    macs, cycles = compiled.program.useful_macs, int(np.max(emulated.cycles))
    pes, bus = rows * cols, config.dma_bits // 8
    traffic = dram_bytes(compiled)
    roofline = max(macs / pes, traffic / bus)
    host_macs = sum(m for _, m in compiled.host_macs().values())
    return {**record, "compiled": True, "refusal": "", "engine_layers": len({e["name"] for e in compiled.layers}),
            "host_layers": len(compiled.host_layers), "macs": macs, "host_macs": host_macs, "cycles": cycles, "dram_bytes": traffic, "roofline_cycles": int(roofline),
            "utilization": round(macs / (cycles * pes), 4), "cycles_over_roofline": round(cycles / roofline, 3),
            "compile_s": round(compile_s, 2), "emulator_s_per_image": round(emulator_s, 3),
            "golden_equals_emulator": bool(np.array_equal(golden.codes, emulated.codes))}


def main(argv=None) -> int:
    p = Parser(prog="python bench/zoo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--shapes", default="8x8,16x16")
    p.add_argument("--formats", default="int8,int4,minifloat6")
    p.add_argument("--images", type=integer(1, 10_000), default=2)
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise UsageError(f"--models: unknown model {unknown[0]!r}; the zoo has {', '.join(MODELS)}")
    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    except ValueError:
        raise UsageError(f"--shapes: write shapes as RxC, e.g. 8x8,16x16, not {args.shapes!r}") from None
    records = []
    for name in models:
        for shape in shapes:
            for fmt in args.formats.split(","):
                progress(f"[{name}] {shape[0]}x{shape[1]} {fmt} ...")
                records.append(point(name, shape, fmt, args.images))
                r = records[-1]
                progress(f"  {'compiled' if r['compiled'] else 'refused: ' + r['refusal'][:150]}")
    print(table(records, COLUMNS))
    merged = _merged(records)
    print(f"\nwrote {write('zoo', merged).relative_to(ROOT)}")
    update_readme(MARKERS, table(sorted(merged, key=_order), README_COLUMNS))
    print("updated the table in README.md")
    return 0


COLUMNS = [("model", "model"), ("shape", "array"), ("format", "format"), ("compiled", "compiled"),
           ("engine_layers", "engine layers"), ("host_layers", "host layers"), ("macs", "MACs"),
           ("host_macs", "host MACs"), ("cycles", "cycles"), ("utilization", "utilization"),
           ("cycles_over_roofline", "cycles / roofline"), ("compile_s", "compile s"),
           ("emulator_s_per_image", "emulator s/image"), ("golden_equals_emulator", "golden == emulator"),
           ("refusal", "refusal")]
README_COLUMNS = [c for c in COLUMNS if c[0] not in ("compile_s", "emulator_s_per_image")]


def _merged(records: list[dict]) -> list[dict]:
    """These records over the last run's (by model, shape and format): a run of a few models keeps the rest."""
    path = RESULTS / "zoo.json"
    previous = json.loads(path.read_text())["records"] if path.is_file() else []
    key = lambda r: (r["model"], r["shape"], r["format"])  # noqa: E731
    merged = {key(r): r for r in previous}
    merged.update({key(r): r for r in records})
    return list(merged.values())


def _order(record: dict) -> tuple:
    return (MODELS.index(record["model"]) if record["model"] in MODELS else len(MODELS), record["shape"],
            record["format"])


if __name__ == "__main__":
    raise SystemExit(run(main))
