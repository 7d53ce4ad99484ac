"""Run by tests/test_api_torchrun.py under torchrun: edgekd.compress from a user's script, with a
torch Dataset (it lives in each process only) and an nn.Module teacher, up to distill. Each rank
writes what it got back to $EDGEKD_TEST_RECORD/rank<RANK>.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_recipe import TINY  # noqa: E402

import edgekd  # noqa: E402
from edgekd.models import build_model  # noqa: E402

digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
dataset = TensorDataset(images, torch.tensor(digits.target))
torch.manual_seed(0)
teacher = build_model("resnet_xs", 1, 10).eval()  # untrained: allowed weak, the plumbing is the point
ctx = edgekd.compress(teacher, dataset, target="x86-cpu", budget_ms=1000.0, allow_weak_teacher=True,
                      overrides=[*TINY, "search.trials=2", "distill.epochs=1"],
                      run_dir=os.environ["EDGEKD_TEST_RUN"], until="distill")
distill = ctx.result("distill")
record = {"run_dir": str(ctx.run_dir), "processes": distill.processes, "fp32": distill.fp32_history,
          "int8": distill.int8_history}
Path(os.environ["EDGEKD_TEST_RECORD"], f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))
