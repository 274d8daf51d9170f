"""Export the model zoo (models/zoo/architectures.py) to ONNX as a user would: torch's exporter with its defaults
(TorchScript, constant folding on), opset 17, a symbolic batch dimension; plus seeded random inputs to
calibrate on. Deterministic: the same files every run.

Usage: python models/zoo/export.py [NAME ...] [--out DIR] [--samples N]   (default: every model, into
models/zoo/onnx/, 8 calibration samples each). Needs the train extra: pip install -e '.[train]'.

The four small ones used by the tests (resnet8, resnet20, ds_cnn, mobilenet_v1_025) are committed under
models/zoo/; `--out models/zoo resnet8 resnet20 ds_cnn mobilenet_v1_025` regenerates them.
"""

from __future__ import annotations

import argparse
import io
import sys
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

try:
    import torch

    from models.zoo.architectures import ARCHITECTURES, build
except ImportError as error:
    print(f"error: {error.name} is missing; install the training extra with: pip install -e '.[train]'",
          file=sys.stderr)
    sys.exit(2)

OPSET = 17
#: Committed beside this file, small enough for the tests.
SMALL = ("resnet8", "resnet20", "ds_cnn", "mobilenet_v1_025")


def export(name: str, out: Path, samples: int = 8) -> tuple[Path, Path]:
    """Write ``out/NAME.onnx`` and ``out/NAME_calibration.npy``; return both paths."""
    model, shape = build(name)
    torch.set_num_threads(1)
    x = torch.zeros(1, *shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buffer, opset_version=OPSET, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, dynamo=False)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path, samples_path = out / f"{name}.onnx", out / f"{name}_calibration.npy"
    onnx_path.write_bytes(buffer.getvalue())
    rng = np.random.default_rng(sum(map(ord, name)))
    np.save(samples_path, rng.standard_normal((samples, *shape)).astype(np.float32))
    return onnx_path, samples_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help=f"models (default all): {', '.join(ARCHITECTURES)}")
    p.add_argument("--out", type=Path, default=HERE / "onnx")
    p.add_argument("--samples", type=int, default=8)
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in ARCHITECTURES]
    if unknown:
        print(f"error: unknown model {unknown[0]!r}; the zoo has {', '.join(ARCHITECTURES)}", file=sys.stderr)
        return 2
    for name in args.names or ARCHITECTURES:
        onnx_path, _ = export(name, args.out, args.samples)
        print(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
