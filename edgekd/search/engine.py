"""The search loop: an Optuna multi-objective study (score up, latency down) over the space.

The study lives in a storage (edgekd/search/storage.py): SQLite inside the run dir by default, so a
killed search resumes where it stopped (and optuna-dashboard can open it); a journal file or a
PostgreSQL database (`--storage`) lets many workers fill one study (edgekd/search/workers.py frees
the trials of workers that die). Each trial keeps its architecture record, score and latency as
user attributes, so the front can be rebuilt from the storage alone, from every worker's trials.

`search.trials` is the size of the study, not of one worker's share: each worker runs trials
until the study holds that many finished ones, so more workers finish the same search sooner.
A worker that finds the study full but other workers' trials still running waits for them (up to
`search.wait_s`) before it reads the front.

Latencies above the limit (budget x margin) are constraint violations for NSGA-II rather than
filtered out: the sampler still learns from them, and the chosen point is always feasible.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edgekd import interrupt
from edgekd.errors import UserError
from edgekd.latency.source import ANALYTICAL, EXTRAPOLATED, TABLE, Latency
from edgekd.search import workers
from edgekd.search.space import record_key
from edgekd.search.storage import masked, open_storage, storage_kind

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")  # score, latency_ms
# Recipe keys that say how a worker runs, not what the study computes: workers that differ only
# in these share one study (edgekd/search/stage.py's study name leaves them out).
WORKER_SETTINGS = ("heartbeat_s", "wait_s")
POLL_S = 1.0  # how often a worker waiting for other workers' trials looks again


@dataclass
class Evaluation:
    """What the search knows about one architecture."""

    record: dict[str, Any]
    name: str
    score: float
    latency_ms: float
    latency_source: str  # one of edgekd.latency.source.SOURCES
    params: int
    macs: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def latency(self) -> Latency:
        return Latency(self.latency_ms, _current_source(self.latency_source))


def _current_source(label: str) -> str:
    """A shared study may hold labels from edgekd 0.1, before the four sources were named."""
    if label.startswith("predicted (analytical"):
        return ANALYTICAL
    return {"predicted": TABLE, "predicted (extrapolated)": EXTRAPOLATED}.get(label, label)


@dataclass
class SearchStudy:
    """An Optuna study and how this process works in it."""

    study: Any  # optuna.Study
    url: str
    kind: str  # storage_kind(url)
    shared: bool  # other processes may work in it (--storage); else this process owns it
    worker: str
    heartbeat_s: int
    wait_s: float
    liveness: workers.WorkerLiveness | None = None

    def fail_dead_trials(self, *, owner: bool = False) -> list[int]:
        return workers.fail_dead_trials(self.study, self.kind, liveness=self.liveness,
                                        grace_s=3 * self.heartbeat_s, owner=owner)


def open_study(url: str, study_name: str, *, seed: int, population: int = 16, shared: bool = False,
               worker: str = "", heartbeat_s: int = 10, wait_s: float = 600.0) -> SearchStudy:
    """Create or load the study at `url`, with errors a user can act on. `shared`: other workers
    may use it too; each then samples from its own seed (derived from `seed` and `worker`), so
    that they do not all propose the same architectures."""
    import optuna
    import sqlalchemy.exc

    # WARNING hides one line per trial (it would drown the progress bar); ERROR also hides Optuna's
    # "Trial N failed" with a traceback, for an error edgekd reports itself in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    kind = storage_kind(url)
    if shared:
        seed = int(hashlib.sha256(f"{seed}:{worker}".encode()).hexdigest()[:8], 16)
        if kind == "sqlite":
            log.warning("search: --storage %s is SQLite, which serves one worker at a time; for several workers "
                        "use journal:///path/study.log (one machine) or postgresql://... (docs/scale-out.md)", url)
    sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    try:
        # The run dir's own SQLite file needs no heartbeat: its one owner fails stale trials on open.
        storage = open_storage(url, heartbeat_s=heartbeat_s if shared and kind != "journal" else None)
        study = optuna.create_study(
            study_name=study_name, storage=storage, directions=list(DIRECTIONS), sampler=sampler,
            load_if_exists=True,
        )
    except sqlalchemy.exc.DatabaseError as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        if "not a database" in reason or "malformed" in reason:
            raise UserError(
                f"the search study at {url} is corrupted ({reason}); move it away and rerun the search "
                "stage (`edgekd search --resume RUN_DIR`) or pass another --storage"
            ) from exc
        raise UserError(f"cannot open the search study storage {masked(url)}: {reason}") from exc
    except (ImportError, ModuleNotFoundError) as exc:
        raise UserError(f"the storage URL {masked(url)} needs a database driver that is not installed: {exc}") from exc
    except (ValueError, sqlalchemy.exc.ArgumentError) as exc:
        raise UserError(f"invalid --storage URL {masked(url)!r}: {exc}") from exc
    liveness = None
    if kind == "journal":
        from edgekd.search.storage import journal_path

        liveness = workers.WorkerLiveness(journal_path(url), worker or "worker")
    return SearchStudy(study, url, kind, shared, worker, heartbeat_s, wait_s, liveness)


def completed_evaluations(study: SearchStudy) -> list[Evaluation]:
    """Every finished trial's evaluation (from the storage: also other workers' trials)."""
    import optuna

    out = []
    for trial in study.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "evaluation" in trial.user_attrs:
            out.append(Evaluation(**trial.user_attrs["evaluation"]))
    return out


def fail_stale_trials(study: SearchStudy) -> int:
    """Trials left RUNNING by a dead worker would count as pending forever; mark them failed. In a
    study this process owns (the run dir's SQLite file) that is every RUNNING trial; in a shared one,
    those whose worker is gone (edgekd/search/workers.py)."""
    return len(study.fail_dead_trials(owner=not study.shared))


def run_trials(
    study: SearchStudy,
    *,
    trials: int,
    suggest: Callable[[Any], dict[str, Any]],
    evaluate: Callable[[dict[str, Any]], Evaluation],
    limit_ms: float,
) -> list[Evaluation]:
    """Run trials until the study holds `trials` finished ones (counting every worker's), then wait
    up to `study.wait_s` for trials other workers are still running, so that every worker reads
    the same front; the study's evaluations. Two workers that ask for the last trial at the same
    instant both run it: a study may end with a few more trials than asked, never fewer.
    An architecture already evaluated is not evaluated again (the sampler often proposes one twice)."""
    from tqdm import tqdm

    objective = _Objective(study, suggest, evaluate, limit_ms)
    complete, running = objective.refresh()
    if complete:
        log.info("search: %d trials already in the study, %d to go", complete, max(0, trials - complete))
    waiting_since = None
    logged = complete
    with tqdm(total=trials, initial=min(complete, trials), desc="search", disable=None, leave=False) as bar:
        while complete < trials or running:
            interrupt.check()
            if complete + running < trials:
                waiting_since = None
                objective.run_one()
            else:
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    log.info("search: the study has %d of %d trials; waiting up to %.0f s (search.wait_s) for %d "
                             "trial(s) other workers are running", complete, trials, study.wait_s, running)
                if not _wait_for_others(study, running, waiting_since):
                    break
            if study.shared:
                study.fail_dead_trials()
            complete, running = objective.refresh()
            bar.update(min(complete, trials) - bar.n)
            if complete // 10 > logged // 10:  # the bar shows only on a terminal; logs get a line too
                log.info("search: %d/%d trials, %d distinct architectures evaluated", complete, trials,
                         len(objective.cache))
                logged = complete
    return completed_evaluations(study)


def _wait_for_others(study: SearchStudy, running: int, since: float) -> bool:
    """The study is full but `running` trials of other workers are still out: wait for them (True:
    look again), or give up after wait_s and read the front without them (False)."""
    waited_s = time.monotonic() - since
    if waited_s >= study.wait_s:
        log.warning("search: %d trial(s) of other workers still running after %.0f s (search.wait_s); the "
                    "front is read without them", running, waited_s)
        return False
    time.sleep(min(POLL_S, study.wait_s))
    return True


class _Objective:
    """One trial: suggest an architecture, evaluate it (once per architecture), record it."""

    def __init__(self, study: SearchStudy, suggest, evaluate, limit_ms: float):
        self.study, self.suggest, self.evaluate, self.limit_ms = study, suggest, evaluate, limit_ms
        self.cache: dict[str, Evaluation] = {}

    def refresh(self) -> tuple[int, int]:
        """(finished, running) trials in the study; learns other workers' evaluations."""
        import optuna

        states = optuna.trial.TrialState
        complete = running = 0
        for trial in self.study.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.RUNNING)):
            if trial.state == states.RUNNING:
                running += 1
            elif "evaluation" in trial.user_attrs:
                complete += 1
                evaluation = Evaluation(**trial.user_attrs["evaluation"])
                self.cache.setdefault(record_key(evaluation.record), evaluation)
        return complete, running

    def run_one(self) -> None:
        """Study.optimize for one trial: it asks, keeps the trial's heartbeat while it runs (a
        database storage), and tells; an exception fails the trial and propagates."""
        import optuna

        try:
            self.study.study.optimize(self, n_trials=1, catch=())
        except optuna.exceptions.UpdateFinishedTrialError:
            # Silent past the grace period (a stalled network, a suspended machine): another
            # worker took this one for dead and failed it. Its result is dropped; the loop replaces it.
            log.warning("search: a trial of this worker was failed by another worker meanwhile (no heartbeat "
                        "for %d s); it is run again", 3 * self.study.heartbeat_s)

    def __call__(self, trial) -> tuple[float, float]:
        # The tag first: a trial without one is failed after the grace period if its worker dies.
        if self.study.liveness is not None:
            trial.set_user_attr(workers.TOKEN_ATTR, self.study.liveness.token)
        trial.set_user_attr(workers.WORKER_ATTR, self.study.worker)
        record = self.suggest(trial)
        key = record_key(record)
        if key not in self.cache:
            self.cache[key] = self.evaluate(record)
        evaluation = self.cache[key]
        trial.set_user_attr("evaluation", evaluation.to_dict())
        # <= 0 means feasible (Optuna's convention); NSGA-II ranks feasible trials first.
        trial.set_constraint("latency_over_limit_ms", evaluation.latency_ms - self.limit_ms)
        log.debug("search: trial %d %s score %.4g latency %.4f ms (%s)", trial.number, evaluation.name,
                  evaluation.score, evaluation.latency_ms, evaluation.latency_source)
        return evaluation.score, evaluation.latency_ms


def distinct(evaluations: list[Evaluation]) -> list[Evaluation]:
    seen: dict[str, Evaluation] = {}
    for evaluation in evaluations:
        seen.setdefault(record_key(evaluation.record), evaluation)
    return list(seen.values())


def pareto_front(evaluations: list[Evaluation], limit_ms: float) -> list[Evaluation]:
    """Feasible architectures no other feasible one beats on both score and latency, best score
    first: the order in which students are tried (the next one is always faster)."""
    feasible = [e for e in distinct(evaluations) if e.latency_ms <= limit_ms]
    front = [
        e for e in feasible
        if not any(
            o.score >= e.score and o.latency_ms <= e.latency_ms and (o.score > e.score or o.latency_ms < e.latency_ms)
            for o in feasible
        )
    ]
    return sorted(front, key=lambda e: (-e.score, e.latency_ms))


def fastest(evaluations: list[Evaluation]) -> Evaluation:
    return min(evaluations, key=lambda e: e.latency_ms)
