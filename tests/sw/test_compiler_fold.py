"""Input folding (sw/compiler/fold.py): a stem convolution on few input channels runs as a 1x1 convolution of
the host's im2col'd input; every tensor the engine writes equals the golden model's, the folder keeps the fold,
and its schema refuses a fold that does not match the input."""

import json

import numpy as np
import pytest
from onnx import helper

from hw.spec.config import AcceleratorConfig
from sw.compiler.folder import FolderError
from sw.compiler.network import CompiledNetwork, compile_network
from sw.frontend import load_onnx
from sw.golden.network import run_network
from sw.quantize import quantize_network
from sw.runtime import run_codes
from test_frontend import init, model, rand  # noqa: E402 - tests/sw is on sys.path

STEMS = [  # (channels, kernel, stride, pads, dilation, input size): ResNet-18's, a CIFAR one, odd ones
    (3, 7, 2, [3, 3, 3, 3], 1, 19),
    (3, 3, 1, [1, 1, 1, 1], 1, 10),
    (1, 5, 3, [0, 2, 1, 0], 1, 13),
    (2, 3, 2, [2, 2, 2, 2], 2, 11),
]


def _compiled(stem, fmt: str, rows: int):
    channels, k, stride, pads, dilation, size = stem
    inits = [init("w1", rand(8, channels, k, k)), init("b1", rand(8)), init("w2", rand(6, 8, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], strides=[stride] * 2, pads=pads,
                              dilations=[dilation] * 2),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w2"], ["y"], pads=[1, 1, 1, 1])]
    net = load_onnx(model(nodes, (channels, size, size), None, inits))
    config = AcceleratorConfig(rows=rows, cols=rows, weight_format=fmt, act_format=fmt)
    samples = np.random.default_rng(1).uniform(-1, 1, (8, channels, size, size)).astype(np.float32)
    q = quantize_network(net, act_format=config.acts.name, weight_format=config.weights.name,
                         acc_bits=config.acc_bits, samples=samples)
    return compile_network(q, config), q.tensors[q.input].quantize(samples[:3])


@pytest.mark.parametrize("fmt", ["int8", "minifloat6"])
@pytest.mark.parametrize("stem", STEMS, ids=[f"{s[0]}ch-{s[1]}x{s[1]}s{s[2]}" for s in STEMS])
def test_folded_stem_equals_golden(stem, fmt):
    compiled, codes = _compiled(stem, fmt, 8)
    net = compiled.network
    fold = compiled.placements[net.input].fold
    assert fold is not None and fold.kernel == (stem[1], stem[1])
    assert compiled.layers[0]["plan"] is not None
    golden = run_network(net, codes, keep=True)
    emulated = run_codes(compiled, codes, "emulator", keep=True)
    assert net.input not in compiled.materialized
    for i in range(len(codes)):
        for name in compiled.materialized:
            np.testing.assert_array_equal(emulated.tensors[i][name], golden[name][i], err_msg=name)


def test_fold_is_kept_only_where_it_saves_tiles():
    """Many input channels (here 8 of 8 rows) fill the rows already: no fold."""
    inits = [init("w1", rand(4, 8, 3, 3))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["y"], pads=[1, 1, 1, 1])]
    net = load_onnx(model(nodes, (8, 6, 6), None, inits))
    config = AcceleratorConfig(rows=8, cols=8, weight_format="int8", act_format="int8")
    samples = np.random.default_rng(2).uniform(-1, 1, (4, 8, 6, 6)).astype(np.float32)
    q = quantize_network(net, act_format="int8", weight_format="int8", acc_bits=config.acc_bits, samples=samples)
    assert compile_network(q, config).placements[q.input].fold is None


def test_saved_folder_keeps_the_fold_and_refuses_a_wrong_one(tmp_path):
    compiled, codes = _compiled(STEMS[0], "int8", 8)
    compiled.save(tmp_path / "ok")
    loaded = CompiledNetwork.load(tmp_path / "ok")
    assert loaded.placements[loaded.network.input].fold == compiled.placements[compiled.network.input].fold
    np.testing.assert_array_equal(run_codes(loaded, codes, "emulator").codes, run_codes(compiled, codes, "golden").codes)

    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    name = manifest["input"]["name"]
    for edit, message in [(lambda f: f.update(stride=[3, 3]), "folds to"),
                          (lambda f: f.update(kernel=[7]), "fold.kernel must list 2"),
                          (lambda f: f.update(channels=2), "not the fold's")]:
        broken = json.loads(json.dumps(manifest))
        edit(broken["tensors"][name]["fold"])
        folder = tmp_path / f"broken-{message[:4]}"
        compiled.save(folder)
        (folder / "manifest.json").write_text(json.dumps(broken))
        with pytest.raises(FolderError, match=message):
            CompiledNetwork.load(folder, verify_digests=False)
