"""Fashion-MNIST benchmark: `edgekd compress --target x86-cpu` on 70,000 real 28x28 images.

Runs the same pipeline a user runs, on data hard enough for teacher / student / INT8 differences
to show (the embedded digits are too easy), then copies the run's report into
benchmarks/results/fashion-mnist/ so the measured numbers are committed with the command that
made them.

    apt-get install dataset-fashion-mnist      # the data (Debian package)
    make bench-fashion                         # or: .venv/bin/python benchmarks/fashion_mnist.py

Extra arguments go to `edgekd compress` (e.g. `--set distill.epochs=5` for a quicker look).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from edgekd.cli import main as edgekd_main

ROOT = Path(__file__).resolve().parent
DATA = Path("/usr/share/datasets/fashion-mnist")
RESULTS = ROOT / "results" / "fashion-mnist"

# Sized for a 2-core CPU (about 30 minutes): a resnet_s teacher (9.3 MMACs at 28x28, ~2 min an
# epoch) and students at a quarter to three quarters of its width. Override with --set.
RECIPE = [
    "teacher.arch='resnet_s'", "teacher.epochs=8", "teacher.batch_size=128", "teacher.patience=3",
    "search.width_multipliers=[0.25,0.5,0.75]", "search.depth_options=[1]",
    "distill.epochs=12", "distill.qat_epochs=3", "distill.batch_size=128", "distill.patience=4",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help=f"Fashion-MNIST IDX folder (default {DATA})")
    parser.add_argument("--runs-dir", default="runs", help="where the run dir goes (default runs/)")
    parser.add_argument("--name", default="bench-fashion-mnist", help="run name (default bench-fashion-mnist)")
    args, extra = parser.parse_known_args()
    if not args.data.is_dir():
        print(f"{args.data} not found: apt-get install dataset-fashion-mnist, or pass --data", file=sys.stderr)
        return 2
    run_dir = Path(args.runs_dir) / args.name
    command = ["compress", "--target", "x86-cpu", "--data", str(args.data),
               "--runs-dir", args.runs_dir, "--name", args.name]
    if run_dir.exists():
        command = ["compress", "--resume", str(run_dir)]  # continue an interrupted benchmark
    else:
        for item in RECIPE:
            command += ["--set", item]
        command += extra
    code = edgekd_main(command)
    if code != 0:
        return code
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in ("report.json", "report.md"):
        shutil.copy(run_dir / name, RESULTS / name)
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
