"""The Optuna study: resumable after a kill, clear errors for bad storage, and the front."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from edgekd.config import SearchConfig
from edgekd.errors import UserError
from edgekd.search import engine
from edgekd.search.engine import Evaluation
from edgekd.search.space import record_key, suggest_record

SETTINGS = SearchConfig(families=["resnet"], width_multipliers=[0.25, 0.5, 1.0, 2.0], depth_options=[1, 2, 3])


def evaluate(record) -> Evaluation:
    """A deterministic stand-in for score and latency: both grow with width and depth, so the
    front is a real trade-off (what matters here is the study's bookkeeping)."""
    size = sum(w * d for w, d in zip(record["widths"], record["depths"]))
    return Evaluation(record=record, name=record_key(record), score=float(size), latency_ms=size / 100.0,
                      latency_source="predicted", params=size, macs=None)


def run(url: str, trials: int, limit_ms: float = 100.0, evaluations: list | None = None):
    study = engine.open_study(url, "test", seed=0)

    def counting(record):
        if evaluations is not None:
            evaluations.append(record)
        return evaluate(record)

    return engine.run_trials(study, trials=trials, limit_ms=limit_ms, evaluate=counting,
                             suggest=lambda trial: suggest_record(trial, SETTINGS, 8, []))


def test_trials_accumulate_across_runs_and_are_not_repeated(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = run(url, trials=8)
    assert len(first) == 8
    evaluated = []
    second = run(url, trials=15, evaluations=evaluated)
    assert len(second) == 15
    # only the 7 new trials ran, and an architecture seen before was not evaluated again
    assert len(evaluated) <= 7
    assert not {record_key(r) for r in evaluated} & {record_key(e.record) for e in first}


def test_search_resumes_after_a_kill(tmp_path):
    db = tmp_path / "study.db"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        import test_engine
        from edgekd.search import engine
        slow = lambda record: (time.sleep(0.2), test_engine.evaluate(record))[1]
        study = engine.open_study("sqlite:///{db}", "test", seed=0)
        engine.run_trials(study, trials=1000, limit_ms=100.0, evaluate=slow,
                          suggest=lambda trial: test_engine.suggest_record(trial, test_engine.SETTINGS, 8, []))
    """)
    process = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.5)
            if db.exists() and _count(db, "COMPLETE") >= 3:
                break
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    done_before = _count(db, "COMPLETE")
    assert done_before >= 3
    study = engine.open_study(f"sqlite:///{db}", "test", seed=0)
    engine.fail_stale_trials(study)
    assert _count(db, "RUNNING") == 0
    result = engine.run_trials(study, trials=done_before + 4, limit_ms=100.0, evaluate=evaluate,
                               suggest=lambda trial: suggest_record(trial, SETTINGS, 8, []))
    assert len(result) == done_before + 4


def _count(db, state: str) -> int:
    with sqlite3.connect(db) as connection:
        try:
            return connection.execute("select count(*) from trials where state = ?", (state,)).fetchone()[0]
        except sqlite3.OperationalError:  # tables not created yet
            return 0


def test_a_corrupted_study_file_is_a_clear_error_and_is_left_alone(tmp_path):
    db = tmp_path / "study.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="corrupted"):
        engine.open_study(f"sqlite:///{db}", "test", seed=0)
    assert db.read_bytes() == b"this is not sqlite" * 100


def test_an_unreachable_storage_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot open the search study storage"):
        engine.open_study(f"sqlite:///{tmp_path / 'missing-dir' / 'study.db'}", "test", seed=0)
    with pytest.raises(UserError, match="driver|invalid"):
        engine.open_study("nosuchdb://host/db", "test", seed=0)


def e(name: str, score: float, latency: float) -> Evaluation:
    return Evaluation(record={"family": "resnet", "id": name}, name=name, score=score, latency_ms=latency,
                      latency_source="predicted", params=0, macs=None)


def test_front_keeps_feasible_non_dominated_points_best_score_first():
    points = [e("a", 10, 5.0), e("b", 8, 2.0), e("c", 7, 3.0), e("d", 12, 9.0), e("f", 5, 1.0)]
    front = engine.pareto_front(points, limit_ms=6.0)
    assert [p.name for p in front] == ["a", "b", "f"]  # c is dominated by b; d is over the limit
    assert engine.fastest(points).name == "f"


def test_no_feasible_point_gives_an_empty_front():
    assert engine.pareto_front([e("a", 1, 5.0)], limit_ms=1.0) == []


# --- workers sharing a study (in one process here; tests/search/test_workers.py runs processes) ---


def test_trials_is_the_size_of_a_shared_study_not_of_each_workers_share(tmp_path):
    url = f"journal:///{tmp_path / 'study.log'}"
    first = engine.open_study(url, "test", seed=0, shared=True, worker="a")
    assert len(run_study(first, trials=6)) == 6
    evaluated = []
    second = engine.open_study(url, "test", seed=0, shared=True, worker="b")
    assert len(run_study(second, trials=6, evaluations=evaluated)) == 6  # full already: nothing to run
    assert evaluated == []
    assert len(run_study(second, trials=9, evaluations=evaluated)) == 9
    workers = [t.user_attrs["worker"] for t in second.study.get_trials()]
    assert workers == ["a"] * 6 + ["b"] * 3


def test_a_full_study_waits_for_a_live_workers_trial_up_to_wait_s(tmp_path, caplog):
    url = f"journal:///{tmp_path / 'study.log'}"
    busy = engine.open_study(url, "test", seed=0, shared=True, worker="busy")
    run_study(busy, trials=3)
    trial = busy.study.ask()  # a trial a live worker is still running
    trial.set_user_attr("worker_token", busy.liveness.token)
    waiting = engine.open_study(url, "test", seed=0, shared=True, worker="waiting", wait_s=1.5)
    start = time.monotonic()
    assert len(run_study(waiting, trials=4)) == 3  # 3 finished + 1 running = 4: it waits, then reads 3
    assert 1.5 <= time.monotonic() - start < 10
    assert "still running after" in caplog.text
    busy.study.tell(trial, [1.0, 0.01])
    # A dead worker's trial is not waited for: its lock is gone, so the trial is failed and replaced.
    orphan = busy.study.ask()
    orphan.set_user_attr("worker_token", "gone-123-abcdef12")
    assert len(run_study(waiting, trials=5)) == 5
    assert {t.number: t.state.name for t in waiting.study.get_trials()}[orphan.number] == "FAIL"


def run_study(study, trials: int, evaluations: list | None = None):
    def counting(record):
        if evaluations is not None:
            evaluations.append(record)
        return evaluate(record)

    return engine.run_trials(study, trials=trials, limit_ms=100.0, evaluate=counting,
                             suggest=lambda trial: suggest_record(trial, SETTINGS, 8, []))
