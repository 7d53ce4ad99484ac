"""Time an artifact on a device over SSH: copy it there, run edgekd's bench entry point, parse.

The device needs Python with edgekd and the backend's runtime installed (`pip install
'edgekd[openvino]'`), plus `tar` and `mktemp`; `python` names that interpreter.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.errors import UserError
from edgekd.measure import LatencyStats
from edgekd.remote.ssh import DeviceUnreachable, SshRunner

log = logging.getLogger(__name__)

_ENTRY_MODULE = "edgekd.remote.bench_entry"
_TIMED_OUT_EXIT_CODE = 124  # coreutils/busybox `timeout`
# What ssh exits with when the connection drops after the command started; the entry point itself
# exits 0 or 1 (bench_entry.ERROR_EXIT_CODE), so a 255 without its JSON line is the connection.
_CONNECTION_LOST_EXIT_CODE = 255


@dataclass
class RemoteLatencyStats(LatencyStats):
    """LatencyStats measured on a device, with what the device said about itself."""

    host: str = ""  # the runner URL, ssh://user@host:port
    device: str = ""  # the device's CPU or board name
    runtime: str = ""  # backend and version on the device, e.g. "openvino 2025.3.0"
    date: str = ""  # when the device measured, ISO 8601 with its UTC offset
    # Devices of a pool that failed this job before `host` measured it: "url: reason" each.
    failed_devices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        extra = {"failed_devices": self.failed_devices} if self.failed_devices else {}
        return {**super().to_dict(), "host": self.host, **extra}

    def conditions(self) -> dict[str, str]:
        """The keys of the bench stage's conditions that differ when measured on the device."""
        measured = {"host": self.host, "device": self.device, "runtime": self.runtime, "date": self.date}
        if self.failed_devices:
            measured["failed_devices"] = "; ".join(self.failed_devices)
        return measured


def artifact_files(path: Path) -> list[Path]:
    """`path` and the files it needs beside it (.bin for OpenVINO IR, external ONNX data)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model file not found: {path}")
    sidecars = []
    if path.suffix == ".xml":
        sidecars.append(path.with_suffix(".bin"))
    elif path.suffix == ".onnx":
        sidecars.append(path.with_name(path.name + ".data"))
    return [path, *(sidecar for sidecar in sidecars if sidecar.exists())]


def remote_benchmark(
    runner: SshRunner,
    artifact_path: Path,
    backend_name: str,
    warmup: int,
    runs: int,
    threads: int | None,
    batch: int = 1,
    python: str = "python3",
) -> RemoteLatencyStats:
    """Latency of the artifact measured by `backend_name` on the runner's device, in a job
    directory there that is removed afterwards."""
    files = artifact_files(artifact_path)
    log.info("remote bench: %s on %s (%s)", files[0].name, runner.address, backend_name)
    with runner.job_dir() as job:
        remote_artifact = runner.put_files(files, job)[0]
        argv = [python, "-m", _ENTRY_MODULE, "--backend", backend_name]
        argv += ["--warmup", str(warmup), "--runs", str(runs), "--batch", str(batch)]
        if threads is not None:
            argv += ["--threads", str(threads)]
        proc = runner.run([*argv, "--", remote_artifact], cwd=job)
    result = _parse_result(proc.stdout)
    where = f"benchmark on {runner.address}"
    if proc.returncode == _TIMED_OUT_EXIT_CODE and result is None:
        raise UserError(f"{where} timed out after {runner.command_timeout_s:.0f} s")
    if proc.returncode == _CONNECTION_LOST_EXIT_CODE and result is None:
        stderr = [line for line in proc.stderr.splitlines() if line.strip()]
        raise DeviceUnreachable(f"{where}: the connection dropped mid-job ({stderr[-1] if stderr else 'exit 255'})")
    if result is None:
        stderr = [line for line in proc.stderr.splitlines() if line.strip()]
        detail = stderr[-1] if stderr else f"exit code {proc.returncode}, no output"
        hint = ""
        if "No module named" in detail:
            hint = (
                f" (is edgekd installed for {python!r} on the device? name the device's "
                "interpreter with EDGEKD_REMOTE_PYTHON)"
            )
        raise UserError(f"{where} failed: {detail}{hint}")
    if "error" in result:
        raise UserError(f"{where} failed: {' '.join(str(result['error']).split())}")
    stats = RemoteLatencyStats(
        p50_ms=result["p50"],
        p90_ms=result["p90"],
        p99_ms=result["p99"],
        mean_ms=result["mean"],
        min_ms=result["min"],
        runs=result["runs"],
        warmup=result["warmup"],
        batch=result["batch"],
        host=str(runner.address),
        device=result.get("cpu", ""),
        runtime=f"{result.get('backend', backend_name)} {result.get('backend_version', '?')}",
        date=result.get("date", ""),
    )
    log.info("remote bench: p50 %.4f ms p99 %.4f ms on %s", stats.p50_ms, stats.p99_ms, stats.host)
    return stats


def _parse_result(stdout: str) -> dict | None:
    # The entry point prints one line; a login script on the device might print more before it.
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None
