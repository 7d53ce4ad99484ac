"""Measuring on a device other than this machine: a target's `runner: ssh://user@host[:port]`,
or a pool of such devices (`runners: [...]`, or `--device` given several times).

`benchmark_on_target` is the one call the stages need: it times the artifact here when the
target's runner is `local`, and on the device over SSH otherwise (copy the artifact into a fresh
directory there, run `python -m edgekd.remote.bench_entry`, read back one JSON line). Either way
the job waits for its device to be free (edgekd/remote/pool.py: one measurement per device at a
time, across processes on this host); with several devices it takes whichever is free, and a
device that fails has the job moved to another. SSH options that belong to the device (key, jump
host, known_hosts) come from the user's ~/.ssh/config.
No backend runtime is imported here: the device runs the backend, not this machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from edgekd.errors import UserError
from edgekd.measure import LatencyStats
from edgekd.remote.bench import RemoteLatencyStats, artifact_files, remote_benchmark
from edgekd.remote.pool import LOCAL, DevicePool, pool_for
from edgekd.remote.ssh import (
    DeviceUnreachable,
    SshAddress,
    SshRunner,
    parse_ssh_url,
    quote_command,
)

__all__ = [
    "DevicePool",
    "DeviceUnreachable",
    "RemoteLatencyStats",
    "SshAddress",
    "SshRunner",
    "artifact_files",
    "benchmark_on_target",
    "device_pool",
    "parse_ssh_url",
    "quote_command",
    "remote_benchmark",
]

LOCAL_RUNNER = LOCAL
# The interpreter on the device that has edgekd and the backend's runtime installed.
REMOTE_PYTHON_ENV = "EDGEKD_REMOTE_PYTHON"


def device_pool(target) -> list[str]:
    """The devices that measure for `target`: its `runners` when it lists several, else its `runner`."""
    return list(getattr(target, "runners", None) or [target.runner])


def benchmark_on_target(
    target,
    path: Path,
    backend: ModuleType | str,
    warmup: int,
    runs: int,
    threads: int | None,
    batch: int = 1,
    *,
    python: str | None = None,
    known_hosts: Path | None = None,
    identity: Path | None = None,
    prefer: str | None = None,
) -> LatencyStats:
    """Latency of the artifact at `path` where the target says: here, or over SSH on a free
    device of its pool.

    `backend` is a backend module (or its name). For a remote runner, `python` is the device's
    interpreter (default: $EDGEKD_REMOTE_PYTHON, else python3); the result is then a
    RemoteLatencyStats labelled with the device that measured (`host`) and the devices that failed
    the job before it (`failed_devices`). `prefer` names the device to wait for (e.g. the one that
    measured the same artifact's latency, for its throughput).
    """
    devices = device_pool(target)
    if devices == [LOCAL_RUNNER]:
        if isinstance(backend, str):
            from edgekd.backends import get_backend

            backend = get_backend(backend)
        stats, _, _ = pool_for(devices).run(
            lambda _: backend.benchmark(path, warmup=warmup, runs=runs, threads=threads, batch=batch))
        return stats
    if LOCAL_RUNNER in devices:
        raise UserError(f"a pool of devices lists only ssh:// runners, got {devices}")
    backend_name = backend if isinstance(backend, str) else backend.NAME
    python = python or os.environ.get(REMOTE_PYTHON_ENV) or "python3"

    def measure(url: str) -> RemoteLatencyStats:
        runner = SshRunner(url, known_hosts=known_hosts, identity=identity)
        return remote_benchmark(runner, path, backend_name, warmup, runs, threads, batch, python=python)

    stats, _, failures = pool_for(devices).run(measure, prefer=prefer)
    stats.failed_devices = failures
    return stats
