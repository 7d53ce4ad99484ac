"""A pool of devices: one job per device at a time (also across processes), jobs alternate between
devices, and a device that fails has its job moved to another and is named with the result.

The queue itself is tested with real lock files and plain jobs; the pool behind
`benchmark_on_target` against two real sshd instances on 127.0.0.1 (tests/servers.py), with this
venv as each device's Python.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import servers
import torch

from edgekd.errors import UserError
from edgekd.remote import (
    DevicePool,
    DeviceUnreachable,
    RemoteLatencyStats,
    benchmark_on_target,
)
from edgekd.remote.pool import DeviceLock
from edgekd.target import Target, load_target, set_runners

REPO = Path(__file__).resolve().parents[2]


# --- the queue, with real lock files -------------------------------------------------------------


def test_jobs_alternate_between_free_devices(tmp_path):
    pool = DevicePool(["ssh://u@a", "ssh://u@b", "ssh://u@c"], directory=tmp_path)
    used = [pool.run(lambda device: device)[1] for _ in range(6)]
    assert used == ["ssh://u@a", "ssh://u@b", "ssh://u@c"] * 2


def test_a_device_held_by_another_process_is_skipped_then_waited_for(tmp_path):
    pool = DevicePool(["ssh://u@a", "ssh://u@b"], directory=tmp_path, poll_s=0.05)
    holder = _hold_in_another_process(tmp_path, "ssh://u@a", seconds=60)
    try:
        assert [pool.run(lambda device: device)[1] for _ in range(3)] == ["ssh://u@b"] * 3
    finally:
        holder.kill()
        holder.wait()
    # Its process is gone, so is its lock: the kernel released it.
    assert pool.run(lambda device: device)[1] == "ssh://u@a"
    holder = _hold_in_another_process(tmp_path, "ssh://u@a", seconds=1.0)
    blocker = DeviceLock.try_take("ssh://u@b", tmp_path)
    try:
        start = time.monotonic()
        assert pool.run(lambda device: device)[1] == "ssh://u@a"  # waited for the other process
        assert time.monotonic() - start > 0.3
    finally:
        blocker.release()
        holder.wait()


def test_one_job_per_device_at_a_time_across_processes(tmp_path):
    """Two processes, one device: their jobs (0.3 s each) never overlap."""
    script = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from edgekd.remote.pool import DevicePool
        def job(device):
            start = time.time(); time.sleep(0.3); return [start, time.time()]
        span, _, _ = DevicePool(["ssh://u@only"], directory=Path({str(tmp_path)!r}), poll_s=0.02).run(job)
        print(json.dumps(span))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=_env()) for _ in range(2)]
    spans = sorted(json.loads(proc.communicate(timeout=60)[0]) for proc in procs)
    assert all(proc.returncode == 0 for proc in procs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans


def test_a_failed_device_has_its_job_moved_and_is_reported(tmp_path, caplog):
    pool = DevicePool(["ssh://u@a", "ssh://u@b"], directory=tmp_path)

    def job(device):
        if device == "ssh://u@a":
            raise DeviceUnreachable("device unreachable: ssh://u@a:22: Connection refused")
        return "measured"

    result, device, failures = pool.run(job)
    assert (result, device) == ("measured", "ssh://u@b")
    assert failures == ["ssh://u@a: device unreachable: ssh://u@a:22: Connection refused"]
    assert "ssh://u@a failed" in caplog.text
    # The failed device rests: later jobs go to the other one, even though it is due by turn.
    assert [pool.run(job)[1] for _ in range(2)] == ["ssh://u@b", "ssh://u@b"]


def test_a_job_that_fails_for_its_own_reason_is_not_retried(tmp_path):
    pool = DevicePool(["ssh://u@a", "ssh://u@b"], directory=tmp_path)
    tried = []

    def job(device):
        tried.append(device)
        raise UserError("benchmark on ssh://u@a failed: not an IR")

    with pytest.raises(UserError, match="not an IR"):
        pool.run(job)
    assert tried == ["ssh://u@a"]


def test_every_device_failing_names_each(tmp_path):
    pool = DevicePool(["ssh://u@a", "ssh://u@b"], directory=tmp_path)

    def job(device):
        raise DeviceUnreachable(f"device unreachable: {device}")

    with pytest.raises(UserError, match=r"every device of the pool failed.*u@a.*u@b"):
        pool.run(job)


def test_target_runners_and_repeated_device(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_text((REPO / "targets" / "x86-cpu.yaml").read_text() + "runners: [ssh://pi@dev-1, ssh://pi@dev-2:2222]\n")
    target = load_target(str(path))
    assert (target.runner, target.runners) == ("ssh://pi@dev-1", ["ssh://pi@dev-1", "ssh://pi@dev-2:2222"])
    set_runners(target, ["ssh://pi@solo"])
    assert (target.runner, target.runners) == ("ssh://pi@solo", [])
    for bad, message in ((["ssh://pi@a", "ssh://pi@a"], "listed twice"), (["ssh://pi@a", "local"], "devices only"),
                         (["pi@a"], "ssh://")):
        with pytest.raises(UserError, match=message):
            set_runners(target, bad)


# --- the pool behind benchmark_on_target, with two real sshd -------------------------------------


@pytest.fixture
def two_devices(tmp_path):
    if not servers.SSHD.exists():
        pytest.skip(servers.NO_SSHD)
    key = servers.make_client_key(tmp_path)
    started = []
    try:
        for name in ("a", "b"):
            started.append(servers.start_sshd(tmp_path / f"sshd-{name}", client_key=key))
        yield started
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def tiny_ir(tmp_path_factory) -> Path:
    from edgekd.backends import openvino

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 10)).eval()
    return openvino.export(model, torch.rand(1, 1, 8, 8), tmp_path_factory.mktemp("ir") / "tiny.xml",
                           metadata={"test": "pool"})


def _pool_target(devices) -> Target:
    target = Target(name="pool", description="", backend="openvino", device="CPU", precisions=["fp32"],
                    precision="fp32", quantizer="nncf")
    set_runners(target, [device.url for device in devices])
    return target


def _measure(target, ir, known_hosts, identity, python, runs=5) -> RemoteLatencyStats:
    return benchmark_on_target(target, ir, "openvino", warmup=1, runs=runs, threads=1, python=python,
                               known_hosts=known_hosts, identity=identity)


def test_measurements_alternate_between_two_devices_and_name_theirs(two_devices, tiny_ir, device_python, tmp_path):
    a, b = two_devices
    known_hosts = servers.joint_known_hosts(two_devices, tmp_path / "known_hosts")
    target = _pool_target(two_devices)
    results = [_measure(target, tiny_ir, known_hosts, a.identity, device_python) for _ in range(4)]
    assert [stats.host for stats in results] == [a.url, b.url, a.url, b.url]
    for stats in results:
        assert stats.conditions()["host"] == stats.host and stats.p50_ms > 0 and not stats.failed_devices


def test_a_device_stopped_mid_job_has_the_job_moved_and_both_named(two_devices, tiny_ir, device_python, tmp_path,
                                                                  caplog):
    a, b = two_devices
    known_hosts = servers.joint_known_hosts(two_devices, tmp_path / "known_hosts")
    target = _pool_target(two_devices)
    assert _measure(target, tiny_ir, known_hosts, a.identity, device_python).host == a.url  # so the next job is b's

    outcome = {}
    sessions_before = _sessions(b)
    job = threading.Thread(target=lambda: outcome.update(
        stats=_measure(target, tiny_ir, known_hosts, a.identity, device_python, runs=50_000)))
    job.start()
    # b's third connection is the benchmark itself (after mktemp and the copy): stop b during it.
    deadline = time.monotonic() + 60
    while _sessions(b) < sessions_before + 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    b.stop()
    job.join(timeout=180)
    stats = outcome["stats"]
    assert stats.host == a.url, "the job moved to the device still up"
    assert len(stats.failed_devices) == 1 and stats.failed_devices[0].startswith(f"{b.url}: ")
    assert "connection dropped mid-job" in stats.failed_devices[0]
    named = json.dumps(stats.conditions())
    assert a.url in named and b.url in named
    assert stats.runs == 50_000 and stats.p50_ms > 0
    assert f"device {b.url} failed" in caplog.text
    # While b rests, jobs go to a.
    assert _measure(target, tiny_ir, known_hosts, a.identity, device_python).host == a.url


def _sessions(server) -> int:
    return server.log_path.read_text().count("Accepted publickey")


def _hold_in_another_process(directory: Path, device: str, seconds: float) -> subprocess.Popen:
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from edgekd.remote.pool import DeviceLock
        lock = DeviceLock.try_take({device!r}, Path({str(directory)!r}))
        print("held" if lock else "busy", flush=True)
        time.sleep({seconds})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def test_runners_survive_the_run_dir_round_trip():
    from edgekd.config import to_dict
    from edgekd.target import target_from_dict

    target = dataclasses.replace(load_target("x86-cpu"))
    set_runners(target, ["ssh://pi@a", "ssh://pi@b"])
    again = target_from_dict(to_dict(target))
    assert (again.runner, again.runners) == ("ssh://pi@a", ["ssh://pi@a", "ssh://pi@b"])
