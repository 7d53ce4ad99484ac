"""Run by tests/training/test_distributed.py under torchrun: the World's collectives between real
processes, and a DDP fit of a model with a module its loss trains beside it. Each rank writes what
it saw to $EDGEKD_TEST_RECORD/rank<RANK>.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.data import Split
from edgekd.errors import OtherRankFailed, UserError
from edgekd.io import fingerprint_model
from edgekd.models import build_model
from edgekd.training import evaluate_accuracy, fit
from edgekd.training.distributed import start


def raise_user_error():
    raise UserError("bad input seen on rank 0")


def crash():
    raise ValueError("boom")


world = start()
seen: dict = {"broadcast": world.broadcast({"from": world.rank}), "sum": world.sum([world.rank + 1, 0.5]),
              "shared": world.on_main(lambda: f"made by rank {world.rank}", share=True),
              "unshared": world.on_main(lambda: "rank 0's alone")}
try:
    world.on_main(raise_user_error)
except UserError as exc:
    seen["user_error"] = str(exc)
try:
    world.on_main(crash)
except (OtherRankFailed, ValueError) as exc:
    seen["crash"] = f"{type(exc).__name__}: {exc}"

# A learnable task on random 8x8 images: is the left half brighter than the right?
generator = torch.Generator().manual_seed(0)
x = torch.rand(203, 1, 8, 8, generator=generator)
y = (x[:, 0, :, :4].mean((1, 2)) > x[:, 0, :, 4:].mean((1, 2))).long()
train, val = Split(x[:162], y[:162]), Split(x[162:], y[162:])  # 41 val images: shards of 21 and 20
torch.manual_seed(100 + world.rank)  # each rank starts elsewhere: DDP must start all from rank 0's weights
model, adapter = build_model("resnet_xs", 1, 10), nn.Linear(10, 10)


def loss_fn(logits, labels, _index, _epoch):
    return F.cross_entropy(logits, labels) + 0.01 * adapter(logits).square().mean()


result = fit(model, train, val, loss_fn, epochs=3, lr=1e-2, batch_size=32, patience=5, seed=0,
             extra_modules=[adapter], world=world)
seen.update(weights=fingerprint_model(model), adapter=fingerprint_model(adapter), history=result.history,
            best_epoch=result.best_epoch, val_alone=evaluate_accuracy(model, val),
            val_together=evaluate_accuracy(model, val, world=world))
Path(os.environ["EDGEKD_TEST_RECORD"], f"rank{world.rank}.json").write_text(json.dumps(seen))
world.stop()
