"""Timing several OpenVINO artifacts side by side on a shared CPU: interleaved rounds, a quiet wait.

On a 2-core machine that other jobs share, one artifact timed early and another timed a minute
later can differ by 2x for reasons that have nothing to do with them (seen while writing the prune
benchmark: the same resnet_s IR gave p50 29-51 ms under a load average of 8). So every artifact is
compiled once, then timed in R rounds, each round visiting all artifacts in a new seeded order,
after waiting (bounded) for the other processes' share of the CPUs to fall; an artifact's latency
is the median of its per-round p50s, and each round's disturbance is recorded beside it.

Beside the p50, each artifact gets the median over rounds of its fastest run ("fastest_ms"). When
other jobs hold the cores, OpenVINO's threads wait for each other at every layer and a p50 swings
3-5x from round to round (benchmarks/results/channel-multiple/, first attempt), while the fastest
run, the one nobody interrupted, stays within a few percent: it is the artifact's own cost, and the
statistic to compare artifacts by on a shared machine. Both are recorded; reports say which they use.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Hashable
from pathlib import Path

import numpy as np

from edgekd.backends import get_backend
from edgekd.latency.machine_load import OtherLoad
from edgekd.measure import time_calls

log = logging.getLogger(__name__)


def wait_for_quiet(max_share: float = 0.25, window_s: float = 2.0, max_wait_s: float = 90.0) -> float | None:
    """Sleep in `window_s` windows until other processes use at most `max_share` of the CPUs, for
    at most `max_wait_s`; returns the last share seen (None where /proc/stat is missing)."""
    load = OtherLoad()
    waited, share = 0.0, None
    while True:
        time.sleep(window_s)
        waited += window_s
        share = load.share()
        if share is None or share <= max_share or waited >= max_wait_s:
            return share


def time_interleaved(paths: dict[Hashable, Path], *, rounds: int = 5, warmup: int = 10, runs: int = 40,
                     threads: int | None = None, seed: int = 0, quiet_share: float = 0.25,
                     max_wait_s: float = 90.0) -> dict:
    """{key: {"p50_ms": median of per-round p50s, "fastest_ms": median of per-round fastest runs,
    "round_p50_ms": [...], "round_min_ms": [...]}} plus "_rounds": per round, the others' CPU share
    before it and while it ran."""
    openvino = get_backend("openvino")
    requests = {}
    for key, path in paths.items():
        compiled = openvino.compile(path, threads=threads, batch=1)
        request = compiled.create_infer_request()
        port = compiled.input(0)
        data = np.random.default_rng(0).random(tuple(port.get_shape())).astype(port.get_element_type().to_dtype())
        request.set_input_tensor(openvino.ov.Tensor(data))
        requests[key] = request
    per_key: dict[Hashable, list[float]] = {key: [] for key in paths}
    fastest: dict[Hashable, list[float]] = {key: [] for key in paths}
    order = list(paths)
    rng = random.Random(seed)
    rounds_info = []
    for index in range(rounds):
        before = wait_for_quiet(quiet_share, max_wait_s=max_wait_s)
        load = OtherLoad()
        rng.shuffle(order)
        for key in order:
            request = requests[key]
            stats = time_calls(lambda request=request: request.infer(share_outputs=True), warmup=warmup, runs=runs)
            per_key[key].append(stats.p50_ms)
            fastest[key].append(stats.min_ms)
        during = load.share()
        rounds_info.append({"others_share_before": before, "others_share_during": during})
        log.info("round %d/%d: others used %s of the CPUs while timing", index + 1, rounds,
                 "?" if during is None else f"{during:.0%}")
    out = {key: {"p50_ms": statistics.median(values), "fastest_ms": statistics.median(fastest[key]),
                 "round_p50_ms": [round(v, 4) for v in values], "round_min_ms": [round(v, 4) for v in fastest[key]]}
           for key, values in per_key.items()}
    out["_rounds"] = rounds_info
    return out
