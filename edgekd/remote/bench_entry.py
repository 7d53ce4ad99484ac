"""edgekd's benchmark entry point on the device: time one artifact, print one JSON line.

    python -m edgekd.remote.bench_entry --backend openvino --warmup 50 --runs 300 [--threads 4]
        [--batch 1] ARTIFACT

stdout carries exactly one line: the latency stats (LatencyStats.to_dict()) with the backend's
name and version, the CPU, edgekd's version and the date. On any error the line is
{"error": "..."} and the exit code is 2. Logs and runtime chatter go to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
from pathlib import Path

from edgekd.measure import cpu_name

ERROR_EXIT_CODE = 2


class _JsonErrorParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage and exits 2; keep the JSON contract
        raise ValueError(f"bad arguments: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _JsonErrorParser(prog="python -m edgekd.remote.bench_entry", description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("artifact", type=Path)
    return parser


def measure(args: argparse.Namespace) -> dict:
    import edgekd
    from edgekd.backends import get_backend

    backend = get_backend(args.backend)
    stats = backend.benchmark(
        args.artifact, warmup=args.warmup, runs=args.runs, batch=args.batch, threads=args.threads
    )
    return {
        **stats.to_dict(),
        "threads": args.threads,
        "backend": backend.NAME,
        "backend_version": backend.version(),
        "cpu": cpu_name(),
        "hostname": platform.node(),
        "edgekd_version": edgekd.__version__,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    # Runtimes may print to fd 1 from C++; point fd 1 at stderr while we work and write our one
    # line to the saved stdout, so the caller can trust that stdout is exactly that line.
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        try:
            result, code = measure(_parser().parse_args(argv)), 0
        except Exception as exc:  # any failure on the device becomes the JSON error line
            logging.getLogger(__name__).debug("benchmark failed", exc_info=True)
            result, code = {"error": f"{type(exc).__name__}: {exc}"}, ERROR_EXIT_CODE
        sys.stdout.flush()
    finally:
        os.dup2(result_fd, 1)
        os.close(result_fd)
    print(json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
