"""Per-target latency measurements, kept as data: one JSON line per measured architecture.

`edgekd bench` appends what it measured on the device (with the prediction it was chosen by, if
any); the latency predictor reads the records of its input shape and precision back to calibrate
itself. The file lives in `$EDGEKD_BENCHMARKS_DIR/<target>/records.jsonl`, else in
`./benchmarks/<target>/` (the project's committed benchmarks dir when run from a checkout), so the
records of a device can be committed and shared like any other benchmark.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from edgekd.errors import UserError

log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
# What a record must hold to be usable; everything else (threads, runtime, device, ...) is context.
REQUIRED_KEYS = ("arch", "input_shape", "precision", "measured_p50_ms")


def benchmarks_dir() -> Path:
    return Path(os.environ.get("EDGEKD_BENCHMARKS_DIR") or "benchmarks")


def target_dir(target_name: str) -> Path:
    """Where a target's records and latency tables live (not created here)."""
    if not target_name or target_name in (".", "..") or "/" in target_name or "\\" in target_name:
        raise UserError(f"target name {target_name!r} cannot name a benchmarks folder")
    return benchmarks_dir() / target_name


def records_path(target_name: str) -> Path:
    return target_dir(target_name) / RECORDS_FILE


def append_record(target_name: str, record: dict[str, Any]) -> Path:
    """Append one measurement: at least arch, input_shape, precision and measured_p50_ms; by
    convention also predicted_ms (or None), measured_p90_ms, threads, runtime (backend and
    version), device. `date` is added when missing. Returns the file's path."""
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise ValueError(f"a latency record needs {list(REQUIRED_KEYS)}; missing {missing}")
    record = {"date": dt.datetime.now().isoformat(timespec="seconds"), **record}
    record.setdefault("predicted_ms", None)
    path = records_path(target_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
    with open(path, "a+b") as handle:
        # A kill mid-write can leave a last line without its newline; start a fresh line so the
        # new record is not glued onto the broken one.
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = "\n" + line
        handle.write(line.encode())  # one write in append mode: concurrent writers do not interleave
    log.debug("appended a latency record to %s", path)
    return path


def load_records(target_name: str, input_shape: tuple[int, ...] | list[int], precision: str) -> list[dict[str, Any]]:
    """The target's records measured at `input_shape` ([C, H, W]) and `precision`, oldest first.
    Lines that are not a valid record are skipped with one warning; a missing file is no records."""
    path = records_path(target_name)
    if not path.is_file():
        return []
    shape = [int(v) for v in input_shape]
    records, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = _parse(line)
            if record is None:
                bad.append(number)
            elif record["input_shape"] == shape and record["precision"] == precision:
                records.append(record)
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        log.warning("%s: skipped %d unreadable line(s) (line %s)", path, len(bad), shown)
    return records


def _parse(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or any(key not in record for key in REQUIRED_KEYS):
        return None
    measured = record["measured_p50_ms"]
    if not isinstance(measured, (int, float)) or isinstance(measured, bool) or not (math.isfinite(measured) and measured > 0):
        return None
    if not isinstance(record["arch"], dict) or not isinstance(record["input_shape"], list):
        return None
    return record
