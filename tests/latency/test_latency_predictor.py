"""The predictor on a hand-written table: exact sums, calibration, extrapolation of missing blocks."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.errors import UserError
from edgekd.latency import (
    LatencyPredictor,
    LatencyTable,
    append_record,
    block_features,
    fit_calibration,
    table_path,
)
from edgekd.models.blocks import block_key, layer_plan

SHAPE = (1, 8, 8)
TINY = {"family": "resnet", "stem": 8, "widths": [8, 16], "depths": [1, 1]}  # stem, 8->8, 8->16 s2, head
WIDE = {"family": "resnet", "stem": 16, "widths": [16, 16], "depths": [1, 1]}
DEEP = {"family": "resnet", "stem": 8, "widths": [8, 16], "depths": [2, 1]}


def plan(record, classes=10):
    return layer_plan(record, SHAPE[0], classes, SHAPE[1:])


def make_table(costs: dict[str, float], overhead_ms: float = 0.05, features=None) -> LatencyTable:
    """A table with `costs` (block key -> ms); MACs/activations from `features` when given."""
    specs = {block_key(s): s for r in (TINY, WIDE, DEEP) for s in plan(r)}
    blocks = {}
    for key, ms in costs.items():
        macs, acts = (features or {}).get(key, (1000, 100))
        blocks[key] = {"spec": specs[key], "ms": ms, "macs": macs, "activations": acts}
    return LatencyTable(target="x86-cpu", backend="openvino", backend_version="test", precision="int8",
                        input_shape=list(SHAPE), threads=None, overhead_ms=overhead_ms, blocks=blocks)


def all_blocks_table() -> LatencyTable:
    """Every block of TINY/WIDE/DEEP, the i-th distinct block costing (i + 1) / 1000 ms."""
    keys = list(dict.fromkeys(block_key(s) for r in (TINY, WIDE, DEEP) for s in plan(r)))
    return make_table({key: (i + 1) / 1000 for i, key in enumerate(keys)})


def test_prediction_is_overhead_plus_the_block_costs():
    keys = [block_key(s) for s in plan(TINY)]
    predictor = LatencyPredictor(make_table(dict(zip(keys, [0.010, 0.020, 0.030, 0.004]))), num_classes=10)
    assert predictor.predict_ms(TINY) == pytest.approx(0.05 + 0.010 + 0.020 + 0.030 + 0.004)
    assert predictor.last_missing == []
    detail = predictor.detail(TINY)
    assert [b["ms"] for b in detail["blocks"]] == [0.010, 0.020, 0.030, 0.004]
    assert {b["source"] for b in detail["blocks"]} == {"table"} and detail["extrapolated"] == 0


def test_a_repeated_block_counts_once_per_use():
    table = all_blocks_table()
    predictor = LatencyPredictor(table, num_classes=10)
    expected = table.overhead_ms + sum(table.blocks[block_key(s)]["ms"] for s in plan(DEEP))
    assert predictor.predict_ms(DEEP) == pytest.approx(expected)
    assert len(plan(DEEP)) == 5 and len({block_key(s) for s in plan(DEEP)}) == 4  # 8->8 twice


def test_calibration_fits_the_line_through_the_records():
    predictor = LatencyPredictor(all_blocks_table(), num_classes=10)
    raw = {name: predictor.table_ms(r) for name, r in (("tiny", TINY), ("wide", WIDE), ("deep", DEEP))}
    records = [{"arch": r, "input_shape": list(SHAPE), "precision": "int8", "measured_p50_ms": 2 * raw[n] + 0.1}
               for n, r in (("tiny", TINY), ("wide", WIDE), ("deep", DEEP))]
    assert predictor.calibrate(records) == pytest.approx((2.0, 0.1))
    assert predictor.calibration["method"] == "affine" and predictor.calibration["records"] == 3
    assert predictor.predict_ms(TINY) == pytest.approx(2 * raw["tiny"] + 0.1)


def test_fewer_than_three_records_scale_only():
    predictor = LatencyPredictor(all_blocks_table(), num_classes=10)
    x = np.array([predictor.table_ms(TINY), predictor.table_ms(WIDE)])
    y = np.array([1.4, 1.7]) * x
    records = [{"arch": r, "input_shape": list(SHAPE), "precision": "int8", "measured_p50_ms": m}
               for r, m in zip((TINY, WIDE), y)]
    scale, offset = predictor.calibrate(records)
    assert (scale, offset) == pytest.approx((float(x @ y / (x @ x)), 0.0))
    assert predictor.calibration["method"] == "scale"


def test_absurd_fits_are_refused():
    # The line through (1, 0.1), (2, 0.2), (3, 6) predicts -0.85 ms for the fastest record: scale only,
    # (0.1 + 0.4 + 18) / (1 + 4 + 9).
    assert fit_calibration(np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 6.0])) == \
        pytest.approx((18.5 / 14, 0.0, "scale"))
    # Measured 50x the table: the table is wrong for this device; nothing is applied.
    assert fit_calibration(np.array([1.0, 2.0, 3.0]), np.array([50.0, 100.0, 150.0])) == (1.0, 0.0, "refused")
    assert fit_calibration(np.array([]), np.array([])) == (1.0, 0.0, "none")


def test_records_of_another_shape_do_not_calibrate():
    predictor = LatencyPredictor(all_blocks_table(), num_classes=10)
    records = [{"arch": TINY, "input_shape": [3, 32, 32], "precision": "int8", "measured_p50_ms": 9.0}]
    assert predictor.calibrate(records) == (1.0, 0.0)


def test_a_missing_head_is_extrapolated_from_the_head_rows_and_flagged():
    five, ten = plan(TINY, classes=5)[-1], plan(TINY, classes=10)[-1]  # 16 channels -> 5 / 10 classes
    costs = {block_key(s): 0.01 for s in plan(TINY)[:-1]} | {block_key(five): 0.004}
    table = make_table({}, overhead_ms=0.05)
    table.blocks = {key: {"spec": s, "ms": costs[key], "macs": 80, "activations": 100}
                    for s in plan(TINY)[:-1] + [five] for key in [block_key(s)]}
    predictor = LatencyPredictor(table, num_classes=10)
    # One head row: ms per MAC = 0.004 / 80; the 10-class head has 16 x 10 = 160 MACs -> 0.008 ms.
    assert predictor.predict_ms(TINY) == pytest.approx(0.05 + 3 * 0.01 + 0.008)
    assert predictor.last_missing == [block_key(ten)]
    assert predictor.detail(TINY)["extrapolated"] == 1


def test_with_three_rows_a_kind_is_fit_on_macs_and_activations():
    def cost(macs, acts):
        return 0.002 + 0.001 * macs / 1e6 + 0.5 * acts / 1e6

    rows_at = [(1e6, 1e3), (2e6, 5e3), (3e6, 2e3), (5e6, 8e3)]
    known = [s for s in plan(WIDE) + plan(TINY) if s["kind"] == "resnet_basic"][:4]
    assert len({block_key(s) for s in known}) == 4
    table = make_table({}, overhead_ms=0.0)
    table.blocks = {block_key(s): {"spec": s, "ms": cost(*f), "macs": f[0], "activations": f[1]}
                    for s, f in zip(known, rows_at)}
    other = {"family": "resnet", "stem": 8, "widths": [24, 32], "depths": [1, 1]}
    new = [s for s in plan(other) if s["kind"] == "resnet_basic"]
    predictor = LatencyPredictor(table, num_classes=10)
    features = block_features(new[0])
    assert predictor._extrapolate_ms(new[0]) == pytest.approx(cost(features["macs"], features["activations"]))


def test_load_calibrates_on_the_targets_records(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_BENCHMARKS_DIR", str(tmp_path))
    table = all_blocks_table()
    with pytest.raises(UserError, match="edgekd lut --target x86-cpu --input-size 1x8x8"):
        LatencyPredictor.load("x86-cpu", SHAPE, "int8", 10)
    table.save(table_path("x86-cpu", "int8", SHAPE))
    plain = LatencyPredictor(table, num_classes=10)
    for r in (TINY, WIDE, DEEP):
        append_record("x86-cpu", {"arch": r, "input_shape": list(SHAPE), "precision": "int8",
                                  "measured_p50_ms": 3 * plain.table_ms(r) + 0.02, "num_classes": 10})
    loaded = LatencyPredictor.load("x86-cpu", SHAPE, "int8", 10)
    assert (loaded.scale, loaded.offset) == pytest.approx((3.0, 0.02))
    assert loaded.stale.startswith("measured with openvino test, ")  # the table names another runtime
