"""edgekd/training/distributed.py and the data shards: the sharding rule, one process unchanged,
and the World's collectives and a DDP fit between two real torchrun processes (gloo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from launch import rank_log, torchrun
from torch.utils.data import DistributedSampler

from edgekd.data import Split
from edgekd.data.split import Shard
from edgekd.errors import UserError
from edgekd.training.device import CPU
from edgekd.training.distributed import SINGLE, World, threads_per_process

WORLD_SCRIPT = Path(__file__).with_name("world_ranks.py")


@pytest.mark.parametrize("n,size", [(10, 2), (11, 2), (11, 3), (2, 4)])
def test_a_shard_is_what_distributed_sampler_gives_each_rank(n, size):
    """DistributedSampler(drop_last=True) without its own shuffling: rank r's part of one order."""
    for rank in range(size):
        sampler = DistributedSampler(range(n), num_replicas=size, rank=rank, shuffle=False, drop_last=True)
        assert Shard(rank, size).of(torch.arange(n)).tolist() == list(sampler)
        assert Shard(rank, size).length(n) == len(sampler)


def test_shards_are_disjoint_equal_and_new_each_epoch():
    split = Split(torch.rand(25, 1, 4, 4), torch.arange(25) % 3)
    generators = [torch.Generator().manual_seed(7) for _ in range(3)]  # one per rank, the same seed
    epochs = []
    for _epoch in range(2):
        parts = [torch.cat([index for _, _, index in split.batches(4, shuffle=True, generator=generators[rank],
                                                                 shard=Shard(rank, 3))]).tolist()
                 for rank in range(3)]
        assert [len(part) for part in parts] == [8, 8, 8]
        assert len(set().union(*parts)) == 24  # disjoint; one sample sits out this epoch
        epochs.append(parts)
    assert epochs[0] != epochs[1]


def test_evaluation_shards_cover_every_sample_once():
    parts = [Shard(rank, 3, equal=False).of(torch.arange(11)).tolist() for rank in range(3)]
    assert sorted(sum(parts, [])) == list(range(11))


def test_one_process_keeps_the_order_it_always_had():
    split = Split(torch.rand(9, 1, 4, 4), torch.zeros(9, dtype=torch.int64))
    alone = [index.tolist() for _, _, index in split.batches(4, shuffle=True, generator=torch.Generator().manual_seed(1))]
    assert alone == [torch.randperm(9, generator=torch.Generator().manual_seed(1))[s: s + 4].tolist()
                     for s in (0, 4, 8)]
    assert SINGLE.shard() is None


def test_a_single_process_world_runs_everything_itself():
    model = torch.nn.Linear(2, 2)
    assert SINGLE.on_main(lambda: 5) == 5
    assert SINGLE.broadcast("x") == "x" and SINGLE.sum([1, 2.5]) == [1.0, 2.5]
    assert SINGLE.wrap(model, [], CPU.device) is model
    assert SINGLE.batch_share(128) == 128 and SINGLE.place(CPU) is CPU
    with pytest.raises(UserError, match="as is"):
        SINGLE.on_main(lambda: (_ for _ in ()).throw(UserError("as is")))


def test_threads_share_the_cores_among_a_node_processes():
    assert threads_per_process(2, 2) == 1
    assert threads_per_process(16, 4) == 4
    assert threads_per_process(2, 4) == 1  # never zero
    assert World(active=True, size=2).batch_share(128) == 64
    assert World(active=True, size=3).batch_share(128) == 42  # rounded down, with a warning


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    base = tmp_path_factory.mktemp("world")
    done = torchrun([str(WORLD_SCRIPT)], logs=base / "logs", env={"EDGEKD_TEST_RECORD": str(base)}, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:] + rank_log(base / "logs", 0)[-3000:]
    return [json.loads((base / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_rank_0_speaks_for_all(two_ranks):
    zero, one = two_ranks
    assert zero["broadcast"] == one["broadcast"] == {"from": 0}
    assert zero["sum"] == one["sum"] == [3.0, 1.0]
    assert zero["shared"] == one["shared"] == "made by rank 0"
    assert (zero["unshared"], one["unshared"]) == ("rank 0's alone", None)


def test_rank_0s_errors_reach_every_rank(two_ranks):
    zero, one = two_ranks
    assert zero["user_error"] == one["user_error"] == "bad input seen on rank 0"
    assert zero["crash"] == "ValueError: boom"
    assert one["crash"] == "OtherRankFailed: rank 0 failed (ValueError: boom); rank 1 stops too"


def test_ddp_fit_keeps_ranks_equal_and_counts_validation_over_shards(two_ranks):
    """Ranks started from different weights end equal (DDP starts all from rank 0's and averages
    gradients, the adapter beside the model included); validation summed over shards is what
    one process computes on the whole split with those weights."""
    zero, one = two_ranks
    assert zero["weights"] == one["weights"] and zero["adapter"] == one["adapter"]
    assert zero["history"] == one["history"] and zero["best_epoch"] == one["best_epoch"]
    assert zero["val_alone"] == one["val_alone"] == zero["val_together"] == one["val_together"]
    assert zero["history"][-1]["loss"] < zero["history"][0]["loss"]
