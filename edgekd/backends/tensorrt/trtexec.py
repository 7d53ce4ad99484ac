"""trtexec for the TensorRT backend (backends.tensorrt): finding it, its command lines, running it.

JetPack ships trtexec in /usr/src/tensorrt/bin, not on PATH. Everything here except running
trtexec is plain data (command lines, builder flags, latency stats from its parsed output, see
backends.trtexec_output), so it works, and is tested, on machines without TensorRT. The precisions
live here too because the builder flags need them; backends.tensorrt re-exports them as PRECISIONS.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

from edgekd.backends.tensorrt.jetson import run_quiet
from edgekd.backends.tensorrt.trtexec_output import tensorrt_version_from_output
from edgekd.errors import UserError
from edgekd.measure import LatencyStats

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")

# JetPack installs trtexec here and does not put it on PATH.
_TRTEXEC_FALLBACK_PATHS = (Path("/usr/src/tensorrt/bin/trtexec"),)
_PERCENTILES = (50, 90, 99)
_SUBPROCESS_TIMEOUT_S = 3600  # an engine build of a large model can take many minutes


def check_precision(precision: str) -> None:
    """UserError unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise UserError(
            f"TensorRT precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
        )


# --- finding trtexec --------------------------------------------------------------------------


def find_trtexec() -> str | None:
    """Path of the trtexec executable, or None."""
    found = shutil.which("trtexec")
    if found:
        return found
    return next((str(path) for path in _TRTEXEC_FALLBACK_PATHS if path.is_file()), None)


def trtexec_version(exe: str) -> str | None:
    """The TensorRT version trtexec was built with, from the banner of `trtexec --help`."""
    output = run_quiet([exe, "--help"])
    return tensorrt_version_from_output(output) if output else None


# --- command lines: pure functions, testable anywhere -----------------------------------------


def builder_flags(precision: str, *, sparsity: bool, strongly_typed: bool) -> list[str]:
    """Names of the trt.BuilderFlag members to set for this precision."""
    check_precision(precision)
    flags = []
    # A strongly typed network takes its precision from the model; the flags are errors there.
    if not strongly_typed and precision in ("fp16", "int8"):
        flags.append(precision.upper())
    if not strongly_typed and precision == "int8":
        # The layers a Q/DQ ONNX leaves unquantized (softmax, the classifier's output, excluded
        # layers) then run in fp16 rather than fp32, as NVIDIA advises for explicit quantization.
        flags.append("FP16")
    if sparsity:
        flags.append("SPARSE_WEIGHTS")  # 2:4 structured sparsity, Ampere and later
    return flags


def build_trtexec_command(
    onnx_path: Path,
    engine_path: Path,
    *,
    precision: str,
    input_name: str,
    input_shape: tuple[int, ...],
    max_batch: int,
    sparsity: bool = False,
    timing_cache: Path | None = None,
    strongly_typed: bool = False,
    workspace_mb: int | None = None,
    trtexec: str = "trtexec",
) -> list[str]:
    """trtexec arguments that build what `tensorrt_api.build_engine` builds.

    `input_shape` is one example batch [N, C, H, W]; the engine accepts batches 1..max_batch and
    is tuned for max_batch. With `strongly_typed`, precision flags are left out: the ONNX must
    already hold the precision (Q/DQ for int8, an FP16 graph for fp16).
    """
    if max_batch < 1:
        raise UserError(f"max_batch must be >= 1, got {max_batch}")
    command = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    command += [
        "--" + flag.lower()
        for flag in builder_flags(precision, sparsity=False, strongly_typed=strongly_typed)
    ]
    if strongly_typed:
        command.append("--stronglyTyped")  # opt-in on 10.x, always on (accepted) on 11.x
    if sparsity:
        command.append("--sparsity=enable")
    if timing_cache is not None:
        command.append(f"--timingCacheFile={timing_cache}")  # loaded if present, saved after
    if workspace_mb is not None:
        command.append(f"--memPoolSize=workspace:{workspace_mb}")  # a plain number is MiB
    chw = _shape_text(input_shape[1:])
    command += [
        f"--minShapes={input_name}:1x{chw}",
        f"--optShapes={input_name}:{max_batch}x{chw}",
        f"--maxShapes={input_name}:{max_batch}x{chw}",
    ]
    return command


def build_trtexec_benchmark_command(
    engine_path: Path,
    *,
    runs: int,
    warmup_ms: int,
    shapes: str | None = None,
    trtexec: str = "trtexec",
) -> list[str]:
    """trtexec arguments for `runs` timed inferences after `warmup_ms` of warm-up.

    --duration=0 so that `runs` is the number of timed queries (by default trtexec also runs for
    at least 3 s); --avgRuns=1 keeps every query in the trace; --useSpinWait because blocking
    synchronisation adds wake-up jitter to each query's latency.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    command = [trtexec, f"--loadEngine={engine_path}"]
    if shapes:
        command.append(f"--shapes={shapes}")
    command += [
        f"--warmUp={warmup_ms}",
        f"--iterations={runs}",
        "--duration=0",
        "--avgRuns=1",
        "--percentile=" + ",".join(str(p) for p in _PERCENTILES),
        "--useSpinWait",
    ]
    return command


def _shape_text(dims) -> str:
    return "x".join(str(int(d)) for d in dims)


def latency_stats_from_trtexec(parsed: dict, *, batch: int, runs: int) -> LatencyStats:
    """LatencyStats from trtexec's end-to-end 'Latency' line (run with --percentile=50,90,99)."""
    latency = parsed["latency_ms"]
    percentiles = latency["percentiles"]
    missing = [p for p in ("90", "99") if p not in percentiles]
    if missing:
        raise UserError(
            f"could not parse trtexec output: no percentile(s) {', '.join(missing)} "
            "on the Latency line"
        )
    return LatencyStats(
        p50_ms=percentiles.get("50", latency["median"]),
        p90_ms=percentiles["90"],
        p99_ms=percentiles["99"],
        mean_ms=latency["mean"],
        min_ms=latency["min"],
        runs=parsed["timing_queries"] or runs,
        warmup=parsed["warmup_queries"] or 0,
        batch=batch,
    )


# --- running trtexec --------------------------------------------------------------------------


def _build_with_trtexec(
    exe: str,
    onnx_path: Path,
    engine_path: Path,
    *,
    input_name: str,
    input_shape: tuple[int, ...],
    **kwargs,
) -> None:
    """Build `engine_path` with trtexec; `input_name`/`input_shape` are the ONNX's first input."""
    command = build_trtexec_command(
        onnx_path,
        engine_path,
        input_name=input_name,
        input_shape=input_shape,
        trtexec=exe,
        **kwargs,
    )
    _run_trtexec(command)
    if not engine_path.is_file():
        raise UserError(f"trtexec reported success but wrote no engine at {engine_path}")


def _run_trtexec(command: list[str]) -> str:
    """Run trtexec; its full output on success, UserError with its last error line on failure."""
    log.info("running %s", " ".join(command))
    try:
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"could not run trtexec: {exc}") from exc
    output = done.stdout + done.stderr
    log.debug("trtexec output:\n%s", output)
    if done.returncode != 0:
        errors = [line for line in output.splitlines() if "[E]" in line or "Error" in line]
        reason = (
            errors[-1].strip() if errors else (output.strip().splitlines() or ["no output"])[-1]
        )
        raise UserError(f"trtexec failed (exit {done.returncode}): {reason}")
    return output


def write_build_script(path: Path, target_name: str, commands: list[str]) -> Path:
    """A shell script that builds a run's engines on the device, from the run dir."""
    path = Path(path)
    path.write_text("\n".join([
        "#!/bin/sh",
        f"# Build the TensorRT engines of this run ({target_name}) on the device, from the run dir:",
        "#   cd <run dir> && sh export/build_engines.sh",
        "# Written for TensorRT 10 (JetPack 6). On TensorRT 11 (strongly typed; no --fp16/--int8 flags) drop",
        "# the precision flags and add --stronglyTyped: the Q/DQ ONNX already carries INT8.",
        "set -e",
        "command -v trtexec >/dev/null || PATH=$PATH:/usr/src/tensorrt/bin",
        *commands,
        "",
    ]))
    path.chmod(0o755)
    return path
