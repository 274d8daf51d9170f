"""``python -m sw.evaluate`` on another model and data (``--model``, ``--calibrate``, ``--eval``, ``--labels``,
``--check``): the same measurement as on the bundled CNN, and one-line refusals of data that does not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hw.spec.config import AcceleratorConfig
from sw.evaluate import DIGITS, main

MODEL, CALIBRATION, TEST_SET = DIGITS / "digits_cnn.onnx", DIGITS / "calibration.npy", DIGITS / "test_set.npz"


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(AcceleratorConfig(rows=4, cols=4, weight_format="int8", act_format="int8").to_json())
    return path


@pytest.fixture
def npy_data(tmp_path) -> tuple[Path, Path]:
    """The first 12 held-out images and labels as two .npy files."""
    with np.load(TEST_SET) as data:
        np.save(tmp_path / "images.npy", data["images"][:12])
        np.save(tmp_path / "labels.npy", data["labels"][:12])
    return tmp_path / "images.npy", tmp_path / "labels.npy"


def test_npz_and_npy_data_give_the_same_result(config, npy_data, tmp_path):
    images, labels = npy_data
    common = ["--config", config, "--model", MODEL, "--calibrate", CALIBRATION]
    assert main([*map(str, common), "--eval", str(TEST_SET), "--images", "12", "--out", str(tmp_path / "a.json")]) == 0
    assert main([*map(str, common), "--eval", str(images), "--labels", str(labels), "--out",
                 str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["images"] == b["images"] == 12 and a["labelled"] and b["labelled"]
    assert a["accuracy"] == b["accuracy"] > 0.8 and a["cycles_per_inference"] == b["cycles_per_inference"]
    assert a["model"] == "digits_cnn" and a["golden_emulator_mismatches"] == 0


def test_without_labels_accuracy_is_null(config, npy_data, tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["--config", str(config), "--model", str(MODEL), "--calibrate", str(CALIBRATION), "--images", "8",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["accuracy"] is None and not result["labelled"] and result["images"] == 8
    assert result["cycles_per_inference"] == sum(layer["cycles"] for layer in result["layers"])
    assert "No labels on 8 images" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    (["--eval", "{images}", "--labels", "{images}"], "--labels must hold integers, not float32"),
    (["--eval", "{images}", "--labels", "{short}"], "--labels must be 12 integers in 0..9"),
    (["--eval", "{labels}"], "--eval {labels} holds int64"),
    (["--labels", "{labels}"], "--labels needs --eval IMAGES.npy"),
    (["--eval", str(TEST_SET), "--labels", "{labels}"], "holds its labels; leave out --labels"),
    (["--calibrate", str(TEST_SET)], "is a .npz archive"),
])
def test_bad_data_one_line_status_2(extra, message, config, npy_data, tmp_path, capsys):
    images, labels = npy_data
    np.save(tmp_path / "short.npy", np.zeros(3, dtype=np.int64))
    names = {"images": images, "labels": labels, "short": tmp_path / "short.npy"}
    extra = [e.format(**names) for e in extra]
    base = ["--config", str(config), "--model", str(MODEL)]
    if "--calibrate" not in extra:
        base += ["--calibrate", str(CALIBRATION)]
    assert main([*base, *extra, "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m sw.evaluate: error: ")
    assert message.format(**names) in err[0]


def test_check_accepts_good_data_and_data_needs_a_model(config, capsys):
    assert main(["--config", str(config), "--model", str(MODEL), "--calibrate", str(CALIBRATION), "--eval",
                 str(TEST_SET), "--check"]) == 0
    assert "The inputs are fine." in capsys.readouterr().out
    assert main(["--config", str(config), "--calibrate", str(CALIBRATION), "--check"]) == 2
    assert "--calibrate needs --model" in capsys.readouterr().err
    assert main(["--config", str(config)]) == 2
    assert "required: --out" in capsys.readouterr().err


def test_energy_table_and_fmax(config, tmp_path, capsys):
    """Energy per inference with the default table, with --energy-table FILE (twice the DRAM energy: more
    energy) and --fmax-mhz; a bad table is one line and status 2."""
    from sw.energy import DEFAULT_TABLE

    common = ["--config", str(config), "--images", "4"]
    assert main([*common, "--out", str(tmp_path / "a.json")]) == 0
    table = json.loads(DEFAULT_TABLE.read_text())
    table["dram_64b"]["value"] *= 2
    (tmp_path / "table.json").write_text(json.dumps(table))
    assert main([*common, "--energy-table", str(tmp_path / "table.json"), "--fmax-mhz", "40", "--out",
                 str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["energy"] for n in "ab")
    assert a["energy_table"]["path"] == str(DEFAULT_TABLE) and b["energy_table"]["path"] == str(tmp_path / "table.json")
    assert b["by_class_uj"]["dram"] == pytest.approx(2 * a["by_class_uj"]["dram"], rel=1e-5)
    assert b["energy_uj_per_inference"] > a["energy_uj_per_inference"]
    assert a["clock_mhz"] == 100 and b["clock_mhz"] == 40 and b["clock_source"] == "achieved fmax (given)"
    assert a["cycles_per_inference"] == b["cycles_per_inference"] > 0
    assert "uJ per inference" in capsys.readouterr().out
    table["dram_64b"]["unit"] = "kJ"
    (tmp_path / "table.json").write_text(json.dumps(table))
    assert main([*common, "--energy-table", str(tmp_path / "table.json"), "--out", str(tmp_path / "c.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (f"python -m sw.evaluate: error: --energy-table {tmp_path / 'table.json'}: "
                                        f"dram_64b.unit must be one of fJ, pJ, nJ, not 'kJ'")
    assert not (tmp_path / "c.json").exists()


def test_data_free_evaluation_on_an_int3_engine(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(AcceleratorConfig(rows=8, cols=8, weight_format="int3", act_format="int8").to_json())
    assert main(["--config", str(config), "--data-free", "--images", "40", "--out", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["quantization"]["data_free"]["bias_correction"] is True
    assert result["weights"] == "int3" and result["golden_emulator_mismatches"] == 0
    assert result["accuracy"] > 0.8
    assert main(["--config", str(config), "--data-free", "--model", str(MODEL), "--calibrate", str(CALIBRATION),
                 "--check"]) == 2
    assert "--data-free takes no --calibrate" in capsys.readouterr().err
