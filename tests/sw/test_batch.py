"""One program for a batch of samples (sw.compile --batch N): golden == emulator on every sample, the batched
program's outputs equal the per-sample program's, layers on vectors run once per weight tile for the whole batch,
and the command line, folder and runtime carry the batch (padding a last run that is not full)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from hw.spec.isa import Buffer, Opcode, decode
from sim.random_network import random_inputs, random_network
from sw.compiler.network import CompiledNetwork, CompileError, compile_network
from sw.frontend.onnx_import import load_onnx
from sw.golden.network import run_network
from sw.model_folder import DIGITS
from sw.quantize import quantize_network
from sw.runtime import run_codes

ROOT = Path(__file__).resolve().parents[2]
BATCHES = (1, 2, 7, 16, 64)


def _config(n: int) -> AcceleratorConfig:
    return AcceleratorConfig(rows=n, cols=n, weight_format="int8", act_format="int8", act_buffer_depth=1024,
                             weight_buffer_depth=256, acc_buffer_depth=256, param_buffer_depth=16, dma_bits=64)


@pytest.fixture(scope="module")
def digits_net():
    config = AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8")
    net = quantize_network(load_onnx(DIGITS / "digits_cnn.onnx"), act_format="int8", weight_format="int8",
                           acc_bits=config.acc_bits, samples=np.load(DIGITS / "calibration.npy")[:64])
    with np.load(DIGITS / "test_set.npz") as data:
        codes = net.tensors[net.input].quantize(data["images"][:70])
    return net, codes


@pytest.mark.parametrize("n", [4, 16])
@pytest.mark.parametrize("batch", BATCHES)
def test_random_network_batched_equals_golden_and_the_per_sample_program(n, batch):
    config = _config(n)
    rng = np.random.default_rng(10 * batch + n)
    net = random_network(rng, "int8", "int8", config.acc_bits)
    compiled = compile_network(net, config, batch=batch)
    x = random_inputs(rng, net, batch + 3)                # the last run padded (unless batch is 1)
    golden = run_network(net, x, keep=True)
    result = run_codes(compiled, x, "emulator", keep=True)
    assert len(result.tensors) == len(x)
    for i in range(len(x)):
        for name in compiled.materialized:
            np.testing.assert_array_equal(result.tensors[i][name], golden[name][i], err_msg=f"{name}, sample {i}")
    single = run_codes(compile_network(net, config), x, "emulator")
    np.testing.assert_array_equal(result.codes, single.codes)


@pytest.mark.parametrize("n", [4, 16])
@pytest.mark.parametrize("batch", BATCHES)
def test_digits_batched_equals_golden_and_the_per_sample_program(digits_net, n, batch):
    net, codes = digits_net
    config = AcceleratorConfig(rows=n, cols=n, weight_format="int8", act_format="int8")
    compiled = compile_network(net, config, batch=batch)
    golden = run_codes(compiled, codes, "golden").codes
    timed = run_codes(compiled, codes, "emulator", cycles=True)
    np.testing.assert_array_equal(timed.codes, golden)
    np.testing.assert_array_equal(timed.codes, run_codes(compile_network(net, config), codes, "emulator").codes)
    assert len(timed.cycles) == len(codes) and timed.cycles[0] > 0


def _layer_words(compiled: CompiledNetwork) -> dict[str, list]:
    starts = [e["first_instruction"] for e in compiled.layers] + [len(compiled.program.words)]
    return {e["name"]: [decode(w) for w in compiled.program.words[a:b]]
            for e, a, b in zip(compiled.layers, starts, starts[1:])}


def _vectors(words) -> int:
    return sum(f["out_h"] * f["out_w"] for kind, f in words if kind.opcode is Opcode.COMPUTE)


def _computes(words) -> int:
    return sum(1 for kind, _ in words if kind.opcode is Opcode.COMPUTE)


def _weight_loads(words) -> int:
    return sum(1 for kind, f in words if kind.opcode is Opcode.LOAD and f["buffer"] == Buffer.WEIGHT)


def test_linear_layers_load_each_weight_tile_once_per_batch(digits_net):
    """From the program words: a linear layer's weight LOADs are those of the per-sample program in ``chunk`` order
    (a single sample's program may stack its taps instead: sw/compiler/stacking.py) while its COMPUTEs stream
    ``batch`` times the vectors; a convolution in ``block`` order keeps its weights resident while every sample
    passes (``chunk`` order loads them per chunk, of every sample)."""
    net, _ = digits_net
    config = AcceleratorConfig(rows=8, cols=8, weight_format="int8", act_format="int8")
    compiled = compile_network(net, config, batch=16)
    ops = {layer.name: layer.op for layer in net.layers}
    per_sample, chunked = (_layer_words(compile_network(net, config, order=o)) for o in (None, "chunk"))
    one, many = {n: chunked[n] if ops[n] == "linear" else w for n, w in per_sample.items()}, _layer_words(compiled)
    orders = {e["name"]: e["plan"]["order"] for e in compiled.layers}
    assert {ops[name] for name in one} == {"conv", "linear"} and "block" in {orders[n] for n in one if ops[n] == "conv"}
    for name in one:
        assert _vectors(many[name]) == 16 * _vectors(one[name]), name
        factor = 1 if ops[name] == "linear" or orders[name] == "block" else 16
        assert _weight_loads(many[name]) == factor * _weight_loads(one[name]), name
        if ops[name] == "linear":              # one COMPUTE per weight tile, streaming the 16 vectors
            assert _computes(many[name]) == _computes(one[name]), name
    weights = [r.size for name, r in compiled.program.regions.items() if name.endswith(".weights")]
    assert len(weights) == len(one)                 # one copy of each layer's weights for all samples


def test_batch_out_of_range_is_refused():
    net = random_network(np.random.default_rng(0), "int8", "int8", 20)
    for bad in (0, -1, 1025, 2.0, True):
        with pytest.raises(CompileError, match="batch must be a whole number of samples in 1..1024"):
            compile_network(net, _config(4), batch=bad)


def _cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def test_compile_and_run_a_batched_folder(tmp_path):
    """sw.compile --batch 4 writes the batch into the manifest; sw.run feeds 6 images (a full run and a padded
    one) and writes the outputs of the per-sample program; a saved folder loads with its batch."""
    with np.load(DIGITS / "test_set.npz") as data:
        np.save(tmp_path / "in.npy", data["images"][:6])
    outs = {}
    for batch in (1, 4):
        folder = tmp_path / f"b{batch}"
        result = _cli("sw.compile", DIGITS / "digits_cnn.onnx", "--pe", "int8", "--rows", "8", "--calibrate",
                      DIGITS / "calibration.npy", "--batch", batch, "--out", folder)
        assert result.returncode == 0, result.stderr
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["batch"] == batch
        assert CompiledNetwork.load(folder).batch == batch
        result = _cli("sw.run", folder, "--backend", "emulator", "--input", tmp_path / "in.npy", "--output",
                      tmp_path / f"out{batch}.npy")
        assert result.returncode == 0, result.stderr
        assert "cycles per inference" in result.stdout
        outs[batch] = np.load(tmp_path / f"out{batch}.npy")
    assert outs[4].shape == (6, 10)
    np.testing.assert_array_equal(outs[4], outs[1])
    sizes = {b: json.loads((tmp_path / f"b{b}" / "manifest.json").read_text())["input"]["bytes"] for b in (1, 4)}
    assert sizes[4] == 4 * sizes[1]
    # The energy report is per inference: the run's events over its 4 samples, each weight tile loaded once a run.
    energy = {b: json.loads((tmp_path / f"b{b}" / "report.json").read_text())["energy"]["energy_uj_per_inference"]
              for b in (1, 4)}
    assert energy[1] / 4 < energy[4] < energy[1]


def test_a_manifest_with_a_bad_batch_is_refused(tmp_path):
    from sw.compiler.folder import FolderError
    net = random_network(np.random.default_rng(1), "int8", "int8", _config(4).acc_bits)
    compile_network(net, _config(4), batch=2).save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for bad in (0, "2", 5000):
        (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "batch": bad}))
        with pytest.raises(FolderError, match="'batch' must be an integer in 1..1024"):
            CompiledNetwork.load(tmp_path, verify_digests=False)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "batch": 3}))       # regions hold 2 samples
    with pytest.raises(FolderError, match="3 samples\\) does not fit its region"):
        CompiledNetwork.load(tmp_path, verify_digests=False)


@pytest.mark.parametrize("extra,message", [
    (["--batch", "0"], "--batch: must be an integer in 1..1024, not 0"),
    (["--batch", "x"], "--batch"),
    (["--batch", "2", "--mixed", "int8,int4", "--budget", "cycles=1000"], "--batch with --mixed is not supported"),
])
def test_bad_batch_is_one_line_with_status_2(extra, message, tmp_path):
    result = _cli("sw.compile", DIGITS / "digits_cnn.onnx", "--pe", "int8", "--rows", "4", "--calibrate",
                  DIGITS / "calibration.npy", *extra, "--out", tmp_path / "out")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize("n", [4, 8])
def test_a_classifier_head_of_1x1_convolutions_runs_once_per_weight_tile(n, tmp_path):
    """1x1 convolutions on the 1x1 map after a global average pool, and an add of two of them, run as one job over
    the batch's vectors: as many COMPUTEs as the per-sample program in ``chunk`` order (a single sample's program
    may stack their taps instead), each streaming the 5 vectors; the outputs are the golden model's and the
    per-sample program's."""
    from sw.compile import compile_model
    from tests.onnx_models import conv_head

    config = AcceleratorConfig(rows=n, cols=n, weight_format="int8", act_format="int8")
    samples = np.load(DIGITS / "calibration.npy")[:16]
    model = conv_head(tmp_path / "head.onnx")
    one, many = (compile_model(model, config, samples, log=lambda *_: None, batch=b) for b in (1, 5))
    ops = {layer.name: (layer.op, layer.inputs[0]) for layer in many.network.layers}
    head = [name for name, (op, x) in ops.items() if many.network.shapes[x][1:] == (1, 1) and op != "flatten"]
    assert {ops[name][0] for name in head} == {"conv", "add"} and len(head) == 4
    words_one, words_many = _layer_words(compile_network(one.network, config, order="chunk")), _layer_words(many)
    for name in head:
        assert _computes(words_many[name]) == _computes(words_one[name]), name
        assert _vectors(words_many[name]) == 5 * _vectors(words_one[name]) == 5 * _computes(words_many[name]), name
    with np.load(DIGITS / "test_set.npz") as data:
        codes = many.network.tensors[many.network.input].quantize(data["images"][:7])
    result = run_codes(many, codes, "emulator")
    np.testing.assert_array_equal(result.codes, run_codes(many, codes, "golden").codes)
    np.testing.assert_array_equal(result.codes, run_codes(one, codes, "emulator").codes)
