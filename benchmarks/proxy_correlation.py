"""Proxy correlation: do the zero-cost proxies rank students the way distillation does?

Every candidate student is distilled from the same Fashion-MNIST teacher with the same short
recipe, and each proxy's score (edgekd/search/proxies.py, computed on the candidate's seeded initial
weights, as the search stage does) is compared with the measured KD test accuracy: Kendall tau
and Spearman rho, over all candidates and per family.

    .venv/bin/python benchmarks/proxy_correlation.py   # sized for ~30 min on 2 idle cores; 60 min shared

The recipe is short so that the whole run fits a 2-core CPU in about half an hour (12,000 training
images, 2 epochs per student), so the accuracies are those of briefly distilled students, not of
converged ones. The teacher and every finished candidate are cached under the script's cache dir
($EDGEKD_CACHE_DIR or ~/.cache/edgekd, then benchmarks/proxy-correlation-<recipe hash>/), so a
killed run resumes where it stopped. Writes benchmarks/results/proxy-correlation/results.json
and results.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from scipy import stats
from torch.nn import functional as F

from edgekd.data import DatasetSplits, load_dataset
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
from edgekd.search.proxies import PROXIES, ProxyScorer
from edgekd.training import evaluate_accuracy, fit, predict_logits

log = logging.getLogger("proxy_correlation")

DATA = Path("/usr/share/datasets/fashion-mnist")
RESULTS = Path(__file__).resolve().parent / "results" / "proxy-correlation"

# Sized for ~30 minutes on a 2-core CPU. Changing any value starts a fresh cache directory.
RECIPE: dict[str, Any] = {
    "train_images": 12000, "val_images": 2000, "seed": 0,
    "teacher_arch": "resnet_s", "teacher_epochs": 6, "teacher_lr": 0.003,
    "epochs": 2, "batch_size": 128, "lr": 0.003, "weight_decay": 1e-4,
    "loss": "hinton", "temperature": 4.0, "alpha": 0.9,  # edgekd's distill defaults
    "proxy_batch": 64,
}
# --quick: the same pipeline in about a minute, to check the script, not to quote.
QUICK = {"train_images": 2000, "val_images": 500, "teacher_epochs": 2, "epochs": 1}
# The columns: every proxy, plus DisWOT computed against the trained teacher's weights
# (the official DisWOT re-initialises the teacher; edgekd offers both).
COLUMNS = [*PROXIES[:1], "diswot_trained", *PROXIES[1:]]


def candidates() -> list[dict[str, Any]]:
    """Resnets around the teacher (width x depth, two and four stages) and small MobileNets."""
    base = resolve_arch("resnet_s")
    base.pop("name")
    resnets = [scale_width({**base, "depths": depths}, width, 8) for width, depths in [
        (0.25, [1, 1, 1]), (0.5, [1, 1, 1]), (0.75, [1, 1, 1]), (1.0, [1, 1, 1]),
        (0.25, [2, 2, 2]), (0.5, [2, 2, 2]), (0.5, [1, 2, 1]), (0.5, [1, 1, 2]),
    ]]
    resnets.append({"family": "resnet", "stem": 16, "widths": [16, 32], "depths": [1, 1]})
    resnets.append({"family": "resnet", "stem": 8, "widths": [8, 16, 32, 64], "depths": [1, 1, 1, 1]})
    mobile = resolve_arch("mobilenet_xs")
    mobile.pop("name")

    def variant(**stage_changes: Any) -> dict[str, Any]:
        record = json.loads(json.dumps(mobile))
        for stage in record["stages"]:
            stage.update(stage_changes)
        return record

    mobilenets = [
        mobile, scale_width(mobile, 0.5, 8), variant(expand=2, se=False), variant(kernel=5),
        variant(depth=1), variant(expand=3, se=True),
    ]
    return resnets + mobilenets


def recipe_hash(data: DatasetSplits) -> str:
    key = json.dumps([RECIPE, data.source, len(data.train)], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def cached_teacher(data: DatasetSplits, train, val, cache: Path) -> tuple[torch.nn.Module, float]:
    """The teacher, trained once on the training subset and cached with its test accuracy (the
    .json is written last: its presence marks a complete cache entry)."""
    torch.manual_seed(RECIPE["seed"])
    model = build_model(RECIPE["teacher_arch"], data.input_shape[0], data.num_classes)
    weights, info = cache / "teacher.pt", cache / "teacher.json"
    if info.is_file():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        log.info("teacher: cached %s", weights)
        return model.eval(), json.loads(info.read_text())["test_accuracy"]
    log.info("teacher: training %s for %d epochs on %d images", RECIPE["teacher_arch"],
             RECIPE["teacher_epochs"], len(train))
    fit(model, train, val, lambda logits, labels, _index, _epoch: F.cross_entropy(logits, labels),
        epochs=RECIPE["teacher_epochs"], lr=RECIPE["teacher_lr"], batch_size=RECIPE["batch_size"],
        patience=RECIPE["teacher_epochs"], seed=RECIPE["seed"], weight_decay=5e-4, desc="teacher")
    torch.save(model.state_dict(), weights)
    accuracy = evaluate_accuracy(model, data.test)
    write_json(info, {"arch": RECIPE["teacher_arch"], "test_accuracy": accuracy})
    return model.eval(), accuracy


def distill(record: dict[str, Any], data: DatasetSplits, train, val, teacher_logits: torch.Tensor) -> dict[str, Any]:
    """The distill stage's fp32 step (edgekd/distill/stage.py) with the benchmark's recipe."""
    objective = make_kd_loss(RECIPE["loss"], SimpleNamespace(**RECIPE))

    def kd_loss(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor, _epoch: int) -> torch.Tensor:
        return objective(logits, teacher_logits[index], labels)

    torch.manual_seed(RECIPE["seed"])
    student = build_model(record, data.input_shape[0], data.num_classes)
    start = time.perf_counter()
    result = fit(student, train, val, kd_loss, epochs=RECIPE["epochs"], lr=RECIPE["lr"],
                 batch_size=RECIPE["batch_size"], patience=RECIPE["epochs"], seed=RECIPE["seed"],
                 weight_decay=RECIPE["weight_decay"], desc=f"distill {arch_name(record)}")
    return {"val_accuracy": result.best_val_accuracy, "test_accuracy": evaluate_accuracy(student, data.test),
            "train_seconds": round(time.perf_counter() - start, 1)}


def score_all(records: list[dict[str, Any]], teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              input_shape: tuple[int, ...]) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Every column's score per candidate, on the seeded initial weights the search stage scores,
    and each column's median time per score (ms)."""
    scorers = {column: ProxyScorer(column.removesuffix("_trained"), teacher, x, y,
                                   teacher_weights="trained" if column.endswith("_trained") else "random")
               for column in COLUMNS}
    scores, times = [], {column: [] for column in COLUMNS}
    for record in records:
        torch.manual_seed(RECIPE["seed"])
        model = build_model(record, input_shape[0], 10).eval()
        row = {}
        for column, scorer in scorers.items():
            start = time.perf_counter()
            row[column] = scorer.score(model)
            times[column].append((time.perf_counter() - start) * 1e3)
        scores.append(row)
    return scores, {column: round(statistics.median(t), 1) for column, t in times.items()}


def correlations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups = {"all": rows, "resnet": [r for r in rows if r["family"] == "resnet"],
              "mobilenet": [r for r in rows if r["family"] == "mobilenet"]}
    table = []
    for column in COLUMNS:
        entry: dict[str, Any] = {"proxy": column}
        for group, members in groups.items():
            scores = [r["scores"][column] for r in members]
            accuracy = [r["test_accuracy"] for r in members]
            tau, tau_p = stats.kendalltau(scores, accuracy)
            rho, rho_p = stats.spearmanr(scores, accuracy)
            entry[group] = {"n": len(members), "kendall_tau": float(tau), "tau_p": float(tau_p),
                            "spearman_rho": float(rho), "rho_p": float(rho_p)}
        top = max(rows, key=lambda r: r["scores"][column])
        entry["top_ranked"] = {"name": top["name"], "test_accuracy": top["test_accuracy"]}
        table.append(entry)
    return table


def render(result: dict[str, Any]) -> str:
    rows, table, cond = result["candidates"], result["correlations"], result["conditions"]
    best = max(rows, key=lambda r: r["test_accuracy"])
    winner = max(table, key=lambda e: e["all"]["kendall_tau"])
    diswot = next(e for e in table if e["proxy"] == "diswot")
    lines = [
        "# Zero-cost proxies vs distilled accuracy (Fashion-MNIST)", "",
        (f"{len(rows)} students distilled from one {cond['teacher_arch']} teacher (test accuracy "
        f"{cond['teacher_test_accuracy']:.2%}) with one short recipe: {RECIPE['train_images']:,} training "
        f"images, {RECIPE['epochs']} epochs, Hinton KD (T={RECIPE['temperature']:g}, alpha={RECIPE['alpha']:g}), "
        f"batch {RECIPE['batch_size']}, lr {RECIPE['lr']:g}, seed {RECIPE['seed']}. Accuracy is on the "
        "10,000 test images. Proxies score each student's seeded initial weights on "
        f"{RECIPE['proxy_batch']} training images (28x28)."), "",
        (f"Highest Kendall tau over all candidates: **{winner['proxy']}** ({winner['all']['kendall_tau']:+.3f}); "
        f"DisWOT (official, re-initialised teacher): {diswot['all']['kendall_tau']:+.3f}. "
        f"Best student: {best['name']} at {best['test_accuracy']:.2%}."), "",
        "## Rank correlation with KD test accuracy", "",
        "| proxy | tau (all) | p | rho (all) | tau (resnet) | tau (mobilenet) | top-ranked student | its accuracy | ms per score |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        lines.append(
            f"| {e['proxy']} | {e['all']['kendall_tau']:+.3f} | {e['all']['tau_p']:.3f} | "
            f"{e['all']['spearman_rho']:+.3f} | {e['resnet']['kendall_tau']:+.3f} (n={e['resnet']['n']}) | "
            f"{e['mobilenet']['kendall_tau']:+.3f} (n={e['mobilenet']['n']}) | {e['top_ranked']['name']} | "
            f"{e['top_ranked']['test_accuracy']:.2%} | {result['score_ms'][e['proxy']]} |")
    lines += ["", "## Candidates", "",
              "| candidate | params | MMACs | " + " | ".join(COLUMNS) + " | KD test accuracy | train s |",
              "|---|---|---|" + "---|" * len(COLUMNS) + "---|---|"]
    for r in sorted(rows, key=lambda r: -r["test_accuracy"]):
        scores = " | ".join(f"{r['scores'][c]:.4g}" for c in COLUMNS)
        lines.append(f"| {r['name']} | {r['params']:,} | {r['macs'] / 1e6:.2f} | {scores} | "
                     f"{r['test_accuracy']:.2%} | {r['train_seconds']} |")
    lines += [
        "", "## Conditions", "",
        f"- command: `{cond['command']}`",
        (f"- date: {cond['date']}; machine: {cond['cpu']} ({cond['cores']} cores, torch {cond['torch']}, "
        f"{cond['threads']} threads), shared with other work during the run"),
        f"- wall time: {cond['wall_minutes']:.1f} min for this invocation (cached candidates are not retrained)",
        ("- diswot_trained: DisWOT against the trained teacher's weights (teacher in eval mode); the "
        "official DisWOT re-initialises both networks"),
        "- ms per score: median over the candidates, 28x28 images, batch 64, on the shared machine",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help=f"Fashion-MNIST IDX folder (default {DATA})")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"output folder (default {RESULTS})")
    parser.add_argument("--quick", action="store_true",
                        help="tiny recipe and five candidates, to check the script (pass another --results)")
    args = parser.parse_args()
    if args.quick:
        if args.results == RESULTS:
            parser.error("--quick numbers are not benchmark results: pass --results elsewhere")
        RECIPE.update(QUICK)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not args.data.is_dir():
        log.error("%s not found: apt-get install dataset-fashion-mnist, or pass --data", args.data)
        return 2
    started = time.perf_counter()
    data = load_dataset(str(args.data), seed=RECIPE["seed"])
    train, val = data.train.subset(RECIPE["train_images"]), data.val.subset(RECIPE["val_images"])
    cache = cache_dir() / "benchmarks" / f"proxy-correlation-{recipe_hash(data)}"
    cache.mkdir(parents=True, exist_ok=True)
    teacher, teacher_accuracy = cached_teacher(data, train, val, cache)
    teacher_logits = predict_logits(teacher, train.x)

    done_path = cache / "candidates.json"
    done: dict[str, dict[str, Any]] = json.loads(done_path.read_text()) if done_path.is_file() else {}
    records = candidates()
    if args.quick:
        records = records[:3] + records[-2:]
    for index, record in enumerate(records, 1):
        name = arch_name(record)
        if name in done:
            continue
        log.info("candidate %d/%d: %s", index, len(records), name)
        done[name] = distill(record, data, train, val, teacher_logits)
        write_json(done_path, done)  # after each candidate: a kill loses at most the current one
        log.info("%s: test accuracy %.4f (%.0f s)", name, done[name]["test_accuracy"], done[name]["train_seconds"])

    x, y = train.x[: RECIPE["proxy_batch"]], train.y[: RECIPE["proxy_batch"]]
    scores, score_ms = score_all(records, teacher, x, y, data.input_shape)
    rows = []
    for record, row_scores in zip(records, scores):
        model = build_model(record, data.input_shape[0], data.num_classes)
        rows.append({"name": arch_name(record), "family": record["family"], "arch": record,
                     "params": count_params(model), "macs": count_macs(model, data.input_shape),
                     "scores": row_scores, **done[arch_name(record)]})
    result = {
        "conditions": {
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "date": dt.datetime.now().astimezone().isoformat(timespec="minutes"),
            "cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "data": data.summary(), "recipe": RECIPE, "teacher_arch": RECIPE["teacher_arch"],
            "teacher_test_accuracy": teacher_accuracy,
            "wall_minutes": (time.perf_counter() - started) / 60,
        },
        "score_ms": score_ms, "candidates": rows, "correlations": correlations(rows),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / "results.json", result)
    (args.results / "results.md").write_text(render(result))
    log.info("results: %s", args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
