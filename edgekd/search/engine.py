"""The search loop: an Optuna multi-objective study (score up, latency down) over the space.

The study lives in a database: SQLite inside the run dir by default, so a killed search resumes
where it stopped (and optuna-dashboard can open it); any SQLAlchemy URL (`--storage`) lets many
workers share one study. Each trial keeps its architecture record, score and latency as user
attributes, so the front can be rebuilt from the database alone.

Latencies above the limit (budget x margin) are constraint violations for NSGA-II rather than
filtered out: the sampler still learns from them, and the chosen point is always feasible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from edgekd import interrupt
from edgekd.errors import UserError
from edgekd.latency.source import ANALYTICAL, EXTRAPOLATED, TABLE, Latency
from edgekd.measure import progress
from edgekd.search.space import record_key

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")  # score, latency_ms


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


def open_study(url: str, study_name: str, *, seed: int, population: int = 16):
    """Create or load the study at `url`, with errors a user can act on."""
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial would drown the progress bar
    sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    try:
        return optuna.create_study(
            study_name=study_name, storage=_storage(url), directions=list(DIRECTIONS), sampler=sampler,
            load_if_exists=True,
        )
    except sqlalchemy.exc.DatabaseError as exc:
        reason = str(getattr(exc, "orig", exc)).splitlines()[0]
        if "not a database" in reason or "malformed" in reason:
            raise UserError(
                f"the search study at {url} is corrupted ({reason}); move it away and rerun the search "
                "stage (`edgekd search --resume RUN_DIR`) or pass another --storage"
            ) from exc
        raise UserError(f"cannot open the search study storage {url}: {reason}") from exc
    except (ImportError, ModuleNotFoundError) as exc:
        raise UserError(f"the storage URL {url} needs a database driver that is not installed: {exc}") from exc
    except (ValueError, sqlalchemy.exc.ArgumentError) as exc:
        raise UserError(f"invalid --storage URL {url!r}: {exc}") from exc


def _storage(url: str):
    """SQLite with a write-ahead log and no fsync per commit: Optuna commits several times per
    trial, and on a busy disk the default (fsync each time) cost more than scoring the trial.
    A crash can lose the last trials, never corrupt the file; a kill loses nothing."""
    import optuna
    import sqlalchemy

    if not url.startswith("sqlite:"):
        return url
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _pragmas(connection, _record):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    storage.engine.dispose()  # connections made before the listener existed would lack the pragmas
    return storage


def completed_evaluations(study) -> list[Evaluation]:
    """Every finished trial's evaluation (from the database: also other workers' trials)."""
    import optuna

    out = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "evaluation" in trial.user_attrs:
            out.append(Evaluation(**trial.user_attrs["evaluation"]))
    return out


def fail_stale_trials(study) -> int:
    """Trials left RUNNING by a killed search would count as pending forever; mark them failed.
    Only for a study this process owns (the run dir's own SQLite file): with a shared --storage,
    RUNNING trials may belong to live workers."""
    import optuna

    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def run_trials(
    study,
    *,
    trials: int,
    suggest: Callable[[Any], dict[str, Any]],
    evaluate: Callable[[dict[str, Any]], Evaluation],
    limit_ms: float,
) -> list[Evaluation]:
    """Run until the study holds `trials` finished trials; an architecture already evaluated is
    not evaluated again (the sampler often proposes one twice)."""
    done = completed_evaluations(study)
    cache = {record_key(e.record): e for e in done}
    remaining = max(0, trials - len(done))
    if done:
        log.info("search: %d trials already in the study, %d to go", len(done), remaining)
    for step in progress(range(remaining), desc="search", total=remaining):
        if step and step % 10 == 0:  # the progress bar only shows on a terminal; logs get a line too
            log.info("search: %d/%d trials, %d distinct architectures evaluated", step, remaining, len(cache))
        interrupt.check()
        trial = study.ask()
        record = suggest(trial)
        key = record_key(record)
        if key not in cache:
            cache[key] = evaluate(record)
        evaluation = cache[key]
        trial.set_user_attr("evaluation", evaluation.to_dict())
        # <= 0 means feasible (Optuna's convention); NSGA-II ranks feasible trials first.
        trial.set_constraint("latency_over_limit_ms", evaluation.latency_ms - limit_ms)
        study.tell(trial, [evaluation.score, evaluation.latency_ms])
        log.debug("search: trial %d %s score %.4g latency %.4f ms (%s)", trial.number, evaluation.name,
                  evaluation.score, evaluation.latency_ms, evaluation.latency_source)
    return completed_evaluations(study)


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
