"""The Python API: `edgekd.compress(teacher, data, target=..., ...)` runs the pipeline as
`edgekd compress` does (the same run dir, resume and errors) and returns what it found.

    import edgekd
    result = edgekd.compress("teacher.pt2", "images/", target="x86-cpu", budget_ms=5.0,
                             overrides=["distill.epochs=20"], run_dir="runs/first")
    print(result.student, result.budget_met, result.report_html)

`teacher` is a file (as on the command line) or an nn.Module; `data` a folder, a torch Dataset of
(image, label) pairs (images float (C, H, W) in [0, 1]), or None for the embedded digits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.errors import UserError
from edgekd.pipeline import STAGES, run_pipeline
from edgekd.results import check_budget
from edgekd.run import RunContext
from edgekd.start import change_recipe_on_resume, new_run, open_on_every_rank, resume_run
from edgekd.training.distributed import start

log = logging.getLogger(__name__)


@dataclass
class CompressResult:
    """What a run found: the chosen student, whether it meets the budget (and on what latency),
    the metrics of every model, and where the artifacts and reports are."""

    run_dir: Path
    student: str
    student_arch: dict[str, Any]
    budget_ms: float
    budget_met: bool
    latency_source: str  # of the shipped artifact's latency: measured, or predicted (...)
    models: dict[str, dict[str, Any]]  # per role: accuracy, latency, size, ... (report.json's "models")
    deployed_artifact: Path
    report_json: Path
    report_md: Path
    report_html: Path


def compress(
    teacher: str | Path | nn.Module | None = None,
    data: str | Path | Any | None = None,
    *,
    target: str = "x86-cpu",
    budget_ms: float | None = None,
    recipe: str | Path | None = None,
    overrides: list[str] = (),
    run_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    teacher_arch: str | None = None,
    trust_pickle: bool = False,
    allow_weak_teacher: bool = False,
    device: str | None = None,
    storage: str | None = None,
    seed: int = 0,
    train_device: str = "auto",
    until: str | None = None,
    redo: str | None = None,
) -> CompressResult | RunContext:
    """Run the pipeline (up to `until`, a stage name, if given) and return its result.

    The keyword arguments are the command line's options (`overrides` are `--set` values). With
    `resume=True`, `run_dir` is continued from its last finished stage (a torch Dataset or an
    nn.Module teacher must be passed again, as they live in this process only). Bad input raises
    edgekd.errors.UserError before any work. With `until` before "report", the run's context is
    returned instead of a result. `redo` (with `resume`) runs that stage again, and the later ones,
    as `edgekd <stage> --resume RUN_DIR` does; `overrides` may then change the recipe sections of
    that stage and later ones (e.g. redo="prune", overrides=["prune.ratio=0.3"])."""
    if until is not None and until not in STAGES:
        raise UserError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
    if resume and run_dir is None:
        raise UserError("resume=True needs the run_dir to continue")
    if redo is not None and (not resume or redo not in STAGES):
        raise UserError(f"redo={redo!r} needs resume=True and a stage name ({', '.join(STAGES)})")

    def open_run() -> RunContext:
        if resume:
            ctx = resume_run(run_dir, train_device=train_device)
            if overrides:
                change_recipe_on_resume(ctx, list(overrides), stage=redo or "", command=f"edgekd.compress(redo={redo!r})")
            return ctx
        runs_dir, name = _split_run_dir(run_dir)
        loaded = None
        if data is not None and not isinstance(data, (str, Path)):
            from edgekd.data.python import splits_from_dataset

            loaded = splits_from_dataset(data, seed=seed, overrides=overrides, recipe=recipe)
        teacher_path, trust = teacher, trust_pickle
        if isinstance(teacher, nn.Module):
            teacher_path, trust = _save_module_teacher(teacher, loaded, runs_dir, name), True
        return new_run(target=target, data=None if loaded is not None else data, teacher=teacher_path,
                       teacher_arch=teacher_arch, trust_pickle=trust, allow_weak_teacher=allow_weak_teacher,
                       budget_ms=budget_ms, storage=storage, device=device, seed=seed, recipe=recipe,
                       overrides=list(overrides), runs_dir=runs_dir, name=name, overwrite=overwrite,
                       train_device=train_device, command="edgekd.compress(...)", loaded_data=loaded)

    world = start()  # a script started by torchrun: its ranks distil together (docs/scale-out.md)
    try:
        ctx = open_on_every_rank(world, open_run)
        if resume or not world.is_main:  # rank 0 of a new run has them already
            _attach_in_memory_inputs(ctx, teacher, data)
        run_pipeline(ctx, until=until, redo=redo)
    finally:
        world.stop()
    if until is not None and until != "report":
        return ctx
    return result_of(ctx)


def result_of(ctx: RunContext) -> CompressResult:
    """The CompressResult of a run whose report stage has run."""
    import json

    search, bench, export = ctx.result("search"), ctx.result("bench"), ctx.result("export")
    check = check_budget(search, bench)
    report = json.loads((ctx.run_dir / "report.json").read_text())
    return CompressResult(
        run_dir=ctx.run_dir, student=search.chosen, student_arch=search.chosen_arch, budget_ms=check.budget_ms,
        budget_met=check.met, latency_source=check.latency.source, models=report["models"],
        deployed_artifact=ctx.run_dir / export.artifacts[bench.deployed_key],
        report_json=ctx.run_dir / "report.json", report_md=ctx.run_dir / "report.md",
        report_html=ctx.run_dir / "report.html",
    )


def _split_run_dir(run_dir: str | Path | None) -> tuple[Path, str | None]:
    if run_dir is None:
        return Path("runs"), None
    run_dir = Path(run_dir)
    return run_dir.parent, run_dir.name


def _save_module_teacher(module: nn.Module, loaded, runs_dir: Path, name: str | None) -> str:
    """An in-memory teacher becomes a file the run can reload on resume: a pickled module next to
    the runs (it came from this process, so loading it back runs no foreign code)."""
    import torch

    folder = runs_dir / ".teachers"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name or type(module).__name__}-teacher.pt"
    torch.save(module.eval(), path)
    log.info("api: the nn.Module teacher is saved to %s (loaded back with trust_pickle)", path)
    return str(path)


def _attach_in_memory_inputs(ctx: RunContext, teacher, data) -> None:
    if data is not None and not isinstance(data, (str, Path)):
        from edgekd.data.python import splits_from_dataset

        ctx.data = splits_from_dataset(data, seed=ctx.spec.seed, settings=ctx.recipe.data)
