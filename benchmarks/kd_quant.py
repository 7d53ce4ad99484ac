"""Issue 4's accuracy benchmark: KD losses and each target's INT8 path on Fashion-MNIST.

For two student sizes from the search space (resnet_s at width multipliers 0.25 and 0.5,
channels rounded to multiples of 8) and three seeds, every row of the issue's table:

- fp32, labels only (cross-entropy);
- fp32 KD for each loss: hinton, dist, dkd, and the feature losses fitnets, at, nd added to
  hinton (as the distill stage adds them);
- per backend (OpenVINO/NNCF, TensorRT/ModelOpt, CoreML/coremltools): PTQ INT8, QAT INT8 without
  KD (labels only) and QAT+KD INT8 (hinton). All three start from the same fp32 student: the
  hinton-KD one of the same seed, so the rows differ only in the INT8 step.

Accuracy is on the full 10,000-image test split, measured on the exported artifact: the OpenVINO
IR in OpenVINO (NNCF), the Q/DQ ONNX in onnxruntime (ModelOpt, what TensorRT builds from), and for
CoreML the torch fake-quant model (Core ML prediction needs macOS; the .mlpackage is still
written and its interface checked). fp32 rows and the teacher are measured in torch.

    .venv/bin/python benchmarks/kd_quant.py            # ~45 min on 2 shared cores
    .venv/bin/python benchmarks/kd_quant.py --quick    # the same pipeline in minutes, not to quote
    .venv/bin/python benchmarks/kd_quant.py --recipe long --redo openvino   # one backend's INT8 rows again

Each finished row is written to benchmarks/results/kd-quant/results.json at once and skipped on
restart (a kill loses at most the row in progress); results.md is rendered from it after every
row. The teacher and the fp32 students' weights are cached under the work dir
($EDGEKD_CACHE_DIR or ~/.cache/edgekd, then benchmarks/kd-quant-<recipe hash>/).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.config import DistillConfig
from edgekd.data import DatasetSplits, load_dataset
from edgekd.distill.feature_distiller import FeatureDistiller
from edgekd.distill.feature_losses import choose_layer_pairs
from edgekd.distill.losses import make_kd_loss
from edgekd.io import cache_dir, write_json
from edgekd.measure import cpu_name
from edgekd.models import (
    arch_name,
    build_model,
    count_macs,
    count_params,
    resolve_arch,
    scale_width,
)
from edgekd.quantizers import get_quantizer
from edgekd.training import evaluate_accuracy, fit, predict_logits

log = logging.getLogger("kd_quant")

DATA = Path("/usr/share/datasets/fashion-mnist")
RESULTS = Path(__file__).resolve().parent / "results" / "kd-quant"
NOTES_MARKER = "<!-- notes: kept when the table is re-rendered -->"

# Two recipes. Changing a value starts a fresh work dir and refuses an old results.json.
# - short: sized for ~45 minutes on a 2-core CPU shared with other work; the students are far from
#   converged (2 epochs on 5,000 images), so it checks the pipeline more than the losses.
# - long: a teacher trained on the whole training split and students trained 36x longer (6 epochs
#   on 30,000 images), about 3 h on 2 quiet cores (an x0.5 seed: ~29 min); resumable per
#   row, so it can span sessions.
RECIPES: dict[str, dict[str, Any]] = {
    "short": {
        "data_seed": 0, "train_images": 5000, "val_images": 2000, "qat_images": 2500,
        "teacher_arch": "resnet_s", "teacher_epochs": 5, "teacher_seed": 0,
        "student_widths": [0.25, 0.5], "channel_multiple": 8, "seeds": [0, 1, 2],
        "epochs": 2, "qat_epochs": 1, "batch_size": 64, "lr": 0.003, "qat_lr": 0.0002,
        "weight_decay": 1e-4, "teacher_weight_decay": 5e-4, "calibration_samples": 300,
    },
    "long": {
        "data_seed": 0, "train_images": 30000, "val_images": 5000, "qat_images": 10000,
        "teacher_images": 51000, "teacher_arch": "resnet_s", "teacher_epochs": 8, "teacher_seed": 0,
        "student_widths": [0.25, 0.5], "channel_multiple": 8, "seeds": [0, 1, 2],
        "epochs": 6, "qat_epochs": 2, "batch_size": 128, "lr": 0.003, "qat_lr": 0.0002,
        "weight_decay": 1e-4, "teacher_weight_decay": 5e-4, "calibration_samples": 300,
    },
}
RESULT_FOLDERS = {"short": "kd-quant", "long": "kd-quant-long"}
RECIPE: dict[str, Any] = dict(RECIPES["short"])  # the one in use; main() picks it from --recipe
# --quick: the whole pipeline on a sliver of data, to check the script, never to quote.
QUICK = {"train_images": 600, "teacher_images": 600, "val_images": 300, "qat_images": 300, "teacher_epochs": 1, "epochs": 1,
         "seeds": [0]}

FP32_ROWS = ["labels", "hinton", "dist", "dkd", "fitnets", "at", "nd"]
FEATURE_LOSSES = ("fitnets", "at", "nd")
# backend -> (quantizer, what the accuracy is measured on)
BACKENDS = {
    "openvino": ("nncf", "OpenVINO IR in OpenVINO"),
    "tensorrt": ("modelopt", "Q/DQ ONNX in onnxruntime"),
    "coreml": ("coreml", "torch fake-quant model (Core ML prediction needs macOS)"),
}
INT8_ROWS = ["ptq", "qat", "qat_kd"]
INT8_START = "hinton"  # the fp32 student every INT8 row starts from
ROW_LABELS = {
    "labels": "fp32, labels only", "hinton": "fp32 KD hinton", "dist": "fp32 KD dist",
    "dkd": "fp32 KD dkd", "fitnets": "fp32 KD hinton + fitnets", "at": "fp32 KD hinton + at",
    "nd": "fp32 KD hinton + nd", "ptq": "PTQ INT8", "qat": "QAT INT8 without KD",
    "qat_kd": "QAT+KD INT8 (hinton)",
}


# ---- setup -----------------------------------------------------------------------------------

def students() -> dict[str, dict[str, Any]]:
    base = resolve_arch("resnet_s")
    base.pop("name")
    return {f"x{w:g}": scale_width(base, w, RECIPE["channel_multiple"]) for w in RECIPE["student_widths"]}


def row_keys() -> list[str]:
    """Every row, the larger student first at every seed: it carries the issue's teacher check, so
    a partial run has it at all seeds (mean +- std) before the smaller one's later seeds."""
    keys = []
    for student in reversed(list(students())):
        for seed in RECIPE["seeds"]:
            keys += [f"{student}/seed{seed}/fp32/{row}" for row in FP32_ROWS]
            keys += [f"{student}/seed{seed}/{backend}/{row}" for backend in BACKENDS for row in INT8_ROWS]
    return keys


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]


def settings() -> DistillConfig:
    """The distill stage's defaults (T 4, alpha 0.9, DIST/DKD/feature weights) with this recipe."""
    return dataclasses.replace(DistillConfig(), epochs=RECIPE["epochs"], qat_epochs=RECIPE["qat_epochs"],
                               batch_size=RECIPE["batch_size"], lr=RECIPE["lr"], qat_lr=RECIPE["qat_lr"],
                               weight_decay=RECIPE["weight_decay"])


class Bench:
    """Data, teacher and the cached teacher logits shared by every row."""

    def __init__(self, data: DatasetSplits, work: Path):
        self.data, self.work = data, work
        self.train = data.train.subset(RECIPE["train_images"])
        # A prefix of the training subset, so teacher logits stay indexed by the same sample index.
        self.qat_train = self.train.subset(RECIPE["qat_images"])
        self.val = data.val.subset(RECIPE["val_images"])
        self.test = data.test
        self.calibration = self.train.x[: RECIPE["calibration_samples"]]
        # The long recipe trains the teacher on the whole training split (51,000 images after the
        # 9,000-image validation split; the students' images are a prefix of it); the short one on
        # the students' images only.
        self.teacher_train = data.train.subset(RECIPE.get("teacher_images", RECIPE["train_images"]))
        self.teacher, self.teacher_info = self._teacher()
        # No augmentation, so the teacher's logits never change: computed once, looked up by index.
        self.teacher_logits = predict_logits(self.teacher, self.train.x)
        self.settings = settings()

    def _teacher(self) -> tuple[nn.Module, dict[str, Any]]:
        """Trained once (seed 0) and cached; the .json is written last and marks a complete entry."""
        torch.manual_seed(RECIPE["teacher_seed"])
        model = build_model(RECIPE["teacher_arch"], 1, self.data.num_classes)
        weights, info_path = self.work / "teacher.pt", self.work / "teacher.json"
        if info_path.is_file():
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            log.info("teacher: cached %s", weights)
            return model.eval(), json.loads(info_path.read_text())
        log.info("teacher: training %s for %d epochs on %d images", RECIPE["teacher_arch"],
                 RECIPE["teacher_epochs"], len(self.teacher_train))
        start = time.perf_counter()
        fit(model, self.teacher_train, self.val, _labels_loss, epochs=RECIPE["teacher_epochs"], lr=RECIPE["lr"],
            batch_size=RECIPE["batch_size"], patience=RECIPE["teacher_epochs"], seed=RECIPE["teacher_seed"],
            weight_decay=RECIPE["teacher_weight_decay"], desc="teacher")
        torch.save(model.state_dict(), weights)
        info = {"arch": RECIPE["teacher_arch"], "params": count_params(model),
                "macs": count_macs(model, (1, 28, 28)),
                "val_accuracy": evaluate_accuracy(model, self.val),
                "test_accuracy": evaluate_accuracy(model, self.test),
                "train_seconds": round(time.perf_counter() - start, 1)}
        write_json(info_path, info)
        return model.eval(), info


def _labels_loss(logits: torch.Tensor, labels: torch.Tensor, _index: torch.Tensor, *_: Any) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


# ---- rows ------------------------------------------------------------------------------------

def run_fp32_row(bench: Bench, student: str, seed: int, row: str) -> dict[str, Any]:
    """One fp32 student: labels only, or a logit KD loss (+ a feature loss on top of hinton)."""
    record = students()[student]
    torch.manual_seed(seed)  # the same initial weights for every row of this seed: paired rows
    model = build_model(record, 1, bench.data.num_classes)
    features = None
    if row == "labels":
        loss_fn = _labels_loss
    else:
        logit_loss = "hinton" if row in FEATURE_LOSSES else row
        feature_loss = row if row in FEATURE_LOSSES else None
        cfg = dataclasses.replace(bench.settings, loss=logit_loss, feature_loss=feature_loss)
        loss_fn, features = kd_objective(bench, cfg, model)
    start = time.perf_counter()
    try:
        with features.watch(model) if features is not None else contextlib.nullcontext():
            result = fit(model, bench.train, bench.val, loss_fn, epochs=RECIPE["epochs"], lr=RECIPE["lr"],
                         batch_size=RECIPE["batch_size"], patience=RECIPE["epochs"], seed=seed,
                         weight_decay=RECIPE["weight_decay"], desc=f"{student} seed{seed} {row}",
                         extra_modules=[features] if features is not None else [])
    finally:
        if features is not None:
            features.close()
    seconds = time.perf_counter() - start
    torch.save(model.state_dict(), fp32_checkpoint(bench, student, seed, row))
    return {"test_accuracy": evaluate_accuracy(model, bench.test), "val_accuracy": result.best_val_accuracy,
            "epochs": result.epochs_run, "train_seconds": round(seconds, 1), "measured_on": "torch fp32"}


def kd_objective(bench: Bench, cfg: DistillConfig, model: nn.Module,
                 ) -> tuple[Callable[..., torch.Tensor], FeatureDistiller | None]:
    """The distill stage's objective: the logit KD loss against the cached teacher logits, plus
    the feature term (teacher run on the step's batch) when cfg.feature_loss is set."""
    objective = make_kd_loss(cfg.loss, cfg)
    features = None
    if cfg.feature_loss is not None:
        example = bench.train.x[:2]
        pairs = choose_layer_pairs(cfg.feature_loss, model, bench.teacher, cfg.feature_layers,
                                   cfg.teacher_layers, example)
        features = FeatureDistiller(cfg.feature_loss, pairs, model, bench.teacher, example,
                                    weight=cfg.feature_weight, train_x=bench.train.x,
                                    train_y=bench.train.y, num_classes=bench.data.num_classes)

    # `*_`: fit passes (logits, labels, index) or, since it gained the epoch, (..., epoch).
    def loss(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, *_: Any) -> torch.Tensor:
        value = objective(logits, bench.teacher_logits[index], labels)
        if features is not None:
            value = value + features.loss(bench.train.x[index], labels)
        return value

    return loss, features


def fp32_checkpoint(bench: Bench, student: str, seed: int, row: str) -> Path:
    path = bench.work / student / f"seed{seed}" / f"fp32_{row}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class PtqCache:
    """The PTQ-initialised model of (student, seed, backend), kept in memory so the three INT8 rows
    calibrate once; each QAT row trains a deep copy."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.model: nn.Module | None = None
        self.seconds = 0.0

    def get(self, bench: Bench, student: str, seed: int, backend: str) -> tuple[nn.Module, float]:
        key = (student, seed, backend)
        if key != self.key:
            fp32 = build_model(students()[student], 1, bench.data.num_classes)
            checkpoint = fp32_checkpoint(bench, student, seed, INT8_START)
            fp32.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
            start = time.perf_counter()
            self.model = get_quantizer(BACKENDS[backend][0]).prepare_int8(fp32.eval(), bench.calibration)
            self.key, self.seconds = key, time.perf_counter() - start
        return self.model, self.seconds


def run_int8_row(bench: Bench, ptq: PtqCache, student: str, seed: int, backend: str, row: str) -> dict[str, Any]:
    ptq_model, calibration_seconds = ptq.get(bench, student, seed, backend)
    out: dict[str, Any] = {"calibration_seconds": round(calibration_seconds, 1), "start": f"fp32 {INT8_START}"}
    if row == "ptq":
        model = ptq_model
    else:
        model = copy.deepcopy(ptq_model)
        if row == "qat_kd":
            loss_fn, _ = kd_objective(bench, dataclasses.replace(bench.settings, loss="hinton"), model)
        else:
            loss_fn = _labels_loss
        start = time.perf_counter()
        result = fit(model, bench.qat_train, bench.val, loss_fn, epochs=RECIPE["qat_epochs"], lr=RECIPE["qat_lr"],
                     batch_size=RECIPE["batch_size"], patience=RECIPE["qat_epochs"], seed=seed,
                     weight_decay=RECIPE["weight_decay"], desc=f"{student} seed{seed} {backend} {row}")
        out.update({"epochs": result.epochs_run, "train_seconds": round(time.perf_counter() - start, 1)})
    out["val_accuracy_torch"] = evaluate_accuracy(model, bench.val)
    out.update(measure_artifact(bench, model, backend, bench.work / student / f"seed{seed}" / backend / row,
                                write_mlpackage=row == "qat_kd"))
    return out


def measure_artifact(bench: Bench, model: nn.Module, backend: str, stem: Path, *,
                     write_mlpackage: bool = True) -> dict[str, Any]:
    """Export the INT8 model for `backend` and measure test accuracy on what the backend runs.
    CoreML's accuracy is the torch fake-quant model's either way; converting to .mlpackage costs
    15-20 s here, so only the shipped row (QAT+KD) writes and validates one."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    example = bench.test.x[:1]
    metadata = {"benchmark": "kd_quant", "recipe": recipe_hash()}
    start = time.perf_counter()
    if backend == "openvino":
        from edgekd.backends import openvino as backend_module

        path = backend_module.export(model, example, stem.with_suffix(".xml"), metadata=metadata)
        accuracy = backend_module.accuracy(path, bench.test.x, bench.test.y)
        measured_on = f"OpenVINO {backend_module.version()} IR"
    elif backend == "tensorrt":
        from edgekd.backends import onnx as onnx_backend

        quantizer = get_quantizer("modelopt")
        path = quantizer.export_onnx(model, example, stem.with_suffix(".onnx"), metadata=metadata)
        accuracy = onnx_backend.accuracy(path, bench.test.x, bench.test.y)
        measured_on = f"Q/DQ ONNX in onnxruntime {onnx_backend.version()}"
    else:
        from edgekd.backends import coreml as coreml_backend

        accuracy = evaluate_accuracy(model, bench.test)
        measured_on = "torch fake-quant (Core ML prediction needs macOS)"
        if write_mlpackage:
            path = stem.with_suffix(".mlpackage")
            if path.exists():  # coremltools refuses to overwrite a package left by a killed run
                shutil.rmtree(path)
            get_quantizer("coreml").export_mlpackage(model, example, path, metadata=metadata)
            coreml_backend.validate(path, input_shape=tuple(example.shape), num_classes=bench.data.num_classes)
            measured_on += "; W8A8 .mlpackage written and validated"
    return {"test_accuracy": accuracy, "measured_on": measured_on,
            "export_and_eval_seconds": round(time.perf_counter() - start, 1)}


# ---- results ---------------------------------------------------------------------------------

def load_results(path: Path, conditions: dict[str, Any]) -> dict[str, Any]:
    if path.is_file():
        results = json.loads(path.read_text())
        if results.get("recipe") != RECIPE:
            raise SystemExit(f"{path} was made with another recipe ({results.get('recipe')}); move it "
                             "away to start over, or restore that recipe to resume")
        return results
    return {"recipe": RECIPE, "recipe_hash": recipe_hash(), "conditions": conditions, "rows": {}}


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Mean and sample std (points) over seeds per (student, section, row), and the issue's checks."""
    groups: dict[tuple[str, str, str], list[float]] = {}
    for key, row in results["rows"].items():
        student, _seed, section, name = key.split("/")
        groups.setdefault((student, section, name), []).append(100 * row["test_accuracy"])
    table = {}
    for (student, section, name), values in groups.items():
        table[f"{student}/{section}/{name}"] = {
            "n": len(values), "mean_pt": statistics.mean(values),
            "std_pt": statistics.stdev(values) if len(values) > 1 else None}
    teacher = 100 * results["teacher"]["test_accuracy"] if "teacher" in results else None
    checks = []
    larger = list(students())[-1]
    for student in students():
        for backend in BACKENDS:
            entry = {"student": student, "backend": backend}
            rows = {name: _paired(results, student, backend, name) for name in INT8_ROWS}
            qat_kd = rows["qat_kd"]
            for other in ("ptq", "qat"):
                diffs = [qat_kd[s] - rows[other][s] for s in qat_kd if s in rows[other]]
                entry[f"vs_{other}"] = _diff_summary(diffs)
            if student == larger and teacher is not None and qat_kd:
                gap = teacher - statistics.mean(qat_kd.values())
                entry["teacher_gap_pt"] = gap
                entry["within_0_5_of_teacher"] = gap <= 0.5
            checks.append(entry)
    return {"table": table, "teacher_test_pt": teacher, "checks": checks}


def _paired(results: dict[str, Any], student: str, backend: str, name: str) -> dict[str, float]:
    """seed -> test accuracy (points) of one INT8 row."""
    out = {}
    for key, row in results["rows"].items():
        s, seed, section, row_name = key.split("/")
        if s == student and section == backend and row_name == name:
            out[seed] = 100 * row["test_accuracy"]
    return out


def _diff_summary(diffs: list[float]) -> dict[str, Any] | None:
    if not diffs:
        return None
    mean = statistics.mean(diffs)
    return {"n": len(diffs), "mean_pt": mean, "std_pt": statistics.stdev(diffs) if len(diffs) > 1 else None,
            "holds": mean >= 0, "seeds_holding": sum(d >= 0 for d in diffs)}


def _pm(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "not run"
    std = f" +- {entry['std_pt']:.2f}" if entry["std_pt"] is not None else " (1 seed)"
    return f"{entry['mean_pt']:.2f}{std}"


def render(results: dict[str, Any], summary: dict[str, Any], old_text: str) -> str:
    rows, cond, recipe = results["rows"], results["conditions"], results["recipe"]
    total = len(row_keys())
    partial = len(rows) < total
    teacher = results.get("teacher", {})
    names = students()
    lines = ["# KD losses and INT8 per backend on Fashion-MNIST (issue 4)", ""]
    if partial:
        lines += [(f"**PARTIAL: {len(rows)} of {total} rows finished.** Finish with the command below "
                   "(it resumes: finished rows are skipped)."), ""]
    lines += [
        (f"Command: `{cond['command']}` (started {cond['date']}; {cond['cpu']}, {cond['threads']} torch threads, "
        f"torch {cond['torch']}, NNCF {cond['versions'].get('nncf')}, OpenVINO {cond['versions'].get('openvino')}, "
        f"ModelOpt {cond['versions'].get('modelopt')}, onnxruntime {cond['versions'].get('onnxruntime')}, "
        f"coremltools {cond['versions'].get('coremltools')})."), "",
        (f"Data: Fashion-MNIST, a fixed subset of the first {recipe['train_images']:,} images of the training "
         f"split (split seed {recipe['data_seed']}), {recipe['val_images']:,} validation images (best epoch), "
         f"accuracy on the full {cond['data']['n_test']:,}-image test split. No augmentation."),
        (f"Teacher: {recipe['teacher_arch']} ({teacher.get('params', '?'):,} params), {recipe['teacher_epochs']} "
         f"epochs on {min(recipe.get('teacher_images', recipe['train_images']), cond['data']['n_train']):,} "
         f"training images, seed {recipe['teacher_seed']}: **{100 * teacher.get('test_accuracy', float('nan')):.2f}%** test "
         "(torch)." if teacher else "Teacher: not trained yet."),
        "Students: " + "; ".join(
            f"{k} = {arch_name(r)} ({count_params(build_model(r, 1, 10)):,} params)" for k, r in names.items()) + ".",
        (f"Training: AdamW, cosine, batch {recipe['batch_size']}, fp32 {recipe['epochs']} epochs at lr "
         f"{recipe['lr']:g}, QAT {recipe['qat_epochs']} epoch(s) on the first {recipe['qat_images']:,} of those "
         f"images at lr {recipe['qat_lr']:g}, weight decay "
         f"{recipe['weight_decay']:g}; seeds {recipe['seeds']} (a seed fixes the student's initial weights and "
         "the batch order, the same for every row of that seed). KD settings: edgekd's distill defaults "
         "(hinton T 4, alpha 0.9; DIST beta 1 gamma 1; DKD alpha 1 beta 8; feature weights fitnets 100, "
         "at 1000, nd 1, added to hinton)."),
        (f"INT8: every INT8 row starts from the seed's **fp32 KD hinton** student; PTQ calibrates on "
         f"{recipe['calibration_samples']} training images; QAT starts from that PTQ model. Accuracy on the "
         "artifact: OpenVINO IR in OpenVINO (NNCF); Q/DQ ONNX in onnxruntime (ModelOpt, the file TensorRT "
         "builds from; TensorRT itself is not installed here); CoreML: the torch fake-quant model, because "
         "Core ML prediction needs macOS (the QAT+KD row's W8A8 .mlpackage is written and its interface "
         "validated)."), "",
        "Test accuracy in %, mean +- sample std over seeds (n = seeds finished).", "",
    ]
    header = "| row | measured on | " + " | ".join(f"{k} ({arch_name(r)})" for k, r in names.items()) + " |"
    lines += [header, "|---|---|" + "---|" * len(names)]
    if teacher:
        lines.append(f"| teacher fp32 ({recipe['teacher_arch']}) | torch | "
                     + " | ".join(f"{100 * teacher['test_accuracy']:.2f}" for _ in names) + " |")
    for row in FP32_ROWS:
        cells = [_cell(summary, f"{k}/fp32/{row}") for k in names]
        lines.append(f"| {ROW_LABELS[row]} | torch | " + " | ".join(cells) + " |")
    for backend, (quantizer, measured) in BACKENDS.items():
        for row in INT8_ROWS:
            cells = [_cell(summary, f"{k}/{backend}/{row}") for k in names]
            lines.append(f"| {backend} ({quantizer}): {ROW_LABELS[row]} | {measured} | " + " | ".join(cells) + " |")
    lines += ["", "## Does QAT+KD INT8 hold up? (issue 4's expectation)", "",
              ("Paired by seed (the three INT8 rows of a seed start from the same fp32 student): mean +- std "
               "of the difference in points, and on how many seeds it holds."), "",
              ("| student | backend | QAT+KD - PTQ | holds | QAT+KD - QAT without KD | holds | teacher - QAT+KD "
               "(larger student: <= 0.5 pt?) |"), "|---|---|---|---|---|---|---|"]
    larger = list(names)[-1]
    for check in summary["checks"]:
        cells = []
        for other in ("ptq", "qat"):
            d = check[f"vs_{other}"]
            if d is None:
                cells += ["not run", ""]
            else:
                cells += [f"{_pm(d)}", f"{'yes' if d['holds'] else '**no**'} ({d['seeds_holding']}/{d['n']} seeds)"]
        if "teacher_gap_pt" in check:
            gap = check["teacher_gap_pt"]
            cells.append(f"{gap:.2f}: {'yes' if check['within_0_5_of_teacher'] else '**no**'}")
        elif check["student"] == larger:
            cells.append("not run")
        else:
            cells.append("(smaller student: not asked)")
        lines.append(f"| {check['student']} | {check['backend']} | " + " | ".join(cells) + " |")
    seconds = [r.get("train_seconds", 0) for r in rows.values()]
    lines += ["", (f"Rows finished: {len(rows)} of {total}; training time in them {sum(seconds) / 60:.1f} min; "
                   f"wall time so far {results.get('wall_minutes', 0):.1f} min."), ""]
    notes = old_text.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in old_text else "\n## Notes\n\n(to be written from the numbers)\n"
    return "\n".join(lines) + "\n" + NOTES_MARKER + notes


def _cell(summary: dict[str, Any], key: str) -> str:
    entry = summary["table"].get(key)
    if not entry:
        return "not run"
    std = f" +- {entry['std_pt']:.2f}" if entry["std_pt"] is not None else ""
    return f"{entry['mean_pt']:.2f}{std} (n={entry['n']})"


def save(results: dict[str, Any], started: float, elapsed_before: float) -> None:
    results["wall_minutes"] = elapsed_before + (time.perf_counter() - started) / 60
    results["summary"] = summarise(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "results.json", results)
    md = RESULTS / "results.md"
    old = md.read_text() if md.is_file() else ""
    md.write_text(render(results, results["summary"], old))


def versions() -> dict[str, str]:
    out = {}
    for name in ("nncf", "openvino", "modelopt", "onnxruntime", "coremltools"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError as exc:  # a missing backend fails its own rows, not the record
            out[name] = f"unavailable ({type(exc).__name__})"
    return out


# ---- main ------------------------------------------------------------------------------------

def main() -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="short",
                        help="short: ~45 min, students far from converged; long: ~3 h on 2 quiet cores, resumable "
                        "(results in results/kd-quant-long)")
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the script (not to quote)")
    parser.add_argument("--results", type=Path, default=None, help=f"results folder (default {RESULTS})")
    parser.add_argument("--render", action="store_true", help="only rewrite results.md from results.json")
    parser.add_argument("--redo", action="append", default=[], choices=sorted(BACKENDS), metavar="BACKEND",
                        help="measure this backend's INT8 rows again (e.g. after a quantizer change); repeatable")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("nncf", "coremltools", "modelopt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(2)  # the machine has 2 cores, shared
    RECIPE.clear()
    RECIPE.update(RECIPES[args.recipe])
    RESULTS = RESULTS.parent / RESULT_FOLDERS[args.recipe]
    if args.quick:
        RECIPE.update(QUICK)
        RESULTS = Path("/tmp/kd-quant-quick")
    if args.results is not None:
        RESULTS = args.results
    if args.render:  # e.g. after a change to the table's layout; trains nothing
        results = json.loads((RESULTS / "results.json").read_text())
        md = RESULTS / "results.md"
        md.write_text(render(results, summarise(results), md.read_text() if md.is_file() else ""))
        return 0
    if not args.data.is_dir():
        log.error("%s not found: apt-get install dataset-fashion-mnist, or pass --data", args.data)
        return 2
    work = cache_dir() / "benchmarks" / f"kd-quant-{recipe_hash()}"
    work.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.data, seed=RECIPE["data_seed"])
    command = ("python benchmarks/kd_quant.py" + (f" --recipe {args.recipe}" if args.recipe != "short" else "")
               + (" --quick" if args.quick else ""))
    conditions = {"command": command, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"),
                  "cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                  "torch": torch.__version__, "python": platform.python_version(), "data": data.summary(),
                  "versions": versions(), "work_dir": str(work)}
    results = load_results(RESULTS / "results.json", conditions)
    for backend in args.redo:  # the fp32 students they start from are kept
        redone = [key for key in results["rows"] if key.split("/")[2] == backend]
        log.info("--redo %s: measuring its %d finished rows again", backend, len(redone))
        for key in redone:
            del results["rows"][key]
    started, elapsed_before = time.perf_counter(), results.get("wall_minutes", 0.0)
    bench = Bench(data, work)
    results["teacher"] = bench.teacher_info
    save(results, started, elapsed_before)
    log.info("teacher %s: test accuracy %.4f; work dir %s", RECIPE["teacher_arch"],
             bench.teacher_info["test_accuracy"], work)
    ptq = PtqCache()
    keys = row_keys()
    for number, key in enumerate(keys, 1):
        student, seed_text, section, row = key.split("/")
        seed = int(seed_text.removeprefix("seed"))
        start_missing = not fp32_checkpoint(bench, student, seed, INT8_START).is_file()
        if key in results["rows"] and not (section == "fp32" and row == INT8_START and start_missing):
            continue
        row_start = time.perf_counter()
        if section == "fp32":
            entry = run_fp32_row(bench, student, seed, row)
        else:
            if start_missing:  # the INT8 rows' starting point was lost (work dir cleared): remake it
                results["rows"][f"{student}/{seed_text}/fp32/{INT8_START}"] = run_fp32_row(bench, student, seed, INT8_START)
            entry = run_int8_row(bench, ptq, student, seed, section, row)
        entry["row_seconds"] = round(time.perf_counter() - row_start, 1)
        results["rows"][key] = entry
        save(results, started, elapsed_before)
        log.info("row %d/%d %s: test accuracy %.4f (%s), %.0f s; %.1f min in total", number, len(keys), key,
                 entry["test_accuracy"], entry["measured_on"], entry["row_seconds"], results["wall_minutes"])
    log.info("done: %s", RESULTS / "results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
