"""Kill a run during distill; `--resume` continues from the last finished stage and completes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tiny_recipe import tiny_args

from edgekd.cli import main


def start_compress(runs: Path, name: str, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "edgekd", "compress", "--runs-dir", str(runs), "--name", name, *extra]
    # SIGINT back to its default in the child: run from a background job (nohup ... &), the suite
    # would pass on an ignored SIGINT, and the child would rightly ignore Ctrl-C.
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, f"edgekd exited early: {process.stderr.read().decode()}"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def test_kill_during_distill_then_resume(tmp_path):
    # Enough distill epochs that the kill lands inside the stage.
    args = tiny_args() + ["--set", "distill.epochs=8", "--set", "distill.patience=8"]
    process = start_compress(tmp_path, "killed", args)
    run_dir = tmp_path / "killed"
    wait_for(run_dir / "distill", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    state = json.loads((run_dir / "state.json").read_text())
    assert list(state["completed"]) == ["search"]
    search_mtime = (run_dir / "search" / "candidates.json").stat().st_mtime_ns

    assert main(["compress", "--resume", str(run_dir)]) == 0
    state = json.loads((run_dir / "state.json").read_text())
    assert list(state["completed"]) == ["search", "distill", "prune", "export", "bench", "report"]
    assert (run_dir / "search" / "candidates.json").stat().st_mtime_ns == search_mtime  # not redone
    assert (run_dir / "report.json").is_file()


def test_ctrl_c_says_how_to_resume(tmp_path):
    process = start_compress(tmp_path, "interrupted", tiny_args() + ["--set", "distill.epochs=8"])
    wait_for(tmp_path / "interrupted" / "distill", process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"resume with: edgekd compress --resume {tmp_path / 'interrupted'}" in stderr.decode()
