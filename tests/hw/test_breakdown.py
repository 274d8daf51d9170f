"""python -m hw.breakdown: its configuration file and its table (the synthesis is tests/hw/test_synth.py's)."""

import json

import pytest

from hw.breakdown import config_from_file, main, table
from hw.spec.cli import UsageError
from hw.spec.config import AcceleratorConfig

SMALL = AcceleratorConfig(rows=1, cols=1, weight_format="int4", act_format="int4", command_queue_depth=1)


def test_config_from_a_configuration_or_a_report(tmp_path):
    plain, report = tmp_path / "config.json", tmp_path / "report.json"
    plain.write_text(SMALL.to_json())
    report.write_text(json.dumps({"board": "icebreaker", "config": SMALL.to_dict(), "fits": False}))
    assert config_from_file(plain) == config_from_file(report) == SMALL


@pytest.mark.parametrize("text, message", [
    ("{", r"--config .*: not JSON"),
    ('{"rows": 0}', r"--config .*: rows must be an integer in 1\.\.128"),
    ('{"config": {"colour": 1}}', r"--config .*: Unknown configuration field\(s\) colour"),
    ("[1]", r"--config .*: A configuration must be a JSON object"),
])
def test_bad_configuration_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(UsageError, match=message):
        config_from_file(path)


def test_a_missing_file_exits_2_naming_it(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"python -m hw.breakdown: error: --config {tmp_path / 'none.json'}: No such file or directory"]


def test_table_rows_and_failures():
    results = {"top": {"luts": 1234, "carries": 5, "flipflops": 6, "dsps": 1, "brams": 2},
               "top.decoder": {"error": "yosys failed"}}
    lines = table(results).splitlines()
    assert lines[2] == "| top | 1,234 | 5 | 6 | 1 | 2 |"
    assert lines[3] == "| top.decoder | yosys failed |  |  |  |  |"
