"""Opening a run: a new run dir from what the user asked (checked before any work, so bad input
fails fast and leaves nothing half-made), or a resumed one. The command line (edgekd/commands.py)
and the Python API (edgekd/api.py) both open runs here; under torchrun, through
`open_on_every_rank`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.config import check_data, load_recipe, to_dict
from edgekd.data import DatasetSplits, load_dataset
from edgekd.distill.losses import make_kd_loss
from edgekd.errors import UserError
from edgekd.io import fingerprint_file
from edgekd.models import resolve_arch
from edgekd.run import (
    PYTHON_DATA,
    RunContext,
    RunSpec,
    check_new_run_dir,
    default_run_name,
)
from edgekd.search.space import check_space, for_input
from edgekd.target import load_target, set_runners
from edgekd.teacher.hub import is_hub_name
from edgekd.teacher.loading import teacher_file_facts
from edgekd.teacher.resolve import check_teacher_accuracy, load_user_teacher
from edgekd.training.device import check_device_name
from edgekd.training.distributed import World

log = logging.getLogger(__name__)


def new_run(
    *,
    target: str = "x86-cpu",
    data: str | None = None,
    teacher: str | None = None,
    teacher_arch: str | None = None,
    trust_pickle: bool = False,
    allow_weak_teacher: bool = False,
    budget_ms: float | None = None,
    storage: str | None = None,
    device: str | list[str] | None = None,
    seed: int = 0,
    recipe: str | None = None,
    overrides: list[str] = (),
    runs_dir: str | Path = "runs",
    name: str | None = None,
    overwrite: bool = False,
    train_device: str = "auto",
    command: str = "",
    loaded_data: DatasetSplits | None = None,
) -> RunContext:
    """A new run dir for these inputs. `loaded_data` stands for `data` when the caller has the
    splits already (the Python API with a torch Dataset)."""
    target_spec = load_target(target or "x86-cpu")
    if device:
        set_runners(target_spec, [device] if isinstance(device, str) else list(device))  # malformed: fails now
    check_inputs(data=data, teacher=teacher, budget_ms=budget_ms, train_device=train_device, teacher_arch=teacher_arch)
    settings = load_recipe(recipe, list(overrides), bench_defaults=target_spec.bench)
    check_recipe(settings, target_spec, teacher)
    _check_target_tools(target_spec)
    storage = check_study_storage(storage)
    spec = RunSpec(
        target=to_dict(target_spec), recipe=to_dict(settings),
        data=f"{PYTHON_DATA}{loaded_data.name}" if loaded_data is not None else _abs(data), teacher=_abs(teacher),
        teacher_arch=teacher_arch, trust_pickle=bool(trust_pickle), budget_ms=budget_ms, storage=storage,
        seed=seed if seed is not None else 0, train_device=train_device or "auto",
        allow_weak_teacher=bool(allow_weak_teacher), command=command,
    )
    run_dir = Path(runs_dir) / (name or default_run_name(target_spec.name))
    if run_dir.exists() and not overwrite:
        check_new_run_dir(run_dir)
    # Load what the user gave before creating anything, so bad data or a bad checkpoint fails
    # fast and leaves no half-made run dir behind.
    expected_shape = _take_teacher_file_facts(spec, settings) if spec.teacher else None
    splits = loaded_data or load_dataset(spec.data, seed=spec.seed, settings=settings.data,
                                         teacher_size=spec.teacher_input_size)
    _check_expected_shape(spec.teacher, expected_shape, splits.input_shape)
    settings.search = for_input(settings.search, splits.input_shape)  # "auto" bases by the real input size
    spec.recipe = to_dict(settings)
    user_teacher = load_user_teacher(spec, splits) if spec.teacher else None
    if user_teacher is not None:  # before any search or training: a teacher fed the wrong inputs stops here
        check_teacher_accuracy(user_teacher, splits.num_classes, allow_weak=spec.allow_weak_teacher)
        spec.teacher_sha256 = fingerprint_file(spec.teacher)
    if settings.distill.calibration:  # images missing or of the wrong shape: say so before any work
        from edgekd.data.calibration import load_calibration

        load_calibration(settings.distill.calibration, splits.input_shape,
                         crop_fraction=splits.calibration_crop(settings.data.crop_fraction))
    ctx = RunContext.create(run_dir, spec, overwrite=overwrite)
    ctx.save_split(splits)
    if user_teacher is not None:
        ctx.teacher = user_teacher
    log.info("run dir %s (target %s, data %s)", run_dir, target_spec.name, data or splits.source)
    return ctx


def resume_run(run_dir: str | Path, *, train_device: str | None = None, search_runs: bool = False) -> RunContext:
    """A run dir as it was left; only where training runs may change between sessions. When the
    search will run (`search_runs`, or it has not finished), a shared study must still answer."""
    ctx = RunContext.load(Path(run_dir))
    if ctx.spec.storage and (search_runs or not ctx.is_done("search")):
        check_study_storage(ctx.spec.storage)
    if train_device is not None:
        check_device_name(train_device)
        ctx.spec.train_device = train_device
    done = ", ".join(ctx.state.completed) or "none"
    log.info("resuming %s (stages done: %s)", ctx.run_dir, done)
    return ctx


def change_recipe_on_resume(ctx: RunContext, overrides: list[str], *, stage: str, command: str) -> None:
    """`edgekd <stage> --resume RUN --set section.key=value`: the stage runs again, and so do the
    later ones, so their recipe sections may change; the sections of earlier stages (and data,
    teacher) may not, since what those stages made stays. Checked like a new run's recipe, before
    any work; the change is recorded in config.json."""
    from edgekd.config import apply_override, check_values, recipe_from_dict
    from edgekd.pipeline import STAGES

    if stage not in STAGES:
        raise UserError("--set with --resume changes what a stage computes: give it to that stage's subcommand, "
                        "e.g. `edgekd prune --resume RUN_DIR --set prune.ratio=0.3`")
    later = STAGES[STAGES.index(stage):]
    recipe = recipe_from_dict(to_dict(ctx.recipe))
    for item in overrides:
        section = item.partition("=")[0].strip().partition(".")[0]
        if section not in later:
            allowed = [name for name in later if hasattr(recipe, name)]
            raise UserError(f"--set {item}: with --resume, `edgekd {stage}` may change only "
                            f"{', '.join(allowed) or 'no'} recipe section(s) (this stage and later ones run again); "
                            "start a new run to change the others")
        apply_override(recipe, item)
    check_values(recipe, "")
    check_recipe(recipe, ctx.target, ctx.spec.teacher)
    ctx.change_recipe(recipe, command)
    log.info("recipe changed for %s and later stages: %s", stage, " ".join(overrides))


def open_on_every_rank(world: World, open_run: Callable[[], RunContext]) -> RunContext:
    """The run every torchrun rank works in. Rank 0 opens it (`open_run`: the checks, then a new
    run dir or a resumed one) while the others wait; they then load the same run dir. Rank 0 names
    it and sends the name: a default name holds the time, which the ranks would not agree on, and
    a second rank creating it would find it "already exists". A UserError on rank 0 ends every
    rank with the same message. Alone, this is `open_run()`."""
    opened: dict[str, RunContext] = {}

    def open_here() -> tuple[str, str]:
        opened["ctx"] = open_run()
        return str(opened["ctx"].run_dir), opened["ctx"].spec.train_device

    run_dir, train_device = world.on_main(open_here, share=True)
    if world.is_main:
        ctx = opened["ctx"]
    else:
        ctx = RunContext.load(Path(run_dir))
        ctx.spec.train_device = train_device  # --train-device given to a resumed run
    ctx.world = world
    return ctx


def check_study_storage(url: str | None) -> str | None:
    """A --storage URL that cannot hold the search study (bad URL, missing driver, a database that
    does not answer) fails now, in one line; returned as the run records it (a journal's path made
    absolute)."""
    if url is None:
        return None
    from edgekd.search.storage import check_storage, normalized_url

    check_storage(url)
    return normalized_url(url)


def check_inputs(*, data: Any, teacher: Any, budget_ms: float | None, train_device: str | None,
                 teacher_arch: str | None) -> None:
    """Fail before any work on inputs that cannot be right."""
    if isinstance(data, (str, Path)) and not Path(data).exists():
        raise UserError(f"dataset path '{data}' does not exist")
    if isinstance(teacher, (str, Path)) and not Path(teacher).is_file():
        raise UserError(f"teacher checkpoint '{teacher}' does not exist")
    if budget_ms is not None and not (math.isfinite(budget_ms) and budget_ms > 0):
        raise UserError(f"--budget-ms must be a positive number of milliseconds, got {budget_ms}")
    if train_device is not None:
        check_device_name(train_device)
    if teacher_arch is not None and not is_hub_name(teacher_arch):
        resolve_arch(teacher_arch)


def check_recipe(settings, target, teacher: str | Path | None) -> None:
    """What the field rules cannot say, checked before any work for a new run and for a resumed
    run whose recipe changed: typos in the recipe should fail now, not after minutes of teacher
    training and search."""
    resolve_arch(settings.teacher.arch)
    check_space(settings.search)
    make_kd_loss(settings.distill.loss, settings.distill)
    _check_distill(settings.distill)
    _check_prune(settings.prune, target)
    if settings.prune.enabled and settings.prune.flow == "teacher" and teacher and str(teacher).endswith(".pt2"):
        raise UserError("prune.flow teacher cannot prune an exported program (.pt2): its graph is fixed; give the "
                        "teacher as a checkpoint with --teacher-arch, or a pickled module (--trust-pickle)")


def _check_prune(settings, target) -> None:
    from edgekd.prune.check import check_prune_config

    check_prune_config(settings, target)
    if settings.sparse_2_4:  # ModelOpt computes the masks: missing, say so before any work
        from edgekd.prune.sparse_2_4 import require_modelopt_sparsity

        require_modelopt_sparsity()


def _check_distill(settings) -> None:
    """Distill settings that name files: checked now, and made absolute so that a resumed run
    finds them from any directory."""
    from edgekd.data.calibration import read_manifest
    from edgekd.distill.student_init import check_init

    if settings.init not in ("random", "teacher"):
        settings.init = str(Path(settings.init).expanduser().resolve())
    check_init(settings.init)
    if settings.calibration:
        settings.calibration = str(Path(settings.calibration).expanduser().resolve())
        read_manifest(settings.calibration)  # missing or malformed manifest: a UserError now


def _check_target_tools(target) -> None:
    """The target's runtime and quantizer import (else: the pip extra to install), and a target
    that cannot be measured here has the peak figures its predicted latency needs."""
    from edgekd.backends import get_backend
    from edgekd.latency.predicted import check_predictable
    from edgekd.quantizers import get_quantizer

    get_backend(target.backend)
    if target.precision == "int8":
        get_quantizer(target.quantizer)
    check_predictable(target)


def _take_teacher_file_facts(spec: RunSpec, recipe) -> tuple[int | None, ...] | None:
    """What the teacher file records: its input size (for data of mixed sizes), and the class
    order and normalisation from its edgekd.json where the user gave none."""
    metadata, shape = teacher_file_facts(spec.teacher)
    if shape is not None and shape[1] is not None and shape[1] == shape[2]:
        spec.teacher_input_size = shape[1]
    settings = recipe.data
    for key in ("classes", "mean", "std"):
        if getattr(settings, key) is None and metadata.get(key) is not None:
            setattr(settings, key, metadata[key])
            log.info("data.%s from the teacher file's metadata: %s", key, metadata[key])
    check_data(settings)
    spec.recipe = to_dict(recipe)
    return shape


def _check_expected_shape(path: str | None, expected: tuple[int | None, ...] | None,
                          data_shape: tuple[int, ...]) -> None:
    """A teacher exported for fixed input sizes must get images of that size."""
    if expected is None:
        return
    c, h, w = expected
    if (h is not None and h != data_shape[1]) or (w is not None and w != data_shape[2]):
        raise UserError(f"teacher '{path}' was exported for {h}x{w} inputs, but the data gives "
                        f"{data_shape[1]}x{data_shape[2]}; resize the images with --image-size {h}")
    if c is not None and c != data_shape[0]:
        raise UserError(f"teacher '{path}' takes {c}-channel images, but the data has {data_shape[0]} channel(s); "
                        f"convert them with --channels {c} (recipe: data.channels)")


def _abs(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path is not None else None
