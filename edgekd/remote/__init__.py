"""Measuring on a device other than this machine: a target's `runner: ssh://user@host[:port]`.

`benchmark_on_target` is the one call the stages need: it times the artifact here when the
target's runner is `local`, and on the device over SSH otherwise (copy the artifact into a fresh
directory there, run `python -m edgekd.remote.bench_entry`, read back one JSON line). SSH options
that belong to the device (key, jump host, known_hosts) come from the user's ~/.ssh/config.
No backend runtime is imported here: the device runs the backend, not this machine.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

from edgekd.measure import LatencyStats
from edgekd.remote.bench import RemoteLatencyStats, artifact_files, remote_benchmark
from edgekd.remote.ssh import SshAddress, SshRunner, parse_ssh_url, quote_command

__all__ = [
    "RemoteLatencyStats",
    "SshAddress",
    "SshRunner",
    "artifact_files",
    "benchmark_on_target",
    "parse_ssh_url",
    "quote_command",
    "remote_benchmark",
]

LOCAL_RUNNER = "local"
# The interpreter on the device that has edgekd and the backend's runtime installed.
REMOTE_PYTHON_ENV = "EDGEKD_REMOTE_PYTHON"


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
) -> LatencyStats:
    """Latency of the artifact at `path` where `target.runner` says: here, or over SSH.

    `backend` is a backend module (or its name). For a remote runner, `python` is the device's
    interpreter (default: $EDGEKD_REMOTE_PYTHON, else python3); the result is then a
    RemoteLatencyStats labelled with the device.
    """
    runner_url = target.runner
    if runner_url == LOCAL_RUNNER:
        if isinstance(backend, str):
            from edgekd.backends import get_backend

            backend = get_backend(backend)
        return backend.benchmark(path, warmup=warmup, runs=runs, threads=threads, batch=batch)
    runner = SshRunner(runner_url, known_hosts=known_hosts, identity=identity)
    backend_name = backend if isinstance(backend, str) else backend.NAME
    python = python or os.environ.get(REMOTE_PYTHON_ENV) or "python3"
    return remote_benchmark(runner, path, backend_name, warmup, runs, threads, batch, python=python)
