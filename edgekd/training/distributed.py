"""Distillation under torchrun: one process per rank, DistributedDataParallel between them.

`torchrun --nproc-per-node N -m edgekd distill ...` starts N copies of edgekd and gives each
RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (and the rendezvous address). `start()` reads
them and joins the process group; without them it returns SINGLE, whose calls do exactly what one
process did before (no process group, no wrapper, the same data order).

Who does what (the callers: edgekd/cli.py, edgekd/pipeline.py, edgekd/distill/stage.py):
- rank 0 alone opens the run dir, runs the stages other than distill and writes every file
  (`on_main`); the other ranks wait, then read what it wrote. `on_main` sends rank 0's outcome to
  all, so an error there ends every rank with the same message instead of leaving them waiting;
  a rank that dies outright is ended with the others by torchrun itself;
- distill runs on every rank: the student in DDP (`wrap`), each rank on its own shard of the
  training data (edgekd/data/split.py `Shard`), validation counted on shards and summed (`sum`).

Two process groups. The default one (gloo) carries control: which run dir rank 0 opened, a
stage's outcome, validation counts. Its waits last as long as rank 0's search or bench, so its
timeout is long (WAIT_TIMEOUT; waiting costs no CPU: gloo blocks on a socket). Training has its
own group, NCCL on GPUs and gloo on the CPU, with torch's default timeout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from edgekd.data.split import Shard
from edgekd.errors import OtherRankFailed, UserError
from edgekd.io import first_line
from edgekd.training.device import TrainDevice

log = logging.getLogger(__name__)

T = TypeVar("T")

# What torchrun puts in each process's environment.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# How long other ranks wait for rank 0 (a search can take hours); a crashed rank does not make
# them wait this long: torchrun ends the whole group when one process exits with an error.
WAIT_TIMEOUT = dt.timedelta(hours=24)


@dataclass
class World:
    """This process's place among the torchrun processes (SINGLE: alone, no process group)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    active: bool = False  # a process group is up (torchrun, even with one process)
    threads: int = 0  # torch threads per process while ranks train side by side; 0: left as found
    control: Any = None  # the gloo group for control messages; None: the default group (gloo)
    owns_group: bool = True  # edgekd started the process group (and stops it)
    _training_groups: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- rank 0 acts, the others follow ------------------------------------------------------
    def on_main(self, action: Callable[[], T], *, share: bool = False) -> T | None:
        """Run `action` on rank 0 while the others wait; every rank then learns how it ended.
        Its error is raised on every rank (a UserError as the same UserError). With `share`, its
        value (picklable) is returned on every rank, else only on rank 0 (None elsewhere)."""
        if not self.active:
            return action()
        outcome: tuple[str, Any] = ("ok", None)
        value = None
        if self.is_main:
            try:
                value = action()
                outcome = ("ok", value if share else None)
            except UserError as exc:
                self.broadcast(("user_error", str(exc)))
                raise
            except KeyboardInterrupt:
                self.broadcast(("interrupted", None))
                raise
            except BaseException as exc:
                self.broadcast(("failed", f"{type(exc).__name__}: {first_line(exc)}"))
                raise
        kind, payload = self.broadcast(outcome)
        if self.is_main:
            return value
        if kind == "user_error":
            raise UserError(payload)
        if kind == "interrupted":
            raise KeyboardInterrupt
        if kind == "failed":
            raise OtherRankFailed(f"rank 0 failed ({payload}); rank {self.rank} stops too")
        return payload

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (picklable objects, over the control group)."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def sum(self, numbers: Sequence[float]) -> list[float]:
        """Element-wise sums over all ranks (float64 on the CPU: counts stay exact)."""
        if not self.active:
            return [float(n) for n in numbers]
        import torch.distributed as dist

        totals = torch.tensor([float(n) for n in numbers], dtype=torch.float64)
        dist.all_reduce(totals, group=self.control)
        return totals.tolist()

    # ---- training ------------------------------------------------------------------------------
    def shard(self, *, equal: bool = True) -> Shard | None:
        """This rank's part of a split's order (None alone: the whole order); `equal`: the same
        number of samples on every rank (training), else every sample once (evaluation)."""
        return Shard(self.rank, self.size, equal=equal) if self.active else None

    def batch_share(self, batch_size: int) -> int:
        """Each rank's batch: the recipe's batch is the global one (what one optimizer step sees,
        as in one process); it is rounded down when the ranks do not divide it."""
        if not self.active:
            return batch_size
        share = max(1, batch_size // self.size)
        if share * self.size != batch_size and self.is_main:
            log.warning("torchrun: batch size %d is not divisible by %d processes; each takes %d (global batch %d)",
                        batch_size, self.size, share, share * self.size)
        return share

    def wrap(self, model: nn.Module, extra_modules: Sequence[nn.Module], device: torch.device) -> nn.Module:
        """What training calls: `model` itself alone; under torchrun, DDP around the model and
        the modules trained beside it (feature-KD adapters), so their gradients are averaged too.
        DDP starts every rank from rank 0's weights and buffers."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        together = _TrainedTogether(model, extra_modules)
        ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
        return DistributedDataParallel(together, device_ids=ids, process_group=self._training_group(device))

    def share_buffers_(self, modules: Sequence[nn.Module], device: torch.device) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics): DDP sends them at each forward,
        after which each rank's own batch moves them again; evaluation needs them equal."""
        if not self.active:
            return
        import torch.distributed as dist

        group = self._training_group(device)
        for module in modules:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0, group=group)

    def place(self, device: TrainDevice) -> TrainDevice:
        """A TrainDevice on this rank's GPU (torchrun gives each process of a node its own)."""
        if not (self.active and device.is_cuda):
            return device
        if self.local_size > torch.cuda.device_count():
            raise UserError(f"torchrun runs {self.local_size} processes on this node but torch sees "
                            f"{torch.cuda.device_count()} CUDA device(s); use --nproc-per-node "
                            f"{torch.cuda.device_count()} or --train-device cpu")
        torch.cuda.set_device(self.local_rank)
        return TrainDevice(torch.device("cuda", self.local_rank), device.amp_dtype)

    def _training_group(self, device: torch.device):
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend not in self._training_groups:  # every rank gets here in the same order (distill)
            import torch.distributed as dist

            self._training_groups[backend] = dist.new_group(backend=backend)
            log.info("torchrun: training over %s among %d process(es)", backend, self.size)
        return self._training_groups[backend]

    # ---- threads ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def all_cores(self) -> Iterator[None]:
        """Rank 0 working alone (search, export, bench, report) while the others wait: all cores."""
        if not (self.active and self.threads):
            yield
            return
        torch.set_num_threads(max(self.threads, usable_cores()))
        try:
            yield
        finally:
            torch.set_num_threads(self.threads)

    def stop(self) -> None:
        """Leave the process group edgekd started (a script's own group stays up)."""
        if self.active and self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.active = False


SINGLE = World()


class _TrainedTogether(nn.Module):
    """The model and the modules its loss trains beside it, as one module for DDP; the forward
    pass is the model's."""

    def __init__(self, model: nn.Module, extra_modules: Sequence[nn.Module]):
        super().__init__()
        self.model = model
        self.extras = nn.ModuleList(extra_modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def started_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_process(cores: int, local_processes: int) -> int:
    """torchrun sets OMP_NUM_THREADS=1 (one thread per process, whatever the machine); the cores
    shared evenly among this node's processes use them all without oversubscribing."""
    return max(1, cores // max(1, local_processes))


def start() -> World:
    """Join torchrun's process group (gloo for control) when torchrun started this process; SINGLE
    otherwise. Sets torch's threads for side-by-side training and logs them."""
    if not started_by_torchrun():
        return SINGLE
    import torch.distributed as dist

    env = os.environ
    world = World(rank=int(env["RANK"]), size=int(env["WORLD_SIZE"]), local_rank=int(env["LOCAL_RANK"]),
                  local_size=int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])), active=True)
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=WAIT_TIMEOUT)
    else:  # a script that set up its own group (maybe NCCL) calls the Python API: control needs gloo
        world.control = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
        world.owns_group = False
    cores = usable_cores()
    world.threads = threads_per_process(cores, world.local_size)
    torch.set_num_threads(world.threads)
    log.info("torchrun: rank %d of %d (local %d of %d); torch threads %d per process while training "
             "(%d cores / %d local processes; OMP_NUM_THREADS was %s), all %d for stages rank 0 runs alone",
             world.rank, world.size, world.local_rank, world.local_size, world.threads, cores, world.local_size,
             env.get("OMP_NUM_THREADS", "unset"), max(world.threads, cores))
    return world
