"""The supported range of formats (hw/spec/formats.py), at its boundary: every format the parser accepts
compiles, runs golden == emulator and builds; one step beyond, the parser refuses it."""

import json

import numpy as np
import pytest

from hw.build import main as build
from hw.spec.config import AcceleratorConfig
from hw.spec.formats import MAX_EXP_BITS, MAX_MAN_BITS, FormatError, Minifloat, get_format
from sw.compile import compile_model
from sw.evaluate import DIGITS
from sw.runtime import run_codes

#: The extremes the range admits: the widest minifloat, both ends of its bias window, the narrowest ones.
EDGES = ["e5m10", "e5m10b-9", "e5m10b31", "e5m10ieee", "e3m2b-1", "e3m2b7", "e1m0b1", "e2m0", "int16", "int2"]


@pytest.mark.parametrize("name", ["e6m0", "e5m11", "e5m10b-10", "e5m10b32", "e3m2b-2", "e3m2b8", "e1m0", "int17"])
def test_one_step_beyond_is_refused(name):
    with pytest.raises(FormatError):
        get_format(name)


def test_the_bias_window_is_where_one_is_representable():
    for e in range(1, MAX_EXP_BITS + 1):
        for m in range(0, MAX_MAN_BITS + 1, 3):
            lo, hi = Minifloat(e, m, bias=(1 << (e - 1))).bias_range
            for bias in (lo, hi):
                values = np.abs(Minifloat(e, m, bias=bias).decode(np.arange(1 << (1 + e + m))))
                finite = values[np.isfinite(values) & (values > 0)]
                assert finite.min() <= 1.0 <= finite.max(), (e, m, bias)
            for bias in (lo - 1, hi + 1):
                with pytest.raises(FormatError, match="range must contain 1.0"):
                    Minifloat(e, m, bias=bias)


@pytest.mark.parametrize("name", EDGES)
def test_formats_at_the_edge_compile_and_run(name):
    config = AcceleratorConfig(rows=4, cols=4, weight_format=name, act_format=name)
    assert AcceleratorConfig.from_json(config.to_json()) == config
    compiled = compile_model(DIGITS / "digits_cnn.onnx", config, np.load(DIGITS / "calibration.npy")[:16],
                             log=lambda *_: None)
    with np.load(DIGITS / "test_set.npz") as data:
        codes = compiled.network.tensors[compiled.network.input].quantize(data["images"][:2])
    golden, emulated = run_codes(compiled, codes, "golden"), run_codes(compiled, codes, "emulator")
    np.testing.assert_array_equal(golden.codes, emulated.codes)


def test_the_widest_format_builds_and_its_config_loads_back(tmp_path):
    out = tmp_path / "e5m10"
    assert build(["--pe", "e5m10", "--rows", "2", "--no-synth", "--no-network", "--out", str(out)]) == 0
    config = AcceleratorConfig.from_json((out / "config.json").read_text())
    assert config.weights == get_format("e5m10") and config.acc_bits == json.loads(
        (out / "report.json").read_text())["derived"]["acc_bits"]
