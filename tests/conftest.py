"""Shared test settings: a throw-away teacher cache, and tiny recipe overrides that keep an end
to end run to seconds (the pipeline is the same; only epochs, candidates and timing runs shrink)."""

from __future__ import annotations

import os
import tempfile

import pytest

# One cache for the whole session, outside the user's ~/.cache, so tests never read or write
# a real cache and the tiny teacher trains once.
os.environ.setdefault("EDGEKD_CACHE_DIR", tempfile.mkdtemp(prefix="edgekd-test-cache-"))
# Tests that call nncf directly need the same patience for its C++ extension build as edgekd has
# (edgekd/quantizers/nncf_int8.py explains).
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")

TINY = [
    "teacher.arch='resnet_s'", "teacher.epochs=2",
    "search.width_multipliers=[0.25,0.5]", "search.depth_options=[1]", "search.warmup=2", "search.runs=10",
    "distill.epochs=2", "distill.qat_epochs=1", "distill.calibration_samples=64",
    "bench.warmup=2", "bench.runs=10", "bench.throughput_batch=8", "bench.throughput_runs=3",
]


def tiny_args() -> list[str]:
    """CLI arguments for a fast run: the tiny recipe, and a budget every candidate meets."""
    args = ["--budget-ms", "1000"]
    for item in TINY:
        args += ["--set", item]
    return args


@pytest.fixture
def tiny():
    return tiny_args()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread: thread hand-off dominates, worse on a busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
