"""Does NNCF's fast bias correction help edgekd's PTQ? Side by side, on trained Fashion-MNIST models.

NNCF's `nncf.quantize` runs FastBiasCorrection by default: after placing the INT8 quantizers it
shifts each layer's bias by the mean difference between the float and the quantized layer output
on the calibration data. In issue 4's long kd_quant run, NNCF PTQ lost 3.2 points against its fp32
start where ModelOpt's PTQ of the same model lost 0.2. This script measures, per model, PTQ with
NNCF's default (bias correction on) and with it off (what edgekd now does), each exported to an
OpenVINO IR and scored in OpenVINO on the full 10,000-image test split.

Models: built-in architectures from both families of the search space (ResNets and MobileNets
with depthwise convolutions, where bias correction is usually credited most), trained with labels
only on Fashion-MNIST. Their weights are cached, so a re-run only re-quantizes.

    .venv/bin/python benchmarks/nncf_bias_correction.py            # ~10 min on 2 quiet cores
    .venv/bin/python benchmarks/nncf_bias_correction.py --quick    # minutes, not to quote

Results: benchmarks/results/nncf-bias-correction/results.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from edgekd.backends import openvino as openvino_backend
from edgekd.data import load_dataset
from edgekd.io import cache_dir, write_json
from edgekd.measure import cpu_name
from edgekd.models import (
    arch_name,
    build_model,
    count_params,
    resolve_arch,
    scale_width,
)
from edgekd.quantizers import nncf_int8
from edgekd.training import evaluate_accuracy, fit

log = logging.getLogger("nncf_bias_correction")

DATA = Path("/usr/share/datasets/fashion-mnist")
RESULTS = Path(__file__).resolve().parent / "results" / "nncf-bias-correction"
RECIPE: dict[str, Any] = {
    "data_seed": 0, "train_images": 30000, "val_images": 5000, "batch_size": 128,
    "lr": 0.003, "weight_decay": 1e-4, "seed": 0, "calibration_samples": 300,
    # (label, built-in arch, width multiplier, epochs). x0.5 of resnet_s is kd_quant's larger
    # student (the same weights as its seed-0 labels-only row); a MobileNet epoch costs ~4x more
    # here (depthwise convolutions train slowly on CPU), hence fewer.
    "models": [["resnet_s x0.5", "resnet_s", 0.5, 6], ["resnet_s", "resnet_s", 1.0, 6],
               ["mobilenet_xs", "mobilenet_xs", 1.0, 3], ["mobilenet_s", "mobilenet_s", 1.0, 3]],
}
QUICK = {"train_images": 1000, "val_images": 500,
         "models": [["resnet_s x0.5", "resnet_s", 0.5, 1], ["mobilenet_xs", "mobilenet_xs", 1.0, 1]]}


def record_of(arch: str, width: float) -> dict[str, Any]:
    record = resolve_arch(arch)
    record.pop("name", None)
    return record if width == 1.0 else scale_width(record, width, 8)


def trained_model(label: str, record: dict[str, Any], epochs: int, data, work: Path) -> torch.nn.Module:
    """Labels-only training, cached by label in the work dir (the recipe's hash names the dir)."""
    torch.manual_seed(RECIPE["seed"])
    model = build_model(record, 1, data.num_classes)
    path = work / f"{label.replace(' ', '_')}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    train, val = data.train.subset(RECIPE["train_images"]), data.val.subset(RECIPE["val_images"])
    fit(model, train, val, lambda logits, labels, *_: F.cross_entropy(logits, labels), epochs=epochs,
        lr=RECIPE["lr"], batch_size=RECIPE["batch_size"], patience=epochs, seed=RECIPE["seed"],
        weight_decay=RECIPE["weight_decay"], desc=label)
    torch.save(model.state_dict(), path)
    return model.eval()


def measure(label: str, arch: str, width: float, epochs: int, data, work: Path) -> dict[str, Any]:
    record = record_of(arch, width)
    model = trained_model(label, record, epochs, data, work)
    calibration = data.train.x[: RECIPE["calibration_samples"]]
    example = data.test.x[:1]
    row: dict[str, Any] = {"model": label, "arch": arch_name(record), "params": count_params(model), "epochs": epochs,
                           "fp32_test_accuracy": evaluate_accuracy(model, data.test)}
    for setting, bias_correction in (("nncf_default_bias_correction", True), ("no_bias_correction", False)):
        start = time.perf_counter()
        quantized = nncf_int8.prepare_int8(model, calibration, bias_correction=bias_correction)
        seconds = time.perf_counter() - start
        path = openvino_backend.export(quantized, example, work / setting / f"{label.replace(' ', '_')}.xml",
                                       metadata={"benchmark": "nncf_bias_correction"})
        row[setting] = {"test_accuracy": openvino_backend.accuracy(path, data.test.x, data.test.y),
                        "quantize_seconds": round(seconds, 1)}
    row["gain_pt"] = 100 * (row["no_bias_correction"]["test_accuracy"]
                            - row["nncf_default_bias_correction"]["test_accuracy"])
    log.info("%s: fp32 %.4f, PTQ with bias correction %.4f, without %.4f", label, row["fp32_test_accuracy"],
             row["nncf_default_bias_correction"]["test_accuracy"], row["no_bias_correction"]["test_accuracy"])
    return row


def render(results: dict[str, Any]) -> str:
    cond = results["conditions"]
    lines = [
        "# NNCF PTQ: fast bias correction on vs off (OpenVINO IR, Fashion-MNIST test)", "",
        f"Command: `{cond['command']}` ({cond['date']}; {cond['cpu']}; torch {cond['torch']}, "
        f"NNCF {cond['nncf']}, OpenVINO {cond['openvino']}).", "",
        (f"Each model: trained with labels only (epochs in the table) on {RECIPE['train_images']:,} "
         f"training images (seed {RECIPE['seed']}); PTQ with edgekd's NNCF settings (CPU target, symmetric "
         f"INT8), calibrated on the first {RECIPE['calibration_samples']} training images; accuracy of the "
         "exported IR in OpenVINO on the full 10,000-image test split."), "",
        "| model | arch | params | epochs | fp32 (torch) | PTQ, NNCF default (bias correction) | PTQ, bias correction off | off - on (pt) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['model']} | {row['arch']} | {row['params']:,} | {row['epochs']} | {100 * row['fp32_test_accuracy']:.2f} | "
            f"{100 * row['nncf_default_bias_correction']['test_accuracy']:.2f} | "
            f"{100 * row['no_bias_correction']['test_accuracy']:.2f} | {row['gain_pt']:+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    global RESULTS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the script (not to quote)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("nncf").setLevel(logging.WARNING)
    if args.quick:
        RECIPE.update(QUICK)
        RESULTS = Path("/tmp/nncf-bias-correction-quick")
    if not args.data.is_dir():
        log.error("%s not found: apt-get install dataset-fashion-mnist, or pass --data", args.data)
        return 2
    torch.set_num_threads(2)
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:12]
    work = cache_dir() / "benchmarks" / f"nncf-bias-correction-{digest}"
    work.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.data, seed=RECIPE["data_seed"])
    import nncf
    import openvino

    results = {"recipe": RECIPE, "conditions": {
        "command": "python benchmarks/nncf_bias_correction.py" + (" --quick" if args.quick else ""),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes"), "cpu": cpu_name(),
        "torch": torch.__version__, "nncf": nncf.__version__, "openvino": openvino.__version__},
        "rows": [measure(*model, data, work) for model in RECIPE["models"]]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "results.json", results)
    md = RESULTS / "results.md"
    notes = md.read_text().split("## Notes", 1)[1] if md.is_file() and "## Notes" in md.read_text() else None
    md.write_text(render(results) + ("\n## Notes" + notes if notes else ""))
    log.info("done: %s", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
