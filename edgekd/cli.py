"""Command line: `edgekd compress` runs every stage; `edgekd <stage>` runs the pipeline up to
that stage (running it again if it already ran); `edgekd targets` lists devices.

Errors a user can fix print one line and exit with code 2; an interrupted run says how to resume.

Under torchrun (`torchrun --nproc-per-node N -m edgekd distill ...`) every process runs this same
main(): they join one process group, rank 0 opens the run dir and the others follow it
(edgekd/training/distributed.py); each rank's log lines carry its rank, and ranks other than 0
log warnings and errors only (with -v, everything) and draw no progress bars.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from edgekd.errors import OtherRankFailed, UserError
from edgekd.interrupt import remember_interrupts
from edgekd.version import __version__

log = logging.getLogger("edgekd")

STAGE_HELP = {
    "search": "pick the student architecture that fits the latency budget on the target",
    "distill": "train the student from the teacher (KD), quantization-aware when the target runs INT8",
    "prune": "remove channels (or 2:4 sparsity on TensorRT) where the device gets faster; off unless "
             "--set prune.enabled=true",
    "export": "write the target runtime's artifacts (OpenVINO IR, ONNX) with metadata",
    "bench": "measure latency, throughput, size and accuracy of the exported artifacts on the target",
    "report": "write report.json, report.md and report.html (one self-contained page) in the run dir",
}

EXAMPLES = """examples:
  edgekd compress --target x86-cpu
      the embedded default: scikit-learn's handwritten digits, a teacher edgekd trains and caches
  edgekd compress --target x86-cpu --teacher teacher.pt --teacher-arch resnet_s \\
      --data path/to/images --budget-ms 0.3
  edgekd compress --resume runs/x86-cpu-20261121-101500
      continue an interrupted run from its last finished stage
  edgekd compress --target x86-cpu --set distill.epochs=5 --set bench.runs=100
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgekd",
        description="Distil a big model into a small one that meets a latency budget on an edge device, "
        "and measure it there.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"edgekd {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    compress = commands.add_parser(
        "compress", help="run the whole pipeline: search, distill, prune, export, bench, report",
        description="Run the whole pipeline: " + ", ".join(STAGE_HELP) + ".",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_options(compress)
    for stage, text in STAGE_HELP.items():
        sub = commands.add_parser(
            stage, help=text,
            description=f"{text[0].upper()}{text[1:]}. Earlier stages that have not run yet run first; "
            f"with --resume, this stage runs again and later stages are marked to be redone, and --set may "
            f"change the recipe sections of this stage and later ones (e.g. `edgekd prune --resume RUN_DIR "
            f"--set prune.ratio=0.3`).",
        )
        _add_run_options(sub)
        if stage == "report":
            _add_report_options(sub)
    targets = commands.add_parser("targets", help="list the known targets")
    targets.set_defaults(command="targets")
    lut = commands.add_parser(
        "lut", help="measure the target's per-block latency table, from which search predicts latency",
        description="Time every block of the search space on the target backend at the deployed precision "
        "(differential timing, see edgekd/latency/lut.py) and save the table to "
        "benchmarks/<target>/lut-<precision>-<C>x<H>x<W>.json ($EDGEKD_BENCHMARKS_DIR instead of ./benchmarks "
        "when set). The table is saved after every block: run the same command again to resume.",
    )
    _add_lut_options(lut)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to compress")
    what.add_argument("--target", help="device name (see `edgekd targets`) or a target YAML file; default x86-cpu")
    what.add_argument("--data", help="image folder (one sub-folder per class; train/ val/ test/ used when present) "
                      "or a folder of MNIST-style IDX files; default: scikit-learn's digits (embedded)")
    what.add_argument("--teacher", help="teacher file: a torch.export program (.pt2), TorchScript, or a state dict "
                      "(needs --teacher-arch); default: a teacher edgekd trains on first use and caches")
    what.add_argument("--teacher-arch", help="architecture of a state-dict teacher: built-in resnet_xs, resnet_s, "
                      "resnet_m, resnet_l, mobilenet_s, ..., or timm:NAME / torchvision:NAME (pip extras timm, torchvision)")
    what.add_argument("--allow-weak-teacher", action="store_true", default=None,
                      help="go on when the teacher scores near chance on the validation split (normally an error: "
                      "it is usually fed inputs it was not trained on)")
    what.add_argument("--trust-pickle", action="store_true", default=None,
                      help="allow loading a fully pickled model (runs code from the file; only for sources you trust)")
    what.add_argument("--budget-ms", type=float, help="latency budget: batch-1 p50 in ms on the target "
                      "(default: the teacher's measured latency / 2.5)")
    what.add_argument("--device", metavar="ssh://USER@HOST[:PORT]", action="append",
                      help="measure latency on this device over SSH instead of the target's runner "
                      "(the device needs python3 with edgekd and the backend installed; see targets/README.md); "
                      "repeat it for a pool of devices: each measurement goes to a free one (docs/scale-out.md)")
    what.add_argument("--storage", metavar="URL",
                      help="database URL of the search's Optuna study (e.g. postgresql://host/db, so that many "
                      "workers share one study); default: SQLite inside the run dir")
    data = parser.add_argument_group("data and preprocessing (the teacher's input contract)")
    data.add_argument("--image-size", type=int, help="image-folder images are resized (shorter side) and centre-cropped "
                      "to this square size; default: their own size when they all share one, else the teacher's")
    data.add_argument("--mean", help="the teacher's input normalisation mean: 'imagenet' or per-channel values "
                      "'0.485,0.456,0.406' (with --std); default: none, inputs in [0, 1]")
    data.add_argument("--std", help="the teacher's normalisation std: 'imagenet' or per-channel values (with --mean)")
    data.add_argument("--channels", type=int, choices=(1, 3),
                      help="convert the images to 1 (gray) or 3 (RGB) channels, for a teacher that takes the other count")
    data.add_argument("--classes", metavar="FILE|A,B,...",
                      help="the teacher's class order: a file with one class name per line, or comma-separated "
                      "names; default: sorted folder names")
    data.add_argument("--train-device", metavar="auto|cpu|cuda[:N]",
                      help="where training runs (default auto: CUDA when torch sees a GPU); may change on --resume")
    what.add_argument("--seed", type=int, help="seed for the data split and training (default 0)")
    how = parser.add_argument_group("recipe")
    how.add_argument("--recipe", help="YAML file with teacher/search/distill/bench sections")
    how.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one recipe value, e.g. --set distill.epochs=5 (repeatable)")
    where = parser.add_argument_group("run directory")
    where.add_argument("--name", help="run name: results go to RUNS_DIR/NAME (default: <target>-<date>-<time>)")
    where.add_argument("--runs-dir", default="runs", help="parent folder of run dirs (default: runs)")
    where.add_argument("--resume", metavar="RUN_DIR", help="continue this run dir from its last finished stage")
    where.add_argument("--overwrite", action="store_true", help="replace an existing run dir of the same name")
    out = parser.add_argument_group("output")
    out.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    out.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.description += (" `edgekd report RUN_DIR` writes report.json, report.md and report.html of a run again; "
                           "`edgekd report --compare RUN_DIR RUN_DIR ...` puts several runs side by side.")
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="the run to report on (same as --resume RUN_DIR)")
    group = parser.add_argument_group("comparing runs")
    group.add_argument("--compare", nargs="+", metavar="RUN_DIR",
                       help="write one HTML page and one Markdown table comparing these runs (their report.json)")
    group.add_argument("--output", metavar="FILE.html",
                       help="where --compare writes (the .md goes beside it); default RUNS_DIR/compare-<date>-<time>.html")


def _compare_runs(args: argparse.Namespace) -> int:
    from edgekd.report.compare import default_output, write_comparison

    if args.run_dir or args.resume:
        raise UserError("give the runs to compare after --compare, not as RUN_DIR or --resume")
    html_path, md_path = write_comparison(args.compare, args.output or default_output(args.runs_dir),
                                          overwrite=args.overwrite)
    print(f"comparison: {html_path}")
    print(f"table:      {md_path}")
    return 0


def _add_lut_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target", help="device name (see `edgekd targets`) or a target YAML file; default x86-cpu")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--input-size", metavar="CxHxW", help="model input, e.g. 3x224x224 (default: the dataset's)")
    size.add_argument("--data", help="dataset whose input size and class count the table is for "
                      "(as in `edgekd compress`); default: the embedded digits, 1x8x8, 10 classes")
    parser.add_argument("--num-classes", type=int, help="classes of the head blocks (default: the dataset's; "
                        "10 with --input-size)")
    parser.add_argument("--precision", help="fp32 or int8 (default: the target's deployed precision)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe value, e.g. --set search.families=\"['resnet']\" (the space to cover) "
                        "or --set search.runs=50 (the timing protocol); repeatable")
    parser.add_argument("--force", action="store_true", help="measure every block again instead of resuming")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")


def _build_lut(args: argparse.Namespace) -> int:
    from edgekd.commands import build_latency_table  # imports torch; keep `--help` fast

    path, table, count = build_latency_table(args)
    shape = "x".join(str(v) for v in table.input_shape)
    print(f"latency table: {path}")
    print(f"{count} blocks of the search space ({len(table.blocks)} in the table), {table.precision} {shape} "
          f"on {table.target} ({table.backend} {table.backend_version}); per-inference overhead "
          f"{table.overhead_ms:.4f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    _configure_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    run_dir, world = None, None
    restore_sigint = remember_interrupts()
    try:
        if args.command == "targets":
            return _list_targets()
        if args.command == "lut":
            return _build_lut(args)
        if args.command == "report" and args.compare:
            return _compare_runs(args)
        if getattr(args, "run_dir", None):  # `edgekd report RUN_DIR`
            if args.resume and args.resume != args.run_dir:
                raise UserError(f"two run dirs given: {args.run_dir} and --resume {args.resume}")
            args.resume = args.run_dir
        from edgekd.commands import open_run  # imports torch; keep `--help` fast
        from edgekd.start import open_on_every_rank
        from edgekd.training.distributed import start

        world = start()
        if not world.is_main:
            from edgekd.measure import hide_progress_bars

            hide_progress_bars()
        command = _launcher(world) + "edgekd " + " ".join(shlex.quote(a) for a in argv)
        ctx = open_on_every_rank(world, lambda: open_run(args, command=command))
        run_dir = ctx.run_dir
        from edgekd.pipeline import run_pipeline

        if args.command == "compress":
            run_pipeline(ctx)
        else:
            run_pipeline(ctx, until=args.command, redo=args.command if args.resume else None)
        if world.is_main:
            _print_outcome(ctx, args.command)
        return 0
    except UserError as exc:
        print(f"edgekd: error: {exc}", file=sys.stderr)
        return 2
    except OtherRankFailed as exc:
        print(f"edgekd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = f"; resume with: edgekd compress --resume {run_dir}" if run_dir else ""
        if args.command == "lut":
            hint = "; run the same command again to resume (measured blocks are kept)"
        print(f"edgekd: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        restore_sigint()
        if world is not None:
            world.stop()


def _launcher(world) -> str:
    """How the report's reproducing command starts: torchrun with this run's processes."""
    if not world.active:
        return ""
    nodes = world.size // max(1, world.local_size)
    return f"torchrun --nproc-per-node {world.local_size}{f' --nnodes {nodes}' if nodes > 1 else ''} -m "


def _list_targets() -> int:
    from edgekd.latency.predicted import check_predictable
    from edgekd.target import known_targets, load_target, why_not_measurable

    print(f"{'target':16} {'backend':10} {'precisions':14} {'latency here':13} description")
    for name in known_targets():
        target = load_target(name)
        here = "measured" if why_not_measurable(target) is None else "predicted"
        try:
            check_predictable(target)
        except UserError:
            here = "unavailable"  # neither its runtime nor its peak figures are here
        print(f"{name:16} {target.backend:10} {'/'.join(target.precisions):14} {here:13} {target.description}")
    return 0


def _print_outcome(ctx, command: str) -> None:
    print(f"run dir: {ctx.run_dir}")
    if ctx.is_done("report"):
        print(f"report:  {ctx.run_dir / 'report.md'}")
        if (ctx.run_dir / "report.html").is_file():
            print(f"page:    {ctx.run_dir / 'report.html'}")
        report = ctx.result("report")
        if not report.budget_met:
            print(f"warning: the deployed student missed the latency budget ({report.budget_met_source} latency); "
                  "see the report", file=sys.stderr)


def _configure_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    form = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    rank = os.environ.get("RANK") if "LOCAL_RANK" in os.environ else None  # started by torchrun
    if rank is not None:
        form = f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s"
        if rank != "0" and not verbose:  # the other ranks repeat rank 0's lines
            level = logging.WARNING
    logging.basicConfig(level=level, format=form, datefmt="%H:%M:%S")
    # NNCF and OpenVINO log at INFO about their own internals; keep ours readable.
    for noisy in ("nncf", "openvino"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
