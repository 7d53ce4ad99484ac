"""Issue 16's torchrun benchmark: `edgekd distill` of one fixed student on Fashion-MNIST, one
process vs `torchrun --nproc-per-node 2` (gloo, CPU), the same recipe and the same total epochs,
at several seeds; and one process held to one thread, to tell threads from processes.

Data: the first TRAIN_IMAGES training images of Debian's dataset-fashion-mnist (written as an IDX
folder, so edgekd splits off its validation images as usual) and the full 10,000-image test split.
The teacher (resnet_s) is trained once by this script and passed with --teacher, so every run
distils from the same teacher. The student is fixed by the search recipe (one candidate:
resnet_s at width 0.5: w8-16-32, depth 1-1-1). Each run has its own empty cache dir, so each computes its teacher
outputs as a first run would (under torchrun: rank 0, while rank 1 waits).

For each seed and mode the script records the val accuracy edgekd reports, the test accuracy of
the saved fp32 and INT8 (NNCF QAT) students on the test split (torch), the wall time of the whole
command, the distill stage's seconds, and the seconds per fp32 epoch from the log's timestamps
(epoch 2 on, so teacher outputs are excluded). The order of the modes rotates by seed.

    .venv/bin/python benchmarks/torchrun_distill.py               # 5 seeds, ~45 min on 2 shared cores
    .venv/bin/python benchmarks/torchrun_distill.py --quick       # the same pipeline on a sliver, not to quote

Rows go to benchmarks/results/torchrun/results.json as they finish (a rerun skips finished rows;
--redo runs them again); results.md is rendered from it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "torchrun"
FASHION = Path("/usr/share/datasets/fashion-mnist")
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
# mode -> (launcher arguments, environment). One process takes torch's default threads (one per
# core); torchrun sets OMP_NUM_THREADS=1 and edgekd gives each rank cores / 2. "1 thread" shows
# how much of a difference is the threads rather than the processes.
MODES = {"1 process": ([], {}), "torchrun 2 processes (gloo)": (TORCHRUN, {}),
         "1 process, 1 thread": ([], {"OMP_NUM_THREADS": "1"})}
RECIPE = {"train_images": 10000, "teacher_epochs": 3, "epochs": 3, "qat_epochs": 1, "batch_size": 128,
          "seeds": [0, 1, 2, 3, 4]}
# --quick: the whole pipeline in minutes; its teacher is too weak for edgekd's check, which it skips.
QUICK = {"train_images": 2000, "teacher_epochs": 1, "epochs": 2, "qat_epochs": 1, "seeds": [0], "weak_teacher": True}
EDGEKD_SETTINGS = [
    "search.families=['resnet']", "search.base='resnet_s'", "search.width_multipliers=[0.5]", "search.depth_options=[1]",
    "search.trials=1", "search.finalists=1", "search.latency='measured'", "search.warmup=5", "search.runs=20",
]


def work_dir(recipe: dict) -> Path:
    from edgekd.io import cache_dir

    path = cache_dir() / "benchmarks" / f"torchrun-{recipe['train_images']}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def idx_folder(work: Path, count: int) -> Path:
    """The first `count` training images and the whole test split, as an IDX folder whose name
    says Fashion-MNIST (edgekd then names the classes)."""
    folder = work / "fashion-mnist-subset"
    if (folder / ".complete").is_file():
        return folder
    folder.mkdir(exist_ok=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        raw = gzip.decompress((FASHION / f"{name}.gz").read_bytes())
        if name.startswith("train"):
            ndim = raw[3]
            shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
            body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)[:count]
            raw = raw[:4] + struct.pack(f">{ndim}I", *body.shape) + body.tobytes()
        (folder / name).write_bytes(raw)
    (folder / ".complete").write_text("ok")
    return folder


def teacher_file(work: Path, data: Path, epochs: int) -> tuple[Path, dict]:
    """resnet_s trained on the subset's training split (seed 0), once."""
    import torch
    from torch.nn import functional as F

    from edgekd.data import load_dataset
    from edgekd.models import build_model
    from edgekd.training import evaluate_accuracy, fit

    path, info_path = work / "teacher.pt", work / "teacher.json"
    if info_path.is_file():
        return path, json.loads(info_path.read_text())
    splits = load_dataset(str(data), seed=0)
    torch.manual_seed(0)
    model = build_model("resnet_s", 1, splits.num_classes)
    started = time.perf_counter()
    fit(model, splits.train, splits.val, lambda logits, labels, *_: F.cross_entropy(logits, labels), epochs=epochs,
        lr=0.003, batch_size=128, patience=epochs, seed=0, weight_decay=5e-4, desc="teacher")
    torch.save(model.state_dict(), path)
    info = {"arch": "resnet_s", "epochs": epochs, "test_accuracy": evaluate_accuracy(model, splits.test),
            "train_seconds": round(time.perf_counter() - started, 1)}
    info_path.write_text(json.dumps(info))
    return path, info


def distill_command(mode: str, data: Path, teacher: Path, seed: int, runs: Path, name: str, recipe: dict) -> list[str]:
    settings = [*EDGEKD_SETTINGS, f"distill.epochs={recipe['epochs']}", f"distill.qat_epochs={recipe['qat_epochs']}",
                f"distill.batch_size={recipe['batch_size']}", f"distill.patience={recipe['epochs'] + 1}"]
    command = [sys.executable, *MODES[mode][0], "-m", "edgekd", "distill", "--target", "x86-cpu", "--data", str(data),
               "--teacher", str(teacher), "--teacher-arch", "resnet_s", "--seed", str(seed), "--budget-ms", "1000",
               "--runs-dir", str(runs), "--name", name, "--overwrite"]
    for item in settings:
        command += ["--set", item]
    return command + (["--allow-weak-teacher"] if recipe.get("weak_teacher") else [])


def seconds_per_epoch(log: str) -> float | None:
    """Mean seconds between rank 0's "distill fp32 epoch k/E" lines, from epoch 1 to the last."""
    stamps = [dt.datetime.strptime(m.group(1), "%H:%M:%S")
              for m in re.finditer(r"^(\d\d:\d\d:\d\d)(?: \[rank 0\])? INFO edgekd.training.loop: distill fp32 epoch",
                                   log, re.M)]
    if len(stamps) < 2:
        return None
    gaps = [(b - a).total_seconds() % 86400 for a, b in zip(stamps, stamps[1:])]
    return round(statistics.mean(gaps), 1)


def test_accuracies(run_dir: Path) -> dict[str, float]:
    """The saved fp32 and INT8 students on the test split (torch; INT8 is NNCF's fake-quantized model)."""
    import torch

    from edgekd.models.student import student_from_record
    from edgekd.quantizers import get_quantizer
    from edgekd.run import RunContext
    from edgekd.training import evaluate_accuracy

    ctx = RunContext.load(run_dir)
    arch = ctx.result("search").chosen_arch
    fp32 = student_from_record(ctx, arch)
    fp32.load_state_dict(torch.load(run_dir / "distill" / "student_fp32.pt", weights_only=True))
    int8 = get_quantizer(ctx.target.quantizer).load_int8(student_from_record(ctx, arch),
                                                        run_dir / "distill" / "student_int8.pt")
    return {"fp32": evaluate_accuracy(fp32, ctx.data.test), "int8": evaluate_accuracy(int8, ctx.data.test),
            "student": arch["name"]}


def run_one(mode: str, seed: int, data: Path, teacher: Path, work: Path, recipe: dict) -> dict:
    name = f"seed{seed}-{re.sub(r'[^a-z0-9]+', '-', mode.split(' (')[0])}"
    cache = work / "caches" / name  # empty: teacher outputs are computed by this run, as on a first run
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKD_CACHE_DIR": str(cache), **MODES[mode][1]}
    command = distill_command(mode, data, teacher, seed, work / "runs", name, recipe)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    (work / f"{name}.log").write_text(done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    run_dir = work / "runs" / name
    distill = json.loads((run_dir / "state.json").read_text())["completed"]["distill"]
    return {"mode": mode, "seed": seed, "processes": distill["processes"], "wall_s": round(wall, 1),
            "distill_s": distill["seconds"], "fp32_epoch_s": seconds_per_epoch(done.stderr),
            "fp32_epochs": distill["fp32_epochs"], "int8_epochs": distill["int8_epochs"],
            "val_fp32": distill["fp32_val_accuracy"], "val_int8": distill["int8_val_accuracy"],
            "test": test_accuracies(run_dir), "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "finished": time.strftime("%Y-%m-%d %H:%M")}


def render(results: dict) -> str:
    rows = results["rows"]
    lines = [
        "# torchrun distillation: 1 process vs 2 (gloo) on Fashion-MNIST", "",
        f"Command: `{results['command']}`  ",
        f"CPU: {results['cpu']} ({results['cores']} cores, shared with other jobs); torch {results['torch']}; "
        f"{results['date']}.  ",
        f"Recipe: {results['recipe']}; teacher {results['teacher']}.", "",
        "| seed | mode | test acc fp32 | test acc INT8 | val acc fp32 | val acc INT8 | wall s | distill s | "
        "s / fp32 epoch | load avg (start, end) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["seed"], r["mode"])):
        lines.append(f"| {row['seed']} | {row['mode']} | {row['test']['fp32']:.2%} | {row['test']['int8']:.2%} | "
                     f"{row['val_fp32']:.2%} | {row['val_int8']:.2%} | {row['wall_s']:.0f} | {row['distill_s']:.0f} | "
                     f"{row['fp32_epoch_s']} | {row['load_average_1m'][0]}, {row['load_average_1m'][1]} |")
    lines += ["", "| mode | seeds | test acc fp32 mean ± std | test acc INT8 mean ± std | wall s mean | "
              "s / fp32 epoch mean |", "|---|---|---|---|---|---|"]
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        lines.append(f"| {mode} | {len(mine)} | {_mean_std([r['test']['fp32'] for r in mine])} | "
                     f"{_mean_std([r['test']['int8'] for r in mine])} | {statistics.mean(r['wall_s'] for r in mine):.0f} | "
                     f"{statistics.mean(r['fp32_epoch_s'] for r in mine):.1f} |")
    pairs = _paired(rows, "torchrun 2 processes (gloo)", "1 process, 1 thread")
    if pairs:
        lines += ["", "Paired by seed, torchrun 2 processes minus 1 process (1 thread), test accuracy points:", "",
                  "| seed | fp32 | INT8 |", "|---|---|---|"]
        lines += [f"| {seed} | {fp32 * 100:+.2f} | {int8 * 100:+.2f} |" for seed, fp32, int8 in pairs]
    notes = results.get("notes", "")
    return "\n".join(lines) + ("\n\n" + notes if notes else "") + "\n"


def _paired(rows: list[dict], mode: str, other: str) -> list[tuple[int, float, float]]:
    by = {(r["mode"], r["seed"]): r for r in rows}
    return [(seed, by[mode, seed]["test"]["fp32"] - by[other, seed]["test"]["fp32"],
             by[mode, seed]["test"]["int8"] - by[other, seed]["test"]["int8"])
            for seed in sorted({r["seed"] for r in rows}) if (mode, seed) in by and (other, seed) in by]


def _mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2%} ± {std:.2%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a sliver of the data, to check the script")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2 3 4)")
    parser.add_argument("--redo", action="store_true", help="run finished rows again")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from edgekd.measure import cpu_name

    recipe = {**RECIPE, **(QUICK if args.quick else {})}
    if args.seeds:
        recipe["seeds"] = args.seeds
    work = work_dir(recipe)
    torch.set_num_threads(1)  # the teacher trains here: one thread is fastest on 2 busy cores (results.md)
    data = idx_folder(work, recipe["train_images"])
    teacher, teacher_info = teacher_file(work, data, recipe["teacher_epochs"])
    out = RESULTS if not args.quick else work / "quick-results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"

    results = json.loads(path.read_text()) if path.is_file() and not args.redo else {"rows": []}
    results.update(command=" ".join(["python benchmarks/torchrun_distill.py", *sys.argv[1:]]), cpu=cpu_name(),
                   cores=os.cpu_count(), torch=torch.__version__, date=time.strftime("%Y-%m-%d"),
                   recipe=recipe, teacher=f"resnet_s, {teacher_info['epochs']} epochs, "
                                         f"test accuracy {teacher_info['test_accuracy']:.2%}")
    for index, seed in enumerate(recipe["seeds"]):
        modes = list(MODES)[index % len(MODES):] + list(MODES)[: index % len(MODES)]  # rotate who runs first
        for mode in modes:
            if any(r["seed"] == seed and r["mode"] == mode for r in results["rows"]):
                continue
            print(f"seed {seed}: {mode} ...", flush=True)
            row = run_one(mode, seed, data, teacher, work, recipe)
            results["rows"].append(row)
            path.write_text(json.dumps(results, indent=2))
            (out / "results.md").write_text(render(results))
            print(f"  test fp32 {row['test']['fp32']:.4f} int8 {row['test']['int8']:.4f}, wall {row['wall_s']:.0f} s, "
                  f"{row['fp32_epoch_s']} s per fp32 epoch", flush=True)
    (out / "results.md").write_text(render(results))
    print(f"results: {out / 'results.md'}")


if __name__ == "__main__":
    main()
