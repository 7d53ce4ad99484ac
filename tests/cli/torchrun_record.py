"""`edgekd` as torchrun starts it, with a record of what this rank did, for tests/cli/test_torchrun.py.

torchrun runs this file once per rank with edgekd's command-line arguments. It wraps, in this
process only, the calls that show who trained on what and who wrote what, then runs edgekd's real
main(). At exit it writes $EDGEKD_TEST_RECORD/rank<RANK>.json:

- shards: per training epoch under torchrun (a Split.batches call given a shard), the sample
  indices this rank trained on, in order;
- fits: per distill fit, a fingerprint of the weights it ended with and its history;
- writes: every file this rank wrote through edgekd's writers, torch.save or Path.write_*;
- run_dir: the run dir this rank worked in.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import sys

import torch

import edgekd.distill.stage as distill_stage
import edgekd.distill.teacher_outputs as teacher_outputs
import edgekd.io as edgekd_io
import edgekd.start as start
from edgekd.cli import main
from edgekd.data.split import Split

record: dict = {"shards": [], "fits": [], "writes": [], "run_dir": None}


def _batches(original):
    def batches(self, batch_size, *, shuffle=False, generator=None, shard=None):
        if shard is None or not shuffle:
            yield from original(self, batch_size, shuffle=shuffle, generator=generator, shard=shard)
            return
        seen: list[int] = []
        record["shards"].append(seen)
        for images, labels, index in original(self, batch_size, shuffle=shuffle, generator=generator, shard=shard):
            seen.extend(int(i) for i in index)
            yield images, labels, index
    return batches


def _writer(original, path_argument=0):
    def write(*args, **kwargs):
        path = args[path_argument] if len(args) > path_argument else None
        if isinstance(path, (str, os.PathLike)):
            record["writes"].append(str(path))
        return original(*args, **kwargs)
    return write


def _fit(original):
    def fit(model, *args, **kwargs):
        result = original(model, *args, **kwargs)
        record["fits"].append({"weights": edgekd_io.fingerprint_model(model), "history": result.history,
                               "desc": kwargs.get("desc")})
        return result
    return fit


def _opener(original):
    def open_on_every_rank(world, open_run):
        ctx = original(world, open_run)
        record["run_dir"] = str(ctx.run_dir)
        return ctx
    return open_on_every_rank


def _save() -> None:
    folder = pathlib.Path(os.environ["EDGEKD_TEST_RECORD"])
    (folder / f"rank{os.environ['RANK']}.json").write_text(json.dumps(record))


Split.batches = _batches(Split.batches)
edgekd_io.atomic_write = _writer(edgekd_io.atomic_write)
teacher_outputs.atomic_write = _writer(teacher_outputs.atomic_write)
torch.save = _writer(torch.save, path_argument=1)
pathlib.Path.write_text = _writer(pathlib.Path.write_text)
pathlib.Path.write_bytes = _writer(pathlib.Path.write_bytes)
distill_stage.fit = _fit(distill_stage.fit)
start.open_on_every_rank = _opener(start.open_on_every_rank)
atexit.register(_save)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
