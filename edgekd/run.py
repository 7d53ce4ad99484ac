"""A run directory: the resolved configuration, which stages are done, and lazy access to the
data and teacher every stage shares.

Layout of `runs/<name>/`:
    config.json   what was asked (inputs, target, recipe), saved at creation; a stage subcommand with
                  --resume and --set may change its own and later stages' recipe sections (`changes`)
    state.json    completed stages with their metrics; rewritten atomically after each stage
    <stage>/      each stage's artifacts

Under torchrun every rank holds a RunContext of the same run dir (`world`); only rank 0 writes
state.json, the others keep their state in memory and read rank 0's back (`reload_state`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from edgekd.config import Recipe, recipe_from_dict
from edgekd.data import DatasetSplits, load_dataset
from edgekd.data.datasets import load_file_lists
from edgekd.errors import UserError
from edgekd.io import write_json, write_text
from edgekd.results import RESULT_TYPES, from_plain, to_plain
from edgekd.target import Target, target_from_dict
from edgekd.training.device import TrainDevice, resolve_device
from edgekd.training.distributed import SINGLE, World
from edgekd.version import __version__

log = logging.getLogger(__name__)

SPLIT_FILE = "data/split.json"  # an image folder's files per split
PYTHON_DATA = "python:"  # RunSpec.data of a run whose data is a torch Dataset given to the Python API


@dataclass
class RunSpec:
    """Everything a run was asked to do; saved as config.json so a resume needs no arguments."""

    target: dict[str, Any]
    recipe: dict[str, Any]
    data: str | None = None
    teacher: str | None = None
    teacher_arch: str | None = None
    # sha256 of the teacher file when the run started: a resumed run must use the same teacher
    # (a teacher-derived student is rebuilt from it). None in run dirs made before this check.
    teacher_sha256: str | None = None
    trust_pickle: bool = False
    allow_weak_teacher: bool = False  # go on with a teacher near chance level on the validation split
    budget_ms: float | None = None
    storage: str | None = None  # the search study's database URL; None: SQLite in the run dir
    seed: int = 0
    # The teacher's input size where its file records one (a .pt2): the size images are brought to
    # when they do not all share one (edgekd/data/datasets.py).
    teacher_input_size: int | None = None
    train_device: str = "auto"  # where training runs (--train-device); may change on --resume
    command: str = ""
    # Recipe changes made on a resume (`edgekd prune --resume RUN --set prune.ratio=0.3`): each command
    changes: list[str] = field(default_factory=list)


# The shape of the stage results in state.json (edgekd/results.py); a run dir written in another
# shape cannot be resumed by this version.
STATE_FORMAT = 2


@dataclass
class RunState:
    edgekd_version: str = __version__
    created: str = ""
    completed: dict[str, dict[str, Any]] = field(default_factory=dict)
    state_format: int = STATE_FORMAT


def default_run_name(target_name: str) -> str:
    return f"{target_name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_new_run_dir(path: Path) -> None:
    """Refuse an existing run dir: it holds someone's results."""
    if path.exists():
        raise UserError(
            f"run dir '{path}' already exists; continue it with --resume {path}, "
            "replace it with --overwrite, or pick another --name"
        )


def create_run_dir(path: Path, *, overwrite: bool) -> None:
    if path.exists():
        if not overwrite:
            check_new_run_dir(path)
        if not (path / "config.json").is_file():
            # Only ever delete what edgekd itself made.
            raise UserError(f"'{path}' exists but is not an edgekd run dir; not overwriting it")
        shutil.rmtree(path)
    path.mkdir(parents=True)


class RunContext:
    """The run dir plus what stages share. Data and teacher load on first use, once."""

    def __init__(self, run_dir: Path, spec: RunSpec, state: RunState):
        self.run_dir = run_dir
        self.spec = spec
        self.state = state
        self.target: Target = target_from_dict(spec.target)
        self.recipe: Recipe = recipe_from_dict(spec.recipe)
        self._results: dict[str, Any] = {}  # typed stage results, read from state.json on first use
        self.world: World = SINGLE  # the torchrun processes sharing this run (edgekd/start.py sets it)

    # ---- creation and loading -------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: Path, spec: RunSpec, *, overwrite: bool = False) -> "RunContext":
        create_run_dir(run_dir, overwrite=overwrite)
        write_json(run_dir / "config.json", dataclasses.asdict(spec))
        context = cls(run_dir, spec, RunState(created=dt.datetime.now().isoformat(timespec="seconds")))
        context.save_state()
        return context

    @classmethod
    def load(cls, run_dir: Path) -> "RunContext":
        config_path = run_dir / "config.json"
        if not config_path.is_file():
            raise UserError(f"'{run_dir}' is not an edgekd run dir (no config.json); nothing to resume")
        try:
            spec = RunSpec(**json.loads(config_path.read_text()))
            state_path = run_dir / "state.json"
            state = RunState(**json.loads(state_path.read_text())) if state_path.is_file() else RunState()
        except (json.JSONDecodeError, TypeError) as exc:
            raise UserError(f"run dir '{run_dir}' has an unreadable config.json/state.json: {exc}") from exc
        if state.completed and state.state_format != STATE_FORMAT:
            raise UserError(
                f"run dir '{run_dir}' was written by edgekd {state.edgekd_version}, whose stage results this "
                f"version ({__version__}) cannot read; start a new run (its artifacts stay where they are)"
            )
        return cls(run_dir, spec, state)

    def change_recipe(self, recipe: Recipe, command: str) -> None:
        """A new recipe for the stages that run again (start.py checks which sections may change),
        recorded in config.json beside the command that changed it."""
        self.recipe = recipe
        self.spec.recipe = dataclasses.asdict(recipe)
        self.spec.changes.append(command)
        if self.world.is_main:
            write_json(self.run_dir / "config.json", dataclasses.asdict(self.spec))

    # ---- state ----------------------------------------------------------------------------
    def save_state(self) -> None:
        """Write state.json, with each stage's typed result as it is now (the feedback loop
        updates the search result in place)."""
        for stage, result in self._results.items():
            self.state.completed[stage] = to_plain(result)
        if self.world.is_main:  # one writer: torchrun's other ranks read rank 0's file back
            write_json(self.run_dir / "state.json", dataclasses.asdict(self.state))

    def reload_state(self) -> None:
        """The state as rank 0 last wrote it (a torchrun rank after a stage that rank 0 ran alone)."""
        self.state = RunContext.load(self.run_dir).state
        self._results.clear()

    def is_done(self, stage: str) -> bool:
        return stage in self.state.completed

    def result(self, stage: str) -> Any:
        """The typed result of a completed stage (edgekd/results.py)."""
        if stage not in self.state.completed:
            raise UserError(f"stage {stage!r} has not run in '{self.run_dir}'")
        if stage not in self._results:
            try:
                self._results[stage] = from_plain(RESULT_TYPES[stage], self.state.completed[stage])
            except (TypeError, KeyError, ValueError) as exc:
                raise UserError(f"run dir '{self.run_dir}': the saved result of stage {stage!r} is unreadable "
                                f"({exc}); run that stage again with `edgekd {stage} --resume {self.run_dir}`") from exc
        return self._results[stage]

    def mark_done(self, stage: str, result: Any) -> None:
        self._results[stage] = result
        self.save_state()

    def forget(self, stage: str) -> None:
        self.state.completed.pop(stage, None)
        self._results.pop(stage, None)
        self.save_state()

    def stage_dir(self, stage: str) -> Path:
        path = self.run_dir / stage
        path.mkdir(exist_ok=True)
        return path

    # ---- shared inputs ----------------------------------------------------------------------
    @cached_property
    def data(self) -> DatasetSplits:
        """The run's data; an image folder's split exactly as saved when the run started."""
        if (self.spec.data or "").startswith(PYTHON_DATA):
            raise UserError(f"this run's data is a Python dataset ({self.spec.data}): continue it from Python, "
                            "edgekd.compress(..., data=<the same dataset>, run_dir=..., resume=True)")
        split_file = self.run_dir / SPLIT_FILE
        if split_file.is_file():
            return load_file_lists(json.loads(split_file.read_text()), self.recipe.data)
        return load_dataset(self.spec.data, seed=self.spec.seed, settings=self.recipe.data,
                            teacher_size=self.spec.teacher_input_size)

    def save_split(self, data: DatasetSplits) -> None:
        """Keep an image folder's split (its file lists) in the run dir, for resumes and people."""
        lists = data.file_lists()
        if lists is not None:
            (self.run_dir / SPLIT_FILE).parent.mkdir(exist_ok=True)
            # Compact: a folder of 100,000 images is one line per file pair otherwise.
            write_text(self.run_dir / SPLIT_FILE, json.dumps(lists, separators=(",", ":")))
        self.data = data

    @cached_property
    def train_device(self) -> TrainDevice:
        return self.world.place(resolve_device(self.spec.train_device))  # under torchrun: this rank's GPU

    @cached_property
    def example(self) -> torch.Tensor:
        """One input image, as the models take it: what exports and traces run on."""
        return self.data.train.head(1)

    @cached_property
    def teacher(self):
        from edgekd.teacher.resolve import (
            resolve_teacher,  # torch-heavy; only when a stage needs it
        )

        return resolve_teacher(self)
