"""python -m sw.compile and python -m sw.run: the command-line contract, good runs and bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sw.evaluate import DIGITS

ROOT = Path(__file__).resolve().parents[2]


def _cli(module, *args):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    with np.load(DIGITS / "test_set.npz") as data:
        np.save(folder / "in.npy", data["images"][:6])
    np.save(folder / "wrong_shape.npy", np.zeros((2, 1, 8, 8), np.float32))
    np.save(folder / "wrong_dtype.npy", np.zeros((2, 1, 16, 16), np.float64))
    return folder


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled") / "digits"
    result = _cli("sw.compile", DIGITS / "digits_cnn.onnx", "--pe", "minifloat6", "--rows", "8",
                  "--calibrate", DIGITS / "calibration.npy", "--method", "mmse", "--per-channel", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "w SQNR dB" in result.stdout and "tile rows" in result.stdout     # the per-layer report and plan
    return out


def test_compile_writes_the_whole_folder(compiled):
    assert {"program.bin", "program.asm", "manifest.json", "config.json", "network.json", "network.npz",
            "report.txt", "report.json", "report.md"} <= {p.name for p in compiled.iterdir()}
    assert "COMPUTE" in (compiled / "program.asm").read_text()


def test_compile_reports_the_energy_the_emulator_counts(compiled):
    """report.json's events, counted from the program's words, are the ones the emulator counts running it."""
    import json

    from sw.runtime import load_program, run_codes

    energy = json.loads((compiled / "report.json").read_text())["energy"]
    program = load_program(compiled)
    x = np.load(DIGITS / "calibration.npy")[:2]
    run = run_codes(program, program.network.tensors[program.network.input].quantize(x), "emulator")
    assert energy["events"] == run.events.total() and energy["macs_by_formats"] == {"minifloat6 x minifloat6":
                                                                                   run.events.total()["macs"]}
    assert energy["cycles_source"] == "the compiler's cost-model estimate" and energy["energy_uj_per_inference"] > 0
    assert [layer["name"] for layer in energy["layers"]] == [e["name"] for e in program.layers]
    assert "inferences/s per watt" in (compiled / "report.md").read_text()


def test_run_backends_give_the_same_outputs(compiled, samples, tmp_path):
    outputs = {}
    for backend in ("golden", "emulator"):
        result = _cli("sw.run", compiled, "--backend", backend, "--input", samples / "in.npy", "--output",
                      tmp_path / f"{backend}.npy")
        assert result.returncode == 0, result.stderr
        outputs[backend] = np.load(tmp_path / f"{backend}.npy")
    assert outputs["golden"].shape == (6, 10) and outputs["golden"].dtype == np.float32
    np.testing.assert_array_equal(outputs["golden"], outputs["emulator"])


def _softmax_model(path):
    model = onnx.load(DIGITS / "digits_cnn.onnx")
    model.graph.node.append(helper.make_node("Softmax", ["logits"], ["probs"], name="final_softmax", axis=1))
    model.graph.output[0].name = "probs"
    onnx.save(model, path)


def _wide_model(path):
    """A window no buffer holds: one output pixel of a 15x15 kernel at dilation 7 reads 99 x 99 input lines
    (twice, double-buffered), more than the 4096 of the default activation buffer; strips cannot help. A 1x1
    convolution comes first, so the wide one does not read the network's input (which would be folded)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [2, 1, 15, 15], np.ones(450, np.float32))
    one = helper.make_tensor("one", TensorProto.FLOAT, [1, 1, 1, 1], np.ones(1, np.float32))
    graph = helper.make_graph([helper.make_node("Conv", ["x", "one"], ["x1"], name="pointwise"),
                               helper.make_node("Conv", ["x1", "w"], ["y"], name="wide_conv", dilations=[7, 7])],
                              "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 100, 100])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])], [w, one])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)


@pytest.mark.parametrize("case,message", [
    ("missing", "nothere.onnx: no such file"),
    ("format", "--pe: Unknown format 'float7'"),
    ("no_calibration", "needs calibration samples (--calibrate SAMPLES.npy"),
    ("calibration_shape", "is shaped (2, 1, 8, 8); it must be (N, 1, 16, 16)"),
    ("calibration_dtype", "holds float64; it must be float32"),
    ("softmax", "node 'final_softmax' (Softmax): operator 'Softmax' is not one the engine runs (it runs Conv,"),
    ("too_big", "layer 'wide_conv' cannot be mapped onto this engine: one output pixel (1 input channel blocks of "
                "a 99-row window) does not fit the buffers"),
    ("first_last", "--first-last minifloat6 and int8 weights: neither format holds the other's values"),
    ("energy_table", "/table.json: sram_write_over_read is missing (an object with value, unit and source)"),
])
def test_compile_errors_are_one_line_with_status_2(case, message, samples, tmp_path):
    model, extra = DIGITS / "digits_cnn.onnx", ["--calibrate", DIGITS / "calibration.npy"]
    pe = "int8"
    if case == "missing":
        model = tmp_path / "nothere.onnx"
    elif case == "format":
        pe = "float7"
    elif case == "no_calibration":
        extra = []
    elif case == "calibration_shape":
        extra = ["--calibrate", samples / "wrong_shape.npy"]
    elif case == "calibration_dtype":
        extra = ["--calibrate", samples / "wrong_dtype.npy"]
    elif case == "softmax":
        model = tmp_path / "softmax.onnx"
        _softmax_model(model)
        extra = ["--engine-only"]
    elif case == "too_big":
        model = tmp_path / "wide.onnx"
        _wide_model(model)
        np.save(tmp_path / "wide.npy", np.ones((2, 1, 100, 100), np.float32))
        extra = ["--calibrate", tmp_path / "wide.npy"]
    elif case == "first_last":
        extra += ["--first-last", "minifloat6"]
    elif case == "energy_table":
        (tmp_path / "table.json").write_text('{"int_add": [{"bits": 8, "value": 1, "unit": "pJ", "source": "x"}], '
                                             '"int_mult": [{"bits": 8, "value": 1, "unit": "pJ", "source": "x"}], '
                                             '"sram_read_64b": [{"capacity_bytes": 8, "value": 1, "unit": "pJ", '
                                             '"source": "x"}]}')
        extra += ["--energy-table", tmp_path / "table.json"]
    out = tmp_path / "out"
    result = _cli("sw.compile", model, "--pe", pe, "--rows", "4", *extra, "--out", out)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize("case,extra,message", [
    ("no rows", ["--pe", "int8"], "--rows is required: the engine's PE rows (or --config CONFIG.json of a build)"),
    ("config and rows", ["--config", "CONFIG", "--rows", "4", "--pe", "int8"],
     "--config sets the engine: drop --pe, --rows (or drop --config)"),
    ("config and mixed", ["--config", "CONFIG", "--mixed", "int4,int8", "--budget", "cycles=1"],
     "--config sets the engine: drop --mixed (or drop --config)"),
    ("no config file", ["--config", "nothere.json"], "--config nothere.json: no such file"),
    ("bad config", ["--config", "BAD"], "bad.json: "),
])
def test_compile_engine_options_are_checked(case, extra, message, tmp_path):
    """--config (a build's config.json) or --rows with the formats: never both, never neither."""
    from hw.spec.config import AcceleratorConfig
    (tmp_path / "config.json").write_text(AcceleratorConfig(rows=2, weight_format="int4", act_format="int4").to_json())
    (tmp_path / "bad.json").write_text('{"rows": "two"}')
    extra = [{"CONFIG": tmp_path / "config.json", "BAD": tmp_path / "bad.json"}.get(a, a) for a in extra]
    out = tmp_path / "out"
    result = _cli("sw.compile", DIGITS / "digits_cnn.onnx", *extra, "--calibrate", DIGITS / "calibration.npy",
                  "--out", out)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not out.exists()


def test_compile_for_a_built_engine_takes_its_config(tmp_path):
    """--config: the folder's config.json is the given engine's, buffers and options included."""
    import json

    from hw.spec.config import AcceleratorConfig
    config = AcceleratorConfig(rows=2, weight_format="int4", act_format="int4", act_buffer_depth=256,
                               weight_buffer_depth=256, acc_buffer_depth=256, param_buffer_depth=16, dma_bits=64,
                               max_reduction=64)
    (tmp_path / "config.json").write_text(config.to_json())
    result = _cli("sw.compile", DIGITS / "digits_cnn.onnx", "--config", tmp_path / "config.json", "--calibrate",
                  DIGITS / "calibration.npy", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "config.json").read_text()) == config.to_dict()


def test_unsupported_operator_lists_what_is_supported(tmp_path):
    model = tmp_path / "softmax.onnx"
    _softmax_model(model)
    result = _cli("sw.compile", model, "--pe", "int8", "--rows", "4", "--calibrate", DIGITS / "calibration.npy",
                  "--engine-only", "--out", tmp_path / "out")
    assert "Softmax" in result.stderr and "Conv" in result.stderr and "MaxPool" in result.stderr


@pytest.mark.parametrize("case,message", [
    ("no_program", "holds no compiled network"),
    ("shape", "is shaped (2, 1, 8, 8); it must be (N, 1, 16, 16)"),
    ("dtype", "holds float64; it must be float32"),
    ("backend", "argument --backend: invalid choice: 'fpga'"),
    ("missing_input", "nothere.npy: no such file"),
])
def test_run_errors_are_one_line_with_status_2(case, message, compiled, samples, tmp_path):
    program, backend, x = compiled, "golden", samples / "in.npy"
    if case == "no_program":
        program = tmp_path
    elif case == "shape":
        x = samples / "wrong_shape.npy"
    elif case == "dtype":
        x = samples / "wrong_dtype.npy"
    elif case == "backend":
        backend = "fpga"
    elif case == "missing_input":
        x = tmp_path / "nothere.npy"
    result = _cli("sw.run", program, "--backend", backend, "--input", x, "--output", tmp_path / "out.npy")
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out.npy").exists()


def test_compile_never_replaces_a_foreign_folder(tmp_path):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "notes.txt").write_text("precious")
    result = _cli("sw.compile", DIGITS / "digits_cnn.onnx", "--pe", "int8", "--rows", "4", "--calibrate",
                  DIGITS / "calibration.npy", "--out", keep)
    assert result.returncode == 2 and "is not an earlier output of this tool" in result.stderr
    assert (keep / "notes.txt").read_text() == "precious"


def test_run_refuses_a_damaged_folder_and_a_folder_as_output(compiled, samples, tmp_path):
    import shutil
    damaged = tmp_path / "damaged"
    shutil.copytree(compiled, damaged)
    (damaged / "network.npz").unlink()
    result = _cli("sw.run", damaged, "--backend", "golden", "--input", samples / "in.npy", "--output",
                  tmp_path / "o.npy")
    assert result.returncode == 2 and "network.npz is missing" in result.stderr
    (tmp_path / "d.npy").mkdir()
    result = _cli("sw.run", compiled, "--backend", "golden", "--input", samples / "in.npy", "--output",
                  tmp_path / "d.npy")
    assert result.returncode == 2 and "is a folder" in result.stderr and "Traceback" not in result.stderr


def test_data_free_int3_weights_need_no_samples(tmp_path):
    out = tmp_path / "df"
    result = _cli("sw.compile", DIGITS / "digits_cnn.onnx", "--weights", "int3", "--acts", "int8", "--data-free",
                  "--rows", "8", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "int3 weights" in result.stdout and (out / "manifest.json").is_file()
    assert '"weight_format": "int3"' in (out / "config.json").read_text()


@pytest.mark.parametrize("model,extra,message", [
    ("digits_cnn_qdq.onnx", (), "already carries encodings"),
    ("digits_cnn.onnx", ("--calibrate", DIGITS / "calibration.npy"), "--data-free takes no --calibrate"),
    ("digits_cnn.onnx", ("--input-range", "0,1", "--calibrate", DIGITS / "calibration.npy"),
     "--input-range only applies with --data-free"),
    ("digits_cnn.onnx", ("--data-free", "--input-range", "1,0"), "expected finite LO < HI"),
])
def test_data_free_refusals_are_one_line_with_status_2(model, extra, message, tmp_path):
    flags = ("--data-free",) if model.endswith("qdq.onnx") or extra[:1] == ("--calibrate",) else ()
    result = _cli("sw.compile", DIGITS / model, "--weights", "int3", "--acts", "int8", *flags, *extra,
                  "--rows", "8", "--out", tmp_path / "out")
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
