"""OtherLoad: the share of the CPUs other processes took while we timed (from /proc/stat)."""

from __future__ import annotations

import os
import time

from edgekd.latency import machine_load
from edgekd.latency.machine_load import OtherLoad, machine_busy_seconds


def _write_stat(path, user, nice, system, idle=1000):
    path.write_text(f"cpu  {user} {nice} {system} {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")


def test_busy_seconds_counts_niced_time(tmp_path):
    stat = tmp_path / "stat"
    _write_stat(stat, user=100, nice=50, system=10)
    assert machine_busy_seconds(stat) == 160 / os.sysconf("SC_CLK_TCK")


def test_no_proc_stat_gives_none(tmp_path):
    assert machine_busy_seconds(tmp_path / "missing") is None
    assert OtherLoad(tmp_path / "missing").share() is None


def test_share_is_others_busy_time_over_wall_time_and_cores(tmp_path, monkeypatch):
    stat, tick = tmp_path / "stat", os.sysconf("SC_CLK_TCK")
    clock = {"wall": 100.0, "own": 5.0}
    monkeypatch.setattr(machine_load.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(machine_load.time, "process_time", lambda: clock["own"])
    _write_stat(stat, user=0, nice=0, system=0)
    load = OtherLoad(stat, cpus=2)
    # 10 s of wall time on 2 cores; the machine was busy 8 CPU-seconds, 3 of them ours: others took
    # 5 of the 20 CPU-seconds there were, a niced job included.
    clock["wall"], clock["own"] = 110.0, 8.0
    _write_stat(stat, user=4 * tick, nice=3 * tick, system=1 * tick)
    assert load.share() == 0.25
    # The next interval starts where the last ended: nobody else busy now.
    clock["wall"], clock["own"] = 120.0, 18.0
    _write_stat(stat, user=14 * tick, nice=3 * tick, system=1 * tick)
    assert load.share() == 0.0


def test_real_machine_share_is_a_fraction():
    load = OtherLoad()
    time.sleep(0.05)
    share = load.share()
    assert share is None or 0.0 <= share <= 1.0
