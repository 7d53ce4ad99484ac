"""Latency-guided per-group channel counts, NetAdapt-style (Yang et al., ECCV 2018).

A uniform ratio removes channels where they are cheap to remove but may buy no time on the target:
a layer whose latency is per-call overhead, or whose width already sits on a fast multiple, runs
as fast with fewer MACs. So each step tries, for every channel group, removing one more slice of
its channels, times each candidate *on the target* (the latency function: measured on the backend,
or predicted and labelled so), and keeps the candidate that costs the least output damage per
millisecond saved. Groups whose removal saves no time are not pruned. It stops at the latency goal,
after `max_steps` steps, or when no group saves time any more. FLOPs are never the objective.

Damage is the change of `score_fn` (higher is better; e.g. validation accuracy), or by default the
KL divergence of the candidate's outputs from the unpruned model's on a batch: no labels and no
training needed, and it tracks what short-term fine-tuning in NetAdapt measures, the accuracy lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from edgekd import interrupt
from edgekd.errors import UserError
from edgekd.prune.channels import Plan, kept_channels, prune_channels, uniform_plan
from edgekd.prune.groups import GroupAnalysis, analyse_groups, channel_step

log = logging.getLogger(__name__)

LatencyFn = Callable[[nn.Module], tuple[float, str]]  # model -> (ms, "measured" | "predicted (...)")
ScoreFn = Callable[[nn.Module], float]  # higher is better


@dataclass
class LatencyStep:
    step: int
    group: str  # the group pruned in this step
    kept: int  # its channels after the step
    latency_ms: float
    saved_ms: float  # against the model before this step, timed in the same step
    damage: float
    candidates: list[dict] = field(default_factory=list)  # every group tried: kept, ms, saved, damage


@dataclass
class LatencyGuidedResult:
    plan: Plan
    baseline_ms: float
    final_ms: float
    goal_ms: float
    latency_source: str
    steps: list[LatencyStep]
    stop_reason: str
    latency_calls: int

    @property
    def reached_goal(self) -> bool:
        return self.final_ms <= self.goal_ms

    def to_dict(self) -> dict:
        out = asdict(self)
        out["reached_goal"] = self.reached_goal
        return out


def kl_damage(reference: nn.Module, batch: torch.Tensor) -> ScoreFn:
    """A score (higher is better): minus the KL divergence of a model's softmax outputs from
    `reference`'s on `batch`."""
    with torch.no_grad():
        target = F.log_softmax(_eval(reference)(batch), dim=1)

    def score(model: nn.Module) -> float:
        with torch.no_grad():
            out = F.log_softmax(_eval(model)(batch), dim=1)
        return -float(F.kl_div(out, target, reduction="batchmean", log_target=True))

    return score


def latency_guided_plan(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    latency_fn: LatencyFn,
    goal_ms: float,
    channel_multiple: int,
    score_fn: ScoreFn | None = None,
    score_batch: torch.Tensor | None = None,
    importance: str = "magnitude",
    max_steps: int = 8,
    step_fraction: float = 0.125,
    min_saving: float = 0.01,
    ignored_layers: tuple[str, ...] = (),
    analysis: GroupAnalysis | None = None,
) -> LatencyGuidedResult:
    """Channels kept per group so that `latency_fn(pruned model)` reaches `goal_ms`.

    Each step removes `step_fraction` of one group's original channels (at least one channel
    step), chosen among all groups as the least damage per ms saved; a candidate counts only if it
    saves `min_saving` (a fraction) of the current latency, more than timing noise. At most
    `max_steps` steps, each timing every prunable group once."""
    if goal_ms <= 0:
        raise UserError(f"the latency goal must be positive, got {goal_ms} ms")
    if max_steps < 1:
        raise UserError(f"prune.max_steps must be at least 1, got {max_steps}")
    if score_fn is None:
        if score_batch is None:
            raise ValueError("give score_fn, or score_batch for the default output-fidelity score")
        score_fn = kl_damage(model, score_batch)
    if analysis is None:
        analysis = analyse_groups(model, example_input, channel_multiple=channel_multiple,
                                  ignored_layers=ignored_layers, importance=importance)
    groups = {g.name: g for g in analysis.groups}
    plan: Plan = {name: g.width for name, g in groups.items()}
    baseline_ms, source = latency_fn(model)
    current_ms, current_score, calls = baseline_ms, score_fn(model), 1
    steps: list[LatencyStep] = []
    stop = "the unpruned model already meets the goal" if baseline_ms <= goal_ms else f"{max_steps} steps done"
    for step in range(1, max_steps + 1):
        if current_ms <= goal_ms:
            stop = f"goal reached after {step - 1} steps"
            break
        current_model = _pruned(model, example_input, plan, channel_multiple, importance, analysis)
        current_ms, _ = latency_fn(current_model)  # again, beside this step's candidates
        calls += 1
        candidates = []
        for name, group in groups.items():
            interrupt.check()
            kept = _one_slice_less(group.width, plan[name], step_fraction, channel_step(channel_multiple,
                                                                                         group.channel_groups))
            if kept is None:
                continue
            trial_plan = {**plan, name: kept}
            trial = _pruned(model, example_input, trial_plan, channel_multiple, importance, analysis)
            if trial is None:
                continue
            ms, _ = latency_fn(trial)
            calls += 1
            damage = current_score - score_fn(trial)
            candidates.append({"group": name, "kept": kept, "latency_ms": ms, "saved_ms": current_ms - ms,
                               "damage": damage})
        useful = [c for c in candidates if c["saved_ms"] >= min_saving * current_ms]
        if not useful:
            stop = (f"no group saves {min_saving:.0%} of the latency any more (step {step})" if candidates
                    else f"every group is at its narrowest (step {step})")
            break
        best = min(useful, key=lambda c: max(c["damage"], 0.0) / c["saved_ms"])
        plan[best["group"]] = best["kept"]
        current_ms, current_score = best["latency_ms"], current_score - best["damage"]
        steps.append(LatencyStep(step, best["group"], best["kept"], best["latency_ms"], best["saved_ms"],
                                 best["damage"], candidates))
        log.info("prune step %d: %s -> %d channels, %.4g ms %s (%.4g ms saved; goal %.4g ms)", step,
                 best["group"], best["kept"], best["latency_ms"], source, best["saved_ms"], goal_ms)
    else:
        if current_ms <= goal_ms:
            stop = f"goal reached after {max_steps} steps"
    final = {name: kept for name, kept in plan.items() if kept < groups[name].width}
    return LatencyGuidedResult(final, baseline_ms, current_ms, goal_ms, source, steps, stop, calls)


def match_uniform_ratio(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    latency_fn: LatencyFn,
    target_ms: float,
    channel_multiple: int,
    analysis: GroupAnalysis | None = None,
    max_calls: int = 6,
    low: float = 0.0,
    high: float = 0.9,
) -> tuple[float, Plan, float]:
    """The uniform ratio whose pruned model is timed closest to `target_ms` (bisection, at most
    `max_calls` latency calls): the baseline a latency-guided plan is compared with at the same
    measured latency. Returns (ratio, plan, ms)."""
    if analysis is None:
        analysis = analyse_groups(model, example_input, channel_multiple=channel_multiple)
    best = (0.0, {}, float("inf"))
    for _ in range(max_calls):
        ratio = (low + high) / 2
        plan = uniform_plan(analysis, ratio, channel_multiple)
        pruned = prune_channels(model, example_input, channel_multiple=channel_multiple, plan=plan,
                                analysis=analysis).model
        ms, _ = latency_fn(pruned)
        if abs(ms - target_ms) < abs(best[2] - target_ms):
            best = (ratio, plan, ms)
        if ms > target_ms:
            low = ratio
        else:
            high = ratio
    return best


def _one_slice_less(width: int, kept_now: int, fraction: float, step: int) -> int | None:
    """`kept_now` minus `fraction` of the original `width`, at least one step less, on the step;
    None when the group is already at one step."""
    wanted = kept_channels(width, (kept_now - max(fraction * width, step)) / width, step)
    wanted = min(wanted, kept_now - step)
    return wanted if wanted >= step else None


def _pruned(model, example_input, plan, multiple, importance, analysis) -> nn.Module | None:
    result = prune_channels(model, example_input, channel_multiple=multiple, importance=importance,
                            analysis=analysis, plan={n: k for n, k in plan.items()
                                                     if k < analysis.group(n).width})
    wanted = {n for n, k in plan.items() if k < analysis.group(n).width}
    return result.model if set(result.plan) == wanted else None


def _eval(model: nn.Module) -> nn.Module:
    model.eval()
    return model
