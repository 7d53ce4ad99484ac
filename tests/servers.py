"""Real servers for the tests, on 127.0.0.1 only, each in its own temporary directory: OpenSSH's
sshd (the remote runner and the device pool) and PostgreSQL (search workers sharing a study).

Nothing here reads or writes the user's ~/.ssh or a system database. A server that cannot start
here (not installed, no `postgres` user to run it as root) is a skip with a reason that says how
to enable it; tests/conftest.py repeats those reasons at the end of the run.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
ENABLE = "run `sudo .ci/install-test-deps` (what `make test` does when run as root)"
NO_SSHD = f"openssh-server not installed: {ENABLE}, or apt-get install openssh-server"
NO_POSTGRES = f"PostgreSQL server not installed: {ENABLE}, or apt-get install postgresql"
NO_PSYCOPG = "psycopg (PostgreSQL driver) not installed: pip install 'edgekd[postgres]'"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None, log_path: Path, *, banner: bytes = b"",
                  timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{log_path.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if not banner or conn.recv(64).startswith(banner):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port}:\n{log_path.read_text()}")


# --- sshd -------------------------------------------------------------------------------------


@dataclass
class SshServer:
    """One sshd on 127.0.0.1 with its own host key; it accepts `identity` for the current user."""

    url: str
    port: int
    known_hosts: Path  # this server's host key only
    identity: Path
    log_path: Path
    proc: subprocess.Popen = field(repr=False)

    def runner(self, **options):
        from edgekd.remote import SshRunner

        settings = {"known_hosts": self.known_hosts, "identity": self.identity,
                    "connect_timeout_s": 5, "command_timeout_s": 120, "retries": 1}
        return SshRunner(self.url, **{**settings, **options})

    def stop(self) -> None:
        """Stop sshd and every connection it serves, as a device that goes down would: sshd starts
        each connection in a session of its own (setsid), so its descendants are found by parent
        id and ended one by one, deepest first."""
        if self.proc.poll() is None:
            for pid in [*reversed(descendants(self.proc.pid)), self.proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.proc.wait()


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux /proc), parents before their children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found


def make_client_key(root: Path) -> Path:
    key = root / "client_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def start_sshd(root: Path, client_key: Path | None = None) -> SshServer:
    """sshd -D on a free port, configured to touch nothing outside `root`."""
    root.mkdir(parents=True, exist_ok=True)
    host_key = root / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    client_key = client_key or make_client_key(root)
    authorized_keys = root / "authorized_keys"
    authorized_keys.write_text(Path(f"{client_key}.pub").read_text())
    port = free_port()
    config = root / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized_keys}\nPidFile {root / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowUsers {getpass.getuser()}\n"
        "PrintMotd no\nMaxStartups 50\nLogLevel VERBOSE\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    log_path = root / "sshd.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log_file,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, log_path, banner=b"SSH-")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    key_type, key = Path(f"{host_key}.pub").read_text().split()[:2]
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    return SshServer(f"ssh://{getpass.getuser()}@127.0.0.1:{port}", port, known_hosts, client_key, log_path, proc)


def joint_known_hosts(servers: list[SshServer], path: Path) -> Path:
    """One known_hosts file for a pool of servers (each has its own host key)."""
    path.write_text("".join(server.known_hosts.read_text() for server in servers))
    return path


# --- PostgreSQL -------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    found = sorted(Path("/").glob(POSTGRES_BIN_GLOB.lstrip("/")), key=lambda p: int(p.parent.name)
                   if p.parent.name.isdigit() else 0)
    return next((path for path in reversed(found) if (path / "initdb").exists()), None)


@dataclass
class PostgresServer:
    port: int
    data_dir: Path
    bin_dir: Path
    as_user: list[str]  # the command prefix that runs a server tool as its owner
    _databases: int = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database for one test; its URL."""
        import psycopg

        self._databases += 1
        name = f"edgekd_test_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                        "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """initdb into a fresh directory under /tmp and start the server on a free port of 127.0.0.1,
    with trust authentication (nothing but this machine can connect, and only while the tests
    run). initdb refuses to run as root, so as root it runs as the `postgres` user, which must own
    the directory (hence not pytest's tmp dir: /tmp/pytest-of-root is closed to other users)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError(NO_POSTGRES)
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="edgekd-postgres-"))
    if os.geteuid() == 0:
        if shutil.which("runuser") is None or _uid("postgres") is None:
            raise FileNotFoundError("PostgreSQL cannot run as root and there is no `postgres` user to run it as: "
                                    f"{ENABLE}, or apt-get install postgresql")
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chown(root, _uid("postgres"), -1)
    data_dir, log_path, port = root / "data", root / "server.log", free_port()
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres",
                    "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
    # -k: the Unix socket in our own directory, not /var/run/postgresql; -F: no fsync (a test database)
    options = f"-h 127.0.0.1 -p {port} -k {root} -F -c max_connections=50"
    started = subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l",
                              str(log_path), "-w", "-t", "30", "start"], capture_output=True, text=True,
                             check=False)
    server = PostgresServer(port, data_dir, bin_dir, as_user)
    if started.returncode != 0:
        log = log_path.read_text() if log_path.exists() else started.stderr
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start:\n{log}")
    wait_for_port(port, None, log_path)
    return server


def _uid(user: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
