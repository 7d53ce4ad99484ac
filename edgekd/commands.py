"""From parsed CLI arguments to a run context: a new run dir, or a resumed one."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

from edgekd.config import check_data, load_recipe, to_dict
from edgekd.data import load_dataset
from edgekd.distill.losses import make_kd_loss
from edgekd.errors import UserError
from edgekd.io import fingerprint_file
from edgekd.models import resolve_arch
from edgekd.run import RunContext, RunSpec, check_new_run_dir, default_run_name
from edgekd.search.space import check_space
from edgekd.target import load_target
from edgekd.teacher.hub import is_hub_name
from edgekd.teacher.loading import teacher_file_facts
from edgekd.teacher.resolve import check_teacher_accuracy, load_user_teacher
from edgekd.training.device import check_device_name

log = logging.getLogger(__name__)

# Options that define what a run computes; a resumed run takes them from its config.json.
_SPEC_OPTIONS = ("target", "data", "teacher", "teacher_arch", "trust_pickle", "allow_weak_teacher", "budget_ms", "storage",
                 "device",
                 "image_size", "mean", "std", "channels", "classes", "seed", "recipe", "overrides", "name",
                 "overwrite")


def open_run(args: argparse.Namespace, *, command: str) -> RunContext:
    if args.resume:
        return _resume(args)
    target = load_target(args.target or "x86-cpu")
    if args.device:
        from edgekd.remote import parse_ssh_url

        parse_ssh_url(args.device)  # a malformed URL fails now, before any work
        target.runner = args.device
    _check_inputs(args)
    recipe = load_recipe(args.recipe, [*args.overrides, *data_overrides(args)], bench_defaults=target.bench)
    # Typos in the recipe should fail now, not after minutes of teacher training and search.
    resolve_arch(recipe.teacher.arch)
    check_space(recipe.search)
    make_kd_loss(recipe.distill.loss, recipe.distill)
    _check_distill(recipe.distill)
    _check_target_tools(target)
    spec = RunSpec(
        target=to_dict(target), recipe=to_dict(recipe), data=_abs(args.data), teacher=_abs(args.teacher),
        teacher_arch=args.teacher_arch, trust_pickle=bool(args.trust_pickle), budget_ms=args.budget_ms,
        storage=args.storage, seed=args.seed if args.seed is not None else 0,
        train_device=args.train_device or "auto", allow_weak_teacher=bool(args.allow_weak_teacher), command=command,
    )
    run_dir = Path(args.runs_dir) / (args.name or default_run_name(target.name))
    if run_dir.exists() and not args.overwrite:
        check_new_run_dir(run_dir)
    # Load what the user gave before creating anything, so bad data or a bad checkpoint fails
    # fast and leaves no half-made run dir behind.
    expected_shape = _take_teacher_file_facts(spec, recipe) if spec.teacher else None
    data = load_dataset(spec.data, seed=spec.seed, settings=recipe.data, teacher_size=spec.teacher_input_size)
    _check_expected_shape(spec.teacher, expected_shape, data.input_shape)
    teacher = load_user_teacher(spec, data) if spec.teacher else None
    if teacher is not None:  # before any search or training: a teacher fed the wrong inputs stops here
        check_teacher_accuracy(teacher, data.num_classes, allow_weak=spec.allow_weak_teacher)
    if spec.teacher:
        spec.teacher_sha256 = fingerprint_file(spec.teacher)
    if recipe.distill.calibration:  # images missing or of the wrong shape: say so before any work
        from edgekd.data.calibration import load_calibration

        load_calibration(recipe.distill.calibration, data.input_shape, crop_fraction=recipe.data.crop_fraction)
    ctx = RunContext.create(run_dir, spec, overwrite=args.overwrite)
    ctx.save_split(data)
    if teacher is not None:
        ctx.teacher = teacher
    log.info("run dir %s (target %s, data %s)", run_dir, target.name, args.data or "embedded digits")
    return ctx


def _resume(args: argparse.Namespace) -> RunContext:
    given = [f"--{name.replace('_', '-')}" for name in _SPEC_OPTIONS
             if getattr(args, name) not in (None, False, [])]
    if given:
        raise UserError(
            f"--resume continues a run with the options it was started with; drop {', '.join(given)} "
            "(or start a new run without --resume)"
        )
    ctx = RunContext.load(Path(args.resume))
    if args.train_device is not None:  # where training runs may change between sessions
        check_device_name(args.train_device)
        ctx.spec.train_device = args.train_device
    done = ", ".join(ctx.state.completed) or "none"
    log.info("resuming %s (stages done: %s)", ctx.run_dir, done)
    return ctx


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


def _check_inputs(args: argparse.Namespace) -> None:
    """Fail before any work on inputs that cannot be right."""
    if args.data is not None and not Path(args.data).exists():
        raise UserError(f"dataset path '{args.data}' does not exist")
    if args.teacher is not None and not Path(args.teacher).is_file():
        raise UserError(f"teacher checkpoint '{args.teacher}' does not exist")
    if args.budget_ms is not None and not (math.isfinite(args.budget_ms) and args.budget_ms > 0):
        raise UserError(f"--budget-ms must be a positive number of milliseconds, got {args.budget_ms}")
    if args.image_size is not None and not 4 <= args.image_size <= 1024:
        raise UserError(f"--image-size must be between 4 and 1024, got {args.image_size}")
    if args.train_device is not None:
        check_device_name(args.train_device)
    if args.teacher_arch is not None and not is_hub_name(args.teacher_arch):
        resolve_arch(args.teacher_arch)


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


def data_overrides(args: argparse.Namespace) -> list[str]:
    """The data options of the command line as recipe overrides (data.* keys)."""
    overrides = []
    if args.image_size is not None:
        overrides.append(f"data.image_size={args.image_size}")
    if args.channels is not None:
        overrides.append(f"data.channels={args.channels}")
    for key in ("mean", "std"):
        value = getattr(args, key)
        if value is not None:
            overrides.append(f"data.{key}={_numbers_or_name(value, key)!r}")
    if args.classes is not None:
        names = [name.strip() for name in args.classes.split(",")] if "," in args.classes else args.classes
        overrides.append(f"data.classes={names!r}")
    return overrides


def _numbers_or_name(text: str, key: str) -> list[float] | str:
    """'imagenet' or '0.5,0.5,0.5' -> a list of floats."""
    if text.strip().lower() == "imagenet":
        return "imagenet"
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--{key} must be 'imagenet' or comma-separated numbers, e.g. 0.5,0.5,0.5; got {text!r}") from None


def _abs(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path is not None else None


def build_latency_table(args: argparse.Namespace):
    """`edgekd lut`: the target's latency table for every block of the search space, at the
    dataset's input shape or --input-size. Returns (table path, table, number of space blocks)."""
    from edgekd.latency.lut import build_lut, table_path
    from edgekd.search.space import check_space, space_block_specs

    target = load_target(args.target or "x86-cpu")
    recipe = load_recipe(None, args.overrides, bench_defaults=target.bench)
    check_space(recipe.search)
    precision = args.precision or target.precision
    if precision not in target.precisions:
        raise UserError(f"--precision {precision!r}: target {target.name} runs {', '.join(target.precisions)}")
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes must be at least 1, got {args.num_classes}")
    if args.input_size is not None:
        input_shape, num_classes = parse_input_size(args.input_size), args.num_classes or 10
    else:
        if args.data is not None and not Path(args.data).exists():
            raise UserError(f"dataset path '{args.data}' does not exist")
        data = load_dataset(_abs(args.data), seed=0)
        input_shape, num_classes = data.input_shape, args.num_classes or data.num_classes
    derived = []
    if "teacher-derived" in recipe.search.families:  # the built-in teacher's derived students
        from edgekd.models.derived import derive_from_record

        derived = derive_from_record(recipe.teacher.arch, target.channel_multiple)
    specs = space_block_specs(recipe.search, input_shape[0], num_classes, input_shape[1:], target.channel_multiple,
                              derived)
    table = build_lut(target, specs, precision, input_shape=input_shape, warmup=recipe.search.warmup,
                      runs=recipe.search.runs, threads=recipe.bench.threads, force=args.force)
    return table_path(target.name, precision, input_shape), table, len(specs)


def parse_input_size(text: str) -> tuple[int, int, int]:
    """'3x224x224' -> (3, 224, 224): channels x height x width."""
    parts = text.strip().lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise UserError(f"--input-size must be CHANNELSxHEIGHTxWIDTH, e.g. 3x224x224; got {text!r}")
    c, h, w = (int(part) for part in parts)
    if not (1 <= c <= 64 and 4 <= h <= 4096 and 4 <= w <= 4096):
        raise UserError(f"--input-size {text!r}: channels must be 1-64 and height/width 4-4096")
    return c, h, w
