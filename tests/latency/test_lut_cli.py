"""`edgekd lut`: bad input fails with one line and exit 2; a complete table is reused, not re-measured."""

from __future__ import annotations

import json

import pytest

from edgekd.cli import main
from edgekd.config import SearchConfig
from edgekd.latency import LatencyTable, table_path
from edgekd.models.blocks import block_key
from edgekd.search.space import space_block_specs
from edgekd.target import load_target


@pytest.fixture(autouse=True)
def benchmarks_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_BENCHMARKS_DIR", str(tmp_path))
    return tmp_path


def error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edgekd: error:")]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(("argv", "message"), [
    (["--target", "x86cpu"], "unknown target 'x86cpu'"),
    (["--input-size", "3x224"], "--input-size must be CHANNELSxHEIGHTxWIDTH"),
    (["--input-size", "axbxc"], "--input-size must be CHANNELSxHEIGHTxWIDTH"),
    (["--input-size", "0x8x8"], "channels must be 1-64"),
    (["--precision", "fp16"], "--precision 'fp16': target x86-cpu runs fp32, int8"),
    (["--num-classes", "0"], "--num-classes must be at least 1"),
    (["--data", "/no/such/dir"], "does not exist"),
    (["--set", "search.familes=['resnet']"], "did you mean 'families'"),
    (["--set", "search.families=['vgg']"], "search.families"),
])
def test_bad_input_exits_2_with_one_line(argv, message, capsys, benchmarks_dir):
    assert main(["lut", *argv]) == 2
    assert message in error_line(capsys)
    assert list(benchmarks_dir.iterdir()) == []


def test_input_size_and_data_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["lut", "--input-size", "1x8x8", "--data", "somewhere"])
    assert exit_info.value.code == 2


def test_a_complete_table_is_reused(capsys):
    from edgekd.backends import get_backend

    space = ["search.families=['resnet']", "search.width_multipliers=[0.25]", "search.depth_options=[1]"]
    settings = SearchConfig(families=["resnet"], width_multipliers=[0.25], depth_options=[1])
    specs = space_block_specs(settings, 1, 10, (8, 8), load_target("x86-cpu").channel_multiple)
    table = LatencyTable(target="x86-cpu", backend="openvino", backend_version=get_backend("openvino").version(),
                         precision="int8", input_shape=[1, 8, 8], threads=None, overhead_ms=0.04,
                         blocks={block_key(s): {"spec": s, "ms": 0.01} for s in specs})
    path = table_path("x86-cpu", "int8", (1, 8, 8))
    table.save(path)
    argv = ["lut", "--input-size", "1x8x8", "--set", "search.warmup=1", "--set", "search.runs=3"]
    for item in space:
        argv += ["--set", item]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"latency table: {path}" in out and f"{len(specs)} blocks of the search space ({len(specs)} in" in out
    assert json.loads(path.read_text())["blocks"] == table.blocks
