"""Several `edgekd search` worker processes filling one study: on PostgreSQL (workers on several
machines) and on a journal file (several processes on one machine), against a real server started
on 127.0.0.1 (tests/servers.py). Workers that die mid-trial leave no trial RUNNING.

The two-worker tests search a target that cannot run here (TensorRT fp16): its latency is
predicted from the device's peaks, so every worker, and the reference computed in this process,
get the same numbers for the same architecture, and their fronts can be compared exactly.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_recipe import TINY

from edgekd.config import load_recipe, to_dict
from edgekd.run import RunContext, RunSpec
from edgekd.search import engine
from edgekd.search import stage as search
from edgekd.search.storage import open_storage
from edgekd.target import TARGETS_DIR, load_target

REPO = Path(__file__).resolve().parents[2]
TRIALS = 40
KILL_TRIALS = 3
BUDGET_MS = 1000.0
TEACHER = [item for item in TINY if item.startswith("teacher.")]
SPACE = ["search.families=['resnet']", "search.width_multipliers=[0.25,0.5,1.0]", "search.depth_options=[1,2]",
         "search.score='params'", "search.finalists=1", "search.heartbeat_s=1", "search.wait_s=60"]


@pytest.fixture(params=["postgres", "journal"])
def storage_url(request, tmp_path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres").new_database()
    return f"journal:///{tmp_path / 'study.log'}"


@pytest.fixture(scope="module")
def predicted_target(tmp_path_factory) -> Path:
    """jetson-orin at fp16: no quantizer to import, latency predicted (analytical) and deterministic."""
    data = yaml.safe_load((TARGETS_DIR / "jetson-orin.yaml").read_text())
    data.update(name="orin-fp16", precision="fp16", precisions=["fp32", "fp16"])
    path = tmp_path_factory.mktemp("target") / "orin-fp16.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def measured_target(tmp_path_factory) -> Path:
    """x86-cpu at fp32: measured here (OpenVINO), with no INT8 quantization per candidate."""
    data = yaml.safe_load((TARGETS_DIR / "x86-cpu.yaml").read_text())
    data.update(name="x86-fp32", precision="fp32")
    path = tmp_path_factory.mktemp("target") / "x86-fp32.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def settings(trials: int) -> list[str]:
    return [*TEACHER, *SPACE, f"search.trials={trials}"]


def reference_ctx(tmp_path: Path, target_path: Path, overrides: list[str]) -> RunContext:
    """A run context like the workers' (same target, recipe, budget); building its teacher here
    first also puts it in the cache the workers read, so that they do not each train it."""
    target = load_target(str(target_path))
    recipe = load_recipe(None, overrides, target.bench)
    ctx = RunContext.create(tmp_path / "reference", RunSpec(target=to_dict(target), recipe=to_dict(recipe),
                                                            budget_ms=BUDGET_MS))
    assert ctx.teacher.model is not None
    return ctx


def start_worker(tmp_path: Path, name: str, storage: str, target: str, overrides: list[str]) -> subprocess.Popen:
    argv = [sys.executable, "-m", "edgekd", "search", "--target", target, "--runs-dir", str(tmp_path / "runs"),
            "--name", name, "--storage", storage, "--budget-ms", str(BUDGET_MS)]
    for item in overrides:
        argv += ["--set", item]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - the worker writes it until it ends
    # Its own session, so that a kill reaches the worker and nothing else.
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, tmp_path: Path, name: str, timeout_s: float = 180) -> None:
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = "timeout"
    assert code == 0, f"worker {name} ended with {code}:\n{(tmp_path / f'{name}.log').read_text()[-3000:]}"


def load_trials(url: str):
    import optuna

    storage = open_storage(url, heartbeat_s=None)
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_two_workers_fill_one_study_and_ship_the_front_of_all_trials(storage_url, predicted_target, tmp_path):
    overrides = settings(TRIALS)
    ctx = reference_ctx(tmp_path, predicted_target, overrides)
    workers = {name: start_worker(tmp_path, name, storage_url, str(predicted_target), overrides)
               for name in ("w1", "w2")}
    for name, proc in workers.items():
        finish(proc, tmp_path, name)

    import optuna

    trials = load_trials(storage_url)
    # None lost, none run twice: every trial finished once, numbered without gaps, by one worker.
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    # Each worker asks for a trial only while finished + running < trials; two that ask at the
    # same instant may overshoot by one.
    assert TRIALS <= len(trials) <= TRIALS + 1
    by_worker = collections.Counter(t.user_attrs["worker"] for t in trials)
    assert set(by_worker) == {"w1", "w2"}, by_worker

    # One worker given the same trials: every architecture evaluated again here, in one process.
    stored = engine.distinct([engine.Evaluation(**t.user_attrs["evaluation"]) for t in trials])
    evaluator = search.Evaluator(ctx, [])
    again = [evaluator(evaluation.record) for evaluation in stored]
    assert [e.to_dict() for e in again] == [e.to_dict() for e in stored]
    limit_ms = BUDGET_MS * ctx.recipe.search.latency_margin
    expected = [e.to_dict() for e in engine.pareto_front(again, limit_ms)]
    assert expected
    for name in workers:  # each worker read the front of the union, not of its own trials
        front = json.loads((tmp_path / "runs" / name / "search" / "front.json").read_text())
        assert front == expected
        state = json.loads((tmp_path / "runs" / name / "state.json").read_text())
        assert state["completed"]["search"]["trials"] == len(trials)


def test_a_worker_killed_mid_trial_leaves_no_trial_running(storage_url, measured_target, tmp_path):
    """Measured latency makes each trial take a second or more (export, then timing), so the kill
    lands inside one. A second worker then frees it (heartbeat for PostgreSQL, the dead worker's
    lock for the journal) and finishes the study."""
    import optuna

    overrides = [*settings(KILL_TRIALS), "search.latency='measured'", "search.warmup=2", "search.runs=10"]
    reference_ctx(tmp_path, measured_target, overrides)  # the teacher, trained once
    first = start_worker(tmp_path, "w1", storage_url, str(measured_target), overrides)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
        try:
            running = [t for t in load_trials(storage_url) if t.state == optuna.trial.TrialState.RUNNING
                       and t.user_attrs.get("worker") == "w1"]
        except (ValueError, KeyError):  # no study yet (get_all_study_names is empty)
            continue
        if running:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            killed = running[0].number
    assert killed is not None, (tmp_path / "w1.log").read_text()[-3000:]
    stuck = {t.number: t.state for t in load_trials(storage_url)}
    assert stuck[killed] == optuna.trial.TrialState.RUNNING  # nothing else would ever finish it

    second = start_worker(tmp_path, "w2", storage_url, str(measured_target), overrides)
    finish(second, tmp_path, "w2")
    states = {t.number: t.state for t in load_trials(storage_url)}
    assert optuna.trial.TrialState.RUNNING not in states.values()
    assert states[killed] == optuna.trial.TrialState.FAIL
    assert list(states.values()).count(optuna.trial.TrialState.COMPLETE) >= KILL_TRIALS
    assert "of a worker that died were marked failed" in (tmp_path / "w2.log").read_text()
