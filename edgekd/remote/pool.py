"""A pool of devices of one kind: each measurement goes to a free device, one job per device at a time.

Two measurements on one device at once disturb each other (they share its cores, caches and
clocks), so a device is held for the whole job. The hold is a lock file per device under
`<cache dir>/device-locks/` taken with flock(2): every edgekd process on this host (several search
workers, a bench beside them) queues on the same files, and the kernel drops the lock when a
process dies, so a killed run never leaves a device taken.

Among free devices the job goes to the one whose last job started longest ago (written in its
lock file), so jobs alternate between devices, also across processes. A device that fails
(unreachable, or its connection drops mid-job: `DeviceUnreachable`) has the job moved to another
device; the failure is logged, returned with the result, and the device is passed over for
`rest_s` by later jobs of this process. A job that fails for any other reason (a broken artifact)
would fail anywhere, so it is not retried.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from edgekd.errors import UserError
from edgekd.io import cache_dir, first_line
from edgekd.remote.ssh import DeviceUnreachable

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCAL = "local"
REST_S = 300.0  # a failed device is passed over this long, unless no other device is left
POLL_S = 0.2  # how often a job waiting for a busy device looks again


def lock_dir() -> Path:
    return cache_dir() / "device-locks"


def lock_path(device: str, directory: Path | None = None) -> Path:
    """The lock file of one device. `local` means this host's own CPU, so its name says which host
    (a cache dir on a shared home must not make two machines wait for each other)."""
    name = f"{LOCAL}@{socket.gethostname()}" if device == LOCAL else device
    slug = re.sub(r"[^A-Za-z0-9.@-]+", "_", name)[:80]
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return (directory or lock_dir()) / f"{slug}-{digest}.lock"


class DeviceLock:
    """An exclusive hold on one device's lock file, for as long as the job runs."""

    def __init__(self, device: str, path: Path, fd: int):
        self.device, self.path, self._fd = device, path, fd

    @classmethod
    def try_take(cls, device: str, directory: Path | None = None) -> DeviceLock | None:
        import fcntl  # POSIX only; imported here so that `import edgekd.remote` works anywhere

        path = lock_path(device, directory)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # "Last job started now", in ns: the pool's order for the next choice (a file's mtime
        # ticks too coarsely for jobs that follow each other within milliseconds).
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(time.time_ns()).encode(), 0)
        return cls(device, path, fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = -1


def last_started(device: str, directory: Path | None = None) -> int:
    """When the device's last job started (ns since the epoch); 0 if it never had one."""
    try:
        return int(lock_path(device, directory).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


class DevicePool:
    """Devices (runner URLs) that run the same kind of job; `run` gives each job one free device."""

    def __init__(self, devices: Sequence[str], *, directory: Path | None = None, rest_s: float = REST_S,
                 poll_s: float = POLL_S):
        if not devices:
            raise ValueError("a pool needs at least one device")
        if len(set(devices)) != len(devices):
            raise UserError(f"a device is listed twice in the pool: {list(devices)}")
        self.devices = list(devices)
        self.directory = directory
        self.rest_s = rest_s
        self.poll_s = poll_s
        self._failed_at: dict[str, float] = {}

    def run(self, job: Callable[[str], T], *, prefer: str | None = None) -> tuple[T, str, list[str]]:
        """Run `job(device)` on a free device; returns (its result, the device, the devices that failed
        it first as "url: reason"). With `prefer`, waits for that device while it is healthy (e.g. the
        throughput run of an artifact whose latency it measured)."""
        failures: list[str] = []
        tried: set[str] = set()
        while True:
            lock = self._take(self._candidates(tried, prefer))
            tried.add(lock.device)
            try:
                result = job(lock.device)
            except DeviceUnreachable as exc:
                self._failed_at[lock.device] = time.monotonic()
                failures.append(f"{lock.device}: {first_line(exc)}")
                if len(self.devices) == 1:
                    raise
                left = len(self.devices) - len(tried)
                log.warning("device %s failed (%s); %s", lock.device, first_line(exc),
                            "its job moves to another device" if left else "no device of the pool is left")
                if not left:
                    raise UserError(f"every device of the pool failed this job: {'; '.join(failures)}") from exc
                continue
            finally:
                lock.release()
            if failures:
                log.info("pool: the job moved from %s to %s", ", ".join(f.split(": ")[0] for f in failures),
                         lock.device)
            return result, lock.device, failures

    def _candidates(self, tried: set[str], prefer: str | None) -> list[str]:
        untried = [device for device in self.devices if device not in tried]
        if prefer in untried and not self._resting(prefer):
            return [prefer]
        healthy = [device for device in untried if not self._resting(device)]
        return healthy or untried  # all failed recently: try them again rather than give up unasked

    def _resting(self, device: str) -> bool:
        failed_at = self._failed_at.get(device)
        return failed_at is not None and time.monotonic() - failed_at < self.rest_s

    def _take(self, candidates: list[str]) -> DeviceLock:
        """Wait for one of `candidates` to be free; the least recently started first."""
        told = False
        while True:
            for device in sorted(candidates, key=lambda d: last_started(d, self.directory)):
                lock = DeviceLock.try_take(device, self.directory)
                if lock is not None:
                    return lock
            if not told:
                log.info("pool: %s busy with other jobs; waiting", " and ".join(candidates))
                told = True
            time.sleep(self.poll_s)


_POOLS: dict[tuple[str, ...], DevicePool] = {}


def pool_for(devices: Sequence[str]) -> DevicePool:
    """One pool per device list and process, so that its memory of failed devices lasts between jobs."""
    key = tuple(devices)
    if key not in _POOLS:
        _POOLS[key] = DevicePool(key)
    return _POOLS[key]
