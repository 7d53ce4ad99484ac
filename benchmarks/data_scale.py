"""Issue 13's benchmarks: a product team's data at scale, 3x224x224 JPEGs on disk.

The images are Fashion-MNIST (Debian's dataset-fashion-mnist), upscaled to 224x224 and tinted to
RGB, written as JPEG folders by this script (cached under $EDGEKD_CACHE_DIR/benchmarks/).

    .venv/bin/python benchmarks/data_scale.py memory      # peak RSS of `edgekd distill` at 10k/30k/100k images
    .venv/bin/python benchmarks/data_scale.py throughput  # images/s decoded+augmented vs the training step rate
    .venv/bin/python benchmarks/data_scale.py e2e         # a normalised 224-px teacher trained here, then compress
    .venv/bin/python benchmarks/data_scale.py gpu         # the same distill on CUDA and on the CPU (needs a GPU)

Each writes benchmarks/results/data-scale/<part>.json and regenerates results.md. Every figure says
which CPU measured it; timings on a shared 2-core VM are noisy (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "data-scale"
FASHION = Path("/usr/share/datasets/fashion-mnist")
SIZE = 224
TINTS = np.array([[1.0, 0.6, 0.3], [0.3, 0.8, 1.0], [0.9, 0.9, 0.4], [0.5, 1.0, 0.5], [1.0, 0.5, 0.9]])


def work_dir() -> Path:
    from edgekd.io import cache_dir

    path = cache_dir() / "benchmarks" / "data-scale"
    path.mkdir(parents=True, exist_ok=True)
    return path


def machine() -> dict:
    from edgekd.measure import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
            "date": time.strftime("%Y-%m-%d %H:%M")}


# ---- the data --------------------------------------------------------------------------------


def _write(job) -> None:
    from PIL import Image

    path, pixels, index = job
    gray = Image.fromarray(pixels).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    tint = TINTS[(index + index // 70_000) % len(TINTS)]
    rgb = (np.asarray(gray, dtype=np.float32)[..., None] * tint).clip(0, 255)
    Image.fromarray(rgb.astype(np.uint8)).save(path, quality=90)


def linked_folder(count: int, source: Path) -> Path:
    """The first `count` images of a written folder (by file name), as hard links: no new JPEGs."""
    root = work_dir() / f"fashion-rgb{SIZE}-{count}"
    if (root / ".complete").is_file():
        return root
    files = sorted(source.glob("*/*.jpg"), key=lambda p: p.name)[:count]
    for path in files:
        target = root / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(path, target)
    (root / ".complete").write_text("ok")
    return root


def make_folder(count: int, layout: dict[str, int] | None = None) -> Path:
    """`count` RGB 224x224 JPEGs from Fashion-MNIST's training images, one folder per class; with
    `layout` ({"train": n, "val": n, "test": n}), split sub-trees instead (test from its test file)."""
    from edgekd.data import idx

    name = f"fashion-rgb{SIZE}-{count}" if layout is None else "fashion-rgb224-" + "-".join(
        f"{k}{v}" for k, v in layout.items())
    root = work_dir() / name
    done = root / ".complete"
    if done.is_file():
        return root
    data = idx.read_idx_folder(idx.find_idx_files(FASHION))
    jobs = []
    if layout is None:
        # 70,000 distinct images (train + test files); past that they repeat with another tint, so
        # every file is still a distinct image to decode.
        images = np.concatenate([data.train_images, data.test_images])
        labels = np.concatenate([data.train_labels, data.test_labels])
        repeat = np.arange(count) % len(images)
        parts = {"": (images[repeat], labels[repeat], 0)}
    else:
        train_n, val_n = layout["train"], layout["val"]
        parts = {"train/": (data.train_images[:train_n], data.train_labels[:train_n], 0),
                 "val/": (data.train_images[train_n:train_n + val_n], data.train_labels[train_n:train_n + val_n],
                          train_n),
                 "test/": (data.test_images[:layout["test"]], data.test_labels[:layout["test"]], 10**6)}
    for prefix, (images, labels, offset) in parts.items():
        for i, (pixels, label) in enumerate(zip(images, labels)):
            folder = root / f"{prefix}{idx.FASHION_CLASSES[label].replace('/', '-')}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{offset + i:07d}.jpg", pixels, offset + i))
    print(f"writing {len(jobs)} JPEGs to {root}", flush=True)
    with Pool(os.cpu_count()) as pool:
        pool.map(_write, jobs, chunksize=256)
    done.write_text("ok")
    return root


def tiny_teacher(path: Path) -> Path:
    """An untrained small 224-px ResNet as a .pt2 (the memory benchmark is about memory)."""
    import torch

    from edgekd.models import build_model

    if not path.is_file():
        torch.manual_seed(0)
        model = build_model({"family": "resnet", "stem": 8, "stem_stride": 2, "stem_pool": True,
                             "widths": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}, 3, 10).eval()
        program = torch.export.export(model, (torch.rand(2, 3, SIZE, SIZE),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(path))
    return path


# ---- memory ----------------------------------------------------------------------------------


def memory(args) -> dict:
    """Peak RSS of `edgekd distill` (search of one student, the teacher's outputs over every
    image, a few training steps) at each folder size, with 2 DataLoader workers."""
    teacher = tiny_teacher(work_dir() / "tiny-teacher-224.pt2")
    rows = []
    largest = make_folder(max(args.counts))
    for count in args.counts:
        folder = largest if count == max(args.counts) else linked_folder(count, largest)
        runs = work_dir() / "runs"
        name = f"memory-{count}"
        command = [sys.executable, "-m", "edgekd", "distill", "--data", str(folder), "--teacher", str(teacher),
                   "--allow-weak-teacher", "--budget-ms", "10000", "--runs-dir", str(runs), "--name", name,
                   "--overwrite", "--train-device", "cpu",
                   *sum((["--set", s] for s in (
                       "search.families=['resnet']", "search.width_multipliers=[0.25]", "search.depth_options=[1]",
                       "search.trials=1", "search.finalists=1", "search.latency='measured'", "search.warmup=2",
                       "search.runs=5", "distill.epochs=1", "distill.max_steps_per_epoch=20", "distill.batch_size=32",
                       "distill.mode='ptq'", "distill.calibration_samples=32", "data.val_fraction=0.01",
                       "data.test_fraction=0.01", "data.workers=2")), [])]
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"distill at {count} images failed:\n{done.stderr[-3000:]}")
        peak_kb = int(next(line for line in done.stderr.splitlines() if "Maximum resident set size" in line)
                      .split(":")[1])
        rows.append({"images": count, "peak_rss_mib": round(peak_kb / 1024, 1), "seconds": round(seconds, 1)})
        print(rows[-1], flush=True)
    peaks = [row["peak_rss_mib"] for row in rows]
    return {"rows": rows, "spread": round(max(peaks) / min(peaks) - 1, 4), "max_mib": max(peaks),
            "what": "GNU time's maximum resident set size of the `edgekd distill` process (the largest of the "
                    "process and its waited-for children: DataLoader workers are forked, so shared pages are "
                    "counted once per process, not summed)",
            "command": "benchmarks/data_scale.py memory", **machine()}


# ---- throughput -------------------------------------------------------------------------------


def throughput(args) -> dict:
    """Images/s that 2 DataLoader workers decode, resize-crop, normalise and augment, against the
    training step rate of a 224-px student (forward + backward on batches already in memory)."""
    import torch

    from edgekd.config import DataConfig
    from edgekd.data import load_dataset
    from edgekd.data.augment import Augmentation
    from edgekd.models import build_model

    folder = make_folder(args.counts[0])
    data = load_dataset(folder, settings=DataConfig(mean="imagenet", std="imagenet", workers=args.workers,
                                                    val_fraction=0.01, test_fraction=0.01))
    augment = Augmentation(seed=0, hflip=True)
    seen, started = 0, time.perf_counter()
    for step, (images, _, index) in enumerate(data.train.batches(64, shuffle=True)):
        images = augment.apply(images, index, 0)
        seen += len(images)
        if seen >= args.images:
            break
    loader_rate = seen / (time.perf_counter() - started)
    rows = [{"what": f"decode + resize-crop + normalise + augment, {args.workers} workers", "images_per_s": round(loader_rate, 1)}]
    torch.set_num_threads(os.cpu_count())
    for name in ("resnet_s_224", "mobilenet_224"):
        model = build_model(name, 3, 10).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, y = torch.rand(64, 3, SIZE, SIZE), torch.randint(0, 10, (64,))
        for _ in range(2):  # warm-up
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        started, steps = time.perf_counter(), 5
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        rate = steps * 64 / (time.perf_counter() - started)
        rows.append({"what": f"training step of {name} (batch 64, all cores)", "images_per_s": round(rate, 1),
                     "loader_headroom": round(loader_rate / rate, 2)})
        print(rows[-1], flush=True)
    return {"rows": rows, "command": "benchmarks/data_scale.py throughput", **machine()}


# ---- end to end at 224 -------------------------------------------------------------------------


def _script_pipeline(path: Path) -> np.ndarray:
    """The teacher's own preprocessing, written independently of edgekd: PIL resize of the shorter
    side to 256, centre crop 224, ImageNet mean/std."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        width, height = image.size
        scale = 256 / min(width, height)
        image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
        left, top = (image.size[0] - SIZE) // 2, (image.size[1] - SIZE) // 2
        array = np.asarray(image.crop((left, top, left + SIZE, top + SIZE)), dtype=np.float32) / 255.0
    array = (array - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    return array.transpose(2, 0, 1).astype(np.float32)


def _folder_arrays(root: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    paths = [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).iterdir())]
    with Pool(os.cpu_count()) as pool:
        images = pool.map(_script_pipeline, [p for p, _ in paths], chunksize=64)
    return np.stack(images), np.array([i for _, i in paths])


def e2e(args) -> dict:
    """A teacher trained here at 3x224x224 on ImageNet-normalised inputs (this script's own
    preprocessing), exported as .pt2, then `edgekd compress --mean imagenet --std imagenet`."""
    import torch

    from edgekd.cli import main as edgekd_main
    from edgekd.models import build_model

    layout = {"train": args.train, "val": args.val, "test": args.test}
    folder = make_folder(sum(layout.values()), layout)
    classes = sorted(p.name for p in (folder / "train").iterdir())
    teacher_path = work_dir() / f"teacher-224-{args.train}-{args.teacher_epochs}.pt2"
    record_path = teacher_path.with_suffix(".json")
    if not teacher_path.is_file():
        torch.manual_seed(0)
        x_train, y_train = _folder_arrays(folder / "train", classes)
        x_test, y_test = _folder_arrays(folder / "test", classes)
        model = build_model("resnet_s_224", 3, len(classes))
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        started = time.perf_counter()
        for epoch in range(args.teacher_epochs):
            model.train()
            order = torch.randperm(len(x_train))
            for start in range(0, len(order), 64):
                index = order[start : start + 64]
                loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x_train[index])),
                                                         torch.from_numpy(y_train[index]))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            print(f"teacher epoch {epoch + 1}: loss {float(loss):.3f}", flush=True)
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(torch.from_numpy(x_test[s : s + 128])) for s in range(0, len(x_test), 128)])
        script_accuracy = float((logits.argmax(1).numpy() == y_test).mean())
        program = torch.export.export(model, (torch.rand(2, 3, SIZE, SIZE),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(teacher_path))
        record_path.write_text(json.dumps({"script_test_accuracy": script_accuracy,
                                           "train_seconds": round(time.perf_counter() - started, 1),
                                           "epochs": args.teacher_epochs, "train_images": len(x_train)}))
    teacher = json.loads(record_path.read_text())
    runs = work_dir() / "runs"
    name = "e2e-224"
    command = ["compress", "--target", "x86-cpu", "--data", str(folder), "--teacher", str(teacher_path),
               "--mean", "imagenet", "--std", "imagenet", "--runs-dir", str(runs), "--name", name]
    if (runs / name / "config.json").is_file():
        command = ["compress", "--resume", str(runs / name)]
    else:
        for item in args.set:
            command += ["--set", item]
    if edgekd_main(command) != 0:
        raise SystemExit("edgekd compress failed")
    report = json.loads((runs / name / "report.json").read_text())
    from edgekd.start import resume_run
    from edgekd.training import evaluate_accuracy

    ctx = resume_run(runs / name)
    edgekd_torch_accuracy = evaluate_accuracy(ctx.teacher.model, ctx.data.test)
    return {
        "teacher_script_test_accuracy": teacher["script_test_accuracy"],
        "teacher_edgekd_torch_test_accuracy": edgekd_torch_accuracy,
        "teacher_gap_pt": round(100 * (edgekd_torch_accuracy - teacher["script_test_accuracy"]), 3),
        "teacher_training": teacher,
        "models": {k: {f: m[f] for f in ("arch", "precision", "accuracy", "accuracy_source", "latency_ms",
                                          "latency_source", "size_mb", "params", "macs")}
                   for k, m in report["models"].items()},
        "stage_seconds": {k: v.get("seconds") for k, v in report["stages"].items()},
        "budget_ms": report["budget_ms"], "budget_met": report["budget_met"], "command": " ".join(
            ["benchmarks/data_scale.py e2e", *[f"--set {s}" for s in args.set]]),
        **machine(),
    }


# ---- GPU ---------------------------------------------------------------------------------------


def gpu(args) -> dict:
    """The same distill step loop on CUDA and on the CPU: images/s of a 224-px student learning
    from cached teacher outputs, data loading included (2 workers)."""
    import torch

    from edgekd.config import DataConfig
    from edgekd.data import load_dataset
    from edgekd.models import build_model
    from edgekd.training import fit, resolve_device

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this part on a machine with one")
    folder = make_folder(args.counts[0])
    data = load_dataset(folder, settings=DataConfig(mean="imagenet", std="imagenet", workers=args.workers,
                                                    val_fraction=0.01, test_fraction=0.01))
    rows = []
    for name in ("cuda", "cpu"):
        device = resolve_device(name)
        model = build_model("resnet_s_224", 3, 10)
        result = fit(model, data.train, data.val.subset(64), lambda logits, labels, *_: torch.nn.functional.cross_entropy(
            logits.float(), labels), epochs=1, lr=1e-3, batch_size=64, patience=1, seed=0, device=device,
            max_steps_per_epoch=args.steps)
        rows.append({"device": device.describe(), "images_per_s": result.images_per_s})
        print(rows[-1], flush=True)
    return {"rows": rows, "gpu": torch.cuda.get_device_name(0), "command": "benchmarks/data_scale.py gpu",
            **machine()}


def render(results: dict) -> str:
    lines = ["# Data at scale: 3x224x224 JPEG folders (issue 13)", "",
             "Made by `benchmarks/data_scale.py` (its docstring has each command). Fashion-MNIST upscaled to "
             "224x224 and tinted to RGB, written as JPEG folders.", ""]
    if "memory" in results:
        m = results["memory"]
        lines += ["## Peak memory of `edgekd distill`", "",
                  f"{m['cpu']}, {m['date']}, load average {m['load_average_1m']}. "
                  f"{m['what']}.", "", "| images | peak RSS MiB | wall s |", "|---|---|---|",
                  *[f"| {r['images']:,} | {r['peak_rss_mib']} | {r['seconds']} |" for r in m["rows"]], "",
                  f"Largest over smallest: {100 * m['spread']:.1f}% apart (goal: within 20%); largest "
                  f"{m['max_mib']:.0f} MiB (goal: at most 4 GiB).", ""]
    if "throughput" in results:
        t = results["throughput"]
        lines += ["## Data loading against training", "",
                  f"{t['cpu']}, {t['date']}, load average {t['load_average_1m']}.", "",
                  "| what | images/s | loader / step rate |", "|---|---|---|",
                  *[f"| {r['what']} | {r['images_per_s']} | {r.get('loader_headroom', '')} |" for r in t["rows"]], ""]
    if "e2e" in results:
        e = results["e2e"]
        lines += ["## End to end at 224", "",
                  f"{e['cpu']}, {e['date']}, load average {e['load_average_1m']}. Command: "
                  f"`{e['command']}`.", "",
                  f"Teacher test accuracy in the script that trained it: {100 * e['teacher_script_test_accuracy']:.2f}%; "
                  f"as edgekd runs it (torch, edgekd's preprocessing): {100 * e['teacher_edgekd_torch_test_accuracy']:.2f}% "
                  f"({e['teacher_gap_pt']:+.2f} pt; goal within 0.1 pt).", "",
                  "| model | arch | precision | test accuracy (artifact) | p50 latency | size MB |", "|---|---|---|---|---|---|",
                  *[f"| {k} | {m['arch']} | {m['precision']} | {100 * m['accuracy']:.2f}% ({m['accuracy_source']}) | "
                    f"{m['latency_ms']['p50']:.3f} ms {m['latency_source']} | {m['size_mb']:.2f} |"
                    for k, m in e["models"].items()], "",
                  "Wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in e["stage_seconds"].items()) + ".", ""]
    if "gpu" in results:
        g = results["gpu"]
        lines += ["## Distillation on CUDA and on the CPU", "", f"{g['gpu']}; {g['cpu']}, {g['date']}.", "",
                  "| device | images/s |", "|---|---|", *[f"| {r['device']} | {r['images_per_s']} |" for r in g["rows"]], ""]
    else:
        lines += ["## Distillation on CUDA and on the CPU", "",
                  "Not measured yet: no CUDA GPU was available where this was run. On a machine with one, "
                  "`benchmarks/data_scale.py gpu` measures it and adds it here.", ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("memory", "throughput", "e2e", "gpu", "render"))
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--images", type=int, default=2000, help="throughput: images to load")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="gpu: training steps per device")
    parser.add_argument("--train", type=int, default=8000)
    parser.add_argument("--val", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="e2e: recipe overrides for edgekd compress")
    args = parser.parse_args()
    if not FASHION.is_dir():
        print(f"{FASHION} not found: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.part != "render":
        result = {"memory": memory, "throughput": throughput, "e2e": e2e, "gpu": gpu}[args.part](args)
        (RESULTS / f"{args.part}.json").write_text(json.dumps(result, indent=2))
    results = {p.stem: json.loads(p.read_text()) for p in RESULTS.glob("*.json")}
    (RESULTS / "results.md").write_text(render(results))
    print(f"results: {RESULTS / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
