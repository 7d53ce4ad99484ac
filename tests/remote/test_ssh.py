"""The SSH runner against a real OpenSSH server on localhost, with this venv as the device's Python.

The session fixture `sshd` (tests/conftest.py, tests/servers.py) starts Debian's sshd on a free
port with its own host key, client key and known_hosts, so nothing here reads or writes the
user's ~/.ssh.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from servers import free_port

from edgekd.errors import UserError
from edgekd.remote import (
    RemoteLatencyStats,
    SshRunner,
    bench_entry,
    benchmark_on_target,
    parse_ssh_url,
    quote_command,
    remote_benchmark,
)
from edgekd.target import Target

# A name cannot hold '/', so the payload spells /tmp/<marker> with printf's octal escapes. It
# creates the marker when pasted into a shell line unquoted, in "..." or in '...' (a test below
# checks that), so its absence after a trip through the runner means no shell ran any of it.
PWNED = Path(f"/tmp/edgekd-pwned-{os.getpid()}")
_TOUCH = f'touch "$(printf "\\057tmp\\057{PWNED.name}")"'
INJECTION_NAME = f"'; {_TOUCH}; '$({_TOUCH}) x.xml"
HOSTILE_NAME = "a b'c\"d;e.xml"
HOSTILE_DIR = "dir a b'c\"d;e"


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _export_ir(path: Path) -> Path:
    from edgekd.backends import openvino

    torch.manual_seed(0)
    return openvino.export(_Tiny().eval(), torch.rand(1, 1, 8, 8), path, metadata={"test": "remote"})


@pytest.fixture(scope="module")
def plain_ir(tmp_path_factory) -> Path:
    return _export_ir(tmp_path_factory.mktemp("ir") / "tiny.xml")


@pytest.fixture(autouse=True)
def no_pwned_marker():
    PWNED.unlink(missing_ok=True)
    yield
    assert not PWNED.exists(), "a file name was executed by a shell"


def _assert_sane(stats, *, runs: int, warmup: int, batch: int) -> None:
    assert (stats.runs, stats.warmup, stats.batch) == (runs, warmup, batch)
    assert 0 < stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p99_ms < 1000
    assert stats.min_ms <= stats.mean_ms < 1000


# --- URLs and quoting: no server needed ---------------------------------------------------------


def test_parse_ssh_url():
    assert (parse_ssh_url("ssh://pi@jetson-01.local").port, str(parse_ssh_url("ssh://pi@h"))) == (
        22, "ssh://pi@h:22")
    address = parse_ssh_url("ssh://nvidia@10.0.0.7:2222")
    assert (address.user, address.host, address.port) == ("nvidia", "10.0.0.7", 2222)
    assert parse_ssh_url("ssh://u@[fe80::1]:22").host == "fe80::1"


@pytest.mark.parametrize("url", [
    "", "local", "jetson", "pi@jetson", "http://pi@jetson", "ssh://jetson", "ssh://pi@", "ssh://pi@:22",
    "ssh://pi@jetson:ssh", "ssh://pi@jetson:70000", "ssh://pi@jetson:0", "ssh://pi:secret@jetson",
    "ssh://pi@jetson/home/pi", "ssh://pi@jetson?x=1", "ssh://-oProxyCommand=sh@jetson",
    "ssh://pi@-oProxyCommand=sh", "ssh://p i@jetson",
])
def test_malformed_urls_rejected(url):
    with pytest.raises(UserError, match=r"ssh://user@host\[:port\]"):
        SshRunner(url)


def test_quote_command_round_trips_hostile_arguments():
    argv = ["python3", "-m", "x", "--", HOSTILE_NAME, INJECTION_NAME, "", "$(id)", "a\nb"]
    assert shlex.split(quote_command(argv)) == argv


@pytest.mark.parametrize("naive", ["ls {}", 'ls "{}"', "ls '{}'"])
def test_injection_name_would_fire_if_interpolated(naive, tmp_path):
    # Without this, the marker checks below could pass because the payload never works.
    subprocess.run(["sh", "-c", naive.format(INJECTION_NAME)], cwd=tmp_path, capture_output=True,
                   check=False)
    assert PWNED.exists()
    PWNED.unlink()


def test_bench_entry_bad_arguments_print_one_json_error(capfd):
    assert bench_entry.main(["--backend", "openvino", "model.xml"]) == bench_entry.ERROR_EXIT_CODE
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 1 and "--warmup" in lines[0] and '"error"' in lines[0]


# --- against the real sshd -----------------------------------------------------------------------


def test_remote_benchmark_of_tiny_openvino_model(sshd, plain_ir, device_python):
    stats = remote_benchmark(sshd.runner(), plain_ir, "openvino", warmup=2, runs=7, threads=1, batch=2,
                             python=device_python)
    assert isinstance(stats, RemoteLatencyStats)
    _assert_sane(stats, runs=7, warmup=2, batch=2)
    assert stats.host == sshd.url and stats.to_dict()["host"] == sshd.url
    assert stats.runtime.startswith("openvino ") and stats.device and stats.date


def test_benchmark_on_target_with_hostile_names(sshd, tmp_path, device_python):
    ir = _export_ir(tmp_path / HOSTILE_DIR / INJECTION_NAME)
    assert ir.with_suffix(".bin").exists()
    target = Target(name="tiny", description="", backend="openvino", device="CPU",
                    precisions=["fp32"], precision="fp32", quantizer="nncf", runner=sshd.url)
    stats = benchmark_on_target(target, ir, "openvino", warmup=1, runs=5, threads=1,
                                python=device_python, known_hosts=sshd.known_hosts,
                                identity=sshd.identity)
    _assert_sane(stats, runs=5, warmup=1, batch=1)
    assert stats.host == sshd.url


def test_benchmark_on_target_local(plain_ir):
    target = Target(name="tiny", description="", backend="openvino", device="CPU",
                    precisions=["fp32"], precision="fp32", quantizer="nncf")
    stats = benchmark_on_target(target, plain_ir, "openvino", warmup=1, runs=5, threads=1)
    assert not isinstance(stats, RemoteLatencyStats)
    _assert_sane(stats, runs=5, warmup=1, batch=1)


def test_hostile_names_survive_put_and_get(sshd, tmp_path):
    runner = sshd.runner()
    local = tmp_path / HOSTILE_DIR
    (local / "sub dir;").mkdir(parents=True)
    contents = {HOSTILE_NAME: b"xml\n", INJECTION_NAME: b"", "sub dir;/-rf 'x'.bin": bytes(range(256))}
    for name, data in contents.items():
        (local / name).write_bytes(data)
    with runner.job_dir() as job:
        remote_dir = f"{job}/{HOSTILE_DIR}"
        assert runner.run(["mkdir", "--", remote_dir]).returncode == 0
        remote = runner.put(local, remote_dir)
        assert remote == f"{remote_dir}/{HOSTILE_DIR}"
        listing = runner.run(["ls", "-A", "--", remote])
        assert sorted(listing.stdout.splitlines()) == sorted([HOSTILE_NAME, INJECTION_NAME, "sub dir;"])
        assert runner.run(["cat", "--", f"{remote}/{HOSTILE_NAME}"]).stdout == "xml\n"
        back = runner.get(remote, tmp_path / "back")
    assert {p.relative_to(back).as_posix(): p.read_bytes() for p in back.rglob("*") if p.is_file()} \
        == contents
    assert runner.run(["test", "-e", job]).returncode == 1, "the job directory was not removed"


def test_failed_benchmark_is_reported_and_not_retried(sshd, tmp_path, caplog, device_python):
    garbage = tmp_path / "broken.xml"
    garbage.write_text("<not an IR")
    with caplog.at_level(logging.WARNING), pytest.raises(UserError, match=r"benchmark on ssh://.* failed: "):
        remote_benchmark(sshd.runner(), garbage, "openvino", warmup=1, runs=2, threads=1,
                         python=device_python)
    assert not [r for r in caplog.records if "attempt" in r.getMessage()]


def test_remote_exit_255_is_not_a_connection_failure(sshd, tmp_path, caplog):
    # Key files in a directory with a space and a '%': ssh splits and %-expands these options.
    keys = tmp_path / "key dir %h"
    keys.mkdir()
    known_hosts = Path(shutil.copy(sshd.known_hosts, keys))
    identity = Path(shutil.copy(sshd.identity, keys))  # keeps its 0600 mode, which ssh insists on
    runner = sshd.runner(retries=2, known_hosts=known_hosts, identity=identity)
    with caplog.at_level(logging.WARNING):
        proc = runner.run(["sh", "-c", "echo ran; exit 255"])
    assert (proc.returncode, proc.stdout) == (255, "ran\n")
    assert not [r for r in caplog.records if "attempt" in r.getMessage()]


def test_command_timeout_stops_the_remote_command(sshd):
    start = time.monotonic()
    proc = sshd.runner().run(["sleep", "30"], timeout_s=1)
    assert proc.returncode == 124 and time.monotonic() - start < 10


def test_unknown_host_key_is_refused(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    start = time.monotonic()
    with pytest.raises(UserError, match="device unreachable.*host key") as caught:
        sshd.runner(known_hosts=empty, retries=2).check()
    assert "Host key verification failed" in str(caught.value) or "No ED25519" in str(caught.value)
    assert time.monotonic() - start < 5, "a host key failure must not be retried"


def test_unreachable_port_fails_quickly_with_bounded_retries(sshd, caplog):
    runner = SshRunner(f"ssh://nobody@127.0.0.1:{free_port()}", known_hosts=sshd.known_hosts,
                       connect_timeout_s=2, retries=2)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(
            UserError, match=r"device unreachable: ssh://nobody@127.0.0.1:\d+: .*Connection refused"):
        runner.check()
    assert time.monotonic() - start < 10
    assert len([r for r in caplog.records if "attempt" in r.getMessage()]) == 2
