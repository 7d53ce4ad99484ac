"""What each stage hands to the next: typed results, saved in the run dir's state.json.

Stages talk through these, never through each other's modules. Every latency in them is a
`Latency` (value + source). The budget has one owner: the search decides it (`Budget`), and
`check_budget` is the one place that says whether the shipped artifact meets it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from edgekd.latency.source import Latency, combined_source

# ---- search -----------------------------------------------------------------------------------


@dataclass
class Budget:
    ms: float
    origin: str  # where the number comes from: "--budget-ms", or the teacher's latency / speed-up
    teacher: Latency  # the teacher's latency the search saw, at the precision it would ship in


@dataclass
class FrontPoint:
    name: str
    score: float
    latency: Latency
    params: int


@dataclass
class Finalist:
    """A front candidate checked on the device: measured when the device can run it."""

    name: str
    estimate: Latency  # what the front ranked it by (a prediction, or the search's measurement)
    measured: Latency | None  # None: the device cannot run here (see not_measured)
    fits: bool
    not_measured: str | None = None


@dataclass
class Attempt:
    """One student shipped by the feedback loop: its latency in the search and in bench."""

    student: str
    search_latency: Latency
    bench_latency: Latency
    accuracy: float
    budget_ms: float
    budget_met: bool


@dataclass
class SearchResult:
    budget: Budget
    limit_ms: float  # budget x margin: candidates above it do not fit
    score: str
    study: str
    latency_setting: str  # what was asked: auto, predicted or measured
    latency_mode: str  # what was used: "measured" or "predicted"
    trials: int
    candidates: int
    fitting: int
    front: list[FrontPoint]
    front_index: int
    finalists: list[Finalist]
    chosen: str
    chosen_arch: dict[str, Any]
    chosen_score: float
    chosen_estimate: Latency  # the front's latency of the chosen student
    chosen_measured: Latency | None  # its measurement in the search, when the device ran it
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def chosen_latency(self) -> Latency:
        """The best the search knows: the measurement when there is one, else the estimate."""
        return self.chosen_measured or self.chosen_estimate


# ---- distill ----------------------------------------------------------------------------------


@dataclass
class DistillResult:
    arch: str
    teacher_val_accuracy: float
    fp32_val_accuracy: float
    fp32_epochs: int
    fp32_history: list[dict[str, Any]]
    loss: str
    init: str
    teacher_cache: str
    augment: bool
    fp32_checkpoint: str  # relative to the run dir
    feature_kd: dict[str, Any] | None = None
    processes: int = 1  # torchrun processes that trained the student together (DDP); 1 without torchrun
    # INT8 targets only
    int8_checkpoint: str | None = None
    int8_mode: str | None = None
    quantizer: str | None = None
    calibration: str | None = None
    int8_ptq_val_accuracy: float | None = None
    int8_val_accuracy: float | None = None
    int8_epochs: int | None = None
    int8_history: list[dict[str, Any]] | None = None
    int8_excluded: list[str] | None = None
    sensitivity: dict[str, Any] | None = None
    seconds: float = 0.0


# ---- prune ------------------------------------------------------------------------------------


@dataclass
class GateSide:
    """One artifact the prune gate compared: its latency on the target (None: not measured here,
    e.g. a 2:4 engine off a TensorRT host) and its accuracy on the validation split."""

    name: str
    latency: Latency | None
    accuracy: float
    accuracy_source: str
    not_measured: str | None = None


@dataclass
class PruneResult:
    """What the prune stage did, and whether the pruned model ships (`shipped`): the gate compares
    the pruned artifact with the unpruned one on the target; `rolled_back` holds the reason when
    it did not pay, and then the unpruned student ships."""

    ran: bool  # False: prune.enabled and prune.sparse_2_4 are off
    reason: str  # one line: what happened, with both measurements
    flow: str | None = None  # "search" (the searched student pruned) or "teacher" (the teacher pruned)
    method: str | None = None  # "channels" (structured, Torch-Pruning) or "2:4" (sparsity)
    shipped: bool = False
    rolled_back: str | None = None
    arch: dict[str, Any] | None = None  # the record the pruned model narrows (the student's, or the teacher's)
    plan: dict[str, Any] = field(default_factory=dict)  # channels before/after, skipped layers, MACs, or 2:4 layers
    allocation: dict[str, Any] | None = None  # the latency-guided search's steps, goal and stop reason
    recovery: dict[str, Any] | None = None  # mode, epochs, best val accuracy (fp32 and INT8)
    baseline: GateSide | None = None  # the unpruned artifact
    candidate: GateSide | None = None  # the pruned artifact
    latency_drop: float | None = None  # 1 - candidate / baseline latency (0.3: 30% faster)
    latency_drop_source: str | None = None
    accuracy_drop_pt: float | None = None
    precision: str | None = None  # of the two artifacts compared (the target's deployed precision)
    fp32_checkpoint: str | None = None  # the pruned float model's weights, relative to the run dir
    int8_checkpoint: str | None = None  # its QAT model, INT8 targets only
    seconds: float = 0.0


# ---- export -----------------------------------------------------------------------------------


@dataclass
class ExportResult:
    artifacts: dict[str, str]  # role (teacher, student_fp32, student_int8, ...) -> path in the run dir
    backend: str
    backend_version: str
    details: dict[str, Any] = field(default_factory=dict)  # the backend's own: checks, build commands
    seconds: float = 0.0


# ---- bench ------------------------------------------------------------------------------------


@dataclass
class ModelBench:
    arch: str
    precision: str
    params: int
    macs: int | None
    latency: Latency
    throughput_ips: float | None  # None where nothing was timed
    throughput_batch: int
    accuracy: float
    accuracy_source: str
    size_mb: float
    artifact: str
    size_of: str | None = None
    timings_ms: list[float] | None = None  # every timed batch-1 call, for the report's histogram
    # What the runtime says beyond the percentiles (edgekd/bench/profile.py): per-layer time and
    # precision, first-load time, peak memory; or why it is not measured
    profile: dict[str, Any] | None = None
    # Measured on a device over SSH: that device's CPU, runtime, host and any devices that failed first
    device_conditions: dict[str, Any] | None = None


@dataclass
class BenchResult:
    models: dict[str, ModelBench]  # teacher, student_fp32, and student_int8 for INT8 targets
    conditions: dict[str, Any]
    not_measured: str | None = None
    # INT8 against its fp32 twin, by the prune gate's rule (edgekd/prune/gate.py): an INT8 artifact
    # that is not faster is never shipped silently (a warning, and a finding in the report)
    int8_gate: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def deployed_key(self) -> str:
        return "student_int8" if "student_int8" in self.models else "student_fp32"

    @property
    def deployed(self) -> ModelBench:
        """The artifact that ships."""
        return self.models[self.deployed_key]

    @property
    def speedup(self) -> float:
        return self.models["teacher"].latency.ms / self.deployed.latency.ms

    @property
    def speedup_source(self) -> str:
        return combined_source(self.models["teacher"].latency, self.deployed.latency)


@dataclass
class BudgetCheck:
    budget_ms: float
    latency: Latency  # the shipped artifact's, from bench
    met: bool


def check_budget(search: SearchResult, bench: BenchResult) -> BudgetCheck:
    """Whether the shipped artifact meets the search's budget, on bench's latency (with its source)."""
    latency = bench.deployed.latency
    return BudgetCheck(budget_ms=search.budget.ms, latency=latency, met=latency.ms <= search.budget.ms)


# ---- report -----------------------------------------------------------------------------------


@dataclass
class ReportResult:
    report_json: str
    report_md: str
    budget_met: bool
    budget_met_source: str
    seconds: float = 0.0


RESULT_TYPES: dict[str, type] = {
    "search": SearchResult, "distill": DistillResult, "prune": PruneResult, "export": ExportResult, "bench": BenchResult,
    "report": ReportResult,
}


# ---- saving and loading -----------------------------------------------------------------------


def to_plain(result: Any) -> dict[str, Any]:
    """JSON-ready dict of a result (nested dataclasses become dicts)."""
    return dataclasses.asdict(result)


def from_plain(cls: Any, data: Any) -> Any:
    """The inverse of to_plain for the annotations used above: dataclasses, list[X], dict[str, X],
    X | None, and plain values. A mismatch raises TypeError or KeyError (an older run dir)."""
    origin = typing.get_origin(cls)
    if origin in (typing.Union, types.UnionType):
        options = [option for option in typing.get_args(cls) if option is not type(None)]
        if data is None:
            return None
        return from_plain(options[0], data) if len(options) == 1 else data
    if origin is list:
        (item,) = typing.get_args(cls)
        return [from_plain(item, value) for value in data]
    if origin is dict:
        _, item = typing.get_args(cls)
        return {key: from_plain(item, value) for key, value in data.items()}
    if dataclasses.is_dataclass(cls):
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__} needs a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        return cls(**{key: from_plain(hints[key], value) for key, value in data.items()})
    return data
