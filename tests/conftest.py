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


@pytest.fixture(autouse=True)
def own_benchmarks_dir(tmp_path_factory, monkeypatch):
    """Each test gets its own latency tables and records: a table or record one test writes must
    not change what a later test predicts."""
    monkeypatch.setenv("EDGEKD_BENCHMARKS_DIR", str(tmp_path_factory.mktemp("benchmarks")))


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
def device_python(tmp_path_factory) -> str:
    """The "device's" interpreter for SSH tests: this venv's Python, importing this checkout's
    edgekd (an ssh session does not pass PYTHONPATH on, and the venv may hold another copy)."""
    import sys
    from pathlib import Path

    wrapper = tmp_path_factory.mktemp("device") / "python"
    root = Path(__file__).resolve().parent.parent
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{root}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


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


# What a skip needs, by a word of its reason: repeated as the run's very last lines, because a
# newcomer's `make test` should say what it did not test, not hide it among the dots.
SERVER_SKIPS = {
    "openssh-server": "sshd",
    "PostgreSQL": "a PostgreSQL server",
    "psycopg": "the PostgreSQL driver",
    "chromium": "headless Chromium",
    "Fashion-MNIST": "the Fashion-MNIST files",
}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Printed just above pytest's own last line ("N passed, M skipped in ..."), which stays the
    run's closing line (CI reads it)."""
    counts: dict[str, int] = {}
    reasons: dict[str, str] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        what = next((what for word, what in SERVER_SKIPS.items() if word.lower() in reason.lower()), None)
        if what is not None:
            counts[what] = counts.get(what, 0) + 1
            reasons.setdefault(what, reason)
    for what, count in counts.items():
        terminalreporter.write_line(f"{count} test(s) skipped for want of {what}: {reasons[what]}", yellow=True)
    if counts:
        terminalreporter.write_line("to run them: sudo .ci/install-test-deps (Debian/Ubuntu), then make test again",
                                    yellow=True)
