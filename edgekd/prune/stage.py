"""Prune: make the shipped model faster on the device, or step aside.

Where it sits: search -> distill -> **prune** -> export -> bench -> report. Distillation trains the
student in fp32 and, on INT8 targets, quantization-aware (the unpruned twin). This stage then:

1. takes the float model to prune: the distilled student (prune.flow "search"), or a copy of the
   teacher itself (prune.flow "teacher");
2. removes channels with Torch-Pruning, widths on the target's channel multiple, per-group counts
   from the latency-guided search (measured on the target's backend, or predicted and labelled so)
   or one ratio; or, with prune.sparse_2_4 on a TensorRT target, applies 2:4 masks to the layers
   TensorRT can run sparse;
3. recovers accuracy with the distill loss from the teacher's cached outputs (the dense model is
   the teacher for 2:4);
4. on INT8 targets, QAT with the same KD loss and the target's own quantizer, so the artifact that
   ships is pruned *and* INT8;
5. the gate: exports the pruned and the unpruned model at the deployed precision, measures both on
   the target in interleaved rounds (or predicts both, labelled), measures both artifacts' accuracy
   on the validation split, and ships the pruned one only when it is prune.min_speedup faster and
   within prune.max_accuracy_drop_pt. Otherwise the unpruned student ships and the reason, with
   both measurements, goes to the report.

The export stage then writes the artifacts of whatever ships (edgekd/models/deployed.py). Under
torchrun this stage runs on rank 0 alone (like export and bench), in one process.
"""

from __future__ import annotations

import copy
import logging
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.backends import accuracy_here, get_backend
from edgekd.distill.int8 import calibration_inputs, qat_device_for
from edgekd.distill.losses import make_kd_loss
from edgekd.distill.teacher_outputs import teacher_outputs_for_run
from edgekd.errors import UserError
from edgekd.io import first_line, save_torch, write_json
from edgekd.latency.predicted import predicted_latency
from edgekd.latency.source import MEASURED, Latency, combined_source
from edgekd.models.deployed import load_deployed_models
from edgekd.prune.channels import ChannelPruneResult, prune_channels
from edgekd.prune.check import LATENCY_ALLOCATION, check_prune_config
from edgekd.prune.gate import ArtifactMeasurement, GateDecision, decide
from edgekd.prune.groups import analyse_groups
from edgekd.prune.latency_guided import latency_guided_plan
from edgekd.prune.recovery import recover_
from edgekd.prune.target_latency import latency_fn_for_target
from edgekd.quantizers import get_quantizer
from edgekd.remote import benchmark_on_target
from edgekd.results import GateSide, PruneResult
from edgekd.run import RunContext
from edgekd.target import why_not_measurable
from edgekd.training import evaluate_accuracy, fit

log = logging.getLogger(__name__)

FP32_CHECKPOINT = "pruned_fp32.pt"
INT8_CHECKPOINT = "pruned_int8.pt"
# Without prune.target_speedup, a student that already meets the budget is pruned toward this much
# faster (the budget is then no goal at all).
DEFAULT_SPEEDUP = 1.25


def run(ctx: RunContext) -> PruneResult:
    settings = ctx.recipe.prune
    if not settings.enabled and not settings.sparse_2_4:
        return PruneResult(ran=False, reason="off (prune.enabled and prune.sparse_2_4 are false)")
    check_prune_config(settings, ctx.target)
    out = ctx.stage_dir("prune")
    unpruned = load_deployed_models(ctx)  # the distilled student: the gate's baseline, and flow "search"'s start
    base, arch = _model_to_prune(ctx, unpruned["student_fp32"])
    result = PruneResult(ran=True, reason="", flow=settings.flow, method="2:4" if settings.sparse_2_4 else "channels",
                         arch=arch, precision=unpruned["student_int8" if "student_int8" in unpruned else
                                                       "student_fp32"][2])
    masks = None
    if settings.sparse_2_4:
        pruned, masks = _sparsify(ctx, base, result)
        nothing = None if masks else (f"no layer has the {settings.sparse_min_channels} channels TensorRT's sparse "
                                      "tactics need (prune.sparse_min_channels)")
    else:
        pruned = _prune_channels(ctx, base, result)
        nothing = None if result.plan.get("plan") else (
            f"no channel group could be narrowed on the target's channel multiple ({ctx.target.channel_multiple}); "
            "every layer is listed with the reason in prune/prune.json")
    if nothing is not None:  # the pruned model is the unpruned one: nothing to train, measure or ship
        result.reason = result.rolled_back = f"nothing pruned, the unpruned student ships: {nothing}"
        log.warning("prune: %s", result.reason)
        write_json(out / "prune.json", {"plan": result.plan, "allocation": result.allocation})
        return result
    result.recovery = _recover(ctx, pruned, dense=base if settings.sparse_2_4 else None)
    if settings.sparse_2_4:
        from edgekd.prune.sparse_2_4 import fold_masks, zero_masks

        pruned = fold_masks(pruned)
        masks = zero_masks(pruned, masks)
    save_torch(pruned.state_dict(), out / FP32_CHECKPOINT)
    result.fp32_checkpoint = f"prune/{FP32_CHECKPOINT}"
    models = {"student_fp32": pruned}
    if "student_int8" in unpruned:
        models["student_int8"] = _quantize(ctx, pruned, result, masks)
        result.int8_checkpoint = f"prune/{INT8_CHECKPOINT}"
    key = "student_int8" if "student_int8" in unpruned else "student_fp32"
    label = f"pruned {'teacher' if settings.flow == 'teacher' else 'student'}"
    baseline, candidate = _measure_pair(ctx, {
        "unpruned student": (unpruned[key][0], unpruned["student_fp32"][0], False),
        label: (models[key], pruned, settings.sparse_2_4)}, result.precision, out / "gate")
    decision = _decide(ctx, baseline, candidate, result)
    result.baseline, result.candidate = baseline, candidate
    result.shipped, result.reason = decision.ship_candidate, decision.reason
    result.latency_drop, result.accuracy_drop_pt = decision.latency_drop, round(decision.accuracy_drop_pt, 3)
    result.latency_drop_source = _drop_source(baseline, candidate)
    if not decision.ship_candidate:
        result.rolled_back = decision.reason
        log.warning("prune: %s", decision.reason)
    else:
        log.info("prune: %s", decision.reason)
    write_json(out / "prune.json", {"decision": decision.to_dict(), "plan": result.plan,
                                    "allocation": result.allocation, "recovery": result.recovery})
    return result


# ---- 1. what is pruned ---------------------------------------------------------------------------


def _model_to_prune(ctx: RunContext, student: tuple[nn.Module, dict | None, str]) -> tuple[nn.Module, dict[str, Any]]:
    """(a float copy to prune, the record that names it): the distilled student, or the teacher."""
    if ctx.recipe.prune.flow == "teacher":
        from edgekd.teacher.exported import ExportedTeacher

        teacher = ctx.teacher.model
        if isinstance(teacher, (ExportedTeacher, torch.jit.ScriptModule)) or not isinstance(teacher, nn.Module):
            raise UserError("prune.flow teacher needs a teacher that is a plain torch module (a checkpoint with "
                            "--teacher-arch, a built-in or hub teacher, or a pickled module); TorchScript and "
                            "exported programs cannot be pruned")
        record = dict(ctx.teacher.arch or {})
        record["name"] = f"{record.get('name', 'teacher')} pruned"
        return copy.deepcopy(teacher).eval(), record
    model, record, _ = student
    return copy.deepcopy(model).eval(), {**(record or {}), "name": f"{(record or {}).get('name', 'student')} pruned"}


# ---- 2. channels or 2:4 --------------------------------------------------------------------------


def _prune_channels(ctx: RunContext, model: nn.Module, result: PruneResult) -> nn.Module:
    settings, target, data = ctx.recipe.prune, ctx.target, ctx.data
    example = ctx.example
    analysis = analyse_groups(model, example, channel_multiple=target.channel_multiple,
                              ignored_layers=settings.ignored_layers, importance=settings.importance)
    grad_batch = _grad_batch(ctx)
    if settings.allocation == LATENCY_ALLOCATION:
        bench = ctx.recipe.bench
        latency_fn = latency_fn_for_target(target, tuple(data.input_shape), target.precision,
                                           warmup=min(bench.warmup, 10), runs=min(bench.runs, 50),
                                           threads=bench.threads)
        goal_ms, goal_origin = _goal(ctx, model, latency_fn)
        guided = latency_guided_plan(model, example, latency_fn=latency_fn, goal_ms=goal_ms,
                                     channel_multiple=target.channel_multiple, score_batch=data.train.head(64),
                                     importance=settings.importance, max_steps=settings.max_steps,
                                     step_fraction=settings.step_fraction, analysis=analysis)
        result.allocation = guided.to_dict() | {"goal_origin": goal_origin}
        log.info("prune: latency-guided plan %s -> %s ms %s (goal %.4g ms, %s): %s", _ms(guided.baseline_ms),
                 _ms(guided.final_ms), guided.latency_source, goal_ms, goal_origin, guided.stop_reason)
        if not guided.plan:
            log.warning("prune: no channel group could be pruned toward the goal (%s)", guided.stop_reason)
        pruned = prune_channels(model, example, channel_multiple=target.channel_multiple, plan=guided.plan,
                                importance=settings.importance, grad_batch=grad_batch, analysis=analysis)
    else:
        pruned = prune_channels(model, example, channel_multiple=target.channel_multiple, ratio=settings.ratio,
                                allocation=settings.allocation, importance=settings.importance,
                                grad_batch=grad_batch, analysis=analysis)
    result.plan = pruned.to_dict() | {"method": "channels", "allocation": settings.allocation,
                                      "importance": settings.importance, "channel_multiple": target.channel_multiple}
    _log_plan(pruned)
    return pruned.model


def _goal(ctx: RunContext, model: nn.Module, latency_fn) -> tuple[float, str]:
    """The latency the guided search aims at, and where that number comes from."""
    settings = ctx.recipe.prune
    budget = ctx.result("search").budget
    if settings.target_speedup is not None:
        now, source = latency_fn(model)
        return now / settings.target_speedup, f"{_ms(now)} ms {source} / prune.target_speedup {settings.target_speedup:g}"
    if settings.flow == "teacher":
        return budget.ms, f"the budget ({budget.origin})"
    now, source = latency_fn(model)
    if now > budget.ms:
        return budget.ms, f"the budget ({budget.origin})"
    return now / DEFAULT_SPEEDUP, (f"the student already meets the budget ({_ms(now)} ms {source}); "
                                   f"{DEFAULT_SPEEDUP:g}x faster than that")


def _grad_batch(ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images and labels for gradient-based importance (taylor); None for the others."""
    if ctx.recipe.prune.importance != "taylor":
        return None
    images, labels, _ = next(iter(ctx.data.train.batches(min(64, len(ctx.data.train)))))
    return images, labels


def _sparsify(ctx: RunContext, model: nn.Module, result: PruneResult) -> tuple[nn.Module, list[str]]:
    from edgekd.prune.sparse_2_4 import eligible_layers, sparsify_2_4_

    settings = ctx.recipe.prune
    judged = eligible_layers(model, min_channels=settings.sparse_min_channels, exclude=settings.ignored_layers)
    chosen = [layer.name for layer in judged if layer.eligible]
    result.plan = {"method": "2:4", "min_channels": settings.sparse_min_channels,
                   "layers": [{"layer": j.name, "sparse": j.eligible, "reason": j.reason} for j in judged]}
    log.info("prune: 2:4 sparsity on %d of %d layers (%s)", len(chosen), len(judged),
             ", ".join(chosen) if chosen else "none eligible")
    if not chosen:
        log.warning("prune: no layer is large enough for a sparse TensorRT tactic (prune.sparse_min_channels %d); "
                    "the 2:4 model equals the dense one", settings.sparse_min_channels)
    return sparsify_2_4_(model, chosen), chosen


def _log_plan(pruned: ChannelPruneResult) -> None:
    for name, kept in pruned.plan.items():
        log.info("prune: %s %d -> %d channels", name, pruned.widths[name], kept)
    for layer in pruned.skipped:
        log.info("prune: %s kept whole: %s", layer.name, layer.reason)
    log.info("prune: MACs %.3gM -> %.3gM (%.0f%% fewer), params %d -> %d", pruned.macs_before / 1e6,
             pruned.macs_after / 1e6, 100 * pruned.mac_reduction, pruned.params_before, pruned.params_after)


# ---- 3 and 4. recovery and QAT -------------------------------------------------------------------


def _recover(ctx: RunContext, model: nn.Module, *, dense: nn.Module | None) -> dict[str, Any]:
    """KD (or labels) fine-tuning of the pruned float model, in place."""
    settings, distill = ctx.recipe.prune, ctx.recipe.distill
    kd = settings.recovery == "kd"
    before = evaluate_accuracy(model, ctx.data.val)
    outputs = None
    if kd and dense is None:  # the teacher's cached outputs, the files distillation wrote
        outputs = teacher_outputs_for_run(ctx, ctx.teacher.model, settings.recovery_epochs, alone=True)
    fitted = recover_(model, ctx.data.train, ctx.data.val, mode=settings.recovery, epochs=settings.recovery_epochs,
                      lr=settings.recovery_lr, batch_size=distill.batch_size, seed=ctx.spec.seed,
                      weight_decay=distill.weight_decay, patience=distill.patience,
                      kd_loss=make_kd_loss(distill.loss, distill) if kd else None,
                      teacher=dense, teacher_outputs=outputs, device=ctx.train_device)
    model.to("cpu").eval()
    summary = {"mode": settings.recovery, "teacher": "the dense model" if dense is not None else "the teacher",
               "val_accuracy_before": before, "epochs": settings.recovery_epochs}
    if fitted is not None:
        summary |= {"val_accuracy": fitted.best_val_accuracy, "epochs_run": fitted.epochs_run}
    log.info("prune: val accuracy after pruning %.4f, after recovery (%s) %.4f", before, settings.recovery,
             summary.get("val_accuracy", before))
    return summary


def _quantize(ctx: RunContext, model: nn.Module, result: PruneResult, masks: dict | None) -> nn.Module:
    """The target quantizer's PTQ of the pruned model, then QAT with the KD loss (distill.mode
    "qat"), as distillation does for the unpruned student; saved to prune/pruned_int8.pt."""
    distill, target = ctx.recipe.distill, ctx.target
    quantizer = get_quantizer(target.quantizer)
    calibration = calibration_inputs(ctx)
    int8 = quantizer.prepare_int8(model, calibration)
    summary = {"quantizer": target.quantizer, "mode": distill.mode, "ptq_val_accuracy": None}
    if distill.mode == "qat" and distill.qat_epochs > 0:
        device = qat_device_for(int8, ctx.train_device, target.quantizer, calibration[:2])
        outputs = teacher_outputs_for_run(ctx, ctx.teacher.model, distill.qat_epochs, alone=True)
        objective = make_kd_loss(distill.loss, distill)

        def kd_loss(logits, labels, index, epoch):
            return objective(logits, outputs.logits(index, epoch).to(logits.device), labels)

        qat = fit(int8, ctx.data.train, ctx.data.val, kd_loss, epochs=distill.qat_epochs, lr=distill.qat_lr,
                  batch_size=distill.batch_size, patience=distill.patience, seed=ctx.spec.seed,
                  weight_decay=distill.weight_decay, desc="prune int8 (QAT)", augment=outputs.inputs, device=device,
                  max_steps_per_epoch=distill.max_steps_per_epoch)
        summary |= {"qat_val_accuracy": qat.best_val_accuracy, "qat_epochs_run": qat.epochs_run}
    if masks:  # QAT's updates do not keep the zeros: write them again
        from edgekd.prune.sparse_2_4 import reapply_masks_

        reapply_masks_(int8, masks)
    int8.to("cpu").eval()
    quantizer.save_int8(int8, ctx.stage_dir("prune") / INT8_CHECKPOINT)
    (result.recovery or {}).update({"int8": summary})
    return int8


# ---- 5. the gate ---------------------------------------------------------------------------------


def _measure_pair(ctx: RunContext, models: dict[str, tuple[nn.Module, nn.Module, bool]], precision: str,
                  folder: Path) -> list[GateSide]:
    """Each model (name -> (model at `precision`, its float twin, 2:4 or not)) exported as the target's
    artifact, then its latency on the target (both timed in interleaved rounds; else predicted, with
    the label; a 2:4 engine off a TensorRT host: not measured) and its accuracy on the validation
    split (the artifact where its runtime is here, else a stand-in, named)."""
    target, data = ctx.target, ctx.data
    backend = get_backend(target.backend)
    folder.mkdir(parents=True, exist_ok=True)
    quantizer = get_quantizer(target.quantizer) if precision == "int8" else None
    why = why_not_measurable(target)
    paths, sides = {}, {}
    for index, (name, (model, _, sparse)) in enumerate(models.items()):
        paths[name] = folder / f"{'baseline' if index == 0 else 'candidate'}{backend.SUFFIX}"
        metadata = {"purpose": "prune gate", "precision": precision, **({"sparsity": "2:4"} if sparse else {})}
        backend.write_artifact(model, ctx.example, paths[name], precision=precision, metadata=metadata,
                               quantizer=quantizer, target=target, max_batch=1)
    timed = _timed_interleaved(ctx, backend, paths) if why is None else {}
    for name, (model, float_model, sparse) in models.items():
        accuracy, source = accuracy_here(backend, paths[name], data.val, model,
                                         runtime_here=why is None and target.runner == "local")
        if name in timed:
            sides[name] = GateSide(name, timed[name], accuracy, source)
        elif sparse:
            sides[name] = GateSide(name, None, accuracy, source, not_measured=(
                f"a 2:4 artifact's latency is known only from its TensorRT engine ({why})"))
        else:
            sides[name] = GateSide(name, predicted_latency(target, float_model, tuple(data.input_shape), precision),
                                   accuracy, source)
        log.info("prune gate: %s: %s, val accuracy %.4f (%s)", name, sides[name].latency or "latency not measured",
                 accuracy, source)
    return list(sides.values())


def _timed_interleaved(ctx: RunContext, backend, paths: dict[str, Path]) -> dict[str, Latency]:
    """Each artifact's batch-1 p50 (bench's warm-up and runs) in prune.gate_rounds rounds that
    alternate between them, so that drift on a shared machine hits both alike; the median round."""
    bench, target = ctx.recipe.bench, ctx.target
    p50s: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(ctx.recipe.prune.gate_rounds):
        for name, path in paths.items():
            stats = benchmark_on_target(target, backend.timed_path(path), backend, bench.warmup, bench.runs,
                                        bench.threads)
            p50s[name].append(stats.p50_ms)
    return {name: Latency(statistics.median(values), MEASURED, detail=f"median of {len(values)} interleaved rounds' p50",
                          device=target.runner) for name, values in p50s.items()}


def _decide(ctx: RunContext, baseline: GateSide, candidate: GateSide, result: PruneResult) -> GateDecision:
    settings = ctx.recipe.prune
    sides = [ArtifactMeasurement(s.name, s.latency.ms if s.latency else None,
                                 s.latency.source if s.latency else "not measured", s.accuracy)
             for s in (baseline, candidate)]
    if settings.flow == "teacher":
        return _teacher_flow_decision(ctx, *sides)
    step = "2:4 sparsity" if result.method == "2:4" else "pruning"
    return decide(*sides, min_speedup=settings.min_speedup, max_accuracy_drop_pt=settings.max_accuracy_drop_pt,
                  step=step)


def _teacher_flow_decision(ctx: RunContext, student: ArtifactMeasurement,
                           pruned_teacher: ArtifactMeasurement) -> GateDecision:
    """Flow "teacher": the pruned teacher ships when its latency is within the budget (of one kind
    with the student's: both measured, or both predicted) and it is more accurate than the student
    the search chose and distillation trained. The two flows, compared at the same measured latency
    budget: the question a product team asks."""
    budget = ctx.result("search").budget
    base = decide(student, pruned_teacher, min_speedup=0.0, max_accuracy_drop_pt=float("inf"), step="pruned teacher")
    both = base.reason.split("; ", 1)[-1] if "; " in base.reason else base.reason
    latency = pruned_teacher.latency_ms
    if not base.verified or latency is None:
        reason = f"pruned teacher not shipped: its latency cannot be compared with the student's ({both})"
        return GateDecision(False, False, reason, student, pruned_teacher, None, base.accuracy_drop_pt)
    within = latency <= budget.ms
    better = pruned_teacher.accuracy > student.accuracy
    if within and better:
        reason = (f"flow teacher ships: the pruned teacher is {-base.accuracy_drop_pt:.2f} pt more accurate than "
                  f"the searched student, within the budget of {_ms(budget.ms)} ms ({both})")
    else:
        why = []
        if not within:
            why.append(f"the pruned teacher's {_ms(latency)} ms {pruned_teacher.latency_source} misses the budget "
                       f"of {_ms(budget.ms)} ms")
        if not better:
            why.append(f"it is {base.accuracy_drop_pt:.2f} pt less accurate than the searched student")
        reason = f"flow teacher rolled back, the searched student ships: {' and '.join(why)} ({both})"
    return GateDecision(within and better, True, reason, student, pruned_teacher, base.latency_drop,
                        base.accuracy_drop_pt)


def _drop_source(baseline: GateSide, candidate: GateSide) -> str | None:
    if baseline.latency is None or candidate.latency is None:
        return None
    return combined_source(baseline.latency, candidate.latency)


def _ms(value: float) -> str:
    return f"{value:.4g}"


def summary(result: PruneResult) -> str:
    if not result.ran:
        return result.reason
    return f"{result.method}, {'shipped' if result.shipped else 'rolled back'}: {first_line(result.reason)[:160]}"
