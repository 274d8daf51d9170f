"""A CIFAR-style ResNet-8 (the MLPerf Tiny image-classification topology) with random weights, as ONNX files the
benchmarks can rebuild deterministically: float (``resnet8.onnx``) and onnxruntime's QDQ int8 (``resnet8_qdq.onnx``).

Topology: 3x3 conv 16 + BN + ReLU; three residual stacks (16, 32 and 64 channels; strides 1, 2, 2) of two 3x3
convs with BN, the second and third with a 1x1 conv + BN shortcut, ReLU after each add; global average pooling;
linear 10 (logits, no softmax). Weights from ``torch.manual_seed(0)``, BatchNorm statistics from a seeded
generator. Quantized as models/digits/export_qdq.py does (quant_pre_process, then quantize_static: QDQ, int8
activations and weights, per tensor, min-max) on 64 seeded normal images. Both files get a symbolic batch
dimension so onnxruntime runs a whole batch at once. Needs torch (the train extra) and onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INPUT_SHAPE = (3, 32, 32)
CALIBRATION = 64


def _model():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.short = None if cin == cout and stride == 1 else \
                nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
            return torch.relu(y + (x if self.short is None else self.short(x)))

    class ResNet8(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.stacks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.stacks(self.stem(x)), 1), 1))

    torch.manual_seed(0)
    model = ResNet8()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _batch_dimension(path: Path) -> None:
    """Make the batch dimension of inputs and outputs symbolic (and drop the fixed inner shapes)."""
    import onnx
    model = onnx.load(path)
    del model.graph.value_info[:]
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    onnx.save(model, path)


def calibration_images() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((CALIBRATION, *INPUT_SHAPE)).astype(np.float32)


def build(folder: Path) -> tuple[Path, Path]:
    """Write ``resnet8.onnx`` and ``resnet8_qdq.onnx`` into ``folder``; their paths."""
    import torch
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quant_pre_process, quantize_static)

    class Images(CalibrationDataReader):
        def __init__(self, images: np.ndarray):
            self.batches = iter([{"input": images[i:i + 1]} for i in range(len(images))])

        def get_next(self):
            return next(self.batches, None)

    folder.mkdir(parents=True, exist_ok=True)
    float_path, pre, qdq = folder / "resnet8.onnx", folder / "resnet8_pre.onnx", folder / "resnet8_qdq.onnx"
    torch.onnx.export(_model(), torch.zeros(1, *INPUT_SHAPE), str(float_path), input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False, do_constant_folding=True)
    quant_pre_process(str(float_path), str(pre))
    quantize_static(str(pre), str(qdq), Images(calibration_images()), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=False,
                    calibrate_method=CalibrationMethod.MinMax)
    for path in (float_path, qdq):
        _batch_dimension(path)
    return float_path, qdq
