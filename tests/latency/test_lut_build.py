"""A real latency table: tiny blocks timed in OpenVINO at INT8, resumed after a simulated kill,
and a tiny model's prediction checked against its measured latency."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from edgekd.backends import get_backend
from edgekd.latency import LatencyPredictor, LatencyTable, build_lut, table_path
from edgekd.models import build_model
from edgekd.models.blocks import block_key, layer_plan
from edgekd.quantizers import get_quantizer
from edgekd.target import load_target

SHAPE = (1, 8, 8)
TINY = {"family": "resnet", "stem": 8, "widths": [8], "depths": [1]}  # stem 1->8, block 8->8, head 8->10
PROTOCOL = {"warmup": 5, "runs": 30}


@pytest.fixture()
def x86(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_BENCHMARKS_DIR", str(tmp_path))
    return load_target("x86-cpu")


def fresh_table(**changes) -> LatencyTable:
    openvino = get_backend("openvino")
    fields = {"target": "x86-cpu", "backend": "openvino", "backend_version": openvino.version(),
              "precision": "int8", "input_shape": list(SHAPE), "threads": None} | changes
    return LatencyTable(**fields)


def test_build_resumes_a_partial_table_and_predicts_a_tiny_model(x86):
    stem, block, head = layer_plan(TINY, SHAPE[0], 10, SHAPE[1:])
    path = table_path("x86-cpu", "int8", SHAPE)
    # A kill after the first block: the table on disk holds the head only.
    partial = fresh_table()
    partial.blocks[block_key(head)] = {"spec": head, "ms": 0.002, "raw_ms": 0.002, "one_ms": 0.05,
                                       "many_ms": 0.052, "copies": 2, "scheme": "parallel", "macs": 80,
                                       "activations": 82, "seconds": 0.0}
    partial.save(path)

    table = build_lut(x86, [stem, block, head, block], "int8", input_shape=SHAPE, rounds=2, **PROTOCOL)

    saved = json.loads(path.read_text())
    assert saved["blocks"][block_key(head)] == partial.blocks[block_key(head)]  # kept, not re-measured
    assert set(saved["blocks"]) == {block_key(s) for s in (stem, block, head)}
    assert saved["blocks"][block_key(block)]["scheme"] == "chain"
    assert saved["blocks"][block_key(stem)]["scheme"] == "parallel"
    assert all(row["ms"] >= 0 for row in saved["blocks"].values())
    assert saved["conditions"]["quantizer"].startswith("nncf ") and saved["empty_ms"] > 0
    stem_row = saved["blocks"][block_key(stem)]
    assert saved["overhead_ms"] == pytest.approx(stem_row["one_ms"] - stem_row["raw_ms"])  # the only stem
    # Each timed block says how much of the CPUs other processes took meanwhile (None off Linux).
    for spec in (stem, block):
        share = saved["blocks"][block_key(spec)]["others_cpu_share"]
        assert share is None or 0.0 <= share <= 1.0
    # Resuming the complete table times nothing and leaves the file as it was.
    before = path.read_text()
    build_lut(x86, [stem, block, head], "int8", input_shape=SHAPE, rounds=2, **PROTOCOL)
    assert path.read_text() == before

    # The tiny model itself, exported and timed as the search times a candidate.
    model = build_model(TINY, SHAPE[0], 10).eval()
    x = torch.rand(16, *SHAPE)
    openvino = get_backend("openvino")
    artifact = openvino.export(get_quantizer("nncf").prepare_int8(model, x), x[:1],
                               path.parent / "tiny-int8.xml", metadata={})
    measured = openvino.benchmark(artifact, **PROTOCOL).p50_ms
    predicted = LatencyPredictor(table, num_classes=10).predict_ms(TINY)
    # Loose: two tiny blocks on a shared 2-core machine, an uncalibrated table and a made-up head.
    assert measured / 3 < predicted < measured * 3, (predicted, measured)


def test_a_table_from_another_runtime_version_is_measured_again(x86):
    path = table_path("x86-cpu", "int8", SHAPE)
    stale = fresh_table(backend_version="2020.1")
    stale.blocks["old"] = {"spec": {"kind": "head"}, "ms": 1.0}
    stale.save(path)
    table = build_lut(x86, [], "int8", input_shape=SHAPE, **PROTOCOL)
    assert table.blocks == {} and table.backend_version == get_backend("openvino").version()
    assert json.loads(path.read_text())["blocks"] == {}


def test_a_precision_the_target_does_not_run_is_refused(x86):
    from edgekd.errors import UserError

    with pytest.raises(UserError, match="fp16"):
        build_lut(x86, [], "fp16", input_shape=SHAPE, **PROTOCOL)
