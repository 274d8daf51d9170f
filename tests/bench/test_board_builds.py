"""bench/board_builds.py's results against the tree: the README's board table is bench/results/board_builds.json
rendered, and each row's digits-CNN cycles and memory image are what the compiler and the emulator's cycle model
give now. A compiler or cycle-model change that moves them fails here until ``python bench/board_builds.py`` is
rerun (its place and route is cached by the Verilog's digest, so the rerun costs seconds when only software moved)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))        # as when the script runs, for the import only: bench/'s module
try:                                            # names (network, energy, ...) stay off the path of other tests
    import board_builds  # noqa: E402
finally:
    sys.path.remove(str(ROOT / "bench"))

RECORDS = json.loads((ROOT / "bench" / "results" / "board_builds.json").read_text())["records"]


def test_the_readme_board_table_is_the_results_rendered():
    readme = (ROOT / "README.md").read_text()
    start, end = (readme.index(m) for m in board_builds.MARKERS)
    assert readme[start + len(board_builds.MARKERS[0]):end].strip() == board_builds._readme_table(RECORDS)


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: r["run"])
def test_the_digits_figures_of_each_board_are_current(record):
    config = board_builds._config(*board_builds.RUNS[record["run"]])
    assert board_builds._digits(config) == (record["digits_cycles"], record["digits_image_bytes"]), \
        "stale: rerun python bench/board_builds.py"
