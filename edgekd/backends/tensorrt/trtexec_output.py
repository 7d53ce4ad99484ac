"""Parse what `trtexec` prints, so TensorRT latency is measured the way NVIDIA measures it.

No TensorRT import here: the parser works on text, so it is tested on any machine.

The summary lines have this shape (TensorRT 10.x, samples/common/sampleReporting.cpp):

    [I] === Performance summary ===
    [I] Throughput: 130.298 qps
    [I] Latency: min = 5.4 ms, max = 13 ms, mean = 7.6 ms, median = 7.2 ms, percentile(90%) = 10 ms
    [I] Enqueue Time: ...   [I] H2D Latency: ...   [I] GPU Compute Time: ...   [I] D2H Latency: ...
    [I] Total Host Walltime: 3.00082 s
    [I] Total GPU Compute Time: 2.96536 s

One `percentile(P%)` entry per value of `--percentile` (default 90,95,99 in TensorRT 10).
"Latency" is the host latency of one query: H2D copy + GPU compute + D2H copy. "GPU Compute
Time" is the kernels alone. Both are returned, because on a Jetson the copies are a real part of
what the application pays, while GPU compute is what model changes can move.
"""

from __future__ import annotations

import re

from edgekd.errors import UserError

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|inf|nan)"
# trtexec prefixes each log line with "[date-time] [I] "; the content after it is what we read.
_LOG_PREFIX = re.compile(r"^(?:\[[^\]]*\]\s*)*")
_SECTION_HEADER = re.compile(r"^===\s*(.+?)\s*===$")
_SUMMARY_SECTION = "Performance summary"

# Name in trtexec's output -> our key. Keys end in _ms because every value on these lines is ms.
_STAT_LINES = {
    "Latency": "latency_ms",
    "End-to-End Host Latency": "end_to_end_host_latency_ms",  # TensorRT <= 8.0 only
    "Enqueue Time": "enqueue_time_ms",
    "H2D Latency": "h2d_latency_ms",
    "GPU Compute Time": "gpu_compute_ms",
    "D2H Latency": "d2h_latency_ms",
}
_REQUIRED = ("throughput_qps", "latency_ms", "gpu_compute_ms")

_STAT = re.compile(rf"\b(min|max|mean|median)\s*=\s*({_NUMBER})\s*ms")
_PERCENTILE = re.compile(rf"percentile\((\d+(?:\.\d+)?)%\)\s*=\s*({_NUMBER})\s*ms")
_THROUGHPUT = re.compile(rf"^Throughput:\s*({_NUMBER})\s*qps")
_TOTAL = re.compile(rf"^Total (Host Walltime|GPU Compute Time):\s*({_NUMBER})\s*s$")
_VERSION_LINE = re.compile(r"TensorRT version:\s*(\d+(?:\.\d+)*)")
_VERSION_TAG = re.compile(r"\[TensorRT v(\d+)\]")
_WARMUP = re.compile(rf"Warmup completed (\d+) queries over ({_NUMBER}) ms")
_TIMING = re.compile(rf"Timing trace has (\d+) queries over ({_NUMBER}) s")


def parse_trtexec_output(text: str) -> dict:
    """The performance summary of one trtexec run as numbers.

    Returns {"tensorrt_version", "throughput_qps", "latency_ms", "gpu_compute_ms",
    "enqueue_time_ms", "h2d_latency_ms", "d2h_latency_ms", "total_host_walltime_s",
    "total_gpu_compute_time_s", "warmup_queries", "warmup_ms", "timing_queries"}; each *_ms
    entry is {"min", "max", "mean", "median", "percentiles": {"90": ..., "99": ...}} with the
    percentile keys as trtexec printed them. Absent optional values are None.
    Raises UserError when the text holds no usable performance summary.
    """
    lines = [_LOG_PREFIX.sub("", line).strip() for line in text.splitlines()]
    summary = _summary_lines(lines)
    result: dict = {
        "tensorrt_version": tensorrt_version_from_output(text),
        "throughput_qps": None,
        "total_host_walltime_s": None,
        "total_gpu_compute_time_s": None,
        **_run_counts(lines),
    }
    for line in summary:
        _parse_summary_line(line, result)
    missing = [key for key in _REQUIRED if result.get(key) is None]
    if missing:
        raise UserError(
            f"could not parse trtexec output: the performance summary has no {_names(missing)}"
        )
    return result


def _summary_lines(lines: list[str]) -> list[str]:
    """The lines after '=== Performance summary ===' up to the next '=== ... ===' header."""
    start = None
    for index, line in enumerate(lines):
        header = _SECTION_HEADER.match(line)
        if header and header.group(1) == _SUMMARY_SECTION:
            start = index + 1
        elif header and start is not None:
            return lines[start:index]
    if start is None:
        if not any(lines):
            raise UserError("could not parse trtexec output: it is empty")
        raise UserError(
            "could not parse trtexec output: no '=== Performance summary ===' section "
            "(did the run fail, or was it a --buildOnly/--skipInference run?)"
        )
    return lines[start:]


def _parse_summary_line(line: str, result: dict) -> None:
    throughput = _THROUGHPUT.match(line)
    if throughput:
        result["throughput_qps"] = float(throughput.group(1))
        return
    total = _TOTAL.match(line)
    if total:
        key = (
            "total_host_walltime_s"
            if total.group(1) == "Host Walltime"
            else "total_gpu_compute_time_s"
        )
        result[key] = float(total.group(2))
        return
    name, _, body = line.partition(":")
    key = _STAT_LINES.get(name.strip())
    if key is not None:
        result[key] = _parse_stats(body, name.strip())


def _parse_stats(body: str, name: str) -> dict:
    stats: dict = {stat: float(value) for stat, value in _STAT.findall(body)}
    absent = [stat for stat in ("min", "max", "mean", "median") if stat not in stats]
    if absent:
        raise UserError(
            f"could not parse trtexec output: the {name!r} line has no {_names(absent)}"
        )
    stats["percentiles"] = {percent: float(value) for percent, value in _PERCENTILE.findall(body)}
    return stats


def _run_counts(lines: list[str]) -> dict:
    """How many queries trtexec ran in warm-up and in the timed trace (it warms up by time)."""
    counts: dict = {"warmup_queries": None, "warmup_ms": None, "timing_queries": None}
    for line in lines:
        warmup = _WARMUP.search(line)
        if warmup:
            counts["warmup_queries"], counts["warmup_ms"] = (
                int(warmup.group(1)),
                float(warmup.group(2)),
            )
        timing = _TIMING.search(line)
        if timing:
            counts["timing_queries"] = int(timing.group(1))
    return counts


def tensorrt_version_from_output(text: str) -> str | None:
    """The TensorRT version trtexec reports ("10.3.0"), or None if it does not say.

    Prefers the "TensorRT version: X.Y.Z" line; falls back on the banner tag
    "[TensorRT v100300]" that every trtexec run (and `trtexec --help`) prints first.
    """
    line = _VERSION_LINE.search(text)
    if line:
        return line.group(1)
    tag = _VERSION_TAG.search(text)
    return decode_version_tag(int(tag.group(1))) if tag else None


def decode_version_tag(number: int) -> str:
    """NV_TENSORRT_VERSION as a dotted version: 100300 -> "10.3.0", 8601 -> "8.6.1".

    TensorRT 10 changed the encoding from major*1000 + minor*100 + patch to
    major*10000 + minor*100 + patch (minor can exceed 9 since 10.10).
    """
    if number >= 100000:
        major, minor, patch = number // 10000, (number // 100) % 100, number % 100
    else:
        major, minor, patch = number // 1000, (number // 100) % 10, number % 100
    return f"{major}.{minor}.{patch}"


def _names(keys: list[str]) -> str:
    return ", ".join(repr(key) for key in keys)
