"""The gate: a pruning (or INT8) that does not pay in measured latency, or costs too much accuracy
on the artifact, is rolled back, and the reason gives both measurements."""

from __future__ import annotations

import pytest
import torch

from edgekd.prune.channels import prune_channels
from edgekd.prune.gate import ArtifactMeasurement, decide

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def m(name: str, ms: float | None, accuracy: float, source: str = "measured") -> ArtifactMeasurement:
    return ArtifactMeasurement(name, ms, source, accuracy)


def test_a_pruning_that_is_not_faster_rolls_back_with_both_measurements():
    decision = decide(m("unpruned", 10.0, 0.90), m("pruned", 9.8, 0.90))
    assert not decision.ship_candidate and decision.verified
    assert decision.shipped.name == "unpruned"
    assert "rolled back" in decision.reason and "2.0%" in decision.reason and "5%" in decision.reason
    assert "10 ms measured" in decision.reason and "9.8 ms measured" in decision.reason
    assert decision.latency_drop == pytest.approx(0.02)


def test_a_slower_pruned_model_rolls_back():
    # Torch-Pruning's README: ResNet-50 at ratio 0.05 had 11% fewer MACs and ran slower.
    decision = decide(m("unpruned", 45.2, 0.76), m("pruned", 46.5, 0.76))
    assert not decision.ship_candidate and decision.latency_drop < 0


def test_too_much_accuracy_lost_rolls_back_even_when_faster():
    decision = decide(m("unpruned", 10.0, 0.90), m("pruned", 5.0, 0.885), max_accuracy_drop_pt=1.0)
    assert not decision.ship_candidate
    assert "accuracy dropped 1.50 pt" in decision.reason


def test_faster_and_accurate_enough_ships():
    decision = decide(m("unpruned", 10.0, 0.90), m("pruned", 6.0, 0.897), min_speedup=0.05, max_accuracy_drop_pt=0.5)
    assert decision.ship_candidate and decision.shipped.name == "pruned"
    assert "40.0% faster" in decision.reason and decision.accuracy_drop_pt == pytest.approx(0.3)
    assert decision.to_dict()["shipped"] == "pruned"


def test_the_same_rule_judges_int8_against_its_fp32_twin():
    decision = decide(m("student fp32", 0.129, 0.910), m("student INT8", 0.126, 0.909), step="INT8")
    assert not decision.ship_candidate
    assert decision.reason.startswith("INT8 rolled back, student fp32 ships")


def test_an_unmeasured_latency_is_never_taken_as_a_speed_up():
    decision = decide(m("dense", None, 0.90, "not measured"), m("2:4", None, 0.899, "not measured"),
                      step="2:4 sparsity")
    assert decision.ship_candidate and not decision.verified
    assert "unverified" in decision.reason and decision.latency_drop is None
    mixed = decide(m("unpruned", 10.0, 0.90), m("pruned", 1.0, 0.90, "predicted (analytical)"))
    assert not mixed.verified, "a prediction is never compared with a measurement"
    predicted = decide(m("a", 2.0, 0.9, "predicted (analytical)"), m("b", 1.0, 0.9, "predicted (analytical)"))
    assert predicted.verified and "(predicted (analytical))" in predicted.reason


def test_a_real_pruning_without_recovery_is_rolled_back_on_artifact_accuracy(tmp_path):
    """End to end on real artifacts: a tiny network trained on real digits, pruned to a quarter of
    its channels with no recovery, exported to OpenVINO; accuracy and latency measured on the IR."""
    from prune_patterns import RESNET

    from edgekd.backends import openvino
    from edgekd.data import load_dataset
    from edgekd.models import build_model
    from edgekd.training import fit

    data = load_dataset(None)
    torch.manual_seed(0)
    model = build_model(RESNET, 1, 10)
    fit(model, data.train, data.val, lambda logits, y, _i, _e: torch.nn.functional.cross_entropy(logits, y),
        epochs=6, lr=0.01, batch_size=32, patience=6, seed=0)
    pruned = prune_channels(model, data.train.x[:2], channel_multiple=8, ratio=0.75).model
    measured = {}
    for name, net in (("unpruned", model), ("pruned", pruned)):
        path = openvino.export(net, data.train.x[:1], tmp_path / f"{name}.xml", metadata={})
        latency = openvino.benchmark(path, warmup=5, runs=30)
        measured[name] = m(name, latency.p50_ms, openvino.accuracy(path, data.test.x, data.test.y))
    decision = decide(measured["unpruned"], measured["pruned"], min_speedup=0.05, max_accuracy_drop_pt=0.5)
    assert measured["unpruned"].accuracy > 0.8
    assert measured["unpruned"].accuracy - measured["pruned"].accuracy > 0.005
    assert not decision.ship_candidate and "accuracy dropped" in decision.reason
