"""Starting real torchrun process groups in tests: `python -m torch.distributed.run --standalone`
(a free rendezvous port on this machine), each rank's stdout and stderr in its own file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def torchrun(args: list[str], *, logs: Path, processes: int = 2, env: dict[str, str] | None = None,
             timeout: int = 300) -> subprocess.CompletedProcess:
    """`torchrun --nproc-per-node N ARGS` on this machine with this checkout's edgekd; each rank's
    output goes to a file under `logs` (see rank_log)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "--log-dir", str(logs), "--redirects", "3", *args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def rank_log(logs: Path, rank: int, stream: str = "stderr") -> str:
    (path,) = logs.glob(f"*/attempt_0/{rank}/{stream}.log")
    return path.read_text()
