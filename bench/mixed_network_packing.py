"""The digits CNN with int4 layers on a multi-format build that packs per layer: compiled packed against the same
network compiled unpacked (``compile_network(..., pack=False)``) for the same build. Two networks: an int4 stem
(conv1, int4 x int4 on the host's folded input, runs COMPUTE.packed) with conv2, fc1, fc2 in int8; and int4 conv1
and conv2 (conv1's STOREs write pool1's output two codes a slot, STORE.packed, and conv2 reads it packed) with
fc1, fc2 in int8.

Usage (from the repository root)::

    python bench/mixed_network_packing.py                 # emulator (the cycle model; seconds)
    python bench/mixed_network_packing.py --rtl           # and the compiled Verilator testbench (minutes)

The networks: ``models/digits`` quantized for int4 (mmse, per channel) with the layers named above in int8, on a
``rows`` x ``2*rows`` int4+int8+minifloat6 engine. Both programs' outputs must equal the golden
model's on every stored tensor (and, with ``--rtl``, the RTL's). Prints the cycles of one image (the emulator's
cycle model, also conv1's and conv2's own; the RTL's counter with ``--rtl``) and writes
``bench/results/mixed_network_packing.json``.
"""

from __future__ import annotations

import sys
import tempfile

import numpy as np

from common import ROOT, run, table, write  # (importing common puts the repo on sys.path)

from hw.spec.cli import Parser, integer  # noqa: E402
from hw.spec.config import AcceleratorConfig  # noqa: E402
from sw.compiler.network import compile_network  # noqa: E402
from sw.frontend.onnx_import import load_onnx  # noqa: E402
from sw.quantize import quantize_network  # noqa: E402
from sw.runtime import run_codes  # noqa: E402

SET = ("int4", "int8", "minifloat6")
FC_INT8 = {"/fc1/Gemm": ("int8", "int8"), "/fc2/Gemm": ("int8", "int8")}
NETWORKS = {"int4 stem": {"/conv2/Conv": ("int8", "int8"), **FC_INT8}, "int4 conv1+conv2": FC_INT8}


def _layer(compiled, result, name: str) -> int:
    """The emulator's cycles of the engine layer holding ``name`` (from the end of the layer before)."""
    index = next(i for i, entry in enumerate(compiled.layers) if entry["name"] == name)
    return result.layer_cycles[0][index]


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python bench/mixed_network_packing.py", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=integer(1, 64), default=4, help="PE rows (default 4; cols = 2 * rows)")
    parser.add_argument("--rtl", action="store_true", help="also run both programs on the Verilator testbench")
    args = parser.parse_args(argv)
    config = AcceleratorConfig(rows=args.rows, cols=2 * args.rows, formats=SET)
    records = []
    for network, layer_formats in NETWORKS.items():
        records += _compare(config, network, layer_formats, args.rtl)
    print(table([{k: f"{v:,}" if isinstance(v, int) else v for k, v in r.items()} for r in records],
                [(k, k) for k in records[0]]))
    speedups = {}
    for packed, unpacked in zip(records[::2], records[1::2]):
        speedups[packed["network"]] = round(unpacked["emulator cycles"] / packed["emulator cycles"], 4)
        print(f"\n{config.rows}x{config.cols} {','.join(SET)}, {packed['network']}: packed "
              f"{speedups[packed['network']]:.3f}x fewer cycles a digit")
    print(f"every tensor the golden model's{' (emulator and RTL)' if args.rtl else ''}")
    write("mixed_network_packing", records, config=config.to_dict(), speedup=speedups,
          command="python bench/mixed_network_packing.py" + (f" --rows {args.rows}" if args.rows != 4 else "")
          + (" --rtl" if args.rtl else ""))
    return 0


def _compare(config: AcceleratorConfig, network: str, layer_formats: dict, rtl: bool) -> list[dict]:
    """One digit through ``network`` compiled packed and unpacked: each a record of its cycles (every tensor checked
    against the golden model's)."""
    digits = ROOT / "models" / "digits"
    qnet = quantize_network(load_onnx(digits / "digits_cnn.onnx"), act_format="int4", weight_format="int4",
                            acc_bits=config.acc_bits, samples=np.load(digits / "calibration.npy"), method="mmse",
                            per_channel=True, layer_formats=layer_formats, formats=list(SET))
    x = qnet.tensors[qnet.input].quantize(np.load(digits / "test_set.npz")["images"][:1])
    golden = run_codes(compile_network(qnet, config), x, "golden", keep=True)
    records = []
    for pack in (True, False):
        compiled = compile_network(qnet, config, pack=pack)
        lines = compiled.program.listing().splitlines()
        runs = {"emulator": run_codes(compiled, x, "emulator", keep=True, cycles=True)}
        if rtl:
            with tempfile.TemporaryDirectory() as work:
                runs["rtl"] = run_codes(compiled, x, "rtl", keep=True, work_dir=work)
        for backend, result in runs.items():
            for name, codes in golden.tensors[0].items():
                if not np.array_equal(result.tensors[0][name], codes):
                    raise RuntimeError(f"{network}, {'packed' if pack else 'unpacked'}, {backend}: tensor {name} "
                                       f"differs from the golden model's")
        records.append({"network": network, "program": "packed" if pack else "unpacked",
                        "packed COMPUTEs": sum("COMPUTE" in line and "packed=1" in line for line in lines),
                        "COMPUTEs": sum("COMPUTE" in line for line in lines),
                        "packed STOREs": sum("STORE" in line and "packed=1" in line for line in lines),
                        "conv1 cycles": _layer(compiled, runs["emulator"], "/conv1/Conv"),
                        "conv2 cycles": _layer(compiled, runs["emulator"], "/conv2/Conv"),
                        **{f"{backend} cycles": result.cycles[0] for backend, result in runs.items()}})
    return records


if __name__ == "__main__":
    sys.exit(run(main))
