"""Run commands and move files on a device over SSH, with the system `ssh` binary.

The system client, not a Python SSH library: it already reads the user's ~/.ssh/config
(ProxyJump, IdentityFile, per-host options), their agent and their known_hosts, and it is what
they debug with when a device misbehaves.

Every remote command is a *string* run by the device's login shell (that is how SSH works: the
client joins its arguments with spaces and the server hands the result to `$SHELL -c`). So a
list of arguments is only as safe as its quoting: each argument goes through `shlex.quote`, which
makes spaces, quotes, `;`, `$(...)` and backticks plain characters for a POSIX shell (sh, bash,
dash, zsh; not fish or csh). Files travel as a tar stream on ssh's stdin, so their names never
appear on any command line at all.
"""

from __future__ import annotations

import logging
import posixpath
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from edgekd.errors import UserError

log = logging.getLogger(__name__)

URL_FORMAT = "ssh://user@host[:port]"
_DEFAULT_PORT = 22
# ssh exits 255 both when it cannot connect and when the remote command itself exits 255. The
# remote line prints this first, so a 255 without it is a connection failure (safe to retry) and a
# 255 with it is a command that ran (never retried: a benchmark that ran and failed stays failed).
_STARTED_MARKER = b"edgekd-remote-command-started"
# Exit 255 with these is not transient: retrying would only delay the error.
_PERMANENT_ERRORS = ("Host key verification failed", "Permission denied", "Too many authentication")
_BACKOFF_S = 0.5  # first retry delay; doubles after each failed attempt
_KILL_GRACE_S = 10  # the remote `timeout` sends KILL this long after TERM
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")  # name, IPv4, IPv6


class DeviceUnreachable(UserError):
    """The device could not be reached, or its connection dropped mid-job: a fault of the device or
    the network, not of the job, so a pool of devices retries the job on another one."""


@dataclass(frozen=True)
class SshAddress:
    user: str
    host: str
    port: int = _DEFAULT_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}:{self.port}"


def parse_ssh_url(url: str) -> SshAddress:
    """`ssh://user@host[:port]` as an SshAddress; UserError for anything else."""

    def bad(reason: str) -> UserError:
        return UserError(f"runner must be 'local' or {URL_FORMAT}, got {url!r}: {reason}")

    if not isinstance(url, str):
        raise bad("not a string")
    parts = urlsplit(url.strip())
    if parts.scheme != "ssh":
        raise bad("the scheme must be ssh://")
    if parts.password is not None:
        raise bad("passwords in the URL are not supported; the device must accept your SSH key")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise bad("nothing may follow host[:port]")
    user, host = parts.username, parts.hostname
    # The patterns also refuse a leading '-', which ssh would read as an option (-oProxyCommand=...).
    if not user or not _USER.fullmatch(user):
        raise bad("a user name is required (letters, digits, '.', '_', '-')")
    if not host or not _HOST.fullmatch(host):
        raise bad("a host name or IP address is required")
    try:
        port = parts.port
    except ValueError:
        raise bad("the port must be a number from 1 to 65535") from None
    if port == 0:
        raise bad("the port must be a number from 1 to 65535")
    return SshAddress(user, host, port or _DEFAULT_PORT)


def quote_command(argv: Sequence[str]) -> str:
    """One shell word per argument: what the device's shell runs is exactly `argv`."""
    if not argv:
        raise ValueError("empty command")
    return " ".join(shlex.quote(str(arg)) for arg in argv)


def _ssh_option_path(path: Path) -> str:
    # ssh expands %-tokens in these options and splits them on whitespace unless double-quoted.
    text = str(Path(path).expanduser().resolve()).replace("%", "%%")
    if '"' in text:
        raise UserError(f"ssh cannot use a key or known_hosts path containing '\"': {text}")
    return f'"{text}"'


class SshRunner:
    """Commands and files on one device, over the system ssh with host keys checked."""

    def __init__(
        self,
        url: str,
        *,
        known_hosts: Path | None = None,
        identity: Path | None = None,
        connect_timeout_s: float = 10,
        command_timeout_s: float = 600,
        retries: int = 2,
    ):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.address = parse_ssh_url(url)
        self.known_hosts = None if known_hosts is None else Path(known_hosts)
        self.identity = None if identity is None else Path(identity)
        self.connect_timeout_s = connect_timeout_s
        self.command_timeout_s = command_timeout_s
        self.retries = retries

    def __repr__(self) -> str:
        return f"SshRunner({str(self.address)!r})"

    # --- the ssh command line --------------------------------------------------------------------

    def ssh_argv(self, remote_line: str) -> list[str]:
        """The local argument list that runs `remote_line` (already quoted) on the device."""
        options = {
            "BatchMode": "yes",  # never prompt: a password or passphrase prompt would hang a job
            "StrictHostKeyChecking": "yes",  # unknown or changed host keys are refused
            "UpdateHostKeys": "no",  # never write to the user's known_hosts
            "ConnectTimeout": str(max(1, round(self.connect_timeout_s))),
            # Notice a device that dies mid-benchmark within ~45 s instead of at the job timeout.
            "ServerAliveInterval": "15",
            "ServerAliveCountMax": "3",
        }
        if self.known_hosts is not None:
            options["UserKnownHostsFile"] = _ssh_option_path(self.known_hosts)
            options["GlobalKnownHostsFile"] = "/dev/null"  # only the file we were given counts
        if self.identity is not None:
            options["IdentityFile"] = _ssh_option_path(self.identity)
            options["IdentitiesOnly"] = "yes"
        argv = ["ssh"]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        argv += ["-p", str(self.address.port), "-l", self.address.user, "--", self.address.host]
        return [*argv, f"echo {_STARTED_MARKER.decode()} >&2; {remote_line}"]

    # --- public operations -----------------------------------------------------------------------

    def check(self) -> None:
        """Return if the device answers; UserError ("device unreachable: ...") if it does not."""
        proc = self._ssh("true", timeout_s=self.connect_timeout_s * 2 + 10)
        if proc.returncode != 0:
            raise UserError(f"{self.address}: `true` exited {proc.returncode}: {_first_line(proc)}")

    def run(
        self, argv: Sequence[str], timeout_s: float | None = None, *, cwd: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` on the device (in `cwd` if given); its exit code, stdout and stderr as text.

        Not retried once it has started. On timeout, the device's `timeout` (coreutils, busybox)
        stops the command there too, if the device has it; the exit code is then 124."""
        timeout_s = self.command_timeout_s if timeout_s is None else timeout_s
        command = quote_command(argv)
        seconds = max(1, round(timeout_s))
        line = (
            f"if command -v timeout >/dev/null 2>&1; "
            f"then exec timeout -k {_KILL_GRACE_S} {seconds} {command}; else exec {command}; fi"
        )
        if cwd is not None:
            line = f"cd {shlex.quote(cwd)} && {line}"
        # The local limit leaves the device's own timeout time to act and report first.
        proc = self._ssh(line, timeout_s=timeout_s + _KILL_GRACE_S + self.connect_timeout_s + 5)
        return subprocess.CompletedProcess(
            list(argv), proc.returncode, _text(proc.stdout), _text(proc.stderr)
        )

    def put(self, local_path: Path | str, remote_dir: str) -> str:
        """Copy a file or directory into `remote_dir` on the device; its path there."""
        return self.put_files([local_path], remote_dir)[0]

    def put_files(self, local_paths: Sequence[Path | str], remote_dir: str) -> list[str]:
        """Copy files or directories into `remote_dir` in one connection; their paths there."""
        paths = [Path(path).resolve() for path in local_paths]
        for path in paths:
            if not path.exists():
                raise UserError(f"cannot copy to the device, not found: {path}")
        with tempfile.TemporaryFile() as archive:
            # PAX: any name length and any characters, understood by GNU tar, busybox and bsdtar.
            with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for path in paths:
                    tar.add(path, arcname=path.name, filter=_anonymous)
            line = f"tar -x -f - -C {shlex.quote(remote_dir)}"
            proc = self._ssh(line, timeout_s=self.command_timeout_s, stdin=archive)
        if proc.returncode != 0:
            names = ", ".join(path.name for path in paths)
            raise UserError(
                f"copying {names} to {self.address} {remote_dir} failed: {_first_line(proc)}"
            )
        return [posixpath.join(remote_dir, path.name) for path in paths]

    def get(self, remote_path: str, local_path: Path | str) -> Path:
        """Copy a file or directory from the device to `local_path` (replaced if it exists)."""
        local_path = Path(local_path)
        parent, name = posixpath.split(remote_path.rstrip("/"))
        if not name:
            raise UserError(f"cannot copy {remote_path!r} from the device: no file name")
        # "./name": a name that starts with '-' must not reach tar as an option.
        line = f"tar -c -f - -C {shlex.quote(parent or '/')} {shlex.quote('./' + name)}"
        local_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as archive:
            proc = self._ssh(line, timeout_s=self.command_timeout_s, stdout=archive)
            if proc.returncode != 0:
                raise UserError(
                    f"copying {remote_path} from {self.address} failed: {_first_line(proc)}"
                )
            archive.seek(0)
            with tempfile.TemporaryDirectory(dir=local_path.parent) as unpacked:
                with tarfile.open(fileobj=archive, mode="r") as tar:
                    # The "data" filter refuses absolute paths, '..', device files and links that
                    # leave the directory: the device does not get to write outside `unpacked`.
                    tar.extractall(unpacked, filter="data")
                if local_path.is_dir() and not local_path.is_symlink():
                    shutil.rmtree(local_path)
                elif local_path.exists() or local_path.is_symlink():
                    local_path.unlink()
                Path(unpacked, name).rename(local_path)
        return local_path

    @contextmanager
    def job_dir(self) -> Iterator[str]:
        """A fresh working directory on the device (mktemp -d), removed when the block ends."""
        proc = self._ssh('mktemp -d "${TMPDIR:-/tmp}/edgekd.XXXXXX"', timeout_s=60)
        path = _text(proc.stdout).strip()
        # Checked before we ever `rm -rf` it: an absolute path that mktemp made from our template.
        if proc.returncode != 0 or not path.startswith("/") or "/edgekd." not in path:
            raise UserError(f"cannot make a working directory on {self.address}: {_first_line(proc)}")
        try:
            yield path
        finally:
            try:
                self._ssh(f"rm -rf -- {shlex.quote(path)}", timeout_s=60)
            except UserError as exc:  # do not hide the error that ended the job, if any
                log.warning("could not remove %s on %s: %s", path, self.address, exc)

    # --- one ssh invocation, with bounded retries on connection failures -----------------------

    def _ssh(
        self,
        remote_line: str,
        *,
        timeout_s: float,
        stdin: IO[bytes] | None = None,
        stdout: IO[bytes] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        argv = self.ssh_argv(remote_line)
        log.debug("ssh: %s", argv)
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            for stream in (stdin, stdout):
                if stream is not None:  # a retry starts the stream over
                    stream.seek(0)
            if stdout is not None:
                stdout.truncate()
            try:
                proc = subprocess.run(
                    argv,
                    stdin=stdin if stdin is not None else subprocess.DEVNULL,
                    stdout=stdout if stdout is not None else subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    timeout=timeout_s,
                    check=False,
                )
            except FileNotFoundError:
                raise UserError("ssh not found; install the OpenSSH client (openssh-client)") from None
            except subprocess.TimeoutExpired:
                raise DeviceUnreachable(f"{self.address}: no answer within {timeout_s:.0f} s") from None
            started, proc.stderr = _strip_marker(proc.stderr)
            if proc.returncode != 255 or started:
                return proc
            reason, stderr = _first_line(proc), _text(proc.stderr)
            if attempt == attempts or any(text in stderr for text in _PERMANENT_ERRORS):
                raise DeviceUnreachable(f"device unreachable: {self.address}: {reason}{self._hint(stderr)}")
            delay_s = _BACKOFF_S * 2 ** (attempt - 1)
            log.warning(
                "ssh to %s failed (%s); attempt %d of %d in %.1f s",
                self.address, reason, attempt + 1, attempts, delay_s,
            )
            time.sleep(delay_s)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _hint(self, stderr: str) -> str:
        address = self.address
        if "Host key verification failed" in stderr:
            known_hosts = self.known_hosts or "~/.ssh/known_hosts"
            return (
                f" (its host key is not in {known_hosts} or has changed: check the device's "
                f"fingerprint, then add it, e.g. ssh-keyscan -p {address.port} {address.host})"
            )
        if "Permission denied" in stderr:
            return f" (the device does not accept your key: ssh-copy-id -p {address.port} {address.user}@{address.host})"
        return ""


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Our uid/gid mean nothing on the device; a root extraction would otherwise apply them.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _strip_marker(stderr: bytes) -> tuple[bool, bytes]:
    lines = stderr.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.rstrip(b"\r\n") == _STARTED_MARKER:
            return True, b"".join(lines[:index] + lines[index + 1 :])
    return False, stderr


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")


def _first_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in _text(proc.stderr).splitlines() if line.strip()]
    return lines[0] if lines else f"exit code {proc.returncode}"
