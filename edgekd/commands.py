"""From parsed CLI arguments to a run context: a new run dir, or a resumed one."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgekd.config import load_recipe, to_dict
from edgekd.data import load_dataset
from edgekd.distill.losses import make_kd_loss
from edgekd.errors import UserError
from edgekd.io import fingerprint_file
from edgekd.models import resolve_arch
from edgekd.run import RunContext, RunSpec, check_new_run_dir, default_run_name
from edgekd.search.space import check_space
from edgekd.search.stage import check_search_methods
from edgekd.target import load_target, set_runners
from edgekd.teacher.resolve import load_user_teacher

log = logging.getLogger(__name__)

# Options that define what a run computes; a resumed run takes them from its config.json.
_SPEC_OPTIONS = ("target", "data", "teacher", "teacher_arch", "trust_pickle", "budget_ms", "storage", "device",
                 "image_size", "seed", "recipe", "overrides", "name", "overwrite")


def open_run(args: argparse.Namespace, *, command: str) -> RunContext:
    if args.resume:
        return _resume(args)
    target = load_target(args.target or "x86-cpu")
    if args.device:
        set_runners(target, args.device)  # a malformed URL fails now, before any work
    recipe = load_recipe(args.recipe, args.overrides, bench_defaults=target.bench)
    _check_inputs(args)
    # Typos in the recipe should fail now, not after minutes of teacher training and search.
    resolve_arch(recipe.teacher.arch)
    check_space(recipe.search)
    check_search_methods(recipe.search)
    make_kd_loss(recipe.distill.loss, recipe.distill)
    _check_distill(recipe.distill)
    _check_target_tools(target)
    storage = _check_storage(args.storage, recipe.search)
    spec = RunSpec(
        target=to_dict(target), recipe=to_dict(recipe), data=_abs(args.data), teacher=_abs(args.teacher),
        teacher_arch=args.teacher_arch, trust_pickle=bool(args.trust_pickle), budget_ms=args.budget_ms,
        storage=storage,
        seed=args.seed if args.seed is not None else 0,
        image_size=args.image_size if args.image_size is not None else 32, command=command,
    )
    run_dir = Path(args.runs_dir) / (args.name or default_run_name(target.name))
    if run_dir.exists() and not args.overwrite:
        check_new_run_dir(run_dir)
    # Load what the user gave before creating anything, so bad data or a bad checkpoint fails
    # fast and leaves no half-made run dir behind.
    data = load_dataset(spec.data, seed=spec.seed, image_size=spec.image_size)
    teacher = load_user_teacher(spec, data) if spec.teacher else None
    if spec.teacher:
        spec.teacher_sha256 = fingerprint_file(spec.teacher)
    if recipe.distill.calibration:  # images missing or of the wrong shape: say so before any work
        from edgekd.data.calibration import load_calibration

        load_calibration(recipe.distill.calibration, data.input_shape)
    ctx = RunContext.create(run_dir, spec, overwrite=args.overwrite)
    ctx.data = data
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
    if ctx.spec.storage and (args.command == "search" or "search" not in ctx.state.completed):
        _check_storage(ctx.spec.storage, ctx.recipe.search)  # the shared study must still answer
    done = ", ".join(ctx.state.completed) or "none"
    log.info("resuming %s (stages done: %s)", ctx.run_dir, done)
    return ctx


def _check_distill(settings) -> None:
    """Distill settings that name files: checked now, and made absolute so that a resumed run
    finds them from any directory."""
    from edgekd.data.calibration import read_manifest
    from edgekd.distill.stage import check_distill_settings
    from edgekd.distill.student_init import check_init

    check_distill_settings(settings)
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


def _check_storage(url: str | None, settings) -> str | None:
    """A --storage URL that cannot hold the search study (bad URL, missing driver, a database that
    does not answer) fails now, in one line; returned as the run records it (a journal's path made
    absolute)."""
    if settings.heartbeat_s < 1 or settings.wait_s < 0:
        raise UserError("search.heartbeat_s must be >= 1 and search.wait_s >= 0")
    if url is None:
        return None
    from edgekd.search.storage import check_storage, normalized_url

    check_storage(url)
    return normalized_url(url)


def _check_inputs(args: argparse.Namespace) -> None:
    """Fail before any work on inputs that cannot be right."""
    if args.data is not None and not Path(args.data).exists():
        raise UserError(f"dataset path '{args.data}' does not exist")
    if args.teacher is not None and not Path(args.teacher).is_file():
        raise UserError(f"teacher checkpoint '{args.teacher}' does not exist")
    if args.budget_ms is not None and args.budget_ms <= 0:
        raise UserError(f"--budget-ms must be positive, got {args.budget_ms}")
    if args.image_size is not None and not 4 <= args.image_size <= 1024:
        raise UserError(f"--image-size must be between 4 and 1024, got {args.image_size}")
    if args.teacher_arch is not None:
        resolve_arch(args.teacher_arch)


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
