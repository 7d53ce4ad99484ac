"""From parsed CLI arguments to a run (edgekd/start.py opens it), and `edgekd lut`."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from edgekd.config import load_recipe
from edgekd.data import load_dataset
from edgekd.errors import UserError
from edgekd.run import RunContext
from edgekd.search.space import check_space, for_input
from edgekd.start import change_recipe_on_resume, new_run, resume_run
from edgekd.target import load_target

log = logging.getLogger(__name__)

# Options that define what a run computes; a resumed run takes them from its config.json.
_SPEC_OPTIONS = ("target", "data", "teacher", "teacher_arch", "trust_pickle", "allow_weak_teacher", "budget_ms", "storage",
                 "device",
                 "image_size", "mean", "std", "channels", "classes", "seed", "recipe", "overrides", "name",
                 "overwrite")


def open_run(args: argparse.Namespace, *, command: str) -> RunContext:
    """The run the command line asks for (edgekd/start.py does the work)."""
    if args.resume:
        given = [f"--{name.replace('_', '-')}" for name in _SPEC_OPTIONS
                 if name != "overrides" and getattr(args, name) not in (None, False, [])]
        if given:
            raise UserError(
                f"--resume continues a run with the options it was started with; drop {', '.join(given)} "
                "(or start a new run without --resume)"
            )
        ctx = resume_run(args.resume, train_device=args.train_device, search_runs=args.command == "search")
        if args.overrides:  # a stage run again with other settings of its own (and of later stages)
            change_recipe_on_resume(ctx, list(args.overrides), stage=args.command, command=command)
        return ctx
    if args.image_size is not None and not 4 <= args.image_size <= 1024:
        raise UserError(f"--image-size must be between 4 and 1024, got {args.image_size}")
    return new_run(
        target=args.target or "x86-cpu", data=args.data, teacher=args.teacher, teacher_arch=args.teacher_arch,
        trust_pickle=bool(args.trust_pickle), allow_weak_teacher=bool(args.allow_weak_teacher),
        budget_ms=args.budget_ms, storage=args.storage, device=args.device,
        seed=args.seed if args.seed is not None else 0, recipe=args.recipe,
        overrides=[*args.overrides, *data_overrides(args)], runs_dir=args.runs_dir, name=args.name,
        overwrite=args.overwrite, train_device=args.train_device or "auto", command=command,
    )


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
    from edgekd.search.space import space_block_specs

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
        data = load_dataset(_abs(args.data), seed=0, settings=recipe.data)
        input_shape, num_classes = data.input_shape, args.num_classes or data.num_classes
    derived = []
    if "teacher-derived" in recipe.search.families:  # the built-in teacher's derived students
        from edgekd.models.derived import derive_from_record

        derived = derive_from_record(recipe.teacher.arch, target.channel_multiple)
    recipe.search = for_input(recipe.search, input_shape)
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
