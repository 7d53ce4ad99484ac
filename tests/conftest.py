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
