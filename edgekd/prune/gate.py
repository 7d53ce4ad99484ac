"""The gate: a compressed artifact ships only when it is measurably faster and accurate enough.

The most common complaint about pruning and quantization tools is "the compressed model is no
faster on the device" (Torch-Pruning's own README: ResNet-50 with 11% fewer MACs ran slower;
NVIDIA/TensorRT#3884: 20% of channels pruned, 0% more FPS). So after pruning, the exported
artifact is measured again on the target and compared with its uncompressed twin: if its latency
did not drop by `min_speedup` (a fraction, 0.05 = 5%), or its accuracy on the artifact dropped by
more than `max_accuracy_drop_pt` points, the twin ships instead, and the reason says so with both
measurements. The same rule judges an INT8 artifact against its fp32 twin.

A latency that was not measured (a TensorRT target off a TensorRT host, a 2:4 artifact) cannot
prove a speed-up: the decision then rests on accuracy alone and says so (`verified` False).
A predicted latency may decide, labelled as predicted in the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ArtifactMeasurement:
    name: str  # what was measured, e.g. "pruned student INT8 (OpenVINO IR)"
    latency_ms: float | None  # batch-1 p50; None when it could not be measured here
    latency_source: str  # "measured", "predicted (...)", "not measured"
    accuracy: float  # top-1 of the artifact on held-out data, a fraction in [0, 1]


@dataclass(frozen=True)
class GateDecision:
    ship_candidate: bool  # False: roll back, the baseline ships
    verified: bool  # the speed-up was judged on measured (or predicted) latencies of both
    reason: str
    baseline: ArtifactMeasurement
    candidate: ArtifactMeasurement
    latency_drop: float | None  # 1 - candidate / baseline latency (0.3: 30% faster)
    accuracy_drop_pt: float  # baseline - candidate accuracy, in points (negative: gained)

    @property
    def shipped(self) -> ArtifactMeasurement:
        return self.candidate if self.ship_candidate else self.baseline

    def to_dict(self) -> dict:
        out = asdict(self)
        out["shipped"] = self.shipped.name
        return out


def decide(
    baseline: ArtifactMeasurement,
    candidate: ArtifactMeasurement,
    *,
    min_speedup: float = 0.05,
    max_accuracy_drop_pt: float = 1.0,
    step: str = "pruning",
    rollback: bool = True,
) -> GateDecision:
    """Ship `candidate` (the compressed artifact) or roll back to `baseline` (its uncompressed twin).

    `step` names the compression in the reason ("pruning", "INT8", "2:4 sparsity"). With
    `rollback` False the caller ships the candidate anyway and only reports the verdict (bench's
    INT8 check): the reason then says that it does not pay, not that it was rolled back."""
    if not 0.0 <= min_speedup < 1.0:
        raise ValueError(f"min_speedup is a fraction in [0, 1), got {min_speedup}")
    drop_pt = (baseline.accuracy - candidate.accuracy) * 100.0
    both = (f"{baseline.name}: {_describe(baseline)}; {candidate.name}: {_describe(candidate)}")
    accuracy_ok = drop_pt <= max_accuracy_drop_pt
    comparable = _comparable(baseline, candidate)
    if not comparable:
        reason = (f"{step} kept on accuracy alone (-{drop_pt:.2f} pt, limit {max_accuracy_drop_pt:g}): "
                  f"its speed-up is unverified, latency not measured on the target ({both})"
                  if accuracy_ok else
                  f"{step} {'rolled back' if rollback else 'does not pay'}: accuracy dropped {drop_pt:.2f} pt "
                  f"(limit {max_accuracy_drop_pt:g}); "
                  f"speed-up unverified ({both})")
        return GateDecision(accuracy_ok, False, reason, baseline, candidate, None, drop_pt)
    latency_drop = 1.0 - candidate.latency_ms / baseline.latency_ms
    label = "" if candidate.latency_source == "measured" else f" ({candidate.latency_source})"
    fast_enough = latency_drop >= min_speedup
    if fast_enough and accuracy_ok:
        reason = (f"{step} ships: {latency_drop:.1%} faster{label} (needs {min_speedup:.0%}), accuracy "
                  f"{_signed_pt(-drop_pt)} (limit -{max_accuracy_drop_pt:g} pt); {both}")
    else:
        why = []
        if not fast_enough:
            why.append(f"latency dropped only {latency_drop:.1%}{label}, less than the {min_speedup:.0%} required")
        if not accuracy_ok:
            why.append(f"accuracy dropped {drop_pt:.2f} pt, more than {max_accuracy_drop_pt:g}")
        verdict = f"{step} rolled back, {baseline.name} ships" if rollback else f"{step} does not pay"
        reason = f"{verdict}: {' and '.join(why)}; {both}"
    return GateDecision(fast_enough and accuracy_ok, True, reason, baseline, candidate, latency_drop, drop_pt)


def _comparable(a: ArtifactMeasurement, b: ArtifactMeasurement) -> bool:
    """Both latencies known and of one kind: two measurements, or two predictions."""
    if a.latency_ms is None or b.latency_ms is None or a.latency_ms <= 0:
        return False
    kinds = {_kind(a.latency_source), _kind(b.latency_source)}
    return kinds in ({"measured"}, {"predicted"})


def _kind(source: str) -> str:
    if source == "measured":
        return "measured"
    return "predicted" if source.startswith(("predicted", "extrapolated")) else "other"


def _describe(m: ArtifactMeasurement) -> str:
    latency = "latency not measured" if m.latency_ms is None else f"{m.latency_ms:.4g} ms {m.latency_source}"
    return f"{latency}, accuracy {m.accuracy:.2%}"


def _signed_pt(value: float) -> str:
    return f"{value:+.2f} pt"
