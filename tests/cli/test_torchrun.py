"""`torchrun --nproc-per-node 2` on the CPU (gloo), as a user starts it: real processes, the tiny
recipe and the embedded digits.

The end-to-end run goes through tests/cli/torchrun_record.py, which runs edgekd's own main() on
each rank and records which samples the rank trained on, which files it wrote, and the weights
each distill fit ended with."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from launch import rank_log, torchrun
from tiny_recipe import tiny_args

from edgekd.pipeline import STAGES
from edgekd.training.distributed import threads_per_process, usable_cores

RECORDER = Path(__file__).with_name("torchrun_record.py")
N_TRAIN = 1257  # the embedded digits' training split


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """`compress` with the tiny recipe (x86-cpu: fp32 KD, then NNCF QAT), no --name."""
    base = tmp_path_factory.mktemp("torchrun")
    runs, records, logs = base / "runs", base / "records", base / "logs"
    records.mkdir()
    # A cache of its own, so that rank 0 computes the teacher outputs here (an earlier test of the
    # session may have cached them for the same teacher and data); the session's teachers are
    # shared, so the tiny teacher is not trained again.
    cache = base / "cache"
    cache.mkdir()
    session_teachers = Path(os.environ["EDGEKD_CACHE_DIR"]) / "teachers"
    session_teachers.mkdir(parents=True, exist_ok=True)
    (cache / "teachers").symlink_to(session_teachers)
    done = torchrun([str(RECORDER), "compress", "--target", "x86-cpu", "--runs-dir", str(runs), *tiny_args()],
                    logs=logs, env={"EDGEKD_TEST_RECORD": str(records), "EDGEKD_CACHE_DIR": str(cache)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in (0, 1)]
    return runs, ranks, logs


def test_both_ranks_work_in_one_run_dir_that_rank_0_named(two_ranks):
    runs, ranks, _ = two_ranks
    (run_dir,) = [path for path in runs.iterdir() if path.is_dir()]
    assert ranks[0]["run_dir"] == ranks[1]["run_dir"] == str(run_dir)
    assert run_dir.name.startswith("x86-cpu-")  # the default name, chosen once
    state = json.loads((run_dir / "state.json").read_text())
    assert list(state["completed"]) == list(STAGES)
    assert state["completed"]["distill"]["processes"] == 2
    assert (run_dir / "report.md").is_file() and (run_dir / "report.json").is_file()
    assert "torchrun --nproc-per-node 2 -m edgekd" in json.loads((run_dir / "config.json").read_text())["command"]


def test_each_rank_trains_on_a_disjoint_shard_of_every_epoch(two_ranks):
    _, ranks, _ = two_ranks
    zero, one = ranks[0]["shards"], ranks[1]["shards"]
    # 2 fp32 epochs and 1 QAT epoch, on both ranks (rank 0's teacher training is not sharded)
    assert len(zero) == len(one) == 3
    for epoch, (mine, theirs) in enumerate(zip(zero, one)):
        assert len(mine) == len(theirs) == N_TRAIN // 2, epoch  # the same number of steps
        assert not set(mine) & set(theirs), f"epoch {epoch}: ranks share samples"
        assert len(set(mine) | set(theirs)) == N_TRAIN - N_TRAIN % 2  # one sample sits out
        assert set(mine) | set(theirs) <= set(range(N_TRAIN))
    assert zero[0] != zero[1], "every epoch draws a new order (set_epoch semantics)"


def test_ranks_end_each_fit_with_the_same_weights_and_history(two_ranks):
    """DDP keeps the replicas equal, in fp32 and in QAT with NNCF's fake-quantized model; the
    validation accuracy (counted over shards) and so early stopping agree."""
    _, ranks, _ = two_ranks
    assert [fit["desc"] for fit in ranks[0]["fits"]] == ["distill fp32", "distill int8 (QAT)"]
    assert ranks[0]["fits"] == ranks[1]["fits"]


def test_only_rank_0_writes_and_each_checkpoint_once(two_ranks):
    runs, ranks, _ = two_ranks
    assert ranks[1]["writes"] == [], "rank 1 must not write: it reads what rank 0 wrote"
    written = [Path(path).name for path in ranks[0]["writes"]]
    assert written.count("student_fp32.pt") == 1
    assert written.count("student_int8.pt") == 1
    assert written.count("student_int8.nncf.json") == 1
    assert any(name.startswith("epoch-") and name.endswith(".npz") for name in written)  # the teacher-output cache


def test_threads_are_set_per_process_and_logged(two_ranks):
    _, _, logs = two_ranks
    expected = threads_per_process(usable_cores(), 2)
    text = rank_log(logs, 0, "stderr")
    assert f"torch threads {expected} per process while training ({usable_cores()} cores / 2 local processes; " \
           "OMP_NUM_THREADS was 1)" in text
    assert "[rank 0]" in text and "distill fp32 epoch 2/2" in text
    assert "distill fp32 epoch" not in rank_log(logs, 1, "stderr")  # rank 1 logs warnings only


def test_a_user_error_on_rank_0_ends_every_rank_with_the_same_line(tmp_path):
    missing = tmp_path / "no-such-data"
    done = torchrun(["-m", "edgekd", "distill", "--data", str(missing), "--runs-dir", str(tmp_path / "runs")],
                    logs=tmp_path / "logs", timeout=180)
    line = f"edgekd: error: dataset path '{missing}' does not exist"
    for rank in (0, 1):
        assert rank_log(tmp_path / "logs", rank, "stderr").strip().splitlines()[-1] == line
    assert done.returncode != 0
    # torchrun's summary: rank 0 exits with 2; rank 1, which printed the same line above, exits
    # with 2 too or is stopped by torchrun first when rank 0 ended before it (SIGTERM): a race.
    assert "exitcode  : 2" in done.stderr, done.stderr[-2000:]
    assert done.stderr.count("exitcode  : 2") + done.stderr.count("(SIGTERM)") == 2, done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()
