"""Shared test settings: a throw-away teacher cache, NNCF patience, and small fixtures."""

from __future__ import annotations

import os
import tempfile

import pytest

# One cache for the whole session, outside the user's ~/.cache, so tests never read or write
# a real cache and the tiny teacher trains once.
os.environ.setdefault("EDGEKD_CACHE_DIR", tempfile.mkdtemp(prefix="edgekd-test-cache-"))
os.environ.setdefault("EDGEKD_BENCHMARKS_DIR", tempfile.mkdtemp(prefix="edgekd-test-benchmarks-"))
# Tests that call nncf directly need the same patience for its C++ extension build as edgekd has
# (edgekd/quantizers/nncf_int8.py explains).
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread: thread hand-off dominates, worse on a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --- servers the tests start on 127.0.0.1 (tests/servers.py) ------------------------------------


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """One sshd for the whole session (tests/remote)."""
    import servers

    if not servers.SSHD.exists():
        pytest.skip(servers.NO_SSHD)
    server = servers.start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the whole session; `postgres.new_database()` gives each test its own."""
    import servers

    pytest.importorskip("psycopg", reason=servers.NO_PSYCOPG)
    try:
        server = servers.start_postgres()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


# What a skip needs, by a word of its reason, and how to get it: repeated at the end of the run,
# because a newcomer's `make test` should say what it did not test, not hide it among the dots.
SERVER_SKIPS = {
    "openssh-server": "sshd (remote runner, device pool)",
    "PostgreSQL": "PostgreSQL (search workers sharing a study)",
    "psycopg": "the PostgreSQL driver",
    "chromium": "headless Chromium (HTML report)",
    "Fashion-MNIST": "the real Fashion-MNIST files (dataset-fashion-mnist)",
}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts: dict[str, int] = {}
    hows: dict[str, str] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        for word, what in SERVER_SKIPS.items():
            if word.lower() in reason.lower():
                counts[what] = counts.get(what, 0) + 1
                hows.setdefault(what, reason)
                break
    if not counts:
        return
    terminalreporter.section("tests skipped for want of a server, browser or dataset")
    for what, count in counts.items():
        terminalreporter.write_line(f"{count} skipped: no {what}: {hows[what]}")
    terminalreporter.write_line("to run them: sudo .ci/install-test-deps (Debian/Ubuntu), then make test again")
