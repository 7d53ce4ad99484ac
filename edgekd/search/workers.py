"""Workers that share one study: who runs which trial, and freeing the trials of dead workers.

A worker that dies mid-trial (killed, its machine lost) leaves that trial RUNNING. Left alone it
would hold the study short of its trials for ever, and a run waiting for it would wait in vain.
How a dead worker is told from a slow one depends on the storage:

- a database (RDBStorage): Optuna's heartbeat. Each running trial's worker records a heartbeat
  every `heartbeat_s`; a trial silent for 3 x heartbeat_s is failed by the next worker that looks
  (`optuna.storages.fail_stale_trials`, which Study.optimize also calls before each trial).
- a journal file (one machine): Optuna's JournalStorage has no heartbeat, but every worker is on
  this machine, so each holds an flock(2) on its own file in `<journal>.workers/` while it lives,
  and tags its trials with that file's name. The kernel drops the lock when the process dies, so a
  trial whose tag's lock can be taken belongs to a dead worker, at once and without a clock.
- the run dir's SQLite file: one process owns it, so every RUNNING trial found when it opens the
  study was left by a kill.

In every storage a RUNNING trial without a tag older than 3 x heartbeat_s is failed too: its
worker died between asking for the trial and tagging it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
import weakref
from pathlib import Path

log = logging.getLogger(__name__)

WORKER_ATTR = "worker"  # user attribute: the worker's name (its run dir's name), for people
TOKEN_ATTR = "worker_token"  # user attribute: the journal worker's lock file name, for liveness


class WorkerLiveness:
    """This process's proof of life in a journal study, and the test of other workers' proofs."""

    def __init__(self, journal: Path, worker: str):
        import fcntl

        self.directory = Path(f"{journal}.workers")
        self.directory.mkdir(exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in worker)[:40]
        self.token = f"{safe}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        fd = os.open(self.directory / f"{self.token}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh name: nobody else holds it
        weakref.finalize(self, _release, fd, self.directory / f"{self.token}.lock")

    def is_alive(self, token: str) -> bool:
        """Whether the worker that wrote `token` still runs (on this machine)."""
        import fcntl

        if token == self.token:
            return True
        path = self.directory / f"{Path(token).name}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)  # its owner is gone; the file is no longer anyone's
        return False


def _release(fd: int, path: Path) -> None:
    path.unlink(missing_ok=True)
    os.close(fd)


def fail_dead_trials(study, storage_kind: str, *, liveness: WorkerLiveness | None, grace_s: float,
                     owner: bool) -> list[int]:
    """Fail the RUNNING trials whose worker is dead; their numbers. `owner`: this process alone
    uses the study (the run dir's SQLite file), so every RUNNING trial is a dead one."""
    import warnings

    import optuna
    from optuna.trial import TrialState

    failed = []
    if storage_kind != "journal":  # a database with the heartbeat on (else Optuna does nothing here)
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9; it is what the heartbeat is for
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        failed = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if t.number in running]
    now = dt.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        token = trial.user_attrs.get(TOKEN_ATTR)
        if owner:
            dead = True
        elif token is not None and liveness is not None:
            dead = not liveness.is_alive(token)
        else:
            started = trial.datetime_start or now
            dead = WORKER_ATTR not in trial.user_attrs and (now - started).total_seconds() > grace_s
        if dead and _fail(study, trial.number):
            failed.append(trial.number)
    if failed:
        log.warning("search: trial(s) %s of a worker that died were marked failed; other trials replace them",
                    ", ".join(map(str, failed)))
    return failed


def _fail(study, number: int) -> bool:
    import optuna

    try:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
        return True
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False  # another worker finished or failed it first
